// The cgroupfs driver's public face. A manager is just the container's directories (controller -> dir,
// or "" -> dir on v2) so it can be rebuilt from the container state by later CLI calls (FromPaths); all
// layout knowledge lives in CgroupLayout (pure, testable) and all file access in CgroupFs. The systemd
// driver and v2 device filtering (eBPF) are deliberately not implemented.
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Cgroups;

public enum CgroupVersion { V1, V2 }

public sealed class CgroupManager
{
    readonly Dictionary<string, string> _paths;
    List<V1Hierarchy>? _hierarchies;   // v1 only; read lazily from /proc/self/mountinfo when rebuilt from paths

    public CgroupVersion Version { get; }
    public IReadOnlyDictionary<string, string> Paths => _paths;

    CgroupManager(CgroupVersion version, Dictionary<string, string> paths, List<V1Hierarchy>? hierarchies)
    {
        Version = version;
        _paths = paths;
        _hierarchies = hierarchies;
    }

    public static CgroupManager ForContainer(string containerId, string? cgroupsPath)
    {
        string mountInfo = File.ReadAllText("/proc/self/mountinfo");
        var (version, paths) = CgroupLayout.Resolve(containerId, cgroupsPath, mountInfo, File.ReadAllText("/proc/self/cgroup"));
        var hierarchies = version == CgroupVersion.V1 ? CgroupLayout.V1Hierarchies(CgroupLayout.ParseMountInfo(mountInfo)) : null;
        return new CgroupManager(version, paths, hierarchies);
    }

    public static CgroupManager FromPaths(IReadOnlyDictionary<string, string> paths)
    {
        if (paths.Count == 0) throw new CgroupException("cgroup: no cgroup paths saved for this container");
        var version = paths.Count == 1 && paths.ContainsKey("") ? CgroupVersion.V2 : CgroupVersion.V1;
        return new CgroupManager(version, new Dictionary<string, string>(paths), null);
    }

    /// <summary>Each container directory once (co-mounted controllers share one), in a stable order.</summary>
    IEnumerable<string> Dirs => _paths.Values.Distinct();

    List<V1Hierarchy> Hierarchies => _hierarchies ??=
        CgroupLayout.V1Hierarchies(CgroupLayout.ParseMountInfo(File.ReadAllText("/proc/self/mountinfo")));

    public void Create()
    {
        if (Version == CgroupVersion.V2) { CreateV2(_paths[""]); return; }
        foreach (var dir in Dirs)
        {
            string top = CgroupLayout.HierarchyOf(dir, Hierarchies)?.MountPoint
                ?? throw new CgroupException($"cgroup: {dir} is not inside a mounted cgroup hierarchy");
            MakeChain(top, dir, (parent, child) =>
            {
                // A new v1 cpuset cgroup starts with empty cpus/mems and cannot take tasks: inherit the parent's.
                foreach (var f in new[] { "cpuset.cpus", "cpuset.mems" })
                    if (CgroupFs.Exists(child, f) && CgroupFs.Read(child, f).Length == 0)
                        CgroupFs.Write(child, f, CgroupFs.Read(parent, f));
            });
        }
    }

    static void CreateV2(string dir)
    {
        MakeChain(CgroupLayout.CgroupRoot, dir, (parent, _) =>
        {
            // Delegate every controller the parent has to its children; one at a time so that one refusal
            // (e.g. a controller busy in a threaded subtree) does not block the rest. Apply reports what is missing.
            foreach (var c in CgroupFs.Read(parent, "cgroup.controllers").Split(' ', StringSplitOptions.RemoveEmptyEntries))
                CgroupFs.TryWrite(Path.Combine(parent, "cgroup.subtree_control"), "+" + c);
        });
    }

    /// <summary>mkdir each level below top, calling onLevel(parent, child) top-down.</summary>
    static void MakeChain(string top, string dir, Action<string, string> onLevel)
    {
        string current = top;
        foreach (var part in dir[top.Length..].Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            string next = current + "/" + part;
            try { Directory.CreateDirectory(next); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new CgroupException($"cgroup: mkdir {next}: {e.Message}"); }
            onLevel(current, next);
            current = next;
        }
    }

    public void Apply(Resources? r)
    {
        if (r is null) return;
        if (Version == CgroupVersion.V2) V2Resources.Apply(_paths[""], r);
        else V1Resources.Apply(_paths, r);
    }

