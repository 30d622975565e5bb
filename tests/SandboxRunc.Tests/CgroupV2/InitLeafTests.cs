using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.CgroupV2;

/// <summary>
/// cgroup v2's no-internal-process rule inside a container: a cgroup may hand controllers down only while no process
/// is in it. An engine's system container therefore runs its init in a child ("init") from start on, so that an inner
/// dockerd started as PID 1 can give its containers limits; `docker exec` joins the init's cgroup when the
/// container's own is no leaf any more (as runc does); docker still watches the container's top (usage, OOM kills).
/// </summary>
[Trait("Category", "CgroupV2")]
[SupportedOSPlatform("linux")]
public sealed class InitLeafTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    const string SystemLabel = "io.sandbox-runc.system-container=true";

    /// <summary>What an inner engine does first: a child with a memory and a pids limit of its own, a process in it.</summary>
    const string InnerEngine = """
        cat /proc/self/cgroup
        echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control; echo enable=$?
        mkdir /sys/fs/cgroup/inner && echo 16777216 > /sys/fs/cgroup/inner/memory.max && echo 20 > /sys/fs/cgroup/inner/pids.max; echo limits=$?
        sh -c 'echo $$ > /sys/fs/cgroup/inner/cgroup.procs && cat /proc/self/cgroup && cat /sys/fs/cgroup/inner/memory.max'
        """;

    [CgroupV2Fact]
    public async Task AnEnginesSystemContainerRunsItsInitInALeafAndCanHandControllersDown()
    {
        var r = await _docker.RunRm(["--label", SystemLabel], "sh", "-c", InnerEngine);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.StartsWith("0::/init\n", r.Stdout);
        Assert.Contains("enable=0\n", r.Stdout);
        Assert.Contains("limits=0\n", r.Stdout);
        Assert.Contains("0::/inner\n16777216\n", r.Stdout);
    }

    [CgroupV2Fact]
    public async Task AnOrdinaryContainerKeepsItsInitInItsTop()
    {
        var r = await _docker.RunRm([], "sh", "-c", "cat /proc/self/cgroup");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("0::/\n", r.Stdout);
    }

    /// <summary>Exec into a container whose top handed controllers down: its init's cgroup, not an EBUSY.</summary>
    [CgroupV2Fact]
    public async Task ExecJoinsTheInitsCgroupWhenTheTopIsNoLeaf()
    {
        // An ordinary container that does what systemd does: moves itself to a child and enables controllers.
        string plain = await _docker.RunDetached("leafexec", DockerCli.Runtime, [], "sh", "-c",
            "mkdir /sys/fs/cgroup/init.scope && echo $$ > /sys/fs/cgroup/init.scope/cgroup.procs && echo +pids > /sys/fs/cgroup/cgroup.subtree_control && echo ready && exec sleep 300");
        await _docker.WaitForLog(plain, "ready");
        var e = await _docker.Run("exec", plain, "cat", "/proc/self/cgroup");
        Assert.True(e.ExitCode == 0, e.ToString());
        Assert.Equal("0::/init.scope\n", e.Stdout);

        string system = await _docker.RunDetached("leafexec", DockerCli.Runtime, ["--label", SystemLabel], "sh", "-c",
            "echo +pids > /sys/fs/cgroup/cgroup.subtree_control && echo ready && exec sleep 300");
        await _docker.WaitForLog(system, "ready");
        var s = await _docker.Run("exec", system, "cat", "/proc/self/cgroup");
        Assert.True(s.ExitCode == 0, s.ToString());
        Assert.Equal("0::/init\n", s.Stdout);
    }

    /// <summary>Docker watches the top, so an OOM kill in the leaf is still reported, and so is the usage.</summary>
    [CgroupV2Fact]
    public async Task DockerStillSeesTheSystemContainersOomKill()
    {
        string name = _docker.Name("leafoom");
        var run = await _docker.Run(["run", "--name", name, $"--runtime={DockerCli.Runtime}", "--label", SystemLabel, "--memory", "32m",
            "--memory-swap", "32m", DockerCli.Image, "sh", "-c", "x=$(head -c 200m /dev/zero | tr '\\0' a); echo ${#x}"]);
        Assert.True(run.ExitCode == 137, run.ToString());
        Assert.Equal("true", await _docker.Inspect(name, "{{.State.OOMKilled}}"));
    }
}
