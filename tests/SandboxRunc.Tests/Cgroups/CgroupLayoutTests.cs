// Path resolution and value conversions, fed with fixed /proc text so they run anywhere without root.
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

public class CgroupLayoutTests
{
    const string HybridMountInfo = """
        23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
        34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        99 35 0:32 / /mnt/again rw,relatime - cgroup cgroup rw,memory
        """;

    const string HybridSelf = """
        9:name=systemd:/user.slice
        8:pids:/
        4:memory:/process_api/ab06
        3:cpuset:/
        1:cpu,cpuacct:/job
        0::/user.slice
        """;

    const string V2MountInfo = """
        25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
        """;

    [Fact]
    public void V1AbsolutePathIsUnderEachHierarchy()
    {
        var (v, p) = CgroupLayout.Resolve("abc", "/docker/abc", HybridMountInfo, HybridSelf);
        Assert.Equal(CgroupVersion.V1, v);
        Assert.Equal("/sys/fs/cgroup/memory/docker/abc", p["memory"]);
        Assert.Equal("/sys/fs/cgroup/cpu,cpuacct/docker/abc", p["cpu"]);
        Assert.Equal("/sys/fs/cgroup/cpu,cpuacct/docker/abc", p["cpuacct"]);
        Assert.Equal("/sys/fs/cgroup/systemd/docker/abc", p["name=systemd"]);
        Assert.Equal(new[] { "cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "name=systemd", CgroupPaths.HybridUnified }, p.Keys);
    }

    /// <summary>
    /// A hybrid host: the container gets a directory in the cgroup2 hierarchy too (as runc makes one), or the cgroup namespace
    /// its init unshares is rooted at the v2 root, and a container that mounts cgroup2 reads the host's whole tree.
    /// </summary>
    [Fact]
    public void HybridHostsGiveTheContainerItsOwnUnifiedDirectory()
    {
        var abs = CgroupLayout.Resolve("abc", "/docker/abc", HybridMountInfo, HybridSelf);
        Assert.Equal("/sys/fs/cgroup/unified/docker/abc", abs.HybridUnifiedDir);
        Assert.Equal("/sys/fs/cgroup/unified/docker/abc", abs.Of(CgroupPaths.HybridUnified));
        // Relative: under the caller's own v2 cgroup, as each v1 hierarchy's is under the caller's own there.
        Assert.Equal("/sys/fs/cgroup/unified/user.slice/sub/x", CgroupLayout.Resolve("abc", "sub/x", HybridMountInfo, HybridSelf).HybridUnifiedDir);
        Assert.Equal("/sys/fs/cgroup/unified/user.slice/abc", CgroupLayout.Resolve("abc", null, HybridMountInfo, HybridSelf).HybridUnifiedDir);
        // ".." cannot climb above the v2 root either.
        Assert.Equal("/sys/fs/cgroup/unified/etc", CgroupLayout.Resolve("abc", "/../../etc", HybridMountInfo, HybridSelf).HybridUnifiedDir);
        // The saved form keeps it (state.json's cgroupPaths), and only the hybrid v1 map has one.
        Assert.Equal("/sys/fs/cgroup/unified/docker/abc", CgroupPaths.FromMap(abs.Map).HybridUnifiedDir);
        Assert.Null(CgroupLayout.Resolve("abc", "/docker/abc", V2MountInfo, "0::/").HybridUnifiedDir);
        Assert.Null(CgroupLayout.Resolve("abc", "/docker/abc", HybridMountInfo.Replace("cgroup2 cgroup2", "tmpfs tmpfs"), HybridSelf).HybridUnifiedDir);
    }

    [Fact]
    public void SystemdV1LayoutOnAHybridHostHasItsUnifiedDirectoryToo()
    {
        var unit = SystemdLayout.Parse("system.slice:docker:abc", "abc");
        var hierarchies = CgroupLayout.V1Hierarchies(CgroupLayout.ParseMountInfo(HybridMountInfo));
        var dirs = SystemdLayout.V1Dirs(unit, hierarchies, "/sys/fs/cgroup/unified");
        Assert.Equal("/sys/fs/cgroup/unified/system.slice/docker-abc.scope", dirs[CgroupPaths.HybridUnified]);
        Assert.Equal("/sys/fs/cgroup/memory/system.slice/docker-abc.scope", dirs["memory"]);
        Assert.False(SystemdLayout.V1Dirs(unit, hierarchies).ContainsKey(CgroupPaths.HybridUnified));
    }

    [Fact]
    public void V1RelativeAndEmptyPathsAreUnderTheCallersCgroup()
    {
        var (_, p) = CgroupLayout.Resolve("abc", "sub/x", HybridMountInfo, HybridSelf);
        Assert.Equal("/sys/fs/cgroup/memory/process_api/ab06/sub/x", p["memory"]);
        Assert.Equal("/sys/fs/cgroup/cpu,cpuacct/job/sub/x", p["cpu"]);
        Assert.Equal("/sys/fs/cgroup/pids/sub/x", p["pids"]);

        var (_, e) = CgroupLayout.Resolve("abc", "", HybridMountInfo, HybridSelf);
        Assert.Equal("/sys/fs/cgroup/memory/process_api/ab06/abc", e["memory"]);
        Assert.Equal("/sys/fs/cgroup/systemd/user.slice/abc", e["name=systemd"]);
    }

    [Fact]
    public void V1RelativePathHonoursMountRoot()
    {
        // Inside a container without a cgroup namespace the hierarchy root is the container's own cgroup.
        const string mi = "35 31 0:32 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        var (_, p) = CgroupLayout.Resolve("abc", null, mi, "4:memory:/docker/c1/inner");
        Assert.Equal("/sys/fs/cgroup/memory/inner/abc", p["memory"]);
    }

    [Fact]
    public void DotDotCannotEscapeTheHierarchy()
    {
        var (_, p) = CgroupLayout.Resolve("abc", "/../../etc", HybridMountInfo, HybridSelf);
        Assert.Equal("/sys/fs/cgroup/memory/etc", p["memory"]);
        var (_, r) = CgroupLayout.Resolve("abc", "../../../x", HybridMountInfo, HybridSelf);
        Assert.Equal("/sys/fs/cgroup/memory/process_api/ab06/x", r["memory"]);
    }

    [Fact]
    public void V2PathsUseOneDirectoryAndTheParentOfTheCallersCgroup()
    {
        var (v, p) = CgroupLayout.Resolve("abc", "/docker/abc", V2MountInfo, "0::/user.slice/session-1.scope");
        Assert.Equal(CgroupVersion.V2, v);
        Assert.Equal("/sys/fs/cgroup/docker/abc", Assert.Single(p).Value);
        Assert.Equal("", p.Keys.Single());

        var (_, r) = CgroupLayout.Resolve("abc", null, V2MountInfo, "0::/user.slice/session-1.scope");
        Assert.Equal("/sys/fs/cgroup/user.slice/abc", r[""]);
    }

    [Fact]
    public void SystemdStylePathIsRejected()
    {
        var e = Assert.Throws<CgroupException>(() => CgroupLayout.Resolve("abc", "system.slice:docker:abc", HybridMountInfo, HybridSelf));
        Assert.Contains("systemd", e.Message);
        Assert.Contains("system.slice:docker:abc", e.Message);
    }

    [Fact]
    public void NoCgroupMountsIsAClearError()
    {
        var e = Assert.Throws<CgroupException>(() => CgroupLayout.Resolve("abc", null, "23 1 0:21 / /sys rw - sysfs sysfs rw", ""));
        Assert.Contains("no cgroup", e.Message);
    }

    [Fact]
    public void MountInfoOctalEscapesAreDecoded()
    {
        var m = CgroupLayout.ParseMountInfo(@"40 31 0:37 / /sys/fs/cgroup/a\040b rw - cgroup cgroup rw,name=x");
        Assert.Equal("/sys/fs/cgroup/a b", Assert.Single(m).MountPoint);
    }

    [Theory]
    [InlineData(0UL, 0UL)]
    [InlineData(1UL, 1UL)]
    [InlineData(2UL, 1UL)]
    [InlineData(1024UL, 100UL)]
    [InlineData(262144UL, 10000UL)]
    [InlineData(1000000UL, 10000UL)]
    public void SharesToWeightMatchesRunc(ulong shares, ulong weight) =>
        Assert.Equal(weight, V2Resources.SharesToWeight(shares));

    [Fact]
    public void SharesToWeightIsMonotonic()
    {
        ulong last = 0;
        for (ulong s = 2; s <= 262144; s += 97)
        {
            ulong w = V2Resources.SharesToWeight(s);
            Assert.InRange(w, Math.Max(last, 1), 10000UL);
            last = w;
        }
    }

    [Fact]
    public void SwapIsConvertedFromMemoryPlusSwap()
    {
        Assert.Equal(64L << 20, V2Resources.SwapToV2(128L << 20, 64L << 20));
        Assert.Equal(-1, V2Resources.SwapToV2(-1, 64L << 20));
        Assert.Equal(-1, V2Resources.SwapToV2(0, -1));
        Assert.Null(V2Resources.SwapToV2(0, 64L << 20));
        Assert.Throws<CgroupException>(() => V2Resources.SwapToV2(32L << 20, 64L << 20));
        Assert.Throws<CgroupException>(() => V2Resources.SwapToV2(32L << 20, 0));
    }

    [Fact]
    public void DeviceRulesUseWildcards()
    {
        Assert.Equal("a *:* rwm", V1Resources.DeviceRule(new DeviceCgroup { Allow = false, Access = "rwm" }));
        Assert.Equal("c 136:* rwm", V1Resources.DeviceRule(new DeviceCgroup { Type = "c", Major = 136, Access = "rwm" }));
        Assert.Equal("b *:* m", V1Resources.DeviceRule(new DeviceCgroup { Type = "b", Major = -1, Minor = -1, Access = "m" }));
        Assert.Equal("c 1:3 rw", V1Resources.DeviceRule(new DeviceCgroup { Type = "c", Major = 1, Minor = 3, Access = "rw" }));
    }
    [Theory]
    [InlineData("0::/docker/abc/init\n", "/sys/fs/cgroup/docker/abc/init")]
    [InlineData("12:memory:/x\n0::/system.slice/docker-1.scope\n", "/sys/fs/cgroup/system.slice/docker-1.scope")]
    // ".." only comes from the kernel for a cgroup outside the reader's cgroup namespace: cleaning it would name another one.
    [InlineData("0::/docker/abc/../../etc\n", null)]
    [InlineData("0::/../../docker/abc\n", null)]
    [InlineData("0::/docker/./abc\n", null)]
    [InlineData("0::/docker//abc\n", null)]
    [InlineData("0::/docker/abc (deleted)\n", null)]
    [InlineData("0::docker/abc\n", null)]
    [InlineData("0::/\n", "/sys/fs/cgroup")]
    [InlineData("12:memory:/x\n", null)]
    [InlineData("", null)]
    public void TheUnifiedDirOfAProcessIsItsZeroLineUnderTheMount(string text, string? dir) =>
        Assert.Equal(dir, CgroupLayout.UnifiedDirOf(text));

    [Theory]
    // Through a mount whose root is a cgroup below the v2 root (a runtime in a container that bound its own cgroup there).
    [InlineData("0::/docker/c1/abc/init", "/docker/c1", "/sys/fs/cgroup/abc/init")]
    [InlineData("0::/docker/c1", "/docker/c1", "/sys/fs/cgroup")]
    [InlineData("0::/docker/c10/abc", "/docker/c1", null)] // a sibling that only shares the name's start
    [InlineData("0::/docker/other", "/docker/c1", null)]
    public void TheUnifiedDirOfAProcessIsSeenThroughTheMountsRoot(string text, string root, string? dir) =>
        Assert.Equal(dir, CgroupLayout.UnifiedDirOf(text, "/sys/fs/cgroup", root));

    [Theory]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c", "")]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c/init", "init")]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c/a/b", "a,b")]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c2/init", null)] // string-prefix only: not below
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c/../x", null)]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c/./init", null)]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup/c//init", null)]
    [InlineData("/sys/fs/cgroup/c", "/sys/fs/cgroup", null)]
    [InlineData("/sys/fs/cgroup/c", "c/init", null)]
    public void NamesBelowTheTopAreOnlyThoseOfItsOwnSubtree(string top, string dir, string? names) =>
        Assert.Equal(names, CgroupLayout.NamesBelow(top, dir) is { } n ? string.Join(',', n) : null);

    [Fact]
    public void TheUnifiedMountOfADirIsTheLongestCgroup2MountHoldingIt()
    {
        var mounts = CgroupLayout.ParseMountInfo("""
            31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
            41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
            42 31 0:38 /docker/c1 /sys/fs/cgroup/unified/inner rw - cgroup2 cgroup2 rw
            """);
        Assert.Equal("/sys/fs/cgroup/unified", CgroupLayout.UnifiedMountOf("/sys/fs/cgroup/unified/docker/x", mounts)?.MountPoint);
        Assert.Equal("/docker/c1", CgroupLayout.UnifiedMountOf("/sys/fs/cgroup/unified/inner/x", mounts)?.Root);
        Assert.Null(CgroupLayout.UnifiedMountOf("/sys/fs/cgroup/unifiedx/x", mounts));
        Assert.Null(CgroupLayout.UnifiedMountOf("/sys/fs/cgroup/memory/x", mounts));
    }
}
