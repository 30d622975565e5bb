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
/// request per connection: a JSON <see cref="SupervisorRequest"/> with its fds, answered by a
/// <see cref="SupervisorReply"/>:
///   emulation  (create, once the FUSE fs is mounted)      fds = /dev/fuse connection to serve, the
///                                                                container's user namespace
///   socketProxy (create, for a container allowed the       fds = the proxy's listening socket (in the
///               engine socket)                                   staging dir), the engine socket (O_PATH)
///   container  (create, after the init said "ready")       fd = the init's seccomp listener (if vetting)
///   exec       (exec, after its process said "ready")      fd = that process's listener
/// For a container with emulated files, create says so in its environment and the supervisor starts its
/// emulation child at once (it waits for the emulation request's settings and fds on a socket pair), so that
/// the child's start overlaps create's namespace and rootfs work instead of delaying the init's mounts.
/// Until "container" it watches `create` (its parent) and exits if create dies; then it watches the
/// init and exits with it. It also watches its emulation child and exits when that dies (see
/// <see cref="SupervisorServices.EmulationExited"/>), and its socket proxy child, whose death it logs and outlives. `create` records its pid and start time; the supervisor
/// never writes into the state dir, so it cannot race `delete` removing it; it logs to the --log file of the
/// `create` that started it (an engine's per-container log.json), if any, named in its environment so that its
/// command line stays exactly `sandbox-runc --root ROOT supervise ID` (how delete recognises it).
/// </summary>
public static class Supervisor
{
    public const string PidFileName = "supervisor.pid";
    /// <summary>The start time (field 22 of /proc/PID/stat) of the process in supervisor.pid: with the pid, it names one process for good.</summary>
    public const string StartTimeFileName = "supervisor.starttime";
    public const string SocketDir = "/run/sandbox-runc/sv";
    /// <summary>Refused mount/umount2 calls, one JSON object per line, next to the container's state.</summary>
    public const string RefusalLogName = "refusals.log";

    public static string SocketPath(StateStore store, string id) => Path.Combine(SocketDir, CreateOperation.StagingKey(store, id) + ".sock");

    /// <summary>
    /// Starts the supervisor of a container being created, records its pid and start time, and returns the pid.
    /// With <paramref name="emulation"/> (the container gets emulated /proc and /sys), the supervisor starts its
    /// emulation child at once, ahead of the request.
    /// </summary>
    public static int Start(StateStore store, string id, bool emulation = false)
    {
        Directory.CreateDirectory(SocketDir);
        Libc.chmod(SocketDir, 0x1c0 /* 0700 */);
        string socketPath = SocketPath(store, id);
        using var listening = UnixSocket.ListenSeqPacket(socketPath);
        string[] env = Cli.Log.FilePath is { } logFile ? [.. ServiceEnvironment, $"{LogVariable}={Cli.Log.FormatName}:{logFile}"] : ServiceEnvironment;
        if (emulation) env = [.. env, $"{EmulationAheadVariable}=1"];
        int pid = SpawnService(Arguments(Path.GetFullPath(store.Root), id), env, listening.Fd);
        // The start time first: whoever finds the pid finds what tells it from a later process of that pid.
        AtomicFile.Write(Path.Combine(store.Dir(id), StartTimeFileName), ProcStat.StartTime(pid).ToString());
        AtomicFile.Write(Path.Combine(store.Dir(id), PidFileName), pid.ToString());
        File.WriteAllBytes(Path.Combine(store.Dir(id), RefusalLogName), []);
        // Not waited for: the engine's subreaper reaps it when it exits.
        return pid;
    }

    /// <summary>The supervisor's command line after the program name: what tells it apart from every other process.</summary>
    static string[] Arguments(string root, string id) => ["--root", root, "supervise", id];

    /// <summary>
    /// A long-lived process with little to allocate: a small gen0 budget keeps its resident memory low
    /// (the default budget grows with the cache size and is all touched before the first collection).
    /// NativeAOT reads DOTNET_* numbers as bare hex digits: "0x80000" is a parse error, silently ignored.
    /// </summary>
    internal static readonly string[] ServiceEnvironment = ["DOTNET_GCgen0size=80000"];
    const string ParentVariable = "_SANDBOX_RUNC_PARENT_PID";
    /// <summary>Set by create for a container that will ask for emulated files: the supervisor starts its emulation child ahead.</summary>
    const string EmulationAheadVariable = "_SANDBOX_RUNC_EMULATION_AHEAD";
    /// <summary>"FORMAT:FILE" of the --log given to the `create` that starts the supervisor (its command line stays canonical).</summary>
    const string LogVariable = "_SANDBOX_RUNC_LOG";

