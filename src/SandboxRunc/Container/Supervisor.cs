using SandboxRunc.Interop;

namespace SandboxRunc.Container;

/// <summary>
/// One supervisor process per container, started by `create` and outliving it: `sandbox-runc --root R
/// supervise ID`. It lives exactly as long as the container's init (it waits on a pidfd of it) and is
/// where per-container services attach: the seccomp-notify listener and the FUSE server of the
/// syscall-vetting and /proc-emulation work. Today it only keeps watch: `create` records its pid in the
/// state dir (`state` can tell whether it runs; the supervisor itself never writes there, so it cannot
/// race `delete` removing the dir), it exits when the container does, and `delete` stops it if it is
/// still there. Its stdio is /dev/null: the engine's pipes must close when `create` exits.
/// </summary>
public static class Supervisor
{
    public const string PidFileName = "supervisor.pid";

    /// <summary>Starts the supervisor of a freshly created container (from `create`) and records its pid.</summary>
    public static void Start(StateStore store, string id)
    {
        int pid = 0;
        using var devNull = new SafeFd(SysException.Check(Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC, 0), "open", "/dev/null"));
        string self = Environment.ProcessPath ?? throw new RuntimeException("cannot tell the path of the sandbox-runc executable");
        // Started under SCHED_IDLE so that its own start-up never delays the container's. glibc's posix_spawn
        // does not take SCHED_IDLE, but a child inherits the spawning thread's policy: spawn from such a thread.
        Exception? failure = null;
        var spawner = new Thread(() =>
        {
            try
            {
                unsafe
                {
                    int priority = 0;
                    Libc.sched_setscheduler(0, Libc.SCHED_IDLE, &priority); // this thread only
                }
                pid = Spawn.Start(self, ["sandbox-runc", "--root", store.Root, "supervise", id], [],
                    [(0, devNull.Fd), (1, devNull.Fd), (2, devNull.Fd)]);
            }
            catch (Exception e) { failure = e; }
        });
        spawner.Start();
        spawner.Join();
        if (failure is not null) throw failure;
        AtomicFile.Write(Path.Combine(store.Dir(id), PidFileName), pid.ToString());
        // Not waited for here: create returns at once; the engine's subreaper reaps it when it exits.
    }

    /// <summary>The supervisor's own life (`supervise ID`).</summary>
    public static int Run(StateStore store, string id)
    {
        var r = store.Load(id);
        int pidfd = (int)Libc.syscall(Libc.SYS_pidfd_open, r.Pid, 0, 0, 0, 0, 0);
        if (pidfd < 0 || !ProcStat.IsAlive(r.Pid, r.PidStartTime)) return 0; // the container is already gone
        using var watch = new SafeFd(pidfd);
        Libc.setsid();
        unsafe
        {
            int priority = 0;
            Libc.sched_setscheduler(0, Libc.SCHED_OTHER, &priority); // set up: back to a normal share of the CPU
        }
        UnixSocket.WaitReadable(pidfd, -1);
        return 0;
    }

    /// <summary>From `delete`: the supervisor, if it still runs, is stopped with the container.</summary>
    public static void Stop(StateStore store, string id)
    {
        string file = Path.Combine(store.Dir(id), PidFileName);
        if (!File.Exists(file) || !int.TryParse(File.ReadAllText(file).Trim(), out int pid) || pid <= 0) return;
        if (ProcStat.Read(pid) is { } st && st.State is not ('Z' or 'X')
            && File.ReadAllText($"/proc/{pid}/cmdline").Contains("supervise"))
            Libc.kill(pid, 9);
    }

    /// <summary>Whether the container's supervisor is running (for `state`).</summary>
    public static bool IsRunning(StateStore store, string id)
    {
        string file = Path.Combine(store.Dir(id), PidFileName);
        try
        {
            return File.Exists(file) && int.TryParse(File.ReadAllText(file).Trim(), out int pid)
                && ProcStat.Read(pid) is { } st && st.State is not ('Z' or 'X');
        }
        catch (IOException) { return false; }
    }
}
