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
    public void HelperCgroup_V1IsTheMemoryCgroupOnly_V2None()
    {
        var v1 = new Dictionary<string, string>
        {
            ["memory"] = "/sys/fs/cgroup/memory/docker/abc", ["pids"] = "/sys/fs/cgroup/pids/docker/abc",
            ["freezer"] = "/sys/fs/cgroup/freezer/docker/abc", ["cpu"] = "/sys/fs/cgroup/cpu/docker/abc",
        };
        Assert.Equal("/sys/fs/cgroup/memory/docker/abc", HelperCgroup.Target(CgroupPaths.FromMap(v1)));
        // v2: its threads would count in the container's pids and it would sit in the container's delegated subtree.
        Assert.Null(HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string> { [""] = "/sys/fs/cgroup/system.slice/docker-abc.scope/" })));
        Assert.Null(HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string> { ["pids"] = "/sys/fs/cgroup/pids/x" })));
        Assert.Null(HelperCgroup.Target(CgroupPaths.FromMap(new Dictionary<string, string>())));
    }

    [Fact]
    public void HelperCgroup_JoinWritesThePidToTheV1MemoryCgroup_AndLeavesV2Alone()
    {
        string memory = _root + "/memory/ctr";
        Directory.CreateDirectory(memory);
        File.WriteAllText(memory + "/cgroup.procs", "");
        Assert.Equal(0, HelperCgroup.Join(CgroupPaths.FromMap(new Dictionary<string, string> { ["memory"] = memory }), 4242));
        Assert.Equal("4242", File.ReadAllText(memory + "/cgroup.procs"));

        string unified = _root + "/unified/ctr";
        Directory.CreateDirectory(unified);
        Assert.Equal(SandboxRunc.Interop.Libc.ENOENT, HelperCgroup.Join(CgroupPaths.FromMap(new Dictionary<string, string> { [""] = unified }), 4242));
        Assert.Empty(Directory.GetFileSystemEntries(unified));
    }
}
