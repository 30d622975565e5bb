using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>`docker exec` through sandbox-runc: the process joins the container's user namespace and the rest.</summary>
public sealed class DockerExecTests : IDisposable
{
    readonly DockerCli _docker = new();

    async Task<string> Sleeper() => await _docker.RunDetached("exec", DockerCli.Runtime, [], "sleep", "120");

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task ExecJoinsTheContainersUserNamespace()
    {
        string name = await Sleeper();
        var init = await _docker.Ok("exec", name, "cat", "/proc/1/uid_map");
        var exec = await _docker.Ok("exec", name, "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; cat /proc/1/cmdline");
        var lines = exec.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(init.Stdout.Trim(), lines[0].Trim());
        var uidMap = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("0", uidMap[0]);
        Assert.True(long.Parse(uidMap[1]) >= 100000, exec.ToString());
        Assert.Equal("65536", uidMap[2]);
        Assert.Equal("0", lines[2]);
        Assert.StartsWith("sleep", lines[3]); // same PID namespace: PID 1 is the container's init
    }

    [IntegrationFact]
    public async Task UserWorkdirAndEnvApply()
    {
        string name = await Sleeper();
        var r = await _docker.Ok("exec", "-u", "1000", "-w", "/tmp", "-e", "X=1", name, "sh", "-c", "id -u; pwd; echo X=$X");
        Assert.Equal("1000\n/tmp\nX=1\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task ExitCodeAndMissingProgramAreReportedAsWithRunc()
    {
        string name = await Sleeper();
        Assert.Equal(9, (await _docker.Run("exec", name, "sh", "-c", "exit 9")).ExitCode);
        var missing = await _docker.Run("exec", name, "nope");
        Assert.Equal(126, missing.ExitCode);
        // docker exec prints this error on stdout, docker run on stderr: look at both.
        var line = Assert.Single((missing.Stdout + missing.Stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("OCI runtime exec failed: exec failed: exec: \"nope\": executable file not found in $PATH", line);
    }

    /// <summary>`docker exec -it` driven through a real pseudo-terminal (script(1)): the shell's prompt comes back.</summary>
    [IntegrationFact]
    public async Task InteractiveExecWithATerminal()
    {
        string name = await Sleeper();
        using var cts = new CancellationTokenSource(Patience.Command);
        var r = await CliWrap.Cli.Wrap("script").WithArguments(["-qec", $"docker exec -it {name} sh", "/dev/null"])
            .WithStandardInputPipe(PipeSource.FromString("tty; echo in-$((6*7)); exit 3\n"))
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cts.Token);
        Assert.True(r.ExitCode == 3, $"exit {r.ExitCode}\nstdout: {r.StandardOutput}\nstderr: {r.StandardError}");
        Assert.Contains("/ # ", r.StandardOutput);
        Assert.Contains("/dev/pts/", r.StandardOutput);
        Assert.Contains("in-42", r.StandardOutput);
    }

    [IntegrationFact]
    public async Task ExecIntoAPausedOrStoppedContainerFails()
    {
        string name = await _docker.RunDetached("exec", DockerCli.Runtime, [], "true");
        await _docker.Run("wait", name);
        var r = await _docker.Run("exec", name, "true");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("is not running", r.Stderr);
    }

    public void Dispose() => _docker.Dispose();
}
