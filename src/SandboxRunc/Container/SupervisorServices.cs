using System.Text.Json.Serialization;
using SandboxRunc.Interop;

namespace SandboxRunc.Container;

/// <summary>A request to a container's supervisor (see <see cref="Supervisor"/>).</summary>
public sealed class SupervisorRequest
{
    public const string Emulation = "emulation", Container = "container", Exec = "exec", SocketProxy = "socketProxy";

    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    /// <summary>Host pid of the process whose listener comes with the request (container, exec).</summary>
    [JsonPropertyName("pid")] public int Pid { get; set; }
    [JsonPropertyName("emulation")] public EmulationSettings? Emulation_ { get; set; }
    [JsonPropertyName("vetting")] public VettingSettings? Vetting { get; set; }
    [JsonPropertyName("socketProxy")] public SocketProxySettings? SocketProxy_ { get; set; }
}

/// <summary>What a container's socket proxy needs (see SocketProxy/SocketProxyService): its fds come with the request.</summary>
public sealed class SocketProxySettings
{
    /// <summary>The admin settings file, read by the proxy for every request.</summary>
    [JsonPropertyName("settingsPath")] public string SettingsPath { get; set; } = "";
    /// <summary>The runtime name containers created through the socket get.</summary>
    [JsonPropertyName("runtime")] public string Runtime { get; set; } = "sandbox-runc";
    /// <summary>Every name dockerd knows this runtime by.</summary>
    [JsonPropertyName("isolatedRuntimes")] public List<string> IsolatedRuntimes { get; set; } = [];
    /// <summary>The engine's state root for this runtime (a restricted place for the create judgement).</summary>
    [JsonPropertyName("stateRoot")] public string StateRoot { get; set; } = "";
    [JsonPropertyName("cgroupPaths")] public Dictionary<string, string> CgroupPaths { get; set; } = [];
}

/// <summary>What the supervisor needs to know to serve a container's emulated /proc and /sys.</summary>
public sealed class EmulationSettings
{
    /// <summary>Whether the request brings the container's user namespace (a second fd): the emulation gets it as fd 4.</summary>
    [JsonPropertyName("userNamespace")] public bool UserNamespace { get; set; }
    /// <summary>Host dir where the container's FUSE fs is mounted (inside its staging dir).</summary>
    [JsonPropertyName("mountDir")] public string MountDir { get; set; } = "";
    [JsonPropertyName("rootUid")] public uint RootUid { get; set; }
    [JsonPropertyName("rootGid")] public uint RootGid { get; set; }
    /// <summary>CLOCK_BOOTTIME (ns) when the container was created: its uptime starts there.</summary>
    [JsonPropertyName("startedBoottimeNs")] public long StartedBoottimeNs { get; set; }
    [JsonPropertyName("cgroupPaths")] public Dictionary<string, string> CgroupPaths { get; set; } = [];
}

/// <summary>What the supervisor needs to vet mount/umount2 (the initial mounts it reads itself from the init).</summary>
public sealed class VettingSettings
{
    /// <summary>Mount points (container paths) that may never be unmounted: /, /proc, /sys, masked, read-only and emulated paths.</summary>
    [JsonPropertyName("protectedPaths")] public List<string> ProtectedPaths { get; set; } = [];
    /// <summary>When true, no mount made at creation may be unmounted (by default only the protected ones).</summary>
    [JsonPropertyName("protectAllInitialMounts")] public bool ProtectAllInitialMounts { get; set; }
}

public sealed class SupervisorReply
{
    [JsonPropertyName("ok")] public bool Ok { get; set; }
    [JsonPropertyName("error")] public string? Error { get; set; }
}

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SupervisorRequest))]
[JsonSerializable(typeof(SupervisorReply))]
[JsonSerializable(typeof(EmulationSettings))]
[JsonSerializable(typeof(SocketProxySettings))]
internal sealed partial class SupervisorJson : JsonSerializerContext
{
}

/// <summary>
/// The services one supervisor runs for its container: the FUSE server of its emulated /proc and /sys (in
/// a child process, <see cref="EmulationServer"/>), and the seccomp-notify server that vets its
/// mount/umount2 calls. Both fail closed when this process dies: the kernel aborts the FUSE connection
/// (reads fail with ENOTCONN, never host values) and answers trapped syscalls with ENOSYS once the last
/// listener fd closes.
/// </summary>
internal sealed class SupervisorServices(string id, string stateDir, string root) : IDisposable
{
    SafeFd? _emulation;   // pidfd of the emulation child
    int _emulationPid;
    SafeFd? _emulationChannel; // to the emulation child started ahead, until it has its settings
    string? _emulationDir;
    Seccomp.Notify.NotifyServer? _notify;
    SafeFd? _proxy;       // pidfd of the socket proxy child
    int _proxyPid;

