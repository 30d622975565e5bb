// Where a per-container helper that runs as host root outside the container (the emulation server, the
// socket proxy) is charged for memory.
//
//   v1: the container's memory cgroup, and only that hierarchy, so that what a container makes it allocate
//       counts against that container's limit and hurts nobody else. The helper does not appear in the
//       container's pids, freezer, cpu or devices cgroups (not in `ps`, not frozen by `pause`, not counted
//       by pids.max, not signalled by `kill --all`).
//   v2: nowhere in the container's tree. One hierarchy holds every controller, so a helper anywhere below
//       the container's cgroup would count its dozen threads in the container's pids.current (docker stats
//       shows PIDs 7 for a lone `sleep`, and `--pids-limit 5` leaves the container nothing), would be frozen
//       with it, and would sit inside the subtree the container is delegated (a `sandbox-runc-helper` child
//       an inner systemd or dockerd sees and trips over). systemd's scopes always carry a TasksMax, so under
//       dockerd's default driver it never joined anyway. The helper stays in the cgroup it was started in
//       (the engine's shim) and is bounded by its own caps (heap limit, bounded tables, tested by the
//       escape suite's bounded-memory test), as on every v2 host.
//
// Moving a process does not move what it has charged already (v1: memory.move_charge_at_immigrate is off
// by default): only growth after the move is charged, so a container with a tiny limit (docker allows 6 MB)
// does not pay for the helper's start-up.
using SandboxRunc.Interop;

namespace SandboxRunc.Cgroups;

public static class HelperCgroup
{
    /// <summary>The cgroup directory a helper joins, from the container's cgroup paths: v1's memory cgroup; null on
    /// v2 (see above) and when the container has no memory cgroup.</summary>
    public static string? Target(CgroupPaths cgroupPaths)
    {
        if (cgroupPaths.Unified is { Length: > 0 }) return null;
        return cgroupPaths.Of("memory") is { Length: > 0 } memory ? memory : null;
    }

    /// <summary>Moves process <paramref name="pid"/> (all its threads) into the container's v1 memory cgroup; returns 0 or
    /// the errno (ENOENT: nothing to join, v2 included).</summary>
    public static int Join(CgroupPaths cgroupPaths, int pid) =>
        Target(cgroupPaths) is { } dir ? CgroupFs.TryWrite(Path.Combine(dir, "cgroup.procs"), pid.ToString()) : Libc.ENOENT;
}
