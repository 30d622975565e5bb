// The v2 init leaf and exec's fallback to the init's cgroup (CgroupManager.MoveInitToLeaf, AddExecProcess), from the
// attacker's side: the container owns its top (it makes children, moves its processes, removes what it made), and the
// init's /proc/PID/cgroup is where the container put its init. What must hold: the runtime writes a pid only into a cgroup
// below the container's top, reached name by name from an fd of the top (never by a path the container can redirect),
// and reads the init's cgroup only while the pid is the init.
//
// The first part runs anywhere (a tmpdir stands in for cgroupfs: what WriteBelow refuses is decided before the kernel's
// cgroup rules matter). The second runs on the host's cgroup2 hierarchy, the unified mount of a hybrid host included
// (a fresh cgroup under its root, removed at the end); the v2 VM runs the rest with real controllers.
using System.Diagnostics;
using SandboxRunc.Cgroups;
using SandboxRunc.Container;
using SandboxRunc.Interop;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Cgroups;

public sealed class InitLeafContainmentTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("sbx-initleaf-").FullName;
    readonly List<Process> _children = [];
    readonly List<string> _cgroups = [];

    public void Dispose()
    {
        foreach (var p in _children)
        {
            try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch { }
            p.Dispose();
        }
        // Deepest first; any process left is in a child we made, and was killed above.
        foreach (var dir in _cgroups.OrderByDescending(d => d.Length))
            try { Directory.Delete(dir); } catch { }
        Directory.Delete(_tmp, recursive: true);
    }

    [Fact]
    public void WriteBelow_WritesOnlyBelowTheTop_NeverThroughASymlinkOrDotDot()
    {
        string top = Path.Combine(_tmp, "top"), outside = Path.Combine(_tmp, "outside");
        Directory.CreateDirectory(Path.Combine(top, "a", "b"));
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(top, "a", "b", "cgroup.procs"), "");
        File.WriteAllText(Path.Combine(outside, "cgroup.procs"), "");
        // What a container would do if cgroupfs let it: a child that is a symlink out, a file that is one.
        File.CreateSymbolicLink(Path.Combine(top, "link"), outside);
        Directory.CreateDirectory(Path.Combine(top, "c"));
        File.CreateSymbolicLink(Path.Combine(top, "c", "cgroup.procs"), Path.Combine(outside, "cgroup.procs"));

        Assert.Equal(0, CgroupFs.WriteBelow(top, ["a", "b"], "cgroup.procs", "42"));
        Assert.Equal("42", File.ReadAllText(Path.Combine(top, "a", "b", "cgroup.procs")));

        Assert.NotEqual(0, CgroupFs.WriteBelow(top, ["link"], "cgroup.procs", "43"));
        Assert.NotEqual(0, CgroupFs.WriteBelow(top, ["c"], "cgroup.procs", "44"));
        Assert.Equal(Libc.EINVAL, CgroupFs.WriteBelow(top, [".."], "outside/cgroup.procs", "45"));
        Assert.Equal(Libc.EINVAL, CgroupFs.WriteBelow(top, ["..", "outside"], "cgroup.procs", "46"));
        Assert.Equal(Libc.EINVAL, CgroupFs.WriteBelow(top, ["a/../../outside"], "cgroup.procs", "47"));
        Assert.Equal(Libc.EINVAL, CgroupFs.WriteBelow(top, [""], "cgroup.procs", "48"));
        Assert.Equal("", File.ReadAllText(Path.Combine(outside, "cgroup.procs")));
        // A child removed meanwhile: the errno, nothing written elsewhere.
        Assert.Equal(Libc.ENOENT, CgroupFs.WriteBelow(top, ["gone"], "cgroup.procs", "49"));
    }

    [Fact]
    public void ProcOf_ReadsAProcessOnlyWhileItIsTheOneWhoseStartTimeWasRecorded()
    {
        var p = Process.Start(new ProcessStartInfo("sleep", "1000"))!;
        _children.Add(p);
        ulong started = ProcStat.StartTime(p.Id);
        Assert.NotEqual(0UL, started);
        Assert.Contains("0::", CgroupManager.ProcOf(p.Id, started, "cgroup"));
        Assert.Null(CgroupManager.ProcOf(p.Id, started + 1, "cgroup"));
        p.Kill();
        p.WaitForExit(5000);
        Assert.Null(CgroupManager.ProcOf(p.Id, started, "cgroup"));
        Assert.Null(CgroupManager.ProcOf(0, 0, "cgroup"));
    }

    // ---- on the host's cgroup2 hierarchy ----

    /// <summary>A v2 manager for a fresh cgroup at the root of the host's cgroup2 mount (made here: CgroupV2Manager.Create
    /// assumes /sys/fs/cgroup, which a hybrid host's unified mount is not).</summary>
    (CgroupManager Manager, string Top) NewTop()
    {
        string mount = HostCgroups.UnifiedMount()!;
        string parent = Path.Combine(mount, "sandbox-runc-initleaf-" + Guid.NewGuid().ToString("N")[..12]);
        string top = Path.Combine(parent, "top");
        Directory.CreateDirectory(top);
        _cgroups.Add(parent);
        _cgroups.Add(top);
        _cgroups.Add(Path.Combine(top, CgroupManager.InitLeafName));
        return (CgroupManager.Of(new Dictionary<string, string> { [""] = top }), top);
    }

    (int Pid, ulong Start) Sleeper(string cgroup)
    {
        var p = Process.Start(new ProcessStartInfo("sleep", "1000"))!;
        _children.Add(p);
        File.WriteAllText(Path.Combine(cgroup, "cgroup.procs"), p.Id.ToString());
        return (p.Id, ProcStat.StartTime(p.Id));
    }

    static string CgroupOf(int pid) => File.ReadLines($"/proc/{pid}/cgroup").Single(l => l.StartsWith("0::", StringComparison.Ordinal))[3..];

    static string Rel(string dir) => dir[HostCgroups.UnifiedMount()!.TrimEnd('/').Length..];

    [Cgroup2RootFact]
    public void MoveInitToLeaf_MovesTheInitOnlyWhileItIsTheRecordedOneInTheTop()
    {
        var (m, top) = NewTop();
        m.MakeInitLeaf(0, 0);
        string leaf = Path.Combine(top, CgroupManager.InitLeafName);
        Assert.True(Directory.Exists(leaf));

        var (pid, start) = Sleeper(top);
        // Another process's start time (a pid reused): not moved.
        m.MoveInitToLeaf(CgroupManager.InitLeafName, pid, start + 1);
        Assert.Equal(Rel(top), CgroupOf(pid));
        m.MoveInitToLeaf(CgroupManager.InitLeafName, pid, start);
        Assert.Equal(Rel(leaf), CgroupOf(pid));
        // Not in the top any more (the container moved it, or the pid is another process's): left alone.
        m.MoveInitToLeaf(CgroupManager.InitLeafName, pid, start);
        Assert.Equal(Rel(leaf), CgroupOf(pid));
    }

    [Cgroup2RootFact]
    public void MoveInitToLeaf_WhenTheLeafIsGone_FailsNamingIt()
    {
        var (m, top) = NewTop();
        var (pid, start) = Sleeper(top);
        var e = Assert.Throws<CgroupException>(() => m.MoveInitToLeaf(CgroupManager.InitLeafName, pid, start));
        Assert.Contains(Path.Combine(top, CgroupManager.InitLeafName, "cgroup.procs"), e.Message);
        Assert.Equal(Rel(top), CgroupOf(pid));
    }

    [Cgroup2RootFact]
    public void ExecFallback_JoinsTheInitsCgroupOnlyInsideTheContainersSubtree()
    {
        var (m, top) = NewTop();
        string deep = Path.Combine(top, "a", "b");
        Directory.CreateDirectory(deep);
        _cgroups.Add(Path.Combine(top, "a"));
        _cgroups.Add(deep);
        var (init, start) = Sleeper(deep);
        var (exec, _) = Sleeper(top);

        m.JoinInitsCgroup(exec, init, start, Libc.EBUSY);
        Assert.Equal(Rel(deep), CgroupOf(exec));

        // The init moved outside the subtree (a sibling whose name starts like the top's: a string prefix would let it through).
        string sibling = top + "x";
        Directory.CreateDirectory(sibling);
        _cgroups.Add(sibling);
        File.WriteAllText(Path.Combine(sibling, "cgroup.procs"), init.ToString());
        var e = Assert.Throws<CgroupException>(() => m.JoinInitsCgroup(exec, init, start, Libc.EBUSY));
        Assert.Contains("is not inside the container's", e.Message);
        Assert.Equal(Rel(deep), CgroupOf(exec));

        // A pid that is not the init any more (another start time): refused, not joined.
        File.WriteAllText(Path.Combine(top, "cgroup.procs"), init.ToString());
        Assert.Throws<CgroupException>(() => m.JoinInitsCgroup(exec, init, start + 1, Libc.EBUSY));
        Assert.Equal(Rel(deep), CgroupOf(exec));
    }
}

/// <summary>Root and a cgroup2 mount (v2, or a hybrid host's unified one): skipped with the reason otherwise.</summary>
public sealed class Cgroup2RootFactAttribute : FactAttribute
{
    public Cgroup2RootFactAttribute()
    {
        if (Environment.UserName != "root") Skip = "needs root: makes cgroups";
        else if (HostCgroups.UnifiedMount() is null) Skip = "needs a cgroup2 mount (v2, or a hybrid host's /sys/fs/cgroup/unified)";
    }
}
