using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

/// <summary>The systemd driver's names and directories, and its unit properties (pure: no systemd needed).</summary>
public class SystemdLayoutTests
{
    [Theory]
    [InlineData("system.slice:docker:abc", "system.slice", "docker-abc.scope", "/sys/fs/cgroup/system.slice/docker-abc.scope")]
    [InlineData(":docker:abc", "system.slice", "docker-abc.scope", "/sys/fs/cgroup/system.slice/docker-abc.scope")]
    [InlineData("system.slice::abc", "system.slice", "abc.scope", "/sys/fs/cgroup/system.slice/abc.scope")]
    [InlineData("kubepods-burstable-pod12.slice:cri-containerd:abc", "kubepods-burstable-pod12.slice", "cri-containerd-abc.scope",
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope")]
    [InlineData("machine.slice:x:own.slice", "machine.slice", "own.slice", "/sys/fs/cgroup/machine.slice/own.slice")]
    [InlineData("-.slice:p:abc", "-.slice", "p-abc.scope", "/sys/fs/cgroup/p-abc.scope")]
    public void CgroupsPathToUnitAndDirectory(string cgroupsPath, string slice, string name, string dir)
    {
        var unit = SystemdLayout.Parse(cgroupsPath, "ignored");
        Assert.Equal(new SystemdUnit(slice, name), unit);
        Assert.Equal(dir, SystemdLayout.UnifiedDir(unit));
        Assert.Equal(unit, SystemdLayout.Parse(unit.ToString()));
    }

    [Fact] public void NoCgroupsPathIsAScopeOfOursInSystemSlice() =>
        Assert.Equal(new SystemdUnit("system.slice", "sandbox-runc-c1.scope"), SystemdLayout.Parse(null, "c1"));

    [Theory]
    [InlineData("system:docker:abc")]        // a slice must end in .slice
    [InlineData("a/b.slice:docker:abc")]
    [InlineData("system.slice:docker:")]
    [InlineData("a--b.slice:p:n")]
    public void BadNamesAreRefused(string cgroupsPath) =>
        Assert.Throws<CgroupException>(() => SystemdLayout.UnifiedDir(SystemdLayout.Parse(cgroupsPath, "c")));

    [Theory]
    [InlineData("/docker/abc", false)]
    [InlineData("abc", false)]
    [InlineData("system.slice:docker:abc", true)]
    public void OnlySliceColonPrefixColonNameIsSystemdsForm(string path, bool systemd) => Assert.Equal(systemd, SystemdLayout.IsSystemdPath(path));

    [Fact]
    public void CpuListsBecomeByteMasks()
    {
        Assert.Equal([0b0000_1111], SystemdCgroupManager.CpuMask("0-3"));
        Assert.Equal([0b0010_0001, 0b0000_0001], SystemdCgroupManager.CpuMask("0,5,8"));
        Assert.Throws<CgroupException>(() => SystemdCgroupManager.CpuMask("3-1"));
    }

    [Fact]
    public void ResourcesBecomeSystemdProperties()
    {
        var r = new Resources
        {
            Memory = new MemoryResources { Limit = 256L << 20, Swap = 512L << 20 },
            Cpu = new CpuResources { Shares = 1024, Quota = 50_000, Period = 100_000, Cpus = "0-1" },
            Pids = new PidsResources { Limit = 100 },
        };
        var props = SystemdCgroupManager.Properties(r).ToDictionary(p => p.Name, p => p.Value.ToString(includeTypeSuffix: false));
        Assert.Equal((256L << 20).ToString(), props["MemoryMax"]);
        Assert.Equal((256L << 20).ToString(), props["MemorySwapMax"]);   // swap alone: memory+swap minus memory
        Assert.Equal("100", props["CPUWeight"]);
        Assert.Equal("500000", props["CPUQuotaPerSecUSec"]);             // half a CPU
        Assert.Equal("100000", props["CPUQuotaPeriodUSec"]);
        Assert.Equal("100", props["TasksMax"]);
        Assert.Contains("AllowedCPUs", props.Keys);
        Assert.Equal(ulong.MaxValue.ToString(),
            SystemdCgroupManager.Properties(new Resources { Pids = new PidsResources { Limit = -1 } }).Single().Value.ToString(includeTypeSuffix: false));
    }
}