    /// <summary>A pidfd that becomes readable when the emulation child exits; -1 when there is none.</summary>
    public int EmulationExit => _emulation?.Fd ?? -1;

    /// <summary>A pidfd that becomes readable when the socket proxy child exits; -1 when there is none.</summary>
    public int SocketProxyExit => _proxy?.Fd ?? -1;

    /// <summary>
    /// The socket proxy has died: reaps it and says how it ended. Unlike the emulation's, its death does not stop the
    /// supervisor: the container's connects to its socket are refused from now on (nothing else holds the listening
    /// socket), which fails closed for the socket alone, while the vetting and the emulated files go on.
    /// </summary>
    public unsafe string SocketProxyExited()
    {
        int status = 0, r;
        do r = Libc.waitpid(_proxyPid, &status, 0); while (r < 0 && Libc.Errno == Libc.EINTR);
        _proxy?.Dispose();
        _proxy = null;
        string how = r != _proxyPid ? "exited" : (status & 0x7f) == 0 ? $"exited with status {(status >> 8) & 0xff}" : $"was killed by signal {status & 0x7f}";
        return $"the docker socket proxy (pid {_proxyPid}) {how}";
    }

    /// <summary>
    /// The emulation child has died: reaps it (no zombie) and says how it ended. The supervisor then exits
    /// too, and that is deliberate (fail closed, visibly): the dead child's FUSE connection is aborted for
    /// good (the kernel ended it when the child's /dev/fuse descriptor closed), the container's /proc and
    /// /sys files are bind mounts of that connection inside its mount namespace and fail with ENOTCONN, and
    /// no new server can be attached to them or mounted over them safely from here. A supervisor that
    /// stayed would report a healthy container in `state` (supervisorRunning) whose emulation is gone; one
    /// that exits shows supervisorRunning false, and its notify listeners close, so the container's
    /// trapped mount/umount2 calls fail with ENOSYS instead of being vetted by a half-alive helper. The
    /// container itself keeps running (as after a kill of the supervisor): the engine decides its fate.
    /// </summary>
    public unsafe string EmulationExited()
    {
        int status = 0, r;
        do r = Libc.waitpid(_emulationPid, &status, 0); while (r < 0 && Libc.Errno == Libc.EINTR);
        _emulation?.Dispose();
        _emulation = null;
        string how = r != _emulationPid ? "exited" : (status & 0x7f) == 0 ? $"exited with status {(status >> 8) & 0xff}" : $"was killed by signal {status & 0x7f}";
        return $"the emulation server (pid {_emulationPid}) {how}";
    }

    /// <summary>
    /// Starts the emulation child ahead of its request (a container with its own user namespace will send one):
    /// its process and runtime start while `create` makes the namespaces and stages the rootfs, not between the
    /// request and the init's binds of the emulated files, which wait for its FUSE INIT. It waits for its
    /// settings and fds on a socket pair (<see cref="EmulationServer.Run"/>).
    /// </summary>
    public void StartEmulationAhead()
    {
        var (parent, child) = UnixSocket.SeqPacketPair();
        using (child)
        {
            _emulationPid = EmulationServer.Start(root, id, child);
        }
        _emulationChannel = parent;
        WatchEmulation();
    }

    /// <summary>Our child, not waited for yet: its pid cannot be reused before we reap it.</summary>
    void WatchEmulation()
    {
        int pidfd = (int)Libc.syscall(Libc.SYS_pidfd_open, _emulationPid, 0, 0, 0, 0, 0);
        if (pidfd < 0) throw new SysException("pidfd_open", "emulation server", Libc.Errno);
        _emulation = new SafeFd(pidfd);
    }

