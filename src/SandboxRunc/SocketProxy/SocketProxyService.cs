using System.Net.Sockets;
using System.Text.Json.Nodes;
using SandboxRunc.Container;
using SandboxRunc.Interop;
using SandboxRunc.Policy;

namespace SandboxRunc.SocketProxy;

/// <summary>
/// The socket proxy of one container: `sandbox-runc --root R socket-proxy ID`, a child of the container's supervisor
/// (started like the emulation server, only for a container whose policy decision allowed the engine socket, so no
/// other container pays for it), dying with it (PR_SET_PDEATHSIG), charged to the container's memory cgroup, its heap
/// capped. fd 3: the listening socket create made in the container's staging dir (bound at the destination the
/// container asked for, in place of the socket); fd 4: the engine socket the container was allowed, as the O_PATH fd
/// the policy judged, connected to through /proc/self/fd/4 (what was judged is what is reached; the real socket is
/// never mounted into the container).
///
/// Why a process of its own rather than threads of the supervisor: its work (HTTP, JSON, many connections) allocates,
/// and its memory must be charged to the container without charging the vetting; a crash or an out-of-memory kill of
/// it fails closed (the container's connects are refused: nobody else holds the listening socket) and leaves the
/// vetting and the emulated files running; and it may be killed alone.
/// </summary>
public static class SocketProxyService
{
    const string SettingsVariable = "_SANDBOX_RUNC_SOCKET_PROXY";

    /// <summary>DOTNET_GCHeapHardLimit of the proxy: 64 connections with their buffers and a 1 MiB JSON body each fit.</summary>
    public const long HeapHardLimit = 128L << 20;

    public static int Start(string root, string id, SocketProxySettings settings, SafeFd listening, SafeFd engine)
    {
        string json = System.Text.Json.JsonSerializer.Serialize(settings, SupervisorJson.Default.SocketProxySettings);
        return Supervisor.SpawnService(["--root", root, "socket-proxy", id],
            [.. Supervisor.ServiceEnvironment, $"DOTNET_GCHeapHardLimit={HeapHardLimit:x}", $"{SettingsVariable}={json}"],
            listening.Fd, engine.Fd);
    }

    /// <summary>`socket-proxy ID`: serves fd 3 until the supervisor dies.</summary>
    public static int Run(string id)
    {
        Libc.prctl(Libc.PR_SET_PDEATHSIG, 9, 0, 0, 0);
        if (!Supervisor.StartedByParent()) return 1;
        var settings = System.Text.Json.JsonSerializer.Deserialize(Environment.GetEnvironmentVariable(SettingsVariable) ?? "",
            SupervisorJson.Default.SocketProxySettings) ?? throw new InvalidOperationException("no socket proxy settings");
        Libc.fcntl(3, Libc.F_SETFD, Libc.FD_CLOEXEC);
        Libc.fcntl(4, Libc.F_SETFD, Libc.FD_CLOEXEC);
        using var listening = new Socket(new SafeSocketHandle(3, ownsHandle: true));
        Emulation.HostFiles.Write("/proc/self/oom_score_adj", "-999"u8);
        Cgroups.HelperCgroup.Join(Cgroups.CgroupPaths.FromMap(settings.CgroupPaths), Environment.ProcessId);
        var server = new ProxyServer(listening, Options(settings, "/proc/self/fd/4"));
        server.RunAsync(CancellationToken.None).GetAwaiter().GetResult();
        return 0;
    }

    /// <summary>The proxy's options for a container, reaching the engine at <paramref name="engineSocket"/>.</summary>
    public static ProxyOptions Options(SocketProxySettings settings, string engineSocket) => new()
    {
        EngineSocket = engineSocket,
        SettingsPath = settings.SettingsPath,
        Runtime = settings.Runtime,
        IsolatedRuntimes = settings.IsolatedRuntimes.ToHashSet(),
        JudgeCreate = JudgeCreate(settings.StateRoot),
    };

    /// <summary>
    /// A create request judged by the isolation policy, with the facts `create` would gather for it (bind sources
    /// opened and described by what they are, the image resolved in dockerd's stores). A bind source that does not
    /// exist yet (dockerd makes a missing -v source) is left to the runtime, which judges it when dockerd starts the
    /// container.
    /// </summary>
    public static Action<Oci.Spec, JsonObject, AdminSettings> JudgeCreate(string stateRoot) => (spec, body, settings) =>
    {
        spec.Mounts?.RemoveAll(m => m.Source is null || !Path.Exists(m.Source));
        using var pinned = new PinnedSources();
        var image = EngineFactsGatherer.ImageNamed(SocketRequestPolicy.CreateImage(body), SocketRequestPolicy.CreateLabels(body));
        var facts = EngineFactsGatherer.Gather(spec, "", stateRoot, "/", pinned, image);
        IsolationPolicy.Decide(spec, settings, facts);
    };
}
