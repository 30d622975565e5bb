using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SystemContainers;

/// <summary>
/// Docker-in-Docker under sandbox-runc (README "System containers"): Debian's dockerd, containerd and runc, unchanged,
/// in the system image, with and without --privileged. The inner engine gets the busybox test image through
/// `docker save | docker exec -i C docker load` (no network here).
/// </summary>
[Trait("Category", "SystemContainers")]
public sealed class DockerInDockerTests : IDisposable
{
    readonly DockerCli _docker = new();

    /// <summary>Starts dockerd in the system image; returns the name once the inner `docker info` answers.</summary>
    internal static async Task<string> StartDind(DockerCli docker, string what, params string[] options)
    {
        string image = await SystemImage.Tag();
        string name = docker.Name(what);
        await docker.Ok(["run", "-d", "--name", name, $"--runtime={DockerCli.Runtime}", "--network=none", .. options, image, "dockerd"]);
        // Stops waiting when the container is gone (the inner dockerd exited): its log says why.
        for (int attempt = 1; ; attempt++)
        {
            var answer = await Eventually.Holds(() => docker.Run("exec", name, "docker", "info", "--format", "{{.Driver}}"),
                r => r.ExitCode == 0 || r.Stderr.Contains("is not running", StringComparison.Ordinal),
                $"the inner dockerd of {name} to answer", HangLimits.Seconds(90));
            if (answer.ExitCode == 0) return name;
            var logs = await docker.Run("logs", "--tail", "30", name);
            // dockerd gives the containerd it starts a fixed time to come up; under emulation (the cgroup v2 VM's TCG)
            // the first start of these binaries can exceed it. Once more, with the page cache warm; any other exit fails.
            if (attempt == 1 && (logs.Stdout + logs.Stderr).Contains("timeout waiting for containerd to start", StringComparison.Ordinal))
            {
                await docker.Ok("start", name);
                continue;
            }
            Assert.Fail($"the inner dockerd of {name} exited ({await docker.Inspect(name, "{{.State.ExitCode}}")}); its last lines:\n{logs.Stdout}{logs.Stderr}");
        }
    }

    internal static Task LoadTestImage(DockerCli docker, string name) => SavePipe(DockerCli.Image, $"docker exec -i {name} docker load");

    /// <summary>`docker save IMAGE | INTO`, through a shell (the CLI wrapper pipes strings only); INTO must succeed.</summary>
    internal static async Task SavePipe(string image, string into)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("sh", ["-c", $"docker save {image} | {into}"])
            { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(HangLimits.Seconds(300));
        await p.WaitForExitAsync(cts.Token);
        Assert.True(p.ExitCode == 0, $"docker save {image} | {into}: exit {p.ExitCode}: {await stdout}{await stderr}");
    }

    async Task InnerEngineWorks(string name)
    {
        // overlay2, not vfs: the container's storage dir is a host filesystem overlay can use.
        var info = await _docker.Ok("exec", name, "docker", "info", "--format", "{{.Driver}}");
        Assert.Equal("overlay2", info.Stdout.Trim());

        await LoadTestImage(_docker, name);
        var run = await _docker.Ok("exec", name, "docker", "run", "--rm", "--network=none", DockerCli.Image, "echo", "hello from the inner container");
        Assert.Contains("hello from the inner container", run.Stdout);

        // A memory hog under --memory 32m: the inner runc's limit is a child of the outer container's cgroup, and it holds.
        var hog = await _docker.Run("exec", name, "docker", "run", "--name", "hog", "--network=none", "--memory", "32m", "--memory-swap", "32m",
            DockerCli.Image, "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}");
        Assert.True(hog.ExitCode == 137, $"the inner memory hog was expected to be OOM-killed (exit 137): {hog}");
        var oom = await _docker.Ok("exec", name, "docker", "inspect", "--format", "{{.State.OOMKilled}}", "hog");
        Assert.Equal("true", oom.Stdout.Trim());
        await _docker.Ok("exec", name, "docker", "rm", "hog");
    }

    async Task RemovalLeavesNothing(string name)
    {
        var traces = await HostTraces.Of(_docker, name);
        Assert.True(Directory.Exists(traces.StorageDir), $"the engine storage dir {traces.StorageDir} is missing");
        Assert.True(traces.CgroupDirs.Count > 0, "no cgroup paths in the state");
        await _docker.Ok("rm", "-f", name);
        var left = await Eventually.Holds(() => Task.FromResult(traces.Left()), l => l.Count == 0,
            $"nothing of {name} left on the host after docker rm -f", show: l => string.Join("\n", l));
        Assert.Empty(left);
    }

    [IntegrationFact]
    public async Task DindWithoutPrivilegedRunsInnerContainers()
    {
        string name = await StartDind(_docker, "dind");
        await InnerEngineWorks(name);
        await RemovalLeavesNothing(name);
    }

