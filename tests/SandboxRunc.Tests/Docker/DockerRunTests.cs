using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>`docker run --runtime=sandbox-runc` in the foreground: output, exit codes, errors, stdio and options.</summary>
public sealed class DockerRunTests : IDisposable
{
    readonly DockerCli _docker = new();

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task AttachedRunPrintsTheOutput()
    {
        var r = await _docker.RunRm([], "sh", "-c", "echo hi");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("hi\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task ExitCodeBecomesDockersExitCode()
    {
        var r = await _docker.RunRm([], "sh", "-c", "exit 3");
        Assert.True(r.ExitCode == 3, r.ToString());
    }

    [IntegrationFact]
    public async Task MissingCommandFailsCreateWith127AndOneLineMessage()
    {
        string name = _docker.Name("nope");
        var r = await _docker.Run("run", "--name", name, $"--runtime={DockerCli.Runtime}", DockerCli.Image, "nope");
        Assert.True(r.ExitCode == 127, r.ToString());
        // The daemon wraps our stderr: "... OCI runtime create failed: <ours>: unknown". Ours must be one
        // line, name the command and say why, and carry no .NET stack trace.
        var line = r.Stderr.Split('\n').SingleOrDefault(l => l.Contains("OCI runtime create failed"));
        Assert.True(line is not null, r.ToString());
        string ours = line![(line.IndexOf("OCI runtime create failed", StringComparison.Ordinal) + "OCI runtime create failed".Length)..];
        Assert.Contains("\"nope\": executable file not found in $PATH", ours);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.DoesNotContain("Exception", r.Stderr);
    }

    [IntegrationFact]
    public async Task TtyIsAPtyFromTheConsoleSocket()
    {
        var r = await _docker.RunRm(["-t"], "sh", "-c", "tty");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("/dev/pts/0", r.Stdout.Trim());
    }

    [IntegrationFact]
    public async Task PipedStdinReachesTheContainer()
    {
        var r = await _docker.RunWithStdin("abc\n", "run", "-i", "--rm", $"--runtime={DockerCli.Runtime}", DockerCli.Image, "cat");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("abc\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task InspectShowsTheRuntime()
    {
        string name = await _docker.RunDetached("inspect", DockerCli.Runtime, [], "sleep", "30");
        Assert.Equal(DockerCli.Runtime, await _docker.Inspect(name, "{{.HostConfig.Runtime}}"));
        Assert.Equal("true", await _docker.Inspect(name, "{{.State.Running}}"));
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task RmRemovesTheContainerAfterwards()
    {
        string name = _docker.Name("rm");
        var r = await _docker.Run("run", "--rm", "--name", name, $"--runtime={DockerCli.Runtime}", DockerCli.Image, "true");
        Assert.True(r.ExitCode == 0, r.ToString());
        // --rm is done by the daemon after the exit.
        await Eventually.Holds(async () => (await _docker.Ok("ps", "-a", "--filter", $"name=^{name}$", "--format", "{{.Names}}")).Stdout.Trim(),
            listed => listed == "", $"dockerd to remove {name}");
    }

    [IntegrationTheory]
    [InlineData("--read-only", "touch /x; echo rc=$?", "Read-only file system")]
    [InlineData("--read-only", "touch /x; echo rc=$?", "rc=1")]
    [InlineData("--user 1000:1000", "id", "uid=1000(tester) gid=1000(tester)")]
    [InlineData("-w /tmp", "pwd", "/tmp\n")]
    [InlineData("-e X=1", "echo X=$X", "X=1\n")]
    [InlineData("--hostname h1", "hostname", "h1\n")]
    [InlineData("--cap-drop ALL", "grep -E 'CapEff|CapBnd' /proc/self/status", "CapEff:\t0000000000000000")]
    [InlineData("--cap-drop ALL", "grep -E 'CapEff|CapBnd' /proc/self/status", "CapBnd:\t0000000000000000")]
    [InlineData("", "grep CapEff /proc/self/status", "CapEff:\t00000000a80425fb")] // Docker's default set
    [InlineData("--cap-drop ALL --cap-add NET_BIND_SERVICE", "grep CapEff /proc/self/status", "CapEff:\t0000000000000400")]
    public async Task OptionIsVisibleInside(string options, string script, string expected)
    {
        var r = await _docker.RunRm(options.Split(' ', StringSplitOptions.RemoveEmptyEntries), "sh", "-c", script);
        Assert.Contains(expected, r.Stdout + r.Stderr);
    }

    /// <summary>
    /// --privileged asks for every capability. The container's user namespace starts with a full bounding
    /// set, so it gets them all (inside that namespace only) even on a host whose own bounding set lacks
    /// some: this VM lacks CAP_SYS_RESOURCE, and runc's --privileged fails here with "unable to apply caps".
    /// </summary>
    [IntegrationFact]
    public async Task PrivilegedGetsEveryCapabilityDockerKnowsInsideItsUserNamespace()
    {
        var r = await _docker.RunRm(["--privileged"], "sh", "-c", "grep -E 'CapEff|CapBnd' /proc/self/status");
        Assert.True(r.ExitCode == 0, r.ToString());
        ulong eff = Convert.ToUInt64(r.Stdout.Split('\n').Single(l => l.StartsWith("CapEff:")).Split('\t')[1], 16);
        ulong bnd = Convert.ToUInt64(r.Stdout.Split('\n').Single(l => l.StartsWith("CapBnd:")).Split('\t')[1], 16);
        Assert.Equal(bnd, eff);
        // dockerd 20.10 knows capabilities 0..37 (CAP_AUDIT_READ); all of them are granted.
        const ulong dockerKnown = (1UL << 38) - 1;
        Assert.Equal(dockerKnown, eff & dockerKnown);

        ulong hostBounding = Convert.ToUInt64(File.ReadLines("/proc/self/status")
            .Single(l => l.StartsWith("CapBnd:")).Split('\t')[1], 16);
        if ((hostBounding & dockerKnown) != dockerKnown)
        {
            var runc = await _docker.Run("run", "--rm", "--runtime=runc", "--privileged", DockerCli.Image, "true");
            Assert.True(runc.ExitCode != 0, $"runc was expected to fail --privileged on this host: {runc}");
        }
    }

    public void Dispose() => _docker.Dispose();
}
