using System.Text.Json;
using System.Text.Json.Serialization;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Namespaces;

/// <summary>
/// The typed conversation between `create` (host) and the container's init, after nsexec.c is done.
/// One JSON message per SOCK_SEQPACKET packet:
///
///   host -> init   Config     the spec and runtime options (<see cref="InitConfig"/>)
///   init -> host   RunHooks   mounts are in place, root not yet pivoted: run prestart/createRuntime hooks
///   host -> init   HooksDone
///   init -> host   Ready      init now blocks on the exec fifo; `create` may return. Carries the init's
///                             seccomp-notify listener fd (SCM_RIGHTS) when syscall vetting is on
///   either way     Error      Text says what failed; the sender exits
/// </summary>
internal sealed class InitChannel(SafeFd socket) : IDisposable
{

    public SafeFd Socket => socket;

    /// <summary>Sends a message, with one fd attached (SCM_RIGHTS) when <paramref name="fd"/> is not negative.</summary>
    public void Send(InitMessage message, int fd = -1)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(message, InitJson.Default.InitMessage);
        if (fd < 0) UnixSocket.Send(socket, bytes);
        else UnixSocket.SendFd(socket.Fd, fd, bytes);
    }

    /// <summary>The next message (with the fd it carried, if any), or null when the peer closed the socket (it exited).</summary>
    public InitMessage? Receive()
    {
        int size = UnixSocket.PeekSize(socket);
        if (size == 0) return null;
        var buffer = new byte[size];
        int n = UnixSocket.ReceiveMessage(socket.Fd, buffer, out var fd);
        var m = JsonSerializer.Deserialize(buffer.AsSpan(0, n), InitJson.Default.InitMessage)!;
        m.Fd = fd;
        return m;
    }

    /// <summary>Waits for a message of the given kind; an Error message or EOF becomes an exception.</summary>
    public InitMessage Expect(string kind, string waitingFor)
    {
        var m = Receive() ?? throw new InitFailedException($"container init exited while {waitingFor}");
        if (m.Kind == InitMessage.Error) throw new InitFailedException(m.Text ?? "container init failed");
        if (m.Kind != kind) throw new InitFailedException($"protocol error: expected {kind}, got {m.Kind} while {waitingFor}");
        return m;
    }

    public void Dispose() => socket.Dispose();
}

public sealed class InitFailedException(string message) : SandboxRuncException(message);

internal sealed class InitMessage
{
    public const string Config = "config", RunHooks = "run-hooks", HooksDone = "hooks-done", Ready = "ready", Error = "error";

    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    [JsonPropertyName("text")] public string? Text { get; set; }
    [JsonPropertyName("config")] public InitConfig? Config_ { get; set; }
    /// <summary>The fd that came with the message (the receiver owns it).</summary>
    [JsonIgnore] public SafeFd? Fd { get; set; }
}

/// <summary>Everything the init needs that is not in the spec itself.</summary>
internal sealed class InitConfig
{
    /// <summary>"container": the container's init (rootfs, pivot, exec fifo); "exec": a process joining a running container.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = KindContainer;
    public const string KindContainer = "container", KindExec = "exec";
    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("bundle")] public string Bundle { get; set; } = "";
    [JsonPropertyName("rootfs")] public string Rootfs { get; set; } = "";
    [JsonPropertyName("spec")] public Spec Spec { get; set; } = new();
    [JsonPropertyName("noPivot")] public bool NoPivot { get; set; }
    [JsonPropertyName("noNewKeyring")] public bool NoNewKeyring { get; set; }
    [JsonPropertyName("preserveFds")] public int PreserveFds { get; set; }
    /// <summary>fd (in the init) of the exec fifo, opened O_PATH; -1 for `exec`-style starts.</summary>
    [JsonPropertyName("execFifoFd")] public int ExecFifoFd { get; set; } = -1;
    /// <summary>fd (in the init) of the engine's console socket; -1 without a terminal.</summary>
    [JsonPropertyName("consoleSocketFd")] public int ConsoleSocketFd { get; set; } = -1;
    [JsonPropertyName("seccompProgram")] public byte[]? SeccompProgram { get; set; }
    [JsonPropertyName("seccompFlags")] public uint SeccompFlags { get; set; }
    [JsonPropertyName("userNamespace")] public bool UserNamespace { get; set; }
    /// <summary>v1 cgroup hierarchies to bind into the container: mount name -> host dir of the container's cgroup.</summary>
    [JsonPropertyName("cgroupMounts")] public List<CgroupMountSource> CgroupMounts { get; set; } = [];
    [JsonPropertyName("state")] public OciState State { get; set; } = new();
    /// <summary>ID-mapped stand-ins for bind mount sources: index in spec.mounts -> staged path.</summary>
    [JsonPropertyName("mountSources")] public Dictionary<int, string> MountSources { get; set; } = [];
    /// <summary>
    /// The seccomp-notify filter (BPF) the process installs on its exec'ing thread before "ready"; the
    /// listener fd goes back with the Ready message, for the container's supervisor. Null: no vetting.
    /// </summary>
    [JsonPropertyName("notifyProgram")] public byte[]? NotifyProgram { get; set; }
    /// <summary>Host dir of the container's emulated /proc and /sys files (its FUSE mount); null: none.</summary>
    [JsonPropertyName("emulationDir")] public string? EmulationDir { get; set; }
}

internal sealed class CgroupMountSource
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("hostDir")] public string HostDir { get; set; } = "";
}

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(InitMessage))]
internal sealed partial class InitJson : JsonSerializerContext
{
}
