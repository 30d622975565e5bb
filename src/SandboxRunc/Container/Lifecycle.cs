using SandboxRunc.Cgroups;
using SandboxRunc.Hooks;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>
/// start: let a created container's init exec its program (it blocks on the exec fifo until we read it), and
/// fail with its reason when it cannot (see <see cref="ReadExecFifo"/>).
/// </summary>
public static unsafe class StartOperation
{
    public static void Run(StateStore store, string id)
    {
        var r = store.Load(id);
        using var _ = store.Lock(id);
        string status = store.StatusOf(r);
        if (status != ContainerStatus.Created)
            throw new RuntimeException(status == ContainerStatus.Stopped
                ? $"cannot start a container that has stopped: {id}"
                : $"cannot start an already running container: {id}");

        string fifo = store.FifoPath(id);
        int fd = SysException.Check(Libc.open(fifo, Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0), "open", fifo);
        string? failure;
        using (new SafeFd(fd))
        {
            try { failure = ReadExecFifo(fd, r, id); }
            finally { File.Delete(fifo); }
        }
        if (failure is not null)
            throw new RuntimeException($"cannot start container {id}: {failure}");
        try
        {
            HookRunner.Run("poststart", r.Poststart, store.ToOci(r, ContainerStatus.Running));
        }
        catch (HookException e)
        {
            // The OCI spec: a failing poststart hook is a warning; the container keeps running.
            Cli.Log.Warn(e.Message);
        }
    }

    const int MaxReason = 4096;

    /// <summary>
    /// The init holds the fifo's write side open (blocked in open) until we are here; it then writes one byte
    /// and keeps it open until its execve closes it (close-on-exec), so the end of the stream means the
    /// program runs (or ran: /bin/true may be gone already). Text after the byte is why the init could not
    /// exec it: returned, null when there is none. The init must not hold us for ever: if it dies, the
    /// stream ends; before the byte, a dead init is an error.
    /// </summary>
    static string? ReadExecFifo(int fd, ContainerRecord r, string id)
    {
        byte* buffer = stackalloc byte[512];
        var text = new List<byte>();
        bool started = false;
        while (true)
        {
            if (UnixSocket.WaitReadable(fd, 100))
            {
                nint n = Libc.read(fd, buffer, 512);
                if (n > 0)
                {
                    int skip = started ? 0 : 1;
                    started = true;
                    for (int i = skip; i < n && text.Count < MaxReason; i++) text.Add(buffer[i]);
                    continue;
                }
                if (n == 0 && started) break;
                if (n < 0 && Libc.Errno is not (Libc.EAGAIN or Libc.EINTR))
                    throw new SysException("read", "exec fifo", Libc.Errno);
            }
            if (!ProcStat.IsAlive(r.Pid, r.PidStartTime))
            {
                if (!started) throw new RuntimeException($"cannot start container {id}: its init exited before start");
                break;
            }
        }
        return text.Count > 0 ? System.Text.Encoding.UTF8.GetString(text.ToArray()).Trim() : null;
    }
}

public static class KillOperation
{
    public static void Run(StateStore store, string id, int signal, bool all)
    {
        var r = store.Load(id);
        string status = store.StatusOf(r);
        if (status == ContainerStatus.Stopped && !all)
            throw new RuntimeException($"container not running: {id}");
        if (all)
        {
            CgroupManager.FromPaths(r.CgroupPaths).KillAll(signal);
            if (status != ContainerStatus.Stopped) Libc.kill(r.Pid, signal);
            return;
        }
        SysException.Check(Libc.kill(r.Pid, signal), "kill", $"container {id} (pid {r.Pid})");
    }
}

public static class DeleteOperation
{
    public static void Run(StateStore store, string id, bool force)
    {
        StateStore.ValidateId(id);
        if (!store.Exists(id) && Directory.Exists(store.Dir(id)))
        {
            // A directory without state: a create in progress (it holds the directory's lock until it has
            // saved state.json or undone everything), or one that died (SIGKILL) half-way.
            using (store.Lock(id))
            {
                if (!store.Exists(id))
                {
                    RemoveUnfinishedCreate(store, id);
                    if (force) return;
                    throw new RuntimeException($"container does not exist: {id}");
                }
            }
        }
        if (!store.Exists(id))
        {
            if (force) return;
            throw new RuntimeException($"container does not exist: {id}");
        }
        var r = store.Load(id);
        using (store.Lock(id))
        {
            string status = store.StatusOf(r);
            if (status is ContainerStatus.Running or ContainerStatus.Paused && !force)
                throw new RuntimeException($"cannot delete container {id} that is not stopped: {status}");
            var cgroup = CgroupManager.FromPaths(r.CgroupPaths);
            if (status != ContainerStatus.Stopped)
            {
                if (status == ContainerStatus.Paused) Cli.Log.Debug("killing a paused container");
                Libc.kill(r.Pid, 9);
                cgroup.KillAll(9);
                WaitStopped(r);
            }
            else
            {
                // Leftover processes of a stopped container (its init exited, children did not).
                cgroup.KillAll(9);
            }
            try { cgroup.Destroy(TimeSpan.FromSeconds(5)); }
            catch (Exception e) { Cli.Log.Warn($"delete {id}: cgroup: {e.Message}"); }
            Supervisor.Stop(store, id);
            Rootfs.IdmappedStaging.Remove(r.StagingDir);
            try
            {
                HookRunner.Run("poststop", r.Poststop, store.ToOci(r, ContainerStatus.Stopped));
            }
            catch (HookException e)
            {
                Cli.Log.Warn(e.Message);
            }
        }
        string stateDir = store.Dir(id);
        store.RemoveDir(id);
        if (r.IdRange is not null)
            new Policy.IdRangeAllocator(Policy.IdPoolConfig.FromEnvironment()).Release(stateDir);
    }

    /// <summary>
    /// Undoes what a create that died before saving state may have made, in the order create made it:
    /// the ID range (held through the state dir), the cgroup it noted (and any process already in it:
    /// the init), the ID-mapped staging dir (its name comes from the state dir), then the dir itself.
    /// </summary>
    static void RemoveUnfinishedCreate(StateStore store, string id)
    {
        string stateDir = store.Dir(id);
        var cgroupPaths = store.CreatingCgroups(id);
        if (cgroupPaths.Count > 0)
        {
            var cgroup = CgroupManager.FromPaths(cgroupPaths);
            try
            {
                cgroup.KillAll(9);
                cgroup.Destroy(TimeSpan.FromSeconds(5));
            }
            catch (Exception e) { Cli.Log.Warn($"delete {id}: cgroup of an unfinished create: {e.Message}"); }
        }
        Supervisor.Stop(store, id);
        Rootfs.IdmappedStaging.Remove(Path.Combine(Rootfs.IdmappedStaging.StagingRoot, CreateOperation.StagingKey(store, id)));
        store.RemoveDir(id);
        new Policy.IdRangeAllocator(Policy.IdPoolConfig.FromEnvironment()).Release(Path.GetFullPath(stateDir));
    }

    static void WaitStopped(ContainerRecord r)
    {
        for (int i = 0; i < 1000 && ProcStat.IsAlive(r.Pid, r.PidStartTime); i++)
            Thread.Sleep(5);
    }
}