    /// <summary>
    /// Starts `sandbox-runc ARGS` as a long-lived service of this process (the supervisor of `create`, the
    /// emulation server of the supervisor): stdio /dev/null (an engine's pipes must close when `create`
    /// exits), <paramref name="fd3"/> as its fd 3, and our pid for <see cref="StartedByParent"/>.
    /// </summary>
    internal static int SpawnService(string[] args, IEnumerable<string> env, int fd3, int fd4 = -1)
    {
        using var devNull = new SafeFd(SysException.Check(Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC, 0), "open", "/dev/null"));
        string self = Environment.ProcessPath ?? throw new RuntimeException("cannot tell the path of the sandbox-runc executable");
        List<(int, int)> fds = [(0, devNull.Fd), (1, devNull.Fd), (2, devNull.Fd), (3, fd3)];
        if (fd4 >= 0) fds.Add((4, fd4));
        return Spawn.Start(self, ["sandbox-runc", .. args], [.. env, .. Diagnostics.PhaseTrace.Inherited, .. Diagnostics.StepProfile.Inherited, $"{ParentVariable}={Environment.ProcessId}"], fds);
    }

    /// <summary>
    /// Whether the process that spawned this service still is its parent: one reparented because its
    /// parent died before it got here has another parent pid, and nobody will ever talk to it.
    /// </summary>
    internal static bool StartedByParent() => Environment.GetEnvironmentVariable(ParentVariable) == Libc.getppid().ToString();

    /// <summary>Sends one request to a container's supervisor and waits for its answer (throws with its error).</summary>
    public static void Send(StateStore store, string id, SupervisorRequest request, int fd = -1) =>
        Send(store, id, request, fd >= 0 ? [fd] : []);

    /// <summary>As <see cref="Send(StateStore, string, SupervisorRequest, int)"/>, with several fds.</summary>
    public static void Send(StateStore store, string id, SupervisorRequest request, int[] fds)
    {
        string path = SocketPath(store, id);
        SafeFd conn;
        try { conn = UnixSocket.Connect(path, Libc.SOCK_SEQPACKET); }
        catch (SysException e) { throw new RuntimeException($"the supervisor of container {id} is not running ({e.Message})"); }
        using (conn)
        {
            UnixSocket.SendFds(conn.Fd, fds, JsonSerializer.SerializeToUtf8Bytes(request, SupervisorJson.Default.SupervisorRequest));
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
        Diagnostics.PhaseTrace.Container(id);
        Libc.setsid();
        if (Environment.GetEnvironmentVariable(LogVariable) is { } log && log.IndexOf(':') is > 0 and var colon)
            Cli.Log.Configure(log[(colon + 1)..], log[..colon], debug: false);
        using var listening = new SafeFd(3);
        Libc.fcntl(3, Libc.F_SETFD, Libc.FD_CLOEXEC);
        using var services = new SupervisorServices(id, store.Dir(id), store.Root);
        // Until the container exists, the one to watch is `create`: if it dies, nobody will ever come.
        if (!StartedByParent()) return 1;
        var watch = PidFd.Open(Libc.getppid());
        if (watch is null) return 1;
        if (Environment.GetEnvironmentVariable(EmulationAheadVariable) == "1") services.StartEmulationAhead();
        bool containerKnown = false;
        var buffer = new byte[64 * 1024];
        Diagnostics.PhaseTrace.Mark("listening");
        try
        {
            while (true)
            {
                int ready = WaitAny(listening.Fd, watch.Fd, services.SocketProxyExit, services.EmulationExit);
                if (ready == watch.Fd) return containerKnown ? 0 : 1;
                if (ready == services.SocketProxyExit)
                {
                    Cli.Log.Error($"container {id}: {services.SocketProxyExited()}; the container's docker socket refuses connections from now on");
                    continue;
                }
                if (ready == services.EmulationExit)
                {
                    Cli.Log.Error($"container {id}: {services.EmulationExited()}; the supervisor stops (its emulated /proc and /sys fail with ENOTCONN, mount and umount2 with ENOSYS)");
                    return 1;
                }
                using var conn = UnixSocket.Accept(listening.Fd);
                if (!UnixSocket.WaitReadable(conn.Fd, 5_000)) continue;
                int n = UnixSocket.ReceiveMessageFds(conn.Fd, buffer, out SafeFd[] fds);
                SupervisorReply reply;
                try
                {
                    var request = JsonSerializer.Deserialize(buffer.AsSpan(0, n), SupervisorJson.Default.SupervisorRequest)
                        ?? throw new InvalidOperationException("empty request");
                    if (request.Kind == SupervisorRequest.Container)
                    {
                        var initWatch = PidFd.Open(request.Pid) ?? throw new InvalidOperationException($"container init {request.Pid} is gone");
                        watch.Dispose();
                        watch = initWatch;
                        containerKnown = true;
                    }
                    services.Handle(request, fds);
                    Diagnostics.PhaseTrace.Mark($"request {request.Kind} handled");
                    reply = new SupervisorReply { Ok = true };
                }
                catch (Exception e)
                {
                    reply = new SupervisorReply { Ok = false, Error = e.Message };
                }
                finally { foreach (var fd in fds) fd.Dispose(); } // the services took what they keep
                try { UnixSocket.Send(conn, JsonSerializer.SerializeToUtf8Bytes(reply, SupervisorJson.Default.SupervisorReply)); }
                catch (SysException) { /* the requester gave up */ }
            }
        }
        finally { watch.Dispose(); }
    }

    /// <summary>Blocks until one of the fds is readable; returns it (a later one wins a tie: exiting beats serving).
    /// A negative fd is not watched.</summary>
    static unsafe int WaitAny(params ReadOnlySpan<int> watched)
    {
        var fds = stackalloc Libc.PollFd[watched.Length];
        for (int i = 0; i < watched.Length; i++) fds[i] = new Libc.PollFd { Fd = watched[i], Events = Libc.POLLIN };
        while (true)
        {
            int r = Libc.poll(fds, (ulong)watched.Length, -1);
            if (r < 0 && Libc.Errno == Libc.EINTR) continue;
            SysException.Check(r, "poll");
            for (int i = watched.Length - 1; i >= 0; i--)
                if (fds[i].Fd >= 0 && fds[i].REvents != 0) return fds[i].Fd;
        }
    }

    /// <summary>From `delete` or a failed create: the supervisor, if it still runs, is stopped; its socket removed.</summary>
    public static void Stop(StateStore store, string id)
    {
        try { File.Delete(SocketPath(store, id)); } catch (IOException) { }
        using var supervisor = Find(store, id);
        // It holds the FUSE connection: wait until it is gone, so that "nothing is left" holds when delete returns.
        if (supervisor is not null && PidFd.Signal(supervisor, 9)) PidFd.WaitExited(supervisor, 2000);
    }

    /// <summary>Whether the container's supervisor is running (for `state`).</summary>
    public static bool IsRunning(StateStore store, string id)
    {
        using var supervisor = Find(store, id);
        return supervisor is not null && PidFd.Running(supervisor);
    }

    /// <summary>
    /// The container's supervisor as a pidfd, if the process in supervisor.pid is still the one `create`
    /// started: the start time recorded with it, and a command line naming this container's root and id.
    /// Null when it is gone or the pid now belongs to another process (pids are reused: pid_max is often
    /// 32768). The pidfd is opened before the checks, so the process checked is the one signalled.
    /// </summary>
    static SafeFd? Find(StateStore store, string id)
    {
        string dir = store.Dir(id);
        if (ReadNumber(Path.Combine(dir, PidFileName)) is not { } pid || pid is <= 0 or > int.MaxValue) return null;
        // No start time: a container created before it was recorded; the command line alone identifies it.
        ulong? startTime = ReadNumber(Path.Combine(dir, StartTimeFileName)) is { } t ? (ulong)t : null;
        var pidfd = PidFd.Open((int)pid);
        if (pidfd is null || IsSupervisorOf((int)pid, startTime, store.Root, id)) return pidfd;
        pidfd.Dispose();
        return null;
    }

    static bool IsSupervisorOf(int pid, ulong? startTime, string root, string id) =>
        ProcStat.Read(pid) is { } st && st.State is not ('Z' or 'X' or 'x')
        && (startTime is null || st.StartTime == startTime)
        && IsSupervisorCommand(CommandLine(pid), root, id);

    /// <summary>Whether a command line is the one <see cref="Start"/> gives this container's supervisor (not merely one that mentions "supervise").</summary>
    internal static bool IsSupervisorCommand(string[]? argv, string root, string id) =>
        argv is [_, "--root", var r, "supervise", var who] && who == id && (r == root || r == Path.GetFullPath(root));

    /// <summary>(pid, root, id) of every supervisor running as host root, from the command lines in /proc.</summary>
    public static IEnumerable<(int Pid, string Root, string Id)> AllRunning()
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            if (CommandLine(pid) is [_, "--root", var root, "supervise", var id] && root.StartsWith('/') && ProcStat.RealUid(pid) == 0)
                yield return (pid, root, id);
        }
    }

    static string[]? CommandLine(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").TrimEnd('\0').Split('\0'); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    static long? ReadNumber(string file)
    {
        try { return long.TryParse(File.ReadAllText(file).Trim(), out long n) ? n : null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
