// A container's cgroup, whichever driver and version made it: one manager interface with three
// implementations chosen once, when the container is created (and again from its state by later commands):
//
//   CgroupV1Manager      cgroupfs driver, v1 (or hybrid) hosts: one directory per controller hierarchy
//   CgroupV2Manager      cgroupfs driver, v2 hosts: one unified directory; device rules as an eBPF program
//   SystemdCgroupManager systemd driver on v2: a transient scope made through systemd's D-Bus API, with
//                        Delegate=yes and the resource properties systemd understands; the files and the
//                        device program are then written as on v2, in the scope's directory
//
// Layout knowledge (which directories) lives in CgroupLayout and SystemdLayout (pure, testable), file access
// in CgroupFs, freezing in Freezer, reading usage in CgroupStats: the managers only put them together.
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Cgroups;

public enum CgroupDriver { Cgroupfs, Systemd }

public abstract class CgroupManager
{
    protected CgroupManager(CgroupPaths paths) => Paths = paths;

    public CgroupPaths Paths { get; }
    public CgroupVersion Version => Paths.Version;
    public virtual CgroupDriver Driver => CgroupDriver.Cgroupfs;
    /// <summary>The systemd unit (the systemd driver), else null.</summary>
    public virtual string? Unit => null;

    /// <summary>The container's cgroup as `create` makes it: the driver asked (--systemd-cgroup), the spec's cgroupsPath.</summary>
    public static CgroupManager ForContainer(string containerId, string? cgroupsPath, bool systemd)
    {
        string mountInfo = File.ReadAllText("/proc/self/mountinfo");
        string procSelf = File.ReadAllText("/proc/self/cgroup");
        var mounts = CgroupLayout.ParseMountInfo(mountInfo);
        bool unified = CgroupLayout.IsUnified(mounts);
        // The driver is what the engine asked for, never guessed from the path's shape: without
        // --systemd-cgroup, a "slice:prefix:name" path is refused by CgroupLayout, naming the flag.
        if (systemd)
        {
            var unit = SystemdLayout.Parse(cgroupsPath, containerId);
            if (unified) return new SystemdCgroupManager(CgroupPaths.V2(SystemdLayout.UnifiedDir(unit)), unit);
            // v1: systemd's layout of directories, made by the cgroupfs driver (see SystemdLayout).
            return new CgroupV1Manager(CgroupPaths.V1(SystemdLayout.V1Dirs(unit, CgroupLayout.V1Hierarchies(mounts),
                CgroupLayout.HybridUnifiedMount(mounts)?.MountPoint)));
        }
        var paths = CgroupLayout.Resolve(containerId, cgroupsPath, mountInfo, procSelf);
        return paths.IsV2 ? new CgroupV2Manager(paths) : new CgroupV1Manager(paths);
    }

    /// <summary>The manager of an existing container, from what its state recorded.</summary>
    public static CgroupManager Of(IReadOnlyDictionary<string, string>? paths, string? driver = null, string? unit = null)
    {
        var p = CgroupPaths.Require(paths);
        if (driver == nameof(CgroupDriver.Systemd) && unit is { Length: > 0 } && p.IsV2)
            return new SystemdCgroupManager(p, SystemdLayout.Parse(unit), started: true);
        return p.IsV2 ? new CgroupV2Manager(p) : new CgroupV1Manager(p);
    }

    /// <summary>Makes the cgroup (the systemd driver makes its scope with the first process).</summary>
    public abstract void Create();

    /// <summary>Puts a process into the cgroup.</summary>
    public virtual void AddProcess(int pid)
    {
        foreach (var dir in Paths.Dirs) CgroupFs.Write(dir, "cgroup.procs", pid.ToString());
    }

