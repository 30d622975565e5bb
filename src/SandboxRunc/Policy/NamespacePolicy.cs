using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// Containers never share a namespace with the host: the spec must ask for its own pid, ipc, uts, mount
/// and network namespaces. A namespace that is missing (docker --pid=host) or joined by a path that is the
/// host's (/proc/1/ns/net, or any file with the same inode) is refused. Joining another container's
/// namespace (--network=container:x, a pod's sandbox) is a path that is not the host's, and stays allowed.
/// The user namespace is <see cref="UserNamespacePolicy"/>'s (a missing one is added, not refused);
/// the cgroup namespace is left to the engine (docker on cgroup v1 shares the host's by default).
/// </summary>
public static class NamespacePolicy
{
    static readonly string[] Required = ["pid", "ipc", "uts", "mount"];

    public static void Check(Spec spec, Func<string, bool> isHostNamespace)
    {
        var namespaces = spec.Linux?.Namespaces ?? [];
        bool Shared(string type)
        {
            var ns = namespaces.FirstOrDefault(n => n.Type == type);
            return ns is null || !string.IsNullOrEmpty(ns.Path) && isHostNamespace(ns.Path);
        }
        var shared = Required.Where(Shared).ToList();
        if (shared.Count > 0)
            throw new PolicyException($"sandbox-runc containers can't share namespaces [{string.Join(' ', shared)}] with the host (because they use the linux user-namespace for isolation)");
        if (Shared("network"))
            throw new PolicyException("sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)");
    }
}
