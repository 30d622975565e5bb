using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// Containers never share a namespace with the host: the spec must ask for its own pid, ipc, uts, mount
/// and network namespaces. A namespace that is missing (docker --pid=host) or joined by a path that is the
/// host's (/proc/1/ns/net, or any file with the same inode) is refused. Joining another container's
/// namespace (--network=container:x, a pod's sandbox) is a path that is not the host's, and stays allowed.
/// The user namespace is <see cref="UserNamespacePolicy"/>'s (a missing one is added, not refused);
/// the cgroup namespace is left to the engine (docker on cgroup v1 shares the host's by default).
///
/// A namespace that is not the host's but is owned by the host's user namespace (made by `unshare` or by
/// another runtime on the host) cannot be joined either: the container's root has no capability in it, so
/// the create would fail half-way (EPERM at "mount mqueue"), and what it could do there is the host's
/// business. The exception is the network namespace: podman, CNI and docker make one per container on the
/// host (/run/netns/X, docker's netns/ files); the container's root cannot reconfigure it, which is safe.
/// </summary>
public static class NamespacePolicy
{
    static readonly string[] Required = ["pid", "ipc", "uts", "mount"];
    static readonly string[] OwnedByContainersOnly = ["ipc", "pid", "uts", "mount", "cgroup"];

    /// <param name="ownedByHostUserNamespace">true when the namespace at a path is owned by the host's initial user namespace.</param>
    public static void Check(Spec spec, Func<string, bool> isHostNamespace, Func<string, bool>? ownedByHostUserNamespace = null)
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
        if (ownedByHostUserNamespace is null) return;
        foreach (var ns in namespaces)
            if (OwnedByContainersOnly.Contains(ns.Type) && !string.IsNullOrEmpty(ns.Path) && ownedByHostUserNamespace(ns.Path))
                throw new PolicyException($"can't join the {ns.Type} namespace {ns.Path}: it belongs to the host's user namespace; " +
                                          "sandbox-runc containers can only join namespaces of other sandbox-runc containers");
    }
}
