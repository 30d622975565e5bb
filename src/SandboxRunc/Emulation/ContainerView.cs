// What the emulated /proc and /sys of one container are computed from: who the container is, when it
// started, which host IDs are its root, its user namespace, and where its cgroups live. The host roots,
// the clock, the namespace access, the callers' credentials and the host sysctl writer are seams: unit
// tests point them at a fixture tree, a fixed clock and fakes; production keeps the defaults (real /proc
// and /sys, CLOCK_BOOTTIME, setns, CallerIdentity) and opts in to raising host values explicitly
// (HostSysctlWriter.Real).
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Emulation;

/// <param name="Id">Container id (the product_uuid is derived from it).</param>
/// <param name="StartBoottimeNs">CLOCK_BOOTTIME in ns when the container was created (uptime counts from here).</param>
/// <param name="RootUid">Host uid of the container's root: every node is owned by it; only it may write.</param>
/// <param name="RootGid">Host gid of the container's root.</param>
/// <param name="CgroupPaths">CgroupManager.Paths: v1 controller -> host dir ("memory", "cpu", "cpuacct",
/// "cpuset", "blkio", "pids"; co-mounted controllers repeat a dir), v2 a single "" -> unified dir.</param>
public sealed record ContainerView(string Id, long StartBoottimeNs, uint RootUid, uint RootGid,
    IReadOnlyDictionary<string, string> CgroupPaths)
{
    /// <summary>The container's cgroup, from <see cref="CgroupPaths"/> (its saved map).</summary>
    public Cgroups.CgroupPaths Cgroup { get; } = Cgroups.CgroupPaths.FromMap(CgroupPaths);

    /// <summary>Host procfs the values are read from (a fixture dir in tests). Namespaced sysctls always use
    /// the real /proc of the entered namespaces, whatever this says.</summary>
    public string ProcRoot { get; init; } = "/proc";

    /// <summary>Host sysfs (for /sys/kernel and /sys/module/nf_conntrack).</summary>
    public string SysRoot { get; init; } = "/sys";

    /// <summary>Current CLOCK_BOOTTIME in ns.</summary>
    public Func<long> BoottimeNs { get; init; } = HostClock.BoottimeNs;

    /// <summary>How namespaced sysctls are reached in the caller's namespaces.</summary>
    public INamespacedSysctls? Namespaced { get; init; }

    /// <summary>Raises a host sysctl for "max wins" entries; null (the default) never touches the host.</summary>
    public IHostSysctlWriter? HostWriter { get; init; }

    /// <summary>How long a request may wait for namespaced sysctl access.</summary>
    public TimeSpan NamespaceTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The container's user namespace (facts read once from a descriptor taken when the container was made
    /// and kept open, so the namespace cannot be freed and its identity reused): capabilities over it decide
    /// writes of per-container values. Null: unknown, and such writes are refused to everyone.
    /// </summary>
    public UserNamespaceChain? UserNs { get; init; }

    /// <summary>The credentials of a request's caller (user namespace, euid, CapEff), or null when it cannot be identified.</summary>
    public Func<FuseCaller, CallerCredentials?> Credentials { get; init; } = CallerIdentity.Credentials;
}

public static class HostClock
{
    public static unsafe long BoottimeNs()
    {
        long* ts = stackalloc long[2];
        if (Libc.clock_gettime(Libc.CLOCK_BOOTTIME, ts) != 0) return 0;
        return ts[0] * 1_000_000_000 + ts[1];
    }
}

/// <summary>Writes a host sysctl (key in slash form below /proc/sys, e.g. "fs/file-max"); returns 0 or -errno.</summary>
public interface IHostSysctlWriter
{
    int Read(string key, out string value);
    int Write(string key, string value);
}

/// <summary>The real host /proc/sys, in the namespaces of the calling process (the supervisor's: the host's).</summary>
public sealed class HostSysctlWriter : IHostSysctlWriter
{
    public static readonly HostSysctlWriter Real = new();
    HostSysctlWriter() { }

    public int Read(string key, out string value)
    {
        int r = HostFiles.Read("/proc/sys/" + key, out var bytes);
        value = r == 0 ? System.Text.Encoding.ASCII.GetString(bytes) : "";
        return r;
    }

    public int Write(string key, string value) => HostFiles.Write("/proc/sys/" + key, System.Text.Encoding.ASCII.GetBytes(value));
}