    public void Handle(SupervisorRequest request, SafeFd[] fds)
    {
        SafeFd? fd = fds.Length > 0 ? fds[0] : null;
        switch (request.Kind)
        {
            case SupervisorRequest.Emulation:
                var e = request.Emulation_ ?? throw new InvalidOperationException("emulation request without settings");
                if (fd is null) throw new InvalidOperationException("emulation request without a /dev/fuse fd");
                if (_emulationDir is not null) throw new InvalidOperationException("this container has an emulation server already");
                e.UserNamespace = fds.Length > 1;
                _emulationDir = e.MountDir;
                if (_emulationChannel is null)
                {
                    // Not started ahead (a supervisor of an older create): started now, as it always was.
                    var (parent, child) = UnixSocket.SeqPacketPair();
                    using (child) _emulationPid = EmulationServer.Start(root, id, child);
                    _emulationChannel = parent;
                    WatchEmulation();
                }
                using (var channel = _emulationChannel)
                {
                    _emulationChannel = null;
                    EmulationServer.Hand(channel, e, fd, fds.Length > 1 ? fds[1] : null);
                }
                break;
            case SupervisorRequest.Container:
                if (fd is null) break; // no vetting for this container
                var v = request.Vetting ?? new VettingSettings();
                // The init waits on the exec fifo with every mount in place: what it sees now is the initial set.
                var rules = Seccomp.Notify.MountRules.FromMountInfo(id, File.ReadAllText($"/proc/{request.Pid}/mountinfo"),
                    v.ProtectedPaths, v.ProtectAllInitialMounts);
                _notify = new Seccomp.Notify.NotifyServer(rules, Path.Combine(stateDir, Supervisor.RefusalLogName), request.Pid, workers: 2);
                if (_emulationDir is { } emu)
                    _notify.Sysinfo = () =>
                    {
                        try { return Seccomp.Notify.ContainerSysinfo.Parse(File.ReadAllText(emu + "/proc/uptime"), File.ReadAllText(emu + "/proc/meminfo")); }
                        catch (IOException) { return null; }
                    };
                _notify.Start();
                _notify.AddListener(fd.Release());
                break;
            case SupervisorRequest.SocketProxy:
                var p = request.SocketProxy_ ?? throw new InvalidOperationException("socket proxy request without settings");
                if (fds.Length != 2) throw new InvalidOperationException("socket proxy request without its listening and engine sockets");
                if (_proxy is not null) throw new InvalidOperationException("this container has a socket proxy already");
                _proxyPid = SocketProxy.SocketProxyService.Start(root, id, p, fds[0], fds[1]);
                int proxyFd = (int)Libc.syscall(Libc.SYS_pidfd_open, _proxyPid, 0, 0, 0, 0, 0);
                if (proxyFd < 0) throw new SysException("pidfd_open", "socket proxy", Libc.Errno);
                _proxy = new SafeFd(proxyFd);
                break;
            case SupervisorRequest.Exec:
                if (fd is null) break;
                if (_notify is null) throw new InvalidOperationException("this container has no syscall vetting to join");
                _notify.AddListener(fd.Release());
                break;
            default:
                throw new InvalidOperationException($"unknown request \"{request.Kind}\"");
        }
    }

    public void Dispose()
    {
        _notify?.Dispose();
        _emulationChannel?.Dispose();
        // The container is gone: its emulated files go with it (delete detaches the staging dir too).
        if (_emulationDir is not null) Libc.umount2(_emulationDir, Libc.MNT_DETACH);
        if (_emulation is not null)
        {
            Libc.syscall(Libc.SYS_pidfd_send_signal, _emulation.Fd, 9, 0, 0, 0, 0);
            _emulation.Dispose();
        }
        if (_proxy is not null)
        {
            Libc.syscall(Libc.SYS_pidfd_send_signal, _proxy.Fd, 9, 0, 0, 0, 0);
            _proxy.Dispose();
        }
    }
}

/// <summary>
/// The FUSE server of a container's emulated files runs in a process of its own (`sandbox-runc emulate ID`),
/// a child of the supervisor that dies with it (PR_SET_PDEATHSIG). Not in the supervisor itself: a notify
/// worker performs mounts inside the container's mount namespace, where /proc/meminfo is an emulated file,
/// and the .NET GC reads /proc/meminfo at every collection on the thread that triggered it. Had that
/// thread's FUSE request to be answered by threads of the same process, suspended for that very
/// collection, the supervisor would deadlock (seen: a collection during a mount froze it).
///
/// It runs as host root outside the container, so what a container makes it hold must be bounded and
/// paid by that container: every table and snapshot of the server is bounded (see FuseServerOptions and
/// ContainerFileSystem), its managed heap has a hard limit (<see cref="HeapHardLimit"/>, a backstop), and
/// once started it moves into the container's memory cgroup (<see cref="Cgroups.HelperCgroup"/>), where
/// what it grows by from then on is charged to the container and limited by the container's limit (what
/// it used before stays charged where it was: a container with a tiny limit pays only the growth). It
/// asks the kernel to prefer the container's own processes over it in an out-of-memory kill (oom_score_adj
/// -999; best effort: lowering it needs CAP_SYS_RESOURCE).
/// </summary>
internal static class EmulationServer
{
    /// <summary>DOTNET_GCHeapHardLimit of the emulation process: its bounded tables fit in a fraction of it.</summary>
    public const long HeapHardLimit = 32L << 20;

