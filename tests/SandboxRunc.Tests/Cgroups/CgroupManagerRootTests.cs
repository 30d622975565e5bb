// Tests against the real cgroupfs of the machine (v1 here and in CI, but written to also pass on v2).
// Each test uses its own "/sandbox-runc-test/<guid>" cgroup, and Dispose kills and removes it even when
// the test failed, so a broken run never leaves cgroups or sleeping processes behind.
using System.Diagnostics;
using Process = System.Diagnostics.Process;
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using SandboxRunc.Tests.Integration;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

[Trait("Category", "Root")]
public sealed class CgroupManagerRootTests : IDisposable
{
    const string Parent = "/sandbox-runc-test";
    readonly string _name = Guid.NewGuid().ToString("N");
    readonly List<CgroupManager> _made = new();
    readonly List<Process> _children = new();

    string CgPath => $"{Parent}/{_name}";

    CgroupManager NewCgroup()
    {
        var m = CgroupManager.ForContainer(_name, CgPath, systemd: false);
        _made.Add(m);
        m.Create();
        return m;
    }

    public void Dispose()
    {
        foreach (var p in _children)
        {
            try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch { }
            p.Dispose();
        }
        foreach (var m in _made)
        {
            try { m.KillAll(9); } catch { }
            try { m.Destroy(TimeSpan.FromSeconds(5)); } catch { }
            // The shared parent goes too once empty (another test may still use it: then rmdir just fails).
            foreach (var dir in m.Paths.Dirs.Distinct())
                try { Directory.Delete(Path.GetDirectoryName(dir)!); } catch { }
        }
    }

    static Resources Limits() => new()
    {
        Memory = new MemoryResources { Limit = 64L << 20 },
        Pids = new PidsResources { Limit = 50 },
        Cpu = new CpuResources { Quota = 50000, Period = 100000, Cpus = "0", Mems = "0" },
    };

    static string Read(string dir, string file) => File.ReadAllText(Path.Combine(dir, file)).Trim();

    [RootFact]
    public void AppliedLimitsReadBack()
    {
        var m = NewCgroup();
        m.Apply(Limits());
        if (m.Version == CgroupVersion.V1)
        {
            Assert.Equal((64L << 20).ToString(), Read(m.Paths["memory"], "memory.limit_in_bytes"));
            Assert.Equal("50", Read(m.Paths["pids"], "pids.max"));
            Assert.Equal("50000", Read(m.Paths["cpu"], "cpu.cfs_quota_us"));
            Assert.Equal("100000", Read(m.Paths["cpu"], "cpu.cfs_period_us"));
            Assert.Equal("0", Read(m.Paths["cpuset"], "cpuset.cpus"));
        }
        else
        {
            string d = m.Paths[""];
            Assert.Equal((64L << 20).ToString(), Read(d, "memory.max"));
            Assert.Equal("50", Read(d, "pids.max"));
            Assert.Equal("50000 100000", Read(d, "cpu.max"));
            Assert.Equal("0", Read(d, "cpuset.cpus"));
        }
        Assert.All(m.Paths.Dirs, d => Assert.EndsWith(CgPath, d));
    }

