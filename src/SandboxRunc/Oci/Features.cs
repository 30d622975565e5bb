using System.Text.Json.Serialization;

namespace SandboxRunc.Oci;

/// <summary>The OCI runtime features document (`sandbox-runc features`).</summary>
public sealed class Features
{
    [JsonPropertyName("ociVersionMin")] public string OciVersionMin { get; set; } = "1.0.0";
    [JsonPropertyName("ociVersionMax")] public string OciVersionMax { get; set; } = "1.1.0";
    [JsonPropertyName("hooks")] public List<string> Hooks { get; set; } = [];
    [JsonPropertyName("mountOptions")] public List<string> MountOptions { get; set; } = [];
    [JsonPropertyName("linux")] public LinuxFeatures Linux { get; set; } = new();
    [JsonPropertyName("annotations")] public Dictionary<string, string> Annotations { get; set; } = new();
}

public sealed class LinuxFeatures
{
    [JsonPropertyName("namespaces")] public List<string> Namespaces { get; set; } = [];
    [JsonPropertyName("capabilities")] public List<string> Capabilities { get; set; } = [];
    [JsonPropertyName("cgroup")] public CgroupFeatures Cgroup { get; set; } = new();
    [JsonPropertyName("seccomp")] public SeccompFeatures Seccomp { get; set; } = new();
    [JsonPropertyName("apparmor")] public EnabledFeature Apparmor { get; set; } = new();
    [JsonPropertyName("selinux")] public EnabledFeature Selinux { get; set; } = new();
    [JsonPropertyName("mountExtensions")] public MountExtensions MountExtensions { get; set; } = new();
}

public sealed class CgroupFeatures
{
    [JsonPropertyName("v1")] public bool V1 { get; set; }
    [JsonPropertyName("v2")] public bool V2 { get; set; }
    [JsonPropertyName("systemd")] public bool Systemd { get; set; }
    [JsonPropertyName("systemdUser")] public bool SystemdUser { get; set; }
}

public sealed class SeccompFeatures
{
    [JsonPropertyName("enabled")] public bool Enabled { get; set; }
    [JsonPropertyName("actions")] public List<string> Actions { get; set; } = [];
    [JsonPropertyName("operators")] public List<string> Operators { get; set; } = [];
    [JsonPropertyName("archs")] public List<string> Archs { get; set; } = [];
    [JsonPropertyName("knownFlags")] public List<string> KnownFlags { get; set; } = [];
    [JsonPropertyName("supportedFlags")] public List<string> SupportedFlags { get; set; } = [];
}

public sealed class EnabledFeature
{
    [JsonPropertyName("enabled")] public bool Enabled { get; set; }
}

public sealed class MountExtensions
{
    [JsonPropertyName("idmap")] public EnabledFeature Idmap { get; set; } = new();
}
