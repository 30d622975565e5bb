// Where a per-container helper that runs as host root outside the container (the emulation server) is
// charged for memory: in the container's own memory cgroup, so that what a container makes it allocate
// counts against that container's limit and hurts nobody else.
//
//   v1: the container's memory cgroup, and only that hierarchy: the helper does not appear in the
//       container's pids, freezer, cpu or devices cgroups (not in `ps`, not frozen by `pause`, not
//       counted by pids.max, not signalled by `kill --all`).
//   v2: one hierarchy, and a cgroup with processes may not have children with controllers, so the helper
//       goes into a child of the container's cgroup, <container>/sandbox-runc-helper, with no controller
//       enabled: its memory is then charged to the nearest ancestor that has the controller, the
//       container's cgroup. Unavoidably on v2 its tasks also count in the container's pids.current and it
//       is frozen with it (harmless: a frozen container sends no requests); `ps` reads the container's own
//       cgroup.procs, which does not list a child's processes. Destroy removes the child (deepest first).
//       Because of that count, the helper stays out of a container that has a pids limit (pids.max other
//       than "max" when the container's first process is there): its dozen threads would take that many
//       of the container's pids, and a small limit (docker --pids-limit 5) would leave the container none
//       to start with. Such a container's helper is bounded by its own caps only (heap limit, bounded
//       tables); a pids limit set later by `update` does count the helper's threads.
//
// Moving a process does not move what it has charged already (v1: memory.move_charge_at_immigrate is off
// by default; v2 never does): only growth after the move is charged, so a container with a tiny limit
// (docker allows 6 MB) does not pay for the helper's start-up.
using SandboxRunc.Interop;

namespace SandboxRunc.Cgroups;

public static class HelperCgroup
{
    public const string V2ChildName = "sandbox-runc-helper";

    /// <summary>The cgroup directory a helper joins, from the container's cgroup paths (controller -> dir, v2: "" -> dir),
    /// and whether it is a child to make; null when the container has no memory cgroup to join.</summary>
    public static (string Dir, bool Make)? Target(CgroupPaths cgroupPaths)
    {
        if (cgroupPaths.Unified is { Length: > 0 } unified) return (unified.TrimEnd('/') + "/" + V2ChildName, true);
        if (cgroupPaths.Of("memory") is { Length: > 0 } memory) return (memory, false);
        return null;
    }

    /// <summary>Moves process <paramref name="pid"/> (all its threads) there; returns 0 or the errno (ENOENT: nothing to
    /// join; EAGAIN: v2 and the container has a pids limit, which the helper's threads would count against).</summary>
    /// <param name="wait">how long the container's own cgroup may take to appear and get its first process: with
    /// the systemd driver systemd makes it when the init's first stage is placed, which may come after the
    /// helper started, and writes the limits before it moves that process in. The helper never makes it (a
    /// directory made before systemd's would not be the unit's).</param>
    public static int Join(CgroupPaths cgroupPaths, int pid, TimeSpan wait = default)
    {
        if (Target(cgroupPaths) is not { } target) return Libc.ENOENT;
        string container = Path.GetDirectoryName(target.Dir)!;
        var deadline = DateTime.UtcNow + wait;
        while (target.Make && !Populated(container) && DateTime.UtcNow < deadline) Thread.Sleep(20);
        if (target.Make)
        {
            if (!Directory.Exists(container)) return Libc.ENOENT;
            if (HasPidsLimit(container)) return Libc.EAGAIN;
            // Only the leaf: never the container's cgroup itself (see wait).
            if (Libc.mkdir(target.Dir, 0x1ed /* 0755 */) != 0 && Libc.Errno != Libc.EEXIST) return Libc.Errno;
        }
        return CgroupFs.TryWrite(Path.Combine(target.Dir, "cgroup.procs"), pid.ToString());
    }

    /// <summary>v2: the cgroup holds a process (cgroup.events "populated 1"); its limits are written by then, whichever driver made it.</summary>
    static bool Populated(string dir)
    {
        try { return File.ReadAllText(Path.Combine(dir, "cgroup.events")).Contains("populated 1", StringComparison.Ordinal); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>v2: pids.max is a number (no file: no pids controller, no limit).</summary>
    internal static bool HasPidsLimit(string dir)
    {
        try { return File.ReadAllText(Path.Combine(dir, "pids.max")).Trim() is { Length: > 0 } v && v != "max"; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }
}