    [IntegrationFact]
    public async Task DindWithPrivilegedRunsInnerContainersAsUnprivilegedHostUsers()
    {
        string name = await StartDind(_docker, "dindpriv", "--privileged");
        await InnerEngineWorks(name);

        // An inner --privileged container: its root is still an unprivileged host user (read on the host). Inner runc
        // sets every capability the kernel knows for --privileged and fails on one missing from the bounding set it
        // starts with (the host's, on this machine without CAP_SYS_RESOURCE: runc's own --privileged fails here too):
        // there the closest the inner engine can give is every capability but the missing ones, unconfined.
        string marker = "7" + Random.Shared.Next(100000, 999999);
        var missing = MissingFromHostBoundingSet();
        string[] privileged = missing.Count == 0 ? ["--privileged"]
            : ["--cap-add", "ALL", .. missing.SelectMany(c => new[] { "--cap-drop", c }), "--security-opt", "seccomp=unconfined",
               "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined"];
        await _docker.Ok(["exec", name, "docker", "run", "-d", .. privileged, "--network=none", DockerCli.Image, "sleep", marker]);
        int pid = await Eventually.Holds(() => Task.FromResult(HostProcs.Find($"sleep\0{marker}")), p => p > 0,
            $"the inner container's sleep {marker} on the host");
        var status = File.ReadAllLines($"/proc/{pid}/status");
        string uids = status.First(l => l.StartsWith("Uid:", StringComparison.Ordinal));
        string capEff = status.First(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
        var ids = uids[4..].Split('\t', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(uint.Parse).ToList();
        Assert.True(ids.All(u => u >= 65536), $"the inner privileged container's root is host uid {uids} (expected the outer container's range)");
        // Its capabilities are held in the nested user namespace only: over the host's it holds none.
        Assert.NotNull(capEff);
        Assert.False(HostProcs.InHostUserNamespace(pid), "the inner container runs in the host's user namespace");

        await RemovalLeavesNothing(name);
    }

    /// <summary>
    /// Two levels: the DinD container's engine runs a privileged container of the system image whose own dockerd runs
    /// one more container. The second level is what users run as docker:dind: a privileged container with a volume
    /// for /var/lib/docker (overlay cannot stack on its own root), and on cgroup v2 the step docker's `dind` script
    /// takes (move the init out of the cgroup root into a child, so the root can hand controllers down), since the
    /// inner runc, unlike this runtime, does not do it. Needs every capability in the host's bounding set: the second
    /// level is an inner `docker run --privileged`.
    /// </summary>
    [FullBoundingSetFact]
    [Trait("Category", "Nesting")]
    public async Task NestedTwoLevelsRunDockerdAndOneMoreContainer()
    {
        string outer = await StartDind(_docker, "nest");
        string image = await SystemImage.Tag();
        await SavePipe(image, $"docker exec -i {outer} docker load");
        await LoadTestImage(_docker, outer);

        const string nesting = "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then mkdir -p /sys/fs/cgroup/init && "
            + "echo $$ > /sys/fs/cgroup/init/cgroup.procs && sed -e 's/ / +/g' -e 's/^/+/' /sys/fs/cgroup/cgroup.controllers "
            + "> /sys/fs/cgroup/cgroup.subtree_control; fi; exec dockerd";
        await _docker.Ok("exec", outer, "docker", "run", "-d", "--name", "level2", "--privileged", "--network=none",
            "-v", "/var/lib/docker", image, "sh", "-c", nesting);
        await Eventually.Holds(() => _docker.Run("exec", outer, "docker", "exec", "level2", "docker", "info", "--format", "{{.Driver}}"),
            r => r.ExitCode == 0, "the second-level dockerd to answer", HangLimits.Seconds(90));
        await SavePipe(DockerCli.Image, $"docker exec -i {outer} docker exec -i level2 docker load");

        string marker = "7" + Random.Shared.Next(100000, 999999);
        await _docker.Ok("exec", outer, "docker", "exec", "level2", "docker", "run", "-d", "--network=none", DockerCli.Image, "sleep", marker);
        int pid = await Eventually.Holds(() => Task.FromResult(HostProcs.Find($"sleep\0{marker}")), p => p > 0,
            $"the third-level container's sleep {marker} on the host");
        var uids = File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal));
        Assert.True(uids[4..].Split('\t', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(uint.Parse).All(u => u >= 65536),
            $"the third-level container's root is host uid {uids} (expected the outer container's range)");
        Assert.False(HostProcs.InHostUserNamespace(pid), "the third-level container runs in the host's user namespace");
        var run = await _docker.Ok("exec", outer, "docker", "exec", "level2", "docker", "run", "--rm", "--network=none", DockerCli.Image,
            "echo", "hello from the third level");
        Assert.Contains("hello from the third level", run.Stdout);

        await RemovalLeavesNothing(outer);
    }

    /// <summary>Capabilities the kernel knows that this host's bounding set lacks (CAP_SYS_RESOURCE on the CI machine).</summary>
    internal static List<string> MissingFromHostBoundingSet()
    {
        int last = int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim());
        ulong bounding = File.ReadLines("/proc/self/status").Where(l => l.StartsWith("CapBnd:", StringComparison.Ordinal))
            .Select(l => Convert.ToUInt64(l[7..].Trim(), 16)).First();
        return SandboxRunc.Namespaces.CapabilityNames.All.Take(last + 1).Where((_, i) => (bounding >> i & 1) == 0)
            .Select(n => n["CAP_".Length..]).ToList();
    }

    public void Dispose() => _docker.Dispose();
}
