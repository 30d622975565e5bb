using System.Text.Json.Serialization;
using SandboxRunc.Interop;

namespace SandboxRunc.Container;

/// <summary>A request to a container's supervisor (see <see cref="Supervisor"/>).</summary>
public sealed class SupervisorRequest
{
    public const string Emulation = "emulation", Container = "container", Exec = "exec";

    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    /// <summary>Host pid of the process whose listener comes with the request (container, exec).</summary>
    [JsonPropertyName("pid")] public int Pid { get; set; }
    [JsonPropertyName("emulation")] public EmulationSettings? Emulation_ { get; set; }
    [JsonPropertyName("vetting")] public VettingSettings? Vetting { get; set; }
}

/// <summary>What the supervisor needs to know to serve a container's emulated /proc and /sys.</summary>
public sealed class EmulationSettings
{
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
internal sealed partial class SupervisorJson : JsonSerializerContext
{
}

/// <summary>The services one supervisor runs for its container: the FUSE server and the syscall vetting.</summary>
internal sealed class SupervisorServices(string id, string stateDir) : IDisposable
{
    SafeFd? _fuse;
    string? _emulationDir;
    readonly List<SafeFd> _listeners = [];

    public void Handle(SupervisorRequest request, SafeFd? fd)
    {
        switch (request.Kind)
        {
            case SupervisorRequest.Emulation:
                var settings = request.Emulation_ ?? throw new InvalidOperationException("emulation request without settings");
                _fuse = fd ?? throw new InvalidOperationException("emulation request without a /dev/fuse fd");
                _emulationDir = settings.MountDir;
                break;
            case SupervisorRequest.Container:
            case SupervisorRequest.Exec:
                if (fd is not null) _listeners.Add(fd);
                break;
            default:
                fd?.Dispose();
                throw new InvalidOperationException($"unknown request \"{request.Kind}\"");
        }
        _ = id; _ = stateDir;
    }

    public void Dispose()
    {
        foreach (var l in _listeners) l.Dispose();
        _fuse?.Dispose();
        // The container is gone: its emulated files go with it (delete detaches the staging dir too).
        if (_emulationDir is not null) Libc.umount2(_emulationDir, Libc.MNT_DETACH);
    }
}
