// Does a process hold a capability over a namespace? The kernel's answer, for helpers that act as host root
// on a container's behalf and must ask the question the kernel would have asked the caller.
//
// A capability is held over a user namespace, and a net/uts/ipc namespace is governed by the user namespace
// that owns it. CapEff in /proc/PID/status means nothing alone: it is relative to the caller's own user
// namespace, and a process that made itself a nested user namespace (unshare -U -r) reads "all
// capabilities" there while holding none in its parent. The rule (security/commoncap.c cap_capable):
// walk from the target user namespace up through its parents;
//   - reaching the caller's own namespace: the caller holds the capability if it is in its CapEff;
//   - reaching the caller's level without meeting it: no (a process never holds capabilities in an
//     ancestor or a sibling of its namespace);
//   - a namespace whose parent is the caller's and whose owner (creator euid) is the caller's euid:
//     yes, every capability (the creator of a user namespace is all-powerful in it).
// Namespaces are compared by identity (nsfs device + inode) while open descriptors hold them alive, so an
// identity cannot be reused under us. Gathering the facts (UserNamespaceChain.Of) needs the descriptors;
// the decision (NamespaceCapability.Holds) is a pure function over them.
using SandboxRunc.Interop;

namespace SandboxRunc.Namespaces;

/// <summary>One user namespace as the host sees it: its identity and the host uid of its creator.</summary>
public readonly record struct UserNamespaceFacts(FileId Id, uint OwnerUid);

/// <summary>A user namespace and its ancestors, nearest first: [ns, parent, ..., the top one we can see].</summary>
public sealed class UserNamespaceChain
{
    /// <summary>Deeper than the kernel allows (32 levels): a chain that long is not believed.</summary>
    const int MaxDepth = 33;

    public IReadOnlyList<UserNamespaceFacts> Namespaces { get; }

    public UserNamespaceChain(IReadOnlyList<UserNamespaceFacts> namespaces)
    {
        if (namespaces.Count == 0) throw new ArgumentException("a user namespace chain has at least one namespace", nameof(namespaces));
        Namespaces = namespaces;
    }

    public FileId Id => Namespaces[0].Id;
    /// <summary>0 for the top namespace (the host's, seen from the host), 1 for its children, ...</summary>
    public int Level => Namespaces.Count - 1;

    /// <summary>Reads the chain of the user namespace open at <paramref name="userNs"/>; null when it cannot be read.</summary>
    public static unsafe UserNamespaceChain? Of(int userNs)
    {
        var list = new List<UserNamespaceFacts>();
        int fd = userNs;
        try
        {
            byte* st = stackalloc byte[Libc.StatSize];
            while (true)
            {
                if (list.Count == MaxDepth || Libc.fstat(fd, st) != 0) return null;
                uint owner;
                if (Libc.ioctl(fd, Libc.NS_GET_OWNER_UID, &owner) != 0) return null;
                list.Add(new UserNamespaceFacts(new FileId(*(ulong*)(st + Libc.StatDevOffset), *(ulong*)(st + Libc.StatInoOffset)), owner));
                int parent = Libc.ioctl(fd, Libc.NS_GET_PARENT, null);
                if (parent < 0)
                {
                    // EPERM: the parent is outside our view, i.e. this is our own top namespace.
                    if (Libc.Errno == Libc.EPERM) return new UserNamespaceChain(list);
                    return null;
                }
                if (fd != userNs) Libc.close(fd);
                fd = parent;
            }
        }
        finally
        {
            if (fd != userNs) Libc.close(fd);
        }
    }

    /// <summary>The chain of the user namespace that owns the (net, uts, ipc, ...) namespace open at <paramref name="ns"/>.</summary>
    public static unsafe UserNamespaceChain? OwnerOf(int ns)
    {
        int owner = Libc.ioctl(ns, Libc.NS_GET_USERNS, null);
        if (owner < 0) return null;
        try { return Of(owner); }
        finally { Libc.close(owner); }
    }
}

