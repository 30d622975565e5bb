using System.Text.Json;
using SandboxRunc.Interop;

namespace SandboxRunc.Container;

/// <summary>
/// One supervisor process per container: `sandbox-runc --root R supervise ID`, host root, started by
/// `create` before the init (its FUSE server must answer while the init bind-mounts the emulated files)
/// and living exactly as long as the container. It serves
///   - the container's emulated /proc and /sys files (FUSE, see Emulation/ and Fuse/);
///   - the seccomp-notify listeners of the init and of every exec'd process (mount/umount2 vetting, see
///     Seccomp/Notify/).
///
/// Why one process per container rather than one daemon: a container's services die with it and with
/// nothing else (kill -9 of one supervisor affects one container, and fails closed there: the kernel
/// answers trapped syscalls with ENOSYS once the listener closes, emulated files fail with ENOTCONN once
/// the FUSE connection goes); no daemon to install, upgrade or restart; a container cannot slow
/// another's vetting. The cost is one small process each (RSS measured by `./build.sh bench`).
///
/// It is reached on a SOCK_SEQPACKET socket, /run/sandbox-runc/sv/KEY.sock (root only; short, because
/// engine state dirs are too long for a socket path), that `create` binds and hands over as fd 3. One
/// request per connection: a JSON <see cref="SupervisorRequest"/> with at most one fd, answered by a
/// <see cref="SupervisorReply"/>:
///   emulation  (create, once the FUSE fs is mounted)      fd = /dev/fuse connection to serve
///   container  (create, after the init said "ready")       fd = the init's seccomp listener (if vetting)
///   exec       (exec, after its process said "ready")      fd = that process's listener
/// Until "container" it watches `create` (its parent) and exits if create dies; then it watches the
/// init and exits with it. `create` records its pid; the supervisor never writes into the state dir, so
/// it cannot race `delete` removing it.
/// </summary>
public static class Supervisor
{
    public const string PidFileName = "supervisor.pid";
    public const string SocketDir = "/run/sandbox-runc/sv";
    /// <summary>Refused mount/umount2 calls, one JSON object per line, next to the container's state.</summary>
    public const string RefusalLogName = "refusals.log";

    public static string SocketPath(StateStore store, string id) => Path.Combine(SocketDir, CreateOperation.StagingKey(store, id) + ".sock");

    /// <summary>Starts the supervisor of a container being created, records its pid, and returns it.</summary>
    public static int Start(StateStore store, string id)
    {
        Directory.CreateDirectory(SocketDir);
        Libc.chmod(SocketDir, 0x1c0 /* 0700 */);
        string socketPath = SocketPath(store, id);
        using var listening = UnixSocket.ListenSeqPacket(socketPath);
        int pid = SpawnService(["--root", store.Root, "supervise", id], ServiceEnvironment, listening.Fd);
        AtomicFile.Write(Path.Combine(store.Dir(id), PidFileName), pid.ToString());
        File.WriteAllBytes(Path.Combine(store.Dir(id), RefusalLogName), []);
        // Not waited for: the engine's subreaper reaps it when it exits.
        return pid;
    }

    /// <summary>
    /// A long-lived process with little to allocate: a small gen0 budget keeps its resident memory low
    /// (the default budget grows with the cache size and is all touched before the first collection).
    /// </summary>
    internal static readonly string[] ServiceEnvironment = ["DOTNET_GCgen0size=0x80000"];
    const string ParentVariable = "_SANDBOX_RUNC_PARENT_PID";

