using SandboxRunc.Cgroups;
using SandboxRunc.Diagnostics;
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
        PhaseTrace.Container(id);
        var r = store.Load(id);
        using var _ = store.Lock(id);
        PhaseTrace.Mark("state loaded");
        string status = store.StatusOf(r);
        if (status != ContainerStatus.Created)
            throw new RuntimeException(status == ContainerStatus.Stopped
                ? $"cannot start a container that has stopped: {id}"
                : $"cannot start an already running container: {id}");

        // An engine's system container on v2: its init leaves the top for its leaf now, still waiting on the fifo.
        if (r.InitLeaf is { } leaf) r.Cgroup().MoveInitToLeaf(leaf, r.Pid, r.PidStartTime);
        string fifo = store.FifoPath(id);
        int fd = SysException.Check(Libc.open(fifo, Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0), "open", fifo);
        string? failure;
        using (new SafeFd(fd))
        {
            try { failure = ReadExecFifo(fd, r, id); }
            finally { File.Delete(fifo); }
        }
        PhaseTrace.Mark("exec fifo read");
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
            r.Cgroup().KillAll(signal);
            if (status != ContainerStatus.Stopped) Libc.kill(r.Pid, signal);
            return;
        }
        SysException.Check(Libc.kill(r.Pid, signal), "kill", $"container {id} (pid {r.Pid})");
        // SIGKILL (docker kill, the end of docker stop): the init exits only once every process of its pid namespace
        // has, and one in a cgroup the container froze below its own (v1) never does until thawed: see KillAll.
        if (signal != 9) return;
        try { r.Cgroup().KillAll(9); }
        catch (CgroupException e) { Cli.Log.Warn($"kill {id}: {e.Message}"); }
    }
}

public static class DeleteOperation
{
    public static void Run(StateStore store, string id, bool force)
    {
        StateStore.ValidateId(id);
        PhaseTrace.Container(id);
        if (!Directory.Exists(store.Dir(id)))
        {
            if (force) return;
            throw new RuntimeException($"container does not exist: {id}");
        }
        // Under the container's lock: a create in progress holds it until it has saved state.json or undone everything.
        using (store.Lock(id))
        {
            if (!store.Exists(id))
            {
                // A directory without state: a create that died (SIGKILL) half-way.
                RemoveWithoutState(store, id);
                if (force) return;
                throw new RuntimeException($"container does not exist: {id}");
            }
            if (store.TryLoad(id, out string? corruption) is not { } r)
            {
                if (!force) throw new RuntimeException($"{corruption}; {StateStore.CorruptHint(id)}");
                Cli.Log.Warn($"{corruption}; removing what can be found without it: the processes in the cgroups noted at create, " +
                             "the supervisor, the staging mounts and the ID range (poststop hooks are not run)");
                RemoveWithoutState(store, id);
                return;
            }
            string status = store.StatusOf(r);
            if (status is ContainerStatus.Running or ContainerStatus.Paused && !force)
                throw new RuntimeException($"cannot delete container {id} that is not stopped: {status}");
            var cgroup = r.Cgroup();
            PhaseTrace.Mark("state loaded");
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
            PhaseTrace.Mark("processes killed");
            try { cgroup.Destroy(TimeSpan.FromSeconds(5)); }
            catch (Exception e) { Cli.Log.Warn($"delete {id}: cgroup: {e.Message}"); }
            PhaseTrace.Mark("cgroup removed");
            Supervisor.Stop(store, id);
            PhaseTrace.Mark("supervisor stopped");
            Rootfs.IdmappedStaging.Remove(r.StagingDir);
            Rootfs.EngineStorage.Remove(CreateOperation.StagingKey(store, id));
            PhaseTrace.Mark("staging removed");
            try
            {
                HookRunner.Run("poststop", r.Poststop, store.ToOci(r, ContainerStatus.Stopped));
            }
            catch (HookException e)
            {
                Cli.Log.Warn(e.Message);
            }
        }
        store.RemoveDir(id);
        ReleaseIds(store, id);
        PhaseTrace.Mark("state dir and ID range released");
    }

    /// <summary>
    /// Undoes what a container whose state.json is missing (a create that died before saving it) or
    /// unreadable may have made, in the order create made it, from what can be found without the state:
    /// the cgroups create noted (and every process in them: the init and its children), the supervisor
    /// (identified by pid, start time and command line), its socket and the ID-mapped staging dir (their
    /// names come from the state dir), the dir itself, and the IDs held through it.
    /// </summary>
    static void RemoveWithoutState(StateStore store, string id)
    {
        var note = store.ReadNote(id);
        if (note is { CgroupPaths.Count: > 0 })
        {
            var cgroup = note.Cgroup()!;
            try
            {
                cgroup.KillAll(9);
                cgroup.Destroy(TimeSpan.FromSeconds(5));
            }
            catch (Exception e) { Cli.Log.Warn($"delete {id}: cgroup: {e.Message}"); }
        }
        else if (File.Exists(Path.Combine(store.Dir(id), StateStore.StateFile)))
            Cli.Log.Warn($"delete {id}: create left no readable note of its cgroups: processes of the container may be left running");
        Supervisor.Stop(store, id);
        Rootfs.IdmappedStaging.Remove(Path.Combine(Rootfs.IdmappedStaging.StagingRoot, CreateOperation.StagingKey(store, id)));
        Rootfs.EngineStorage.Remove(CreateOperation.StagingKey(store, id));
        store.RemoveDir(id);
        ReleaseIds(store, id);
    }

    /// <summary>Frees the IDs held through the state dir; a table that cannot be read is left as it is, with a warning.</summary>
    static void ReleaseIds(StateStore store, string id)
    {
        if (new Policy.IdRangeAllocator(Policy.IdPoolConfig.FromEnvironment()).Release(Path.GetFullPath(store.Dir(id))) is { } warning)
            Cli.Log.Warn($"delete {id}: {warning}");
    }

    static void WaitStopped(ContainerRecord r)
    {
        for (int i = 0; i < 1000 && ProcStat.IsAlive(r.Pid, r.PidStartTime); i++)
            Thread.Sleep(5);
    }
}
