// cgroup v2 writes checked against a fake cgroup directory (plain files in a temp dir), since this
// machine's /sys/fs/cgroup is v1: every v2 file is pre-created, as the kernel would, and read back.
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

public sealed class V2ResourcesTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("v2cg").FullName;

    public V2ResourcesTests()
    {
        foreach (var f in new[] { "memory.max", "memory.low", "memory.swap.max", "cpu.max", "cpu.weight", "cpuset.cpus",
                     "cpuset.mems", "pids.max", "io.weight", "io.max", "memory.high" })
            File.WriteAllText(Path.Combine(_dir, f), "");
    }

    public void Dispose() => Directory.Delete(_dir, true);

    string Read(string f) => File.ReadAllText(Path.Combine(_dir, f));

    [Fact]
    public void WritesConvertedValues()
    {
        V2Resources.Apply(_dir, new Resources
        {
            Memory = new MemoryResources { Limit = 64L << 20, Swap = 96L << 20, Reservation = 32L << 20 },
            Cpu = new CpuResources { Shares = 1024, Quota = 50000, Period = 100000, Cpus = "0", Mems = "0" },
            Pids = new PidsResources { Limit = 0 },
            BlockIo = new BlockIo { Weight = 500, ThrottleReadBpsDevice = [new ThrottleDevice { Major = 8, Minor = 0, Rate = 1048576 }] },
            Unified = new() { ["memory.high"] = "50000000" },
        });
        Assert.Equal((64L << 20).ToString(), Read("memory.max"));
        Assert.Equal((32L << 20).ToString(), Read("memory.swap.max"));
        Assert.Equal((32L << 20).ToString(), Read("memory.low"));
        Assert.Equal("50000 100000", Read("cpu.max"));
        Assert.Equal("100", Read("cpu.weight"));
        Assert.Equal("0", Read("cpuset.cpus"));
        Assert.Equal("max", Read("pids.max"));
        Assert.Equal(V2Resources.BlkioToIoWeight(500).ToString(), Read("io.weight"));
        Assert.Equal("8:0 rbps=1048576", Read("io.max"));
        Assert.Equal("50000000", Read("memory.high"));
    }

    [Fact]
    public void UnlimitedQuotaIsMax()
    {
        V2Resources.Apply(_dir, new Resources { Cpu = new CpuResources { Quota = -1, Period = 100000 } });
        Assert.Equal("max 100000", Read("cpu.max"));
    }

    [Theory]
    [InlineData("../etc/passwd")]
    [InlineData("a/b.c")]
    [InlineData("..")]
    public void UnifiedKeysMustBePlainFileNames(string key)
    {
        var e = Assert.Throws<CgroupException>(() => V2Resources.Apply(_dir, new Resources { Unified = new() { [key] = "1" } }));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void MissingFileNamesFileAndValue()
    {
        var e = Assert.Throws<CgroupException>(() =>
            V2Resources.Apply(_dir, new Resources { HugepageLimits = [new HugepageLimit { PageSize = "2MB", Limit = 4096 }] }));
        Assert.Contains(Path.Combine(_dir, "hugetlb.2MB.max"), e.Message);
        Assert.Contains("4096", e.Message);
    }
}
