using System.Globalization;
using SandboxRunc.Interop;

namespace SandboxRunc.Namespaces;

/// <summary>
/// "Does this process hold capability C over that namespace?", answered as the kernel's cap_capable()
/// does, for helpers that act as host root on a container process's behalf (the seccomp-notify
/// supervisor, the /proc emulation). The caller's CapEff alone says nothing: it is relative to the
/// caller's own user namespace, and a process that ran `unshare -U -r` reads a full CapEff while it
/// holds no capability at all over the container's namespaces (a child user namespace never has
/// capabilities in its parent). What counts is the user namespace that OWNS the namespace the
/// operation touches (a mount namespace for mounts, a network namespace for net sysctls, the
/// container's own user namespace for per-container settings):
///
///   walk from that user namespace up through its parents:
///     it is the caller's own user namespace      → the caller's effective set decides;
///     its parent is the caller's user namespace
///       and its owner is the caller's euid        → every capability (the creator owns it);
///     no parent left (the caller's namespace
///       is not an ancestor)                       → no capability.
///
/// Facts come from fds, never from a pid after the fact: the caller's user namespace as an open
/// /proc/PID/ns/user, its euid and CapEff read while the caller is known to be the one asking, the
/// target through NS_GET_USERNS on an open namespace fd, parents through NS_GET_PARENT.
/// </summary>
public static class NamespaceCapability
{
    public const int CAP_NET_ADMIN = 12, CAP_SYS_ADMIN = 21;

    /// <summary>What is known of the caller: its user namespace (inode), euid and effective set (host view).</summary>
    public readonly record struct Caller(ulong UserNs, uint Euid, ulong CapEff);

    /// <summary>One user namespace as the walk sees it.</summary>
    public readonly record struct UserNs(ulong Inode, uint Owner);

    /// <summary>The decision, over any tree of user namespaces (pure: tests hand-build the tree).</summary>
    /// <param name="parent">a namespace's parent, or null at the top (or when it cannot be seen).</param>
    public static bool Has<T>(Caller caller, int capability, T target, Func<T, UserNs> describe, Func<T, T?> parent) where T : class
    {
        var ns = target;
        for (int depth = 0; depth < 40; depth++) // the kernel nests at most 32 user namespaces
        {
            var d = describe(ns);
            if (d.Inode == caller.UserNs) return (caller.CapEff & (1UL << capability)) != 0;
            var up = parent(ns);
            if (up is null) return false;
            if (describe(up).Inode == caller.UserNs && d.Owner == caller.Euid) return true;
            ns = up;
        }
        return false;
    }

    const ulong NS_GET_USERNS = 0xb701, NS_GET_PARENT = 0xb702, NS_GET_OWNER_UID = 0xb704;

    /// <summary>
    /// The decision on real namespaces: <paramref name="targetNamespace"/> is an fd of any namespace (its
    /// owning user namespace is looked up) or of a user namespace itself (<paramref name="isUserNs"/>).
    /// </summary>
    public static unsafe bool Has(Caller caller, int capability, int targetNamespace, bool isUserNs)
    {
        int start = isUserNs ? Libc.fcntl(targetNamespace, 1030 /* F_DUPFD_CLOEXEC */, 0) : Libc.ioctl(targetNamespace, NS_GET_USERNS, null);
        if (start < 0) return false;
        var opened = new List<SafeFd>();
        try
        {
            var root = new FdNode(new SafeFd(start));
            opened.Add(root.Fd);
            return Has(caller, capability, root, n => n.Describe(), n =>
            {
                int p = Libc.ioctl(n.Fd.Fd, NS_GET_PARENT, null);
                if (p < 0) return null;
                var node = new FdNode(new SafeFd(p));
                opened.Add(node.Fd);
                return node;
            });
        }
        finally
        {
            foreach (var fd in opened) fd.Dispose();
        }
    }

    sealed class FdNode(SafeFd fd)
    {
        public SafeFd Fd { get; } = fd;
        UserNs? _described;

        public unsafe UserNs Describe()
        {
            if (_described is { } d) return d;
            uint owner = uint.MaxValue;
            if (Libc.ioctl(Fd.Fd, NS_GET_OWNER_UID, &owner) != 0) owner = uint.MaxValue;
            _described = new UserNs(InodeOf(Fd.Fd), owner);
            return _described.Value;
        }
    }

    /// <summary>The inode of an open file (a namespace's identity for nsfs fds); 0 if it cannot be stat'ed.</summary>
    public static unsafe ulong InodeOf(int fd)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        return Libc.fstat(fd, st) == 0 ? *(ulong*)(st + 8) : 0;
    }

    /// <summary>euid and CapEff from the text of /proc/PID/status (read as host root: host IDs).</summary>
    public static (uint Euid, ulong CapEff)? FromStatus(string status)
    {
        uint? euid = null;
        ulong? capEff = null;
        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
            {
                var f = line[4..].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
                if (f.Length >= 2 && uint.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out uint e)) euid = e;
            }
            else if (line.StartsWith("CapEff:", StringComparison.Ordinal)
                     && ulong.TryParse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong c))
                capEff = c;
        }
        return euid is { } u && capEff is { } cap ? (u, cap) : null;
    }
}