/// <summary>
/// The chains of the user namespaces a helper meets again and again (the container's own, a nested one its
/// processes made), keyed by identity. A namespace's parent and owner never change, and each cached entry
/// holds the namespace open, so its identity cannot be reused by another while it is cached. Bounded: beyond
/// <see cref="MaxEntries"/> namespaces a chain is read every time. Thread-safe.
/// </summary>
public sealed class UserNamespaceCache : IDisposable
{
    public const int MaxEntries = 16;
    readonly Dictionary<FileId, (SafeFd Pin, UserNamespaceChain Chain)> _entries = [];
    readonly Lock _lock = new();
    bool _disposed;

    /// <summary>The chain of the user namespace open at <paramref name="userNs"/> (the descriptor stays the caller's).</summary>
    public unsafe UserNamespaceChain? Of(int userNs)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        if (Libc.fstat(userNs, st) != 0) return null;
        var id = new FileId(*(ulong*)(st + Libc.StatDevOffset), *(ulong*)(st + Libc.StatInoOffset));
        lock (_lock)
            if (_entries.TryGetValue(id, out var hit)) return hit.Chain;
        var chain = UserNamespaceChain.Of(userNs);
        if (chain is null || chain.Id != id) return chain;
        int pin = Libc.fcntl(userNs, F_DUPFD_CLOEXEC, 3);
        if (pin < 0) return chain;
        lock (_lock)
        {
            if (!_disposed && _entries.Count < MaxEntries && _entries.TryAdd(id, (new SafeFd(pin), chain))) return chain;
        }
        Libc.close(pin);
        return chain;
    }

    /// <summary>The chain of the user namespace that owns the namespace open at <paramref name="ns"/>.</summary>
    public unsafe UserNamespaceChain? OwnerOf(int ns)
    {
        int owner = Libc.ioctl(ns, Libc.NS_GET_USERNS, null);
        if (owner < 0) return null;
        try { return Of(owner); }
        finally { Libc.close(owner); }
    }

    const int F_DUPFD_CLOEXEC = 1030;

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var e in _entries.Values) e.Pin.Dispose();
            _entries.Clear();
        }
    }
}

/// <summary>What a capability decision needs to know about the caller (host view): its user namespace,
/// effective uid (host uid) and effective capability set (relative to its own user namespace).</summary>
public readonly record struct CallerCredentials(UserNamespaceChain UserNs, uint Euid, ulong CapEff);

public static class NamespaceCapability
{
    public const int CAP_NET_ADMIN = 12, CAP_SYS_ADMIN = 21;

    /// <summary>euid and CapEff from the text of /proc/PID/status (read as host root: host IDs, CapEff relative to its own user namespace).</summary>
    public static (uint Euid, ulong CapEff)? FromStatus(string status)
    {
        uint? euid = null;
        ulong? capEff = null;
        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
            {
                var f = line[4..].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
                if (f.Length >= 2 && uint.TryParse(f[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out uint e)) euid = e;
            }
            else if (line.StartsWith("CapEff:", StringComparison.Ordinal)
                     && ulong.TryParse(line.AsSpan(7).Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out ulong c))
                capEff = c;
        }
        return euid is { } u && capEff is { } cap ? (u, cap) : null;
    }

    /// <summary>Whether <paramref name="caller"/> holds <paramref name="capability"/> over the user namespace
    /// <paramref name="target"/> (the kernel's cap_capable; see the file comment).</summary>
    public static bool Holds(CallerCredentials caller, UserNamespaceChain target, int capability)
    {
        if (capability is < 0 or > 63) return false;
        var own = caller.UserNs;
        var chain = target.Namespaces;
        for (int i = 0; i < chain.Count; i++)
        {
            int level = chain.Count - 1 - i;
            if (chain[i].Id == own.Id) return (caller.CapEff & (1UL << capability)) != 0;
            if (level <= own.Level) return false;
            if (i + 1 < chain.Count && chain[i + 1].Id == own.Id && chain[i].OwnerUid == caller.Euid) return true;
        }
        return false;
    }
}