    /// <summary>
    /// Makes the cgroup the container's to manage, as systemd's Delegate=yes defines it: the container's root (its
    /// host uid and gid) owns the directory (it may make and remove children there) and the files a delegatee
    /// writes to move processes and hand controllers down (<see cref="DelegatedFiles"/>), never the limit files of
    /// its top: it builds children whose limits the kernel keeps within the top's, and cannot raise its own.
    /// Children it makes are its own (cgroupfs gives a new directory and its files to the fsuid that made it).
    /// </summary>
    public void Delegate(uint uid, uint gid)
    {
        // Not a hybrid host's cgroup2 directory: the container is not shown that hierarchy (its /sys/fs/cgroup holds the v1
        // ones), and a delegatee there could move the host-root processes `exec` places in it into a child it freezes.
        foreach (var dir in Paths.Dirs)
            if (dir != Paths.HybridUnifiedDir) DelegateDir(dir, uid, gid);
    }

    /// <summary>Gives one directory and its <see cref="DelegatedFiles"/> (those it has) to uid:gid.</summary>
    void DelegateDir(string dir, uint uid, uint gid)
    {
        foreach (var f in DelegatedFiles.Prepend("."))
        {
            string path = f == "." ? dir : Path.Combine(dir, f);
            if (Libc.chown(path, uid, gid) != 0 && !(f != "." && Libc.Errno == Libc.ENOENT))
                throw new CgroupException($"cgroup: delegate {path} to {uid}:{gid}: chown: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        }
    }

    /// <summary>
    /// Puts a process `exec` starts where runc puts it: into the container's cgroup, or on v2, when that is no leaf
    /// any more (systemd or an inner engine handed controllers down from it, and the kernel's no-internal-process rule
    /// refuses a process there: EBUSY), into the cgroup its init is in, if that is the container's or below it.
    /// The init's cgroup is the kernel's word, read through the init's own /proc directory once its start time matched
    /// there (a pid reused by another process is never asked), but the container chose it (it moves its init where it
    /// likes): it is used only when it names a cgroup below the container's top by plain names, and the write follows
    /// those names from an fd of the top (CgroupFs.WriteBelow), so the process lands inside the container's subtree or
    /// nowhere. It is host root until it joins the container: runc places it the same way.
    /// </summary>
    public void AddExecProcess(int pid, int initPid, ulong initStartTime)
    {
        if (!Paths.IsV2)
        {
            AddProcess(pid);
            return;
        }
        string top = Paths.Unified!;
        int err = CgroupFs.TryWrite(Path.Combine(top, "cgroup.procs"), pid.ToString());
        if (err == 0) return;
        if (err != Libc.EBUSY && err != Libc.EOPNOTSUPP)
            throw new CgroupException($"cgroup: write {pid} to {Path.Combine(top, "cgroup.procs")}: {CgroupFs.ErrText(err)}", err);
        JoinInitsCgroup(pid, initPid, initStartTime, err);
    }

    /// <summary>v2: puts pid into the init's cgroup, as <see cref="AddExecProcess"/> does once the top refused it (errno <paramref name="refused"/>).</summary>
    internal void JoinInitsCgroup(int pid, int initPid, ulong initStartTime, int refused)
    {
        int err = refused;
        string top = Paths.Unified ?? throw new CgroupException("cgroup: the init's cgroup is joined on cgroup v2 only");
        string? initDir = InitDirOf(top, initPid, initStartTime);
        if (initDir is null || CgroupLayout.NamesBelow(top, initDir) is not { } names)
            throw new CgroupException($"cgroup: write {pid} to {Path.Combine(top, "cgroup.procs")}: {CgroupFs.ErrText(err)}, " +
                $"and the init's cgroup ({initDir ?? "unknown"}) is not inside the container's", err);
        int err2 = CgroupFs.WriteBelow(top, names, "cgroup.procs", pid.ToString());
        if (err2 != 0)
            throw new CgroupException($"cgroup: write {pid} to {Path.Combine(initDir, "cgroup.procs")} (the init's cgroup, as " +
                $"{Path.Combine(top, "cgroup.procs")} refused it: {CgroupFs.ErrText(err)}): {CgroupFs.ErrText(err2)}", err2);
    }

    /// <summary>
    /// The v2 directory the container's init is in, as the host names it (through the cgroup2 mount that holds top), or
    /// null when the pid is not the init any more or its cgroup is none this mount can name (CgroupLayout.UnifiedDirOf).
    /// </summary>
    static string? InitDirOf(string top, int initPid, ulong initStartTime)
    {
        if (CgroupLayout.UnifiedMountOf(top, CgroupLayout.ParseMountInfo(File.ReadAllText("/proc/self/mountinfo"))) is not { } mount)
            return null;
        return ProcOf(initPid, initStartTime, "cgroup") is { } text ? CgroupLayout.UnifiedDirOf(text, mount.MountPoint, mount.Root) : null;
    }

    /// <summary>
    /// A file of /proc/PID, read through one fd of that directory after the start time read through the same fd matched:
    /// the fd stays the process it was opened for (once it is gone, reads through it fail), so a pid reused meanwhile is never
    /// read. Null when the pid is gone or is another process.
    /// </summary>
    internal static string? ProcOf(int pid, ulong startTime, string file)
    {
        if (pid <= 0) return null;
        int dir = Libc.open($"/proc/{pid}", Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (dir == -1) return null;
        try
        {
            if (ReadAt(dir, "stat") is not { } stat) return null;
            int close = stat.LastIndexOf(')');
            var fields = close < 0 || close + 2 > stat.Length ? [] : stat[(close + 2)..].Split(' ');
            if (fields.Length < 20 || !ulong.TryParse(fields[19], out ulong started) || started != startTime) return null;
            return ReadAt(dir, file);
        }
        finally { Libc.close(dir); }
    }

    /// <summary>A small /proc file (at most 64 KiB are read) at dirFd, or null.</summary>
    static string? ReadAt(int dirFd, string name)
    {
        int fd = Libc.openat(dirFd, name, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd == -1) return null;
        try
        {
            using var stream = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: false), FileAccess.Read, 1, isAsync: false);
            var buffer = new byte[64 * 1024];
            int total = 0, n;
            while (total < buffer.Length && (n = stream.Read(buffer, total, buffer.Length - total)) > 0) total += n;
            return System.Text.Encoding.UTF8.GetString(buffer, 0, total);
        }
        catch (IOException) { return null; }
        finally { Libc.close(fd); }
    }

    /// <summary>The child an engine's system container runs its init in on v2 (docker's own dind script uses the same name).</summary>
    public const string InitLeafName = "init";

    /// <summary>
    /// v2, an engine's system container (Policy/SystemContainerPolicy; not an init, which does this itself as systemd
    /// does with init.scope): makes the child its init will run in, owned like the top (<see cref="Delegate"/>). The
    /// kernel lets a cgroup hand controllers down only while no process is in it, so an inner dockerd started as PID 1
    /// could never give its containers a memory or pids limit while it sat in the container's top.
    /// </summary>
    public void MakeInitLeaf(uint uid, uint gid)
    {
        string leaf = Path.Combine(Paths.Unified ?? throw new CgroupException("cgroup: an init leaf is for cgroup v2 only"), InitLeafName);
        try { Directory.CreateDirectory(leaf); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new CgroupException($"cgroup: mkdir {leaf}: {e.Message}"); }
        DelegateDir(leaf, uid, gid);
    }

    /// <summary>
    /// At start, with the init still waiting on the exec fifo: moves it into the leaf <see cref="MakeInitLeaf"/> made
    /// and hands every controller of the top down to its children. Done at start, not create, because an engine's shim
    /// reads the init's cgroup right after create and watches it (usage, OOM kills): the top, which counts the
    /// inner containers too. Its cgroup namespace stays rooted at the top (the init made it there at create).
    /// </summary>
    public void MoveInitToLeaf(string leafName, int initPid, ulong initStartTime)
    {
        string top = Paths.Unified ?? throw new CgroupException("cgroup: an init leaf is for cgroup v2 only");
        string leaf = Path.Combine(top, leafName);
        // Only the container's init, which create left in the top: never a process that took a dead init's pid (it is read
        // through the init's own /proc directory, see ProcOf). If it is gone, start says so when it reads the fifo.
        if (InitDirOf(top, initPid, initStartTime) != top) return;
        int err = CgroupFs.WriteBelow(top, [leafName], "cgroup.procs", initPid.ToString());
        if (err == Libc.ESRCH) return; // it died: start says so when it reads the fifo
        if (err != 0)
            throw new CgroupException($"cgroup: write {initPid} to {Path.Combine(leaf, "cgroup.procs")}: {CgroupFs.ErrText(err)}", err);
        CgroupV2Manager.EnableControllersOf(top);
    }

    /// <summary>The files of the top a delegatee owns besides the directory (v1: cgroup.procs and tasks; v2: cgroup.procs,
    /// cgroup.threads and cgroup.subtree_control), as systemd's Delegate=yes.</summary>
    public IReadOnlyList<string> DelegatedFiles => DelegatedFilesOf(Version);

    public static IReadOnlyList<string> DelegatedFilesOf(CgroupVersion version) => version == CgroupVersion.V2
        ? ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
        : ["cgroup.procs", "tasks"];

    /// <summary>Sets the resources (create and update alike).</summary>
    public abstract void Apply(Resources? r);

    /// <summary>The container's processes (not a helper's: see HelperCgroup).</summary>
    public abstract IReadOnlyList<int> Pids();

    public bool IsFrozen() => Freezer.IsFrozen(Paths);
    public void Freeze(TimeSpan timeout) => Freezer.Freeze(Paths, timeout);
    public void Thaw() => Freezer.Thaw(Paths);

    public void KillAll(int signal)
    {
        // Freeze first (best effort) so nothing can fork between reading cgroup.procs and signalling;
        // the signals are delivered when the cgroup is thawed.
        bool frozen = Freezer.TryFreeze(Paths);
        try
        {
            foreach (int pid in Pids())
                if (Libc.kill(pid, signal) == -1 && Libc.Errno != Libc.ESRCH)
                    throw new CgroupException($"cgroup: kill {pid} with signal {signal}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        }
        finally
        {
            // A SIGKILL must reach processes in a cgroup the container froze below its top (v1: a delegatee owns its
            // children's freezer.state, and thawing the top leaves them frozen, its SIGKILL pending for ever: the init
            // never exits, `docker rm -f` fails). Every one already has its SIGKILL, so none runs again once thawed.
            if (signal == 9) Freezer.ThawBelow(Paths);
            if (frozen) Freezer.TryThaw(Paths);
        }
    }

    /// <summary>The processes of a cgroup directory and of every cgroup below it (a container may make any child: none is skipped by name
    /// or by depth, see CgroupTree).</summary>
    protected static List<int> AllPids(string dir) => CgroupTree.Pids(dir);

    /// <summary>Removes the cgroup: sub-cgroups the container made first, deepest first (and any process left in them).</summary>
    public virtual void Destroy(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        // Nothing below may stay frozen (v1): its processes could not die, and no cgroup above it could be removed.
        Freezer.ThawBelow(Paths);
        foreach (var dir in Paths.Dirs)
        {
            CgroupTree.Walk(dir, null, (parentFd, name, fd) => RemoveDir($"{name} below {dir}", deadline,
                () => DirTree.RemoveDirAt(parentFd, name), () => CgroupTree.ReadPids(fd)));
            RemoveDir(dir, deadline, () => CgroupFs.Rmdir(dir), () => CgroupFs.ReadPids(dir));
        }
    }

    static void RemoveDir(string shown, DateTime deadline, Func<int> rmdir, Func<List<int>> pids)
    {
        bool killed = false;
        while (true)
        {
            int err = rmdir();
            if (err == 0 || err == Libc.ENOENT) return;
            // EBUSY: processes are still exiting, or one is left that nobody killed (a helper the container
            // cannot see, in a child cgroup): kill what is there once, then retry until the deadline.
            if (err != Libc.EBUSY || DateTime.UtcNow >= deadline)
                throw new CgroupException($"cgroup: rmdir {shown}: {CgroupFs.ErrText(err)}", err);
            if (!killed)
            {
                foreach (int pid in pids()) Libc.kill(pid, 9);
                killed = true;
            }
            Thread.Sleep(10);
        }
    }

    /// <summary>mkdir each level below top, calling onLevel(parent, child) top-down.</summary>
    protected static void MakeChain(string top, string dir, Action<string, string> onLevel)
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
}

/// <summary>cgroupfs on v1 (and the v1 side of a hybrid host).</summary>
public sealed class CgroupV1Manager(CgroupPaths paths) : CgroupManager(paths)
{
    List<V1Hierarchy>? _hierarchies;
    List<V1Hierarchy> Hierarchies => _hierarchies ??=
        CgroupLayout.V1Hierarchies(CgroupLayout.ParseMountInfo(File.ReadAllText("/proc/self/mountinfo")));

    public override void Create()
    {
        foreach (var dir in Paths.Dirs)
        {
            if (dir == Paths.HybridUnifiedDir)
            {
                // Hybrid: the container's directory in the cgroup2 hierarchy (no controller to set up on the way).
                string unified = CgroupLayout.HybridUnifiedMount(CgroupLayout.ParseMountInfo(File.ReadAllText("/proc/self/mountinfo")))?.MountPoint
                    ?? throw new CgroupException($"cgroup: {dir} is not inside a mounted cgroup2 hierarchy");
                if (!dir.StartsWith(unified + "/", StringComparison.Ordinal))
                    throw new CgroupException($"cgroup: {dir} is not inside the cgroup2 hierarchy mounted at {unified}");
                MakeChain(unified, dir, (_, _) => { });
                continue;
            }
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

    public override void Apply(Resources? r)
    {
        if (r is not null) V1Resources.Apply(Paths.Map, r);
    }

    /// <summary>
    /// From a hierarchy the emulation helper never joins (it joins the memory one only, see HelperCgroup):
    /// pids, else freezer, devices, cpu..., memory only as the last resort.
    /// </summary>
    public override IReadOnlyList<int> Pids()
    {
        string dir = new[] { "pids", "freezer", "devices", "cpu", "cpuacct", "blkio", "memory" }
            .Select(Paths.Of).FirstOrDefault(d => d is not null) ?? Paths.Dirs.First();
        return AllPids(dir);
    }

    /// <summary>The directories to bind into a container without a cgroup namespace: (hierarchy name, container dir).</summary>
    public IReadOnlyList<(string MountName, string HostDir)> MountSources()
    {
        var result = new List<(string, string)>();
        foreach (var dir in Paths.Dirs)
            if (CgroupLayout.HierarchyOf(dir, Hierarchies) is { } h)
                result.Add((h.MountName, dir));
        return result;
    }
}

/// <summary>cgroupfs on a v2 (unified) host.</summary>
public class CgroupV2Manager(CgroupPaths paths) : CgroupManager(paths)
{
    protected string Dir => Paths.Unified!;

    public override void Create()
    {
        MakeChain(CgroupLayout.CgroupRoot, Dir, (parent, _) => EnableControllers(parent));
    }

    /// <summary>
    /// Delegates every controller the parent has to its children; one at a time so that one refusal (e.g.
    /// a controller busy in a threaded subtree) does not block the rest. Apply reports what is missing.
    /// </summary>
    protected static void EnableControllers(string parent) => EnableControllersOf(parent);

    internal static void EnableControllersOf(string parent)
    {
        foreach (var c in CgroupFs.Read(parent, "cgroup.controllers").Split(' ', StringSplitOptions.RemoveEmptyEntries))
            CgroupFs.TryWrite(Path.Combine(parent, "cgroup.subtree_control"), "+" + c);
    }

    public override void Apply(Resources? r)
    {
        if (r is null) return;
        V2Resources.Apply(Dir, r);
        // The spec's rules, then runc's default allowed devices, as on v1 (without them a spec that starts
        // with "deny all", as `spec` writes it, leaves no /dev/null: seen in the v2 VM, a shell could not
        // start a background job).
        if (r.Devices is { } devices) DeviceFilter.Apply(Dir, [.. devices, .. V1Resources.DefaultAllowedDevices]);
    }

    /// <summary>The container's cgroup and those it made below (an inner runtime's), not the helper's child (see HelperCgroup).</summary>
    public override IReadOnlyList<int> Pids() => AllPids(Dir);
}