    /// <summary>Reader threads at most (each holds ~260 KiB of request and reply buffers).</summary>
    const int MaxThreads = 8;

    /// <summary>Starts `emulate ID` with <paramref name="channel"/> as its fd 3, where <see cref="Hand"/> sends what it serves.</summary>
    public static int Start(string root, string id, SafeFd channel) =>
        Supervisor.SpawnService(["--root", root, "emulate", id],
            [.. Supervisor.ServiceEnvironment, $"DOTNET_GCHeapHardLimit={HeapHardLimit:x}"], channel.Fd);

    /// <summary>Gives the emulation child its settings, the /dev/fuse connection and the container's user namespace (one message).</summary>
    public static void Hand(SafeFd channel, EmulationSettings settings, SafeFd fuse, SafeFd? userNs)
    {
        byte[] json = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(settings, SupervisorJson.Default.EmulationSettings);
        try { UnixSocket.SendFds(channel.Fd, userNs is null ? [fuse.Fd] : [fuse.Fd, userNs.Fd], json); }
        catch (SysException e) { throw new InvalidOperationException($"the emulation server is gone ({e.Message})"); }
    }

    /// <summary>
    /// `emulate ID`: waits on fd 3 for its settings, the /dev/fuse connection and the container's user namespace
    /// (<see cref="Hand"/>), then serves the connection until the mount goes away or the supervisor dies.
    /// </summary>
    public static int Run(string id)
    {
        Diagnostics.PhaseTrace.Container(id);
        Libc.prctl(Libc.PR_SET_PDEATHSIG, 9, 0, 0, 0);
        if (!Supervisor.StartedByParent()) return 1;
        Libc.fcntl(3, Libc.F_SETFD, Libc.FD_CLOEXEC);
        RaiseFileLimit();
        var buffer = new byte[16 * 1024];
        SafeFd[] fds;
        int n;
        using (var channel = new SafeFd(3))
        {
            Diagnostics.PhaseTrace.Mark("waiting for its settings");
            n = UnixSocket.ReceiveMessageFds(channel.Fd, buffer, out fds);
        }
        if (n <= 0 || fds.Length == 0)
        {
            foreach (var fd in fds) fd.Dispose();
            return n == 0 ? 0 : 1; // the supervisor went away (or its container never needed us)
        }
        var settings = System.Text.Json.JsonSerializer.Deserialize(buffer.AsSpan(0, n), SupervisorJson.Default.EmulationSettings)
            ?? throw new InvalidOperationException("no emulation settings");
        var fuse = fds[0];
        // The container's user namespace, pinned for our whole life: capability checks compare callers with it.
        using var userNs = settings.UserNamespace && fds.Length > 1 ? fds[1] : null;
        if (settings.UserNamespace && userNs is null) throw new InvalidOperationException("the emulation settings name a user namespace but none came");
        var userNsFacts = userNs is null ? null : Namespaces.UserNamespaceChain.Of(userNs.Fd);
        if (userNs is not null && userNsFacts is null) throw new InvalidOperationException("cannot read the container's user namespace");
        using var fs = new Emulation.ContainerFileSystem(new Emulation.ContainerView(id, settings.StartedBoottimeNs,
            settings.RootUid, settings.RootGid, settings.CgroupPaths) { HostWriter = Emulation.HostSysctlWriter.Real, UserNs = userNsFacts });
        Diagnostics.PhaseTrace.Mark("file system ready");
        var server = Fuse.FuseServer.Serve(fuse, fs, new Fuse.FuseServerOptions { Threads = 2, MaxThreads = MaxThreads });
        Diagnostics.PhaseTrace.Mark("serving");
        // Started: from here on the container pays for what we grow by.
        Emulation.HostFiles.Write("/proc/self/oom_score_adj", "-999"u8);   // -EACCES without CAP_SYS_RESOURCE: kept as is
        Cgroups.HelperCgroup.Join(Cgroups.CgroupPaths.FromMap(settings.CgroupPaths), Environment.ProcessId);
        server.Wait(Timeout.InfiniteTimeSpan);
        return 0;
    }

    /// <summary>Streamed files hold a host descriptor per open handle (FuseServerOptions.MaxOpen): the soft limit goes up to the hard one.</summary>
    static unsafe void RaiseFileLimit()
    {
        const int RLIMIT_NOFILE = 7;
        ulong* limit = stackalloc ulong[2];
        if (Libc.prlimit(0, RLIMIT_NOFILE, null, limit) != 0) return;
        limit[0] = Math.Min(limit[1], 1UL << 16);
        Libc.prlimit(0, RLIMIT_NOFILE, limit, null);
    }
}
