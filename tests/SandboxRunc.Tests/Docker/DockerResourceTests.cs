using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>Docker's resource flags reach the container's cgroups (v1 here: dockerd uses cgroupfs on cgroup v1).</summary>
[Trait("Category", "CgroupV2")]
public sealed class DockerResourceTests : IDisposable
{
    readonly DockerCli _docker = new();

    static bool CgroupV2 => HostCgroups.V2;

    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task MemoryPidsAndCpuLimitsAreVisibleInside()
    {
        string script = CgroupV2
            ? "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
            : "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max " +
              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us";
        var r = await _docker.RunRm(["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"], "sh", "-c", script);
        Assert.True(r.ExitCode == 0, r.ToString());
        string[] expected = CgroupV2 ? ["67108864", "50", "50000 100000"] : ["67108864", "50", "50000", "100000"];
        Assert.Equal(expected, r.Stdout.Trim().Split('\n'));
    }

    [IntegrationFact]
    public async Task PidsLimitStopsForks()
    {
        // 5 pids: sh itself plus a few; forking 20 background sleeps must hit the limit.
        var r = await _docker.RunRm(["--pids-limit", "5"], "sh", "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 5 & done; echo done");
        Assert.Contains("can't fork", r.Stdout + r.Stderr);
    }

    public void Dispose() => _docker.Dispose();
}
