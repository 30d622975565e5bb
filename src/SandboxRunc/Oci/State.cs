using System.Text.Json.Serialization;

namespace SandboxRunc.Oci;

/// <summary>The OCI state document, as `sandbox-runc state` prints it and hooks read it on stdin.</summary>
public sealed class OciState
{
    [JsonPropertyName("ociVersion")] public string OciVersion { get; set; } = SpecVersion.Current;
    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("status")] public string Status { get; set; } = "";
    [JsonPropertyName("pid")] public int Pid { get; set; }
    [JsonPropertyName("bundle")] public string Bundle { get; set; } = "";
    [JsonPropertyName("rootfs")] public string? Rootfs { get; set; }
    [JsonPropertyName("created")] public DateTime? Created { get; set; }
    [JsonPropertyName("owner")] public string? Owner { get; set; }
    [JsonPropertyName("annotations")] public Dictionary<string, string>? Annotations { get; set; }
    /// <summary>sandbox-runc's addition: the container's ID ranges, as /proc/self/uid_map shows them.</summary>
    [JsonPropertyName("idMappings")] public IdMappingsState? IdMappings { get; set; }
    /// <summary>sandbox-runc's addition: whether the container's supervisor process runs (`state` only).</summary>
    [JsonPropertyName("supervisorRunning")] public bool? SupervisorRunning { get; set; }
}

public sealed class IdMappingsState
{
    [JsonPropertyName("uidMap")] public string UidMap { get; set; } = "";
    [JsonPropertyName("gidMap")] public string GidMap { get; set; } = "";
}

/// <summary>What the runtime keeps about a container between CLI calls (state.json in its state dir).</summary>
public sealed class ContainerRecord
{
    [JsonPropertyName("id")] public string Id { get; set; } = "";
    [JsonPropertyName("bundle")] public string Bundle { get; set; } = "";
    [JsonPropertyName("rootfs")] public string Rootfs { get; set; } = "";
    [JsonPropertyName("pid")] public int Pid { get; set; }
    /// <summary>Start time of the init in clock ticks since boot (field 22 of /proc/pid/stat): guards against pid reuse.</summary>
    [JsonPropertyName("pidStartTime")] public ulong PidStartTime { get; set; }
    [JsonPropertyName("created")] public DateTime Created { get; set; }
    [JsonPropertyName("cgroupPaths")] public Dictionary<string, string> CgroupPaths { get; set; } = new();
    /// <summary>"Cgroupfs" or "Systemd" (null: cgroupfs, a container created before drivers were recorded).</summary>
    [JsonPropertyName("cgroupDriver")] public string? CgroupDriver { get; set; }
    /// <summary>The systemd driver's unit, "slice:name".</summary>
    [JsonPropertyName("systemdUnit")] public string? SystemdUnit { get; set; }

    /// <summary>The manager of the container's cgroup, as create made it.</summary>
    public Cgroups.CgroupManager Cgroup() => Cgroups.CgroupManager.Of(CgroupPaths, CgroupDriver, SystemdUnit);
    // What later commands need from the spec, kept small: start/state/kill/delete read only this file.
    // Parsing the whole spec costs ~2 ms of type metadata set-up in each fresh process; the full spec
    // is saved beside it (spec.json) for exec.
    [JsonPropertyName("annotations")] public Dictionary<string, string>? Annotations { get; set; }
    [JsonPropertyName("poststart")] public List<Hook>? Poststart { get; set; }
    [JsonPropertyName("poststop")] public List<Hook>? Poststop { get; set; }
    [JsonPropertyName("idMappings")] public IdMappingsState? IdMappings { get; set; }
    /// <summary>The resources in force (create's, then each update's merged in).</summary>
    [JsonPropertyName("resources")] public Resources? Resources { get; set; }
    /// <summary>The container's exclusive ID range from the pool (null when the spec brought its own mappings).</summary>
    [JsonPropertyName("idRange")] public Policy.IdRange? IdRange { get; set; }
    /// <summary>Where the ID-mapped mounts were staged on the host (removed by delete).</summary>
    [JsonPropertyName("stagingDir")] public string? StagingDir { get; set; }
    /// <summary>
    /// The container's seccomp filter, compiled once at create (exec installs the same program). The
    /// profile itself is dropped from the saved spec: Docker's is a few hundred rules that every
    /// start/state/kill/delete would otherwise parse again.
    /// </summary>
    [JsonPropertyName("seccompProgram")] public byte[]? SeccompProgram { get; set; }
    [JsonPropertyName("seccompFlags")] public uint SeccompFlags { get; set; }
    /// <summary>
    /// v2: the child of the container's cgroup its init moves to at start (an engine's system container: see
    /// CgroupManager.MoveInitToLeaf); null for every other container.
    /// </summary>
    [JsonPropertyName("initLeaf")] public string? InitLeaf { get; set; }
}

public static class SpecVersion
{
    public const string Current = "1.0.2";
    public const int SupportedMajor = 1;
}

public static class ContainerStatus
{
    public const string Creating = "creating";
    public const string Created = "created";
    public const string Running = "running";
    public const string Paused = "paused";
    public const string Stopped = "stopped";
}
