// Where the emulation helper is charged for memory: the path logic for cgroup v1 and v2 (v2 cannot be
// tried on a v1 host: the path is what can be checked), and the join itself against a plain directory.
using SandboxRunc.Cgroups;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

public sealed class HelperCgroupTests : IDisposable
{
    readonly string _root = Directory.CreateTempSubdirectory("helper-cg-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public void HelperCgroup_V1IsTheMemoryCgroupOnly_V2AChildOfTheContainers()
    {
        var v1 = new Dictionary<string, string>
        {
            ["memory"] = "/sys/fs/cgroup/memory/docker/abc", ["pids"] = "/sys/fs/cgroup/pids/docker/abc",
            ["freezer"] = "/sys/fs/cgroup/freezer/docker/abc", ["cpu"] = "/sys/fs/cgroup/cpu/docker/abc",
        };
        Assert.Equal(("/sys/fs/cgroup/memory/docker/abc", false), HelperCgroup.Target(CgroupPaths.FromMap(v1)));
        Assert.Equal(("/sys/fs/cgroup/system.slice/docker-abc.scope/sandbox-runc-helper", true),
            HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string> { [""] = "/sys/fs/cgroup/system.slice/docker-abc.scope/" })));
        Assert.Null(HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string> { ["pids"] = "/sys/fs/cgroup/pids/x" })));
        Assert.Null(HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string>())));
    }

    [Fact]
    public void HelperCgroup_JoinMakesTheV2ChildAndWritesThePid()
    {
        string dir = _root + "/unified/ctr";
        Directory.CreateDirectory(dir);
        // A plain directory stands for cgroupfs: the child is made, and cgroup.procs must then exist to be written.
        Assert.NotEqual(0, HelperCgroup.Join(CgroupPaths.FromMap(new Dictionary<string, string> { [""] = dir }), 4242));
        Assert.True(Directory.Exists(dir + "/sandbox-runc-helper"));
        File.WriteAllText(dir + "/sandbox-runc-helper/cgroup.procs", "");
        Assert.Equal(0, HelperCgroup.Join(CgroupPaths.FromMap(new Dictionary<string, string> { [""] = dir }), 4242));
        Assert.Equal("4242", File.ReadAllText(dir + "/sandbox-runc-helper/cgroup.procs"));
    }

    /// <summary>On v2 the helper's threads would count in the container's pids.current: a container with a pids limit is left alone.</summary>
    [Fact]
    public void HelperCgroup_V2StaysOutOfAContainerWithAPidsLimit()
    {
        string dir = _root + "/unified/limited";
        Directory.CreateDirectory(dir + "/sandbox-runc-helper");
        File.WriteAllText(dir + "/sandbox-runc-helper/cgroup.procs", "");
        File.WriteAllText(dir + "/cgroup.events", "populated 1\nfrozen 0\n");
        File.WriteAllText(dir + "/pids.max", "5\n");
        var paths = CgroupPaths.FromMap(new Dictionary<string, string> { [""] = dir });
        Assert.Equal(SandboxRunc.Interop.Libc.EAGAIN, HelperCgroup.Join(paths, 4242));
        Assert.Equal("", File.ReadAllText(dir + "/sandbox-runc-helper/cgroup.procs"));

        File.WriteAllText(dir + "/pids.max", "max\n");
        Assert.Equal(0, HelperCgroup.Join(paths, 4242));
        Assert.Equal("4242", File.ReadAllText(dir + "/sandbox-runc-helper/cgroup.procs"));
    }
}