    public void AddProcess(int pid)
    {
        foreach (var dir in Dirs) CgroupFs.Write(dir, "cgroup.procs", pid.ToString());
    }

    /// <summary>
    /// The container's processes. v1: from a hierarchy the emulation helper does not join (it joins the memory
    /// one only, see HelperCgroup), so that neither `ps` nor `kill --all` sees it; memory only as the last resort.
    /// </summary>
    public IReadOnlyList<int> Pids()
    {
        string dir = Version == CgroupVersion.V2 ? _paths[""]
            : new[] { "pids", "freezer", "devices", "cpu", "cpuacct", "blkio", "cpuset" }.Select(_paths.GetValueOrDefault)
                .FirstOrDefault(d => d is not null && d != _paths.GetValueOrDefault("memory"))
              ?? _paths.GetValueOrDefault("memory") ?? Dirs.First();
        return CgroupFs.ReadPids(dir);
    }

    public void KillAll(int signal)
    {
        // Freeze first (best effort) so nothing can fork between reading cgroup.procs and signalling;
        // the signals are delivered when the cgroup is thawed.
        bool frozen = SetFrozen(true);
        try
        {
            foreach (int pid in Pids())
                if (Libc.kill(pid, signal) == -1 && Libc.Errno != Libc.ESRCH)
                    throw new CgroupException($"cgroup: kill {pid} with signal {signal}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        }
        finally { if (frozen) SetFrozen(false); }
    }

    bool SetFrozen(bool freeze)
    {
        string? dir, file, value;
        if (Version == CgroupVersion.V2) (dir, file, value) = (_paths[""], "cgroup.freeze", freeze ? "1" : "0");
        else (dir, file, value) = (_paths.GetValueOrDefault("freezer"), "freezer.state", freeze ? "FROZEN" : "THAWED");
        if (dir is null || !CgroupFs.Exists(dir, file)) return false;
        if (CgroupFs.TryWrite(Path.Combine(dir, file), value) != 0) return false;
        if (!freeze) return true;
        // Wait (briefly) until the freeze has taken effect; v1 passes through FREEZING.
        var deadline = DateTime.UtcNow.AddSeconds(1);
        while (DateTime.UtcNow < deadline)
        {
            bool done = Version == CgroupVersion.V2
                ? CgroupFs.Read(dir, "cgroup.events").Split('\n').Contains("frozen 1")
                : CgroupFs.Read(dir, "freezer.state") == "FROZEN";
            if (done) return true;
            Thread.Sleep(5);
        }
        return true;   // partially frozen is still worth thawing afterwards
    }

    public void Destroy(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        foreach (var dir in Dirs)
        {
            // Sub-cgroups the container made (e.g. with its own cgroup namespace) go first, deepest first.
            string[] children;
            try { children = Directory.GetDirectories(dir, "*", SearchOption.AllDirectories); }
            catch (DirectoryNotFoundException) { continue; }
            foreach (var d in children.OrderByDescending(c => c.Length).Append(dir))
                RemoveDir(d, deadline);
        }
    }

    static void RemoveDir(string dir, DateTime deadline)
    {
        bool killed = false;
        while (true)
        {
            int err = CgroupFs.Rmdir(dir);
            if (err == 0 || err == Libc.ENOENT) return;
            // EBUSY: processes are still exiting (or a child appeared); retry until the deadline.
            if (err != Libc.EBUSY || DateTime.UtcNow >= deadline)
                throw new CgroupException($"cgroup: rmdir {dir}: {CgroupFs.ErrText(err)}", err);
            // Whoever is still in a cgroup being destroyed goes too: the container's processes are dead by
            // now, so this is the emulation helper charged to the memory cgroup (HelperCgroup), which would
            // otherwise live until its supervisor is stopped, after this.
            if (!killed)
            {
                foreach (int pid in CgroupFs.ReadPids(dir)) Libc.kill(pid, 9);
                killed = true;
            }
            Thread.Sleep(10);
        }
    }

    public IReadOnlyList<(string MountName, string HostDir)> V1MountSources()
    {
        if (Version == CgroupVersion.V2)
            throw new CgroupException("cgroup: V1MountSources is only meaningful on cgroup v1");
        var result = new List<(string, string)>();
        foreach (var dir in Dirs)
            if (CgroupLayout.HierarchyOf(dir, Hierarchies) is { } h)
                result.Add((h.MountName, dir));
        return result;
    }
}
