// /proc files of the emulation from fixture host text and fixture cgroup files (v1 and v2), without root.
using System.Text;
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using Xunit;

namespace SandboxRunc.Tests.Emulation;

public class EmulationProcFileTests : IDisposable
{
    readonly EmulationFixture _fx = new();
    static readonly FuseCaller Anyone = new(0, 65534, 65534);

    public void Dispose() => _fx.Dispose();

    static string Read(ContainerFileSystem fs, string path)
    {
        Assert.Equal(0, fs.Read(path, Anyone, out var bytes));
        return Encoding.ASCII.GetString(bytes);
    }

    static ulong Kb(string meminfo, string name)
    {
        foreach (var line in meminfo.Split('\n'))
            if (line.StartsWith(name + ":"))
                return ulong.Parse(line[(name.Length + 1)..].Trim().Split(' ')[0]);
        throw new Xunit.Sdk.XunitException($"{name} missing in:\n{meminfo}");
    }

    [Fact]
    public void MeminfoV1_TotalIsTheLimit_FreeFromUsage_SwapFromMemsw()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["memory"] = new()
            {
                ["memory.limit_in_bytes"] = "268435456\n",
                ["memory.usage_in_bytes"] = "104857600\n",        // 100 MiB
                ["memory.memsw.limit_in_bytes"] = "402653184\n",  // 384 MiB = 128 MiB swap
                ["memory.memsw.usage_in_bytes"] = "115343360\n",  // 10 MiB swapped
                ["memory.stat"] = "total_cache 41943040\ntotal_rss 62914560\ntotal_active_file 20971520\ntotal_inactive_file 10485760\ntotal_shmem 0\n",
            },
        }));
        string m = Read(fs, "proc/meminfo");
        Assert.Equal(262144UL, Kb(m, "MemTotal"));
        Assert.Equal(262144UL - 102400, Kb(m, "MemFree"));
        Assert.Equal(262144UL - 102400 + 30720, Kb(m, "MemAvailable"));
        Assert.Equal(40960UL, Kb(m, "Cached"));
        Assert.Equal(131072UL, Kb(m, "SwapTotal"));
        Assert.Equal(131072UL - 10240, Kb(m, "SwapFree"));
        Assert.Equal(0UL, Kb(m, "SReclaimable"));
        Assert.Contains("MemTotal:         262144 kB\n", m);   // the kernel's column layout
        Assert.Contains("Hugepagesize:       2048 kB\n", m);   // host lines kept
    }

    [Fact]
    public void MeminfoV1_UnlimitedIsTheHost_NoSwapAccountingIsNoSwap()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["memory"] = new() { ["memory.limit_in_bytes"] = "9223372036854771712\n", ["memory.usage_in_bytes"] = "0\n" },
        }));
        string m = Read(fs, "proc/meminfo");
        Assert.Equal(24684092UL, Kb(m, "MemTotal"));
        Assert.Equal(0UL, Kb(m, "SwapTotal"));
    }

    [Fact]
    public void MeminfoV2_MemoryMaxAndSwapMax()
    {
        var fs = _fx.Fs(_fx.V2(new()
        {
            ["memory.max"] = "268435456\n", ["memory.current"] = "52428800\n",
            ["memory.swap.max"] = "max\n", ["memory.swap.current"] = "1048576\n",
            ["memory.stat"] = "anon 10485760\nfile 41943040\nactive_file 20971520\ninactive_file 20971520\nslab_reclaimable 1048576\nslab_unreclaimable 2097152\n",
        }));
        string m = Read(fs, "proc/meminfo");
        Assert.Equal(262144UL, Kb(m, "MemTotal"));
        Assert.Equal(262144UL - 51200, Kb(m, "MemFree"));
        Assert.Equal(1048572UL, Kb(m, "SwapTotal"));        // swap.max unlimited: the host's
        Assert.Equal(1048572UL - 1024, Kb(m, "SwapFree"));
        Assert.Equal(1024UL, Kb(m, "SReclaimable"));
    }

    [Fact]
    public void CpuinfoV1_CpusetZeroIsOneProcessor()
    {
        var fs = _fx.Fs(_fx.V1(new() { ["cpuset"] = new() { ["cpuset.effective_cpus"] = "0\n" } }));
        string c = Read(fs, "proc/cpuinfo");
        Assert.Single(c.Split('\n'), l => l.StartsWith("processor"));
        Assert.Contains("processor\t: 0\n", c);
        Assert.Contains("siblings\t: 1\n", c);
    }

    [Fact]
    public void CpuinfoV1_CpusetOneIsRenumberedToZero()
    {
        var fs = _fx.Fs(_fx.V1(new() { ["cpuset"] = new() { ["cpuset.effective_cpus"] = "1\n" } }));
        string c = Read(fs, "proc/cpuinfo");
        Assert.Single(c.Split('\n'), l => l.StartsWith("processor"));
        Assert.Contains("processor\t: 0\n", c);
    }

    [Fact]
    public void CpuinfoV2_QuotaOfOnePeriodIsOneProcessor()
    {
        var fs = _fx.Fs(_fx.V2(new() { ["cpuset.cpus.effective"] = "0-1\n", ["cpu.max"] = "100000 100000\n" }));
        Assert.Single(Read(fs, "proc/cpuinfo").Split('\n'), l => l.StartsWith("processor"));
    }

    [Fact]
    public void CpuinfoV1_QuotaRoundsUp_NoQuotaIsTheCpuset()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["cpuset"] = new() { ["cpuset.effective_cpus"] = "0-1\n" },
            ["cpu"] = new() { ["cpu.cfs_quota_us"] = "150000\n", ["cpu.cfs_period_us"] = "100000\n" },
        }));
        Assert.Equal(2, Read(fs, "proc/cpuinfo").Split('\n').Count(l => l.StartsWith("processor")));
        Assert.Equal(1, ProcText.VisibleCpus([0, 1, 2, 3], [0, 1, 2, 3], 100000, 100000).Length);
        Assert.Equal(4, ProcText.VisibleCpus([0, 1, 2, 3], null, -1, 100000).Length);
        Assert.Equal(new[] { 2, 3 }, ProcText.VisibleCpus([0, 1, 2, 3], CpuList.Parse("2-3,9"), -1, 100000));
    }

    [Fact]
    public void StatV1_OneCpuLinePerVisibleCpu_WithTheContainersTimes()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["cpuset"] = new() { ["cpuset.effective_cpus"] = "1\n" },
            ["cpuacct"] = new()
            {
                ["cpuacct.usage_all"] = "cpu user system\n0 0 0\n1 3000000000 1000000000\n",
                ["cpuacct.stat"] = "user 300\nsystem 100\n",
            },
        }));
        var lines = Read(fs, "proc/stat").Split('\n');
        Assert.Equal(1, lines.Count(l => l.StartsWith("cpu") && char.IsDigit(l[3])));
        // host cpu1 total = 505650+59059+538421+1290+1206+1282 = 1106908 ticks; container 300 user + 100 system
        Assert.Equal("cpu0 300 0 100 1106508 0 0 0 0 0 0", lines.Single(l => l.StartsWith("cpu0")));
        Assert.Equal("cpu  300 0 100 1106508 0 0 0 0 0 0", lines[0]);
        Assert.Contains("btime 1795885589", lines);
        Assert.Contains("ctxt 35356996", lines);
    }

    [Fact]
    public void StatV2_TotalsSpreadOverVisibleCpus()
    {
        var fs = _fx.Fs(_fx.V2(new() { ["cpuset.cpus.effective"] = "0-1\n", ["cpu.stat"] = "usage_usec 5000000\nuser_usec 4000000\nsystem_usec 1000000\n" }));
        var lines = Read(fs, "proc/stat").Split('\n');
        Assert.StartsWith("cpu0 200 0 50 ", lines[1]);
        Assert.StartsWith("cpu1 200 0 50 ", lines[2]);
        Assert.StartsWith("cpu  400 0 100 ", lines[0]);
    }

    [Fact]
    public void Uptime_CountsFromTheContainersStart_AndIsMonotonic()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["cpuset"] = new() { ["cpuset.effective_cpus"] = "0-1\n" },
            ["cpuacct"] = new() { ["cpuacct.usage"] = "1500000000\n" },
        }));
        _fx.Now = 1_000_000_000_000 + 12_345_678_901;   // 12.345 s after the start
        Assert.Equal("12.34 23.19\n", Read(fs, "proc/uptime"));    // idle = 2 x 12.345 - 1.5
        var (up1, idle1) = ParseUptime(Read(fs, "proc/uptime"));
        _fx.Now += 10_000_000;
        var (up2, idle2) = ParseUptime(Read(fs, "proc/uptime"));
        Assert.True(up2 > up1);
        Assert.True(idle2 >= idle1);
        Assert.Equal("0.00 0.00\n", Encoding.ASCII.GetString(ProcText.Uptime(-5, -5)));
        Assert.Equal("3600.05 7200.10\n", Encoding.ASCII.GetString(ProcText.Uptime(3600_059_999_999, 7200_100_000_000)));
    }

    static (double, double) ParseUptime(string s)
    {
        var f = s.Trim().Split(' ');
        return (double.Parse(f[0], System.Globalization.CultureInfo.InvariantCulture), double.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Swaps_IsTheHeaderOnly()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n", Read(fs, "proc/swaps"));
    }

    [Fact]
    public void Loadavg_HostAverages_TasksFromPids()
    {
        var fs = _fx.Fs(_fx.V1(new() { ["pids"] = new() { ["pids.current"] = "2\n" } }));
        Assert.Equal("0.50 0.25 0.10 2/2 0\n", Read(fs, "proc/loadavg"));
    }

    [Fact]
    public void DiskstatsV1_OnlyDevicesTheContainerUsed()
    {
        var fs = _fx.Fs(_fx.V1(new()
        {
            ["blkio"] = new()
            {
                ["blkio.throttle.io_serviced_recursive"] = "8:0 Read 7\n8:0 Write 3\n8:0 Total 10\n253:0 Read 0\nTotal 10\n",
                ["blkio.throttle.io_service_bytes_recursive"] = "8:0 Read 4096\n8:0 Write 1024\nTotal 5120\n",
            },
        }));
        Assert.Equal("   8       0 sda 7 0 8 0 3 0 2 0 0 0 0 0 0 0 0 0 0\n", Read(fs, "proc/diskstats"));
    }

    [Fact]
    public void DiskstatsV2_FromIoStat()
    {
        var fs = _fx.Fs(_fx.V2(new() { ["io.stat"] = "253:0 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n" }));
        Assert.Equal(" 253       0 dm-0 1 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n", Read(fs, "proc/diskstats"));
    }

    [Fact]
    public void ProductUuid_StablePerContainer_DifferentBetweenContainers()
    {
        var a = _fx.Fs(_fx.V1(new()), "container-a");
        var a2 = _fx.Fs(_fx.V1(new()), "container-a");
        var b = _fx.Fs(_fx.V1(new()), "container-b");
        string ua = Read(a, "sys/devices/virtual/dmi/id/product_uuid");
        Assert.Matches("^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$", ua);
        Assert.Equal(ua, Read(a2, "sys/devices/virtual/dmi/id/product_uuid"));
        Assert.NotEqual(ua, Read(b, "sys/devices/virtual/dmi/id/product_uuid"));
    }

    [Fact]
    public void SysKernel_MirrorsReadOnly_HidesDebugConfigTracingSecurity()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal("1234\n", Read(fs, "sys/kernel/uevent_seqnum"));
        Assert.Equal(0, fs.Lookup("sys/kernel/uevent_seqnum", Anyone, out var node));
        Assert.Equal(0x124u, node.Mode);
        Assert.Equal(100000u, node.Uid);
        Assert.Equal(0, fs.List("sys/kernel", Anyone, out var top));
        Assert.Contains(("debug", FuseNodeKind.Directory), top);
        Assert.Contains(("tracing", FuseNodeKind.Directory), top);
        Assert.Contains(("mm", FuseNodeKind.Directory), top);
        Assert.Equal(0, fs.List("sys/kernel/debug", Anyone, out var debug));
        Assert.Empty(debug);
        Assert.Equal(-2, fs.Read("sys/kernel/debug/secret", Anyone, out _));
        Assert.Equal(-2, fs.Lookup("sys/kernel/debug/secret", Anyone, out _));
        Assert.Equal(-13, fs.Write("sys/kernel/uevent_seqnum", new FuseCaller(1000, 100000, 100000), "1"u8));
        Assert.Equal(-2, fs.Lookup("sys/kernel/../../etc", Anyone, out _));
    }

    [Fact]
    public void EveryNodeIsOwnedByTheContainersRoot()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        foreach (var p in new[] { "", "proc", "proc/uptime", "proc/sys", "proc/sys/kernel", "proc/sys/kernel/panic", "sys/kernel", "sys/devices/virtual/dmi/id/product_uuid" })
        {
            Assert.Equal(0, fs.Lookup(p, Anyone, out var n));
            Assert.Equal((100000u, 100000u), (n.Uid, n.Gid));
        }
    }
}
