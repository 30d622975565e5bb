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

    /// <summary>Moves process <paramref name="pid"/> (all its threads) there; returns 0 or the errno (ENOENT: nothing to join).</summary>
    public static int Join(CgroupPaths cgroupPaths, int pid)
    {
        if (Target(cgroupPaths) is not { } target) return Libc.ENOENT;
        if (target.Make)
        {
            try { Directory.CreateDirectory(target.Dir); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return Libc.EACCES; }
        }
        return CgroupFs.TryWrite(Path.Combine(target.Dir, "cgroup.procs"), pid.ToString());
    }
}