    /// <summary>
    /// Starts `sandbox-runc ARGS` as a long-lived service of this process (the supervisor of `create`, the
    /// emulation server of the supervisor): stdio /dev/null (an engine's pipes must close when `create`
    /// exits), <paramref name="fd3"/> as its fd 3, and our pid for <see cref="StartedByParent"/>.
    /// </summary>
    internal static int SpawnService(string[] args, IEnumerable<string> env, int fd3)
    {
        using var devNull = new SafeFd(SysException.Check(Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC, 0), "open", "/dev/null"));
        string self = Environment.ProcessPath ?? throw new RuntimeException("cannot tell the path of the sandbox-runc executable");
        return Spawn.Start(self, ["sandbox-runc", .. Cli.Log.Arguments(), .. args], [.. env, $"{ParentVariable}={Environment.ProcessId}"],
            [(0, devNull.Fd), (1, devNull.Fd), (2, devNull.Fd), (3, fd3)]);
    }

    /// <summary>
    /// Whether the process that spawned this service still is its parent: one reparented because its
    /// parent died before it got here has another parent pid, and nobody will ever talk to it.
    /// </summary>
    internal static bool StartedByParent() => Environment.GetEnvironmentVariable(ParentVariable) == Libc.getppid().ToString();

    /// <summary>Sends one request to a container's supervisor and waits for its answer (throws with its error).</summary>
    public static void Send(StateStore store, string id, SupervisorRequest request, int fd = -1)
    {
        string path = SocketPath(store, id);
        SafeFd conn;
        try { conn = UnixSocket.Connect(path, Libc.SOCK_SEQPACKET); }
        catch (SysException e) { throw new RuntimeException($"the supervisor of container {id} is not running ({e.Message})"); }
        using (conn)
        {
            UnixSocket.SendFd(conn.Fd, fd, JsonSerializer.SerializeToUtf8Bytes(request, SupervisorJson.Default.SupervisorRequest));
            if (!UnixSocket.WaitReadable(conn.Fd, 10_000))
                throw new RuntimeException($"the supervisor of container {id} did not answer within 10 s");
            var buffer = new byte[4096];
            int n = UnixSocket.Receive(conn, buffer);
            if (n == 0) throw new RuntimeException($"the supervisor of container {id} exited while handling \"{request.Kind}\"");
            var reply = JsonSerializer.Deserialize(buffer.AsSpan(0, n), SupervisorJson.Default.SupervisorReply);
            if (reply is not { Ok: true }) throw new RuntimeException($"supervisor of container {id}: {reply?.Error ?? "no answer"}");
        }
    }

    /// <summary>The supervisor's own life (`supervise ID`); fd 3 is its listening socket.</summary>
    public static int Run(StateStore store, string id)
    {
        Libc.setsid();
        using var listening = new SafeFd(3);
        Libc.fcntl(3, Libc.F_SETFD, Libc.FD_CLOEXEC);
        using var services = new SupervisorServices(id, store.Dir(id), store.Root);
        // Until the container exists, the one to watch is `create`: if it dies, nobody will ever come.
        if (!StartedByParent()) return 1;
        var watch = PidFd(Libc.getppid());
        if (watch is null) return 1;
        bool containerKnown = false;
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int ready = WaitEither(listening.Fd, watch.Fd);
                if (ready == watch.Fd) return containerKnown ? 0 : 1;
                using var conn = UnixSocket.Accept(listening.Fd);
                if (!UnixSocket.WaitReadable(conn.Fd, 5_000)) continue;
                int n = UnixSocket.ReceiveMessage(conn.Fd, buffer, out var fd);
                SupervisorReply reply;
                try
                {
                    var request = JsonSerializer.Deserialize(buffer.AsSpan(0, n), SupervisorJson.Default.SupervisorRequest)
                        ?? throw new InvalidOperationException("empty request");
                    if (request.Kind == SupervisorRequest.Container)
                    {
                        var initWatch = PidFd(request.Pid) ?? throw new InvalidOperationException($"container init {request.Pid} is gone");
                        watch.Dispose();
                        watch = initWatch;
                        containerKnown = true;
                    }
                    services.Handle(request, fd);
                    fd = null; // services own it now
                    reply = new SupervisorReply { Ok = true };
                }
                catch (Exception e)
                {
                    reply = new SupervisorReply { Ok = false, Error = e.Message };
                }
                finally { fd?.Dispose(); }
                try { UnixSocket.Send(conn, JsonSerializer.SerializeToUtf8Bytes(reply, SupervisorJson.Default.SupervisorReply)); }
                catch (SysException) { /* the requester gave up */ }
            }
        }
        finally { watch.Dispose(); }
    }

    static SafeFd? PidFd(int pid)
    {
        int fd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0, 0, 0, 0);
        return fd < 0 ? null : new SafeFd(fd);
    }

    /// <summary>Blocks until one of two fds is readable; returns it (the second wins a tie: exiting beats serving).</summary>
    static unsafe int WaitEither(int a, int b)
    {
        var fds = stackalloc Libc.PollFd[2];
        fds[0] = new Libc.PollFd { Fd = a, Events = Libc.POLLIN };
        fds[1] = new Libc.PollFd { Fd = b, Events = Libc.POLLIN };
        while (true)
        {
            int r = Libc.poll(fds, 2, -1);
            if (r < 0 && Libc.Errno == Libc.EINTR) continue;
            SysException.Check(r, "poll");
            if (fds[1].REvents != 0) return b;
            if (fds[0].REvents != 0) return a;
        }
    }

    /// <summary>From `delete` or a failed create: the supervisor, if it still runs, is stopped; its socket removed.</summary>
    public static void Stop(StateStore store, string id)
    {
        try { File.Delete(SocketPath(store, id)); } catch (IOException) { }
        string file = Path.Combine(store.Dir(id), PidFileName);
        if (!File.Exists(file) || !int.TryParse(File.ReadAllText(file).Trim(), out int pid) || pid <= 0) return;
        if (ProcStat.Read(pid) is { } st && st.State is not ('Z' or 'X')
            && File.ReadAllText($"/proc/{pid}/cmdline").Contains("supervise"))
        {
            Libc.kill(pid, 9);
            // It holds the FUSE connection: wait until it is gone, so that "nothing is left" holds when delete returns.
            for (int i = 0; i < 200 && ProcStat.Read(pid) is { State: not ('Z' or 'X') }; i++) Thread.Sleep(5);
        }
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
