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
[JsonSerializable(typeof(EmulationSettings))]
internal sealed partial class SupervisorJson : JsonSerializerContext
{
}

/// <summary>
/// The services one supervisor runs for its container: the FUSE server of its emulated /proc and /sys,
/// and the seccomp-notify server that vets its mount/umount2 calls. Both fail closed when this process
/// dies: the kernel aborts the FUSE connection (reads fail with ENOTCONN, never host values) and answers
/// trapped syscalls with ENOSYS once the last listener fd closes.
/// </summary>
internal sealed class SupervisorServices(string id, string stateDir, string root) : IDisposable
{
    int _emulationPid;
    string? _emulationDir;
    Seccomp.Notify.NotifyServer? _notify;

    public void Handle(SupervisorRequest request, SafeFd? fd)
    {
        switch (request.Kind)
        {
            case SupervisorRequest.Emulation:
                var e = request.Emulation_ ?? throw new InvalidOperationException("emulation request without settings");
                if (fd is null) throw new InvalidOperationException("emulation request without a /dev/fuse fd");
                _emulationDir = e.MountDir;
                _emulationPid = EmulationServer.Start(root, id, e, fd);
                fd.Dispose();
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
            case SupervisorRequest.Exec:
                if (fd is null) break;
                if (_notify is null) throw new InvalidOperationException("this container has no syscall vetting to join");
                _notify.AddListener(fd.Release());
                break;
            default:
                fd?.Dispose();
                throw new InvalidOperationException($"unknown request \"{request.Kind}\"");
        }
    }

    public void Dispose()
    {
        _notify?.Dispose();
        // The container is gone: its emulated files go with it (delete detaches the staging dir too).
        if (_emulationDir is not null) Libc.umount2(_emulationDir, Libc.MNT_DETACH);
        if (_emulationPid > 0) Libc.kill(_emulationPid, 9);
    }
}

/// <summary>
/// The FUSE server of a container's emulated files runs in a process of its own (`sandbox-runc emulate ID`),
/// a child of the supervisor that dies with it (PR_SET_PDEATHSIG). Not in the supervisor itself: a notify
/// worker performs mounts inside the container's mount namespace, where /proc/meminfo is an emulated file,
/// and the .NET GC reads /proc/meminfo at every collection on the thread that triggered it. Had that
/// thread's FUSE request to be answered by threads of the same process, suspended for that very
/// collection, the supervisor would deadlock (seen: a collection during a mount froze it).
/// </summary>
internal static class EmulationServer
{
    const string SettingsVariable = "_SANDBOX_RUNC_EMULATION";

    public static int Start(string root, string id, EmulationSettings settings, SafeFd fuse)
    {
        string json = System.Text.Json.JsonSerializer.Serialize(settings, SupervisorJson.Default.EmulationSettings);
        return Supervisor.SpawnService(["--root", root, "emulate", id], [.. Supervisor.ServiceEnvironment, $"{SettingsVariable}={json}"], fuse.Fd);
    }

    /// <summary>`emulate ID`: serves fd 3 until the mount goes away or the supervisor dies.</summary>
    public static int Run(string id)
    {
        Libc.prctl(Libc.PR_SET_PDEATHSIG, 9, 0, 0, 0);
        if (!Supervisor.StartedByParent()) return 1;
        var settings = System.Text.Json.JsonSerializer.Deserialize(Environment.GetEnvironmentVariable(SettingsVariable) ?? "",
            SupervisorJson.Default.EmulationSettings) ?? throw new InvalidOperationException("no emulation settings");
        var fuse = new SafeFd(3);
        Libc.fcntl(3, Libc.F_SETFD, Libc.FD_CLOEXEC);
        using var fs = new Emulation.ContainerFileSystem(new Emulation.ContainerView(id, settings.StartedBoottimeNs,
            settings.RootUid, settings.RootGid, settings.CgroupPaths) { HostWriter = Emulation.HostSysctlWriter.Real });
        var server = Fuse.FuseServer.Serve(fuse, fs, new Fuse.FuseServerOptions { Threads = 2 });
        server.Wait(Timeout.InfiniteTimeSpan);
        return 0;
    }
}
