using SandboxRunc.Cgroups;
using SandboxRunc.Hooks;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>start: let a created container's init exec its program (it blocks on the exec fifo until we read it).</summary>
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
        using var handle = new SafeFd(fd);
        // The init holds the write side open (blocked in open) until we are here; it then writes one byte and execs.
        byte b;
        while (true)
        {
            if (UnixSocket.WaitReadable(fd, 100))
            {
                nint n = Libc.read(fd, &b, 1);
                if (n == 1) break;
                if (n < 0 && Libc.Errno is Libc.EAGAIN or Libc.EINTR) continue;
            }
            if (!ProcStat.IsAlive(r.Pid, r.PidStartTime))
                throw new RuntimeException($"cannot start container {id}: its init exited before start");
        }
        File.Delete(fifo);
        try
        {
            HookRunner.Run("poststart", r.Spec.Hooks?.Poststart, store.ToOci(r, ContainerStatus.Running));
        }
        catch (HookException e)
        {
            // The OCI spec: a failing poststart hook is a warning; the container keeps running.
            Cli.Log.Warn(e.Message);
        }
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
        if (!store.Exists(id))
        {
            StateStore.ValidateId(id);
            // An aborted create can leave a directory without state: clean it up.
            store.RemoveDir(id);
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
            Rootfs.IdmappedStaging.Remove(r.StagingDir);
            try
            {
                HookRunner.Run("poststop", r.Spec.Hooks?.Poststop, store.ToOci(r, ContainerStatus.Stopped));
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

    static void WaitStopped(ContainerRecord r)
    {
        for (int i = 0; i < 1000 && ProcStat.IsAlive(r.Pid, r.PidStartTime); i++)
            Thread.Sleep(5);
    }
}
