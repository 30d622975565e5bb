using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// linux.sysctl as runc validates it: only sysctls of a namespace the container has of its own may be set,
/// because any other one is the host's (kernel.msg*, kernel.sem, kernel.shm* and fs.mqueue.* need an ipc
/// namespace; net.* a network namespace that is not the host's; kernel.hostname and kernel.domainname a uts
/// namespace), and the key must exist. Pure: the host's keys come in as a fact. Some net.* keys exist in a
/// container's network namespace but read-only (global ones, e.g. net.ipv4.tcp_allowed_congestion_control):
/// only writing them tells, and create's error then says so (Namespaces/NetworkSysctls.cs).
/// </summary>
public static class SysctlPolicy
{
    /// <param name="exists">whether a key exists under the host's /proc/sys.</param>
    public static void Check(Spec spec, Func<string, bool> isHostNamespace, Func<string, bool> exists)
    {
        var namespaces = spec.Linux?.Namespaces ?? [];
        bool Own(string type) => namespaces.FirstOrDefault(n => n.Type == type) is { } ns
                                 && (string.IsNullOrEmpty(ns.Path) || !isHostNamespace(ns.Path));
        foreach (var (name, value) in spec.Linux?.Sysctl ?? [])
        {
            string shown = $"sysctl \"{name}={value}\"";
            if (name.Length == 0 || name.Contains("..") || name.Contains("//") || name[0] is '.' or '/' || name[^1] is '.' or '/')
                throw new PolicyException($"{shown}: \"{name}\" is not a sysctl name (as kernel.shmmax or kernel/shmmax)");
            // The slash form (kubelet's) names the same keys.
            string key = name.Contains('/') ? name.Replace('/', '.') : name;
            string? type = NamespaceOf(key);
            if (type is null)
                throw new PolicyException($"{shown} is not in a separate kernel namespace: setting it would change the host. " +
                                          "Containers may set kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* (own ipc namespace), " +
                                          "net.* (own network namespace), kernel.hostname and kernel.domainname (own uts namespace)");
            if (!Own(type))
                throw new PolicyException($"{shown} is not allowed in the host's {type} namespace");
            // Per-interface keys name an interface of the container's network namespace, unknown to the host.
            if (!IsPerInterface(key) && !exists(name))
                throw new PolicyException($"{shown}: there is no such sysctl on this host (/proc/sys/{SysPath(name)})");
        }
    }

    /// <summary>The file of a key under /proc/sys: dots are slashes, unless the key is in the slash form already.</summary>
    public static string SysPath(string name) => name.Contains('/') ? name : name.Replace('.', '/');

    /// <summary>The namespace a sysctl belongs to ("ipc", "network", "uts"), or null when it is global.</summary>
    public static string? NamespaceOf(string key) =>
        key.StartsWith("kernel.msg", StringComparison.Ordinal) || key == "kernel.sem" ||
        key.StartsWith("kernel.shm", StringComparison.Ordinal) || key.StartsWith("fs.mqueue.", StringComparison.Ordinal) ? "ipc" :
        key.StartsWith("net.", StringComparison.Ordinal) ? "network" :
        key is "kernel.hostname" or "kernel.domainname" ? "uts" :
        null;

    /// <summary>net.ipv4.conf.eth0.x, net.ipv6.neigh.eth0.y: keys of one interface (all, default and lo exist everywhere).</summary>
    static bool IsPerInterface(string key)
    {
        var parts = key.Split('.');
        return parts.Length >= 5 && parts[0] == "net" && parts[2] is "conf" or "neigh" && parts[3] is not ("all" or "default" or "lo");
    }
}