    [RootFact]
    public void ProcessJoinsIsListedAndIsKilled()
    {
        var m = NewCgroup();
        m.Apply(Limits());
        var p = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false })!;
        _children.Add(p);
        m.AddProcess(p.Id);

        Assert.Contains(p.Id, m.Pids());
        Assert.Contains(p.Id, CgroupManager.Of(m.Paths.Map).Pids());
        string self = File.ReadAllText($"/proc/{p.Id}/cgroup");
        Assert.Contains(":" + CgPath + "\n", self);

        m.KillAll(9);
        Assert.True(p.WaitForExit(Patience.Condition), "sleep survived KillAll(9)");
        m.Destroy(Patience.Condition);
        Assert.All(m.Paths.Dirs, d => Assert.False(Directory.Exists(d), d + " still exists"));
    }

    [RootFact]
    public void RefusedValueNamesFileAndValue()
    {
        var m = NewCgroup();
        var e = Assert.Throws<CgroupException>(() => m.Apply(new Resources { Cpu = new CpuResources { Cpus = "999" } }));
        Assert.Contains("cpuset.cpus", e.Message);
        Assert.Contains("999", e.Message);
        Assert.StartsWith("cgroup: write 999 to /sys/fs/cgroup/", e.Message);
    }

    [RootFact]
    public void DestroyOfMissingCgroupIsFine()
    {
        var m = CgroupManager.ForContainer(_name, CgPath, systemd: false);
        m.Destroy(TimeSpan.FromSeconds(1));
        var made = NewCgroup();
        made.Destroy(TimeSpan.FromSeconds(1));
        made.Destroy(TimeSpan.FromSeconds(1));
    }

    [RootFact]
    public void DockerDefaultDeviceRulesApply()
    {
        var m = NewCgroup();
        // The shape Docker 20.10 sends: deny everything, then allow a fixed set.
        var rules = new List<DeviceCgroup> { new() { Allow = false, Access = "rwm" } };
        foreach (var (t, maj, min, acc) in new (string, long?, long?, string)[]
                 {
                     ("c", null, null, "m"), ("b", null, null, "m"), ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
                     ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"),
                     ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 136, -1, "rwm"), ("c", 10, 200, "rwm"),
                 })
            rules.Add(new DeviceCgroup { Allow = true, Type = t, Major = maj, Minor = min, Access = acc });
        rules.Add(new DeviceCgroup { Allow = false, Type = "c", Major = 10, Minor = 229, Access = "rwm" });
        m.Apply(new Resources { Devices = rules });

        if (m.Version == CgroupVersion.V2) return;   // v2 device rules need eBPF and are ignored (documented)
        var list = File.ReadAllLines(Path.Combine(m.Paths["devices"], "devices.list"));
        Assert.DoesNotContain("a *:* rwm", list);
        Assert.Contains("c 1:3 rwm", list);
        Assert.Contains("c 136:* rwm", list);
        Assert.Contains("b *:* m", list);
        Assert.DoesNotContain(list, l => l.StartsWith("c 10:229"));
    }

    /// <summary>
    /// A hybrid host: the container's process is in a directory of its own in the cgroup2 hierarchy too (so the cgroup
    /// namespace it unshares is rooted there, not at the host's v2 root), which delegation leaves to host root, the
    /// container is not shown (no bind of it), and Destroy removes.
    /// </summary>
    [HybridRootFact]
    public async Task HybridUnifiedDirectoryIsJoinedNotDelegatedNotMountedAndRemoved()
    {
        var m = NewCgroup();
        string unified = m.Paths.HybridUnifiedDir!;
        Assert.Equal(Path.Combine(HostCgroups.UnifiedMount()!, CgPath.TrimStart('/')), unified);
        var p = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false })!;
        _children.Add(p);
        m.AddProcess(p.Id);
        Assert.Contains("0::" + CgPath + "\n", File.ReadAllText($"/proc/{p.Id}/cgroup"));

        m.Delegate(123456, 123456);
        Assert.Equal("0:0", await UserNs.Owner(unified));
        Assert.Equal("0:0", await UserNs.Owner(Path.Combine(unified, "cgroup.procs")));
        Assert.Equal("123456:123456", await UserNs.Owner(m.Paths["memory"]));
        Assert.DoesNotContain(Assert.IsType<CgroupV1Manager>(m).MountSources(), s => s.HostDir == unified);
        Assert.Equal(unified, CgroupManager.Of(m.Paths.Map).Paths.HybridUnifiedDir);

        m.KillAll(9);
        Assert.True(p.WaitForExit(Patience.Condition), "sleep survived KillAll(9)");
        m.Destroy(Patience.Condition);
        Assert.False(Directory.Exists(unified), unified + " still exists");
    }

    [RootFact]
    public void V1MountSourcesNameEachHierarchyOnce()
    {
        var m = NewCgroup();
        if (m.Version == CgroupVersion.V2)
        {
            Assert.IsNotType<CgroupV1Manager>(m); // v2: no per-hierarchy binds, cgroup2 is mounted instead
            return;
        }
        var sources = Assert.IsType<CgroupV1Manager>(m).MountSources();
        Assert.Equal(sources.Count, sources.Select(s => s.MountName).Distinct().Count());
        Assert.Contains(sources, s => s.MountName.Split(',').Contains("memory") && s.HostDir == m.Paths["memory"]);
        Assert.Equal(sources, Assert.IsType<CgroupV1Manager>(CgroupManager.Of(m.Paths.Map)).MountSources());
        Assert.All(sources, s => Assert.True(Directory.Exists(s.HostDir)));
    }
    [RootFact]
    public void MemoryAndSwapCanBeRaisedAndLowered()
    {
        var m = NewCgroup();
        string Limit() => m.Version == CgroupVersion.V1
            ? Read(m.Paths["memory"], "memory.limit_in_bytes") : Read(m.Paths[""], "memory.max");
        foreach (long mib in new long[] { 64, 256, 32 })
        {
            // swap is memory+swap: the kernel rejects memsw < limit, so the write order matters both ways.
            m.Apply(new Resources { Memory = new MemoryResources { Limit = mib << 20, Swap = 2 * mib << 20 } });
            Assert.Equal((mib << 20).ToString(), Limit());
            if (m.Version == CgroupVersion.V1 && File.Exists(Path.Combine(m.Paths["memory"], "memory.memsw.limit_in_bytes")))
                Assert.Equal((2 * mib << 20).ToString(), Read(m.Paths["memory"], "memory.memsw.limit_in_bytes"));
        }
    }

    [RootFact]
    public void NewCgroupCanTakeAProcessWithoutAnyLimits()
    {
        // On v1 a fresh cpuset cgroup has empty cpus/mems and refuses tasks; Create copies them from the parent.
        var m = NewCgroup();
        if (m.Version == CgroupVersion.V1)
            Assert.Equal(Read("/sys/fs/cgroup/cpuset", "cpuset.cpus"), Read(m.Paths["cpuset"], "cpuset.cpus"));
        var p = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false })!;
        _children.Add(p);
        m.AddProcess(p.Id);
        Assert.Equal(new[] { p.Id }, m.Pids());
    }
}

/// <summary>Root on a hybrid host (v1 hierarchies and a cgroup2 mount below /sys/fs/cgroup): skipped with the reason otherwise.</summary>
public sealed class HybridRootFactAttribute : FactAttribute
{
    public HybridRootFactAttribute()
    {
        if (Environment.UserName != "root") Skip = "needs root: makes cgroups";
        else if (HostCgroups.V2 || HostCgroups.UnifiedMount() is null)
            Skip = "needs a hybrid host (v1 hierarchies and cgroup2 at /sys/fs/cgroup/unified): a v2 host joins its one hierarchy, a pure v1 host has none";
    }
}
