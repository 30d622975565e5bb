using SandboxRunc.Namespaces;
using SandboxRunc.Oci;
using SandboxRunc.Rootfs;

namespace SandboxRunc.Cli;

/// <summary>`sandbox-runc features`: what this build supports, in the OCI features schema.</summary>
public static class FeaturesDocument
{
    public static Features Create() => new()
    {
        OciVersionMin = "1.0.0",
        OciVersionMax = "1.1.0",
        Hooks = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        MountOptions = MountOptions.KnownOptions.Order().ToList(),
        Linux = new LinuxFeatures
        {
            Namespaces = [.. SpecLoader.NamespaceTypes],
            Capabilities = [.. CapabilityNames.All],
            Cgroup = new CgroupFeatures { V1 = true, V2 = true, Systemd = false, SystemdUser = false },
            Seccomp = new SeccompFeatures
            {
                Enabled = true,
                Actions = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                Operators = ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                Archs = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                KnownFlags = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"],
                SupportedFlags = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"],
            },
            Apparmor = new EnabledFeature { Enabled = File.Exists("/sys/module/apparmor/parameters/enabled") },
            Selinux = new EnabledFeature { Enabled = false },
            MountExtensions = new MountExtensions { Idmap = new EnabledFeature { Enabled = false } },
        },
        Annotations = new Dictionary<string, string>
        {
            ["org.opencontainers.runtime-spec.features.version"] = "1.1.0",
            ["io.github.sandbox-runc.version"] = CommandLine.Version,
        },
    };
}
