using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// What a supervisor learns once about the namespaces its container's callers are in, kept for the next calls.
/// Each mount namespace met is held open here (pinned: its identity cannot be reused while cached, and it holds
/// its owner user namespace alive, whose identity so cannot be reused either), with the identity of the user
/// namespace that owns it. A caller whose namespace files (two stat(2)s) show a cached mount namespace and its
/// owner as its own user namespace then holds CAP_SYS_ADMIN over its mount namespace exactly when its effective
/// set has it (the kernel's cap_capable, first step). Bounded: at most <see cref="MaxEntries"/> mount namespaces;
/// beyond, the general way. Thread-safe.
/// </summary>
public sealed class NamespaceCache : IDisposable
{
    public const int MaxEntries = 16;
    readonly Dictionary<FileId, (SafeFd Pin, FileId Owner)> _mounts = [];
    readonly Lock _lock = new();
    bool _disposed;

    /// <summary>The chains of user namespaces, for the general case.</summary>
    public UserNamespaceCache Users { get; } = new();

    /// <summary>
    /// Whether the process at <paramref name="procDir"/> (/proc/PID) is in the user namespace that owns its mount
    /// namespace; false also when that cannot be told cheaply (then ask the general way). Read by pid: counts only
    /// if the caller's notification is still valid afterwards.
    /// </summary>
    public unsafe bool SameOwner(string procDir)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        string mntPath = procDir + "/ns/mnt", userPath = procDir + "/ns/user";
        SysException.Check(Libc.stat(mntPath, st), "stat", mntPath);
        var mnt = Id(st);
        FileId owner = default;
        bool known;
        lock (_lock)
        {
            known = _mounts.TryGetValue(mnt, out var entry);
            if (known) owner = entry.Owner;
        }
        if (!known && !Learn(mntPath, mnt, out owner)) return false;
        SysException.Check(Libc.stat(userPath, st), "stat", userPath);
        return Id(st) == owner;
    }

    static unsafe FileId Id(byte* st) => new(*(ulong*)(st + Libc.StatDevOffset), *(ulong*)(st + Libc.StatInoOffset));

    unsafe bool Learn(string mntPath, FileId mnt, out FileId owner)
    {
        owner = default;
        int fd = Libc.open(mntPath, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return false;
        var pin = new SafeFd(fd);
        byte* st = stackalloc byte[Libc.StatSize];
        // The name may show another namespace now than at the stat: then nothing is learnt.
        if (Libc.fstat(fd, st) != 0 || Id(st) != mnt) { pin.Dispose(); return false; }
        int user = Libc.ioctl(fd, Libc.NS_GET_USERNS, null);
        if (user < 0) { pin.Dispose(); return false; }
        bool ok = Libc.fstat(user, st) == 0;
        Libc.close(user);
        if (!ok) { pin.Dispose(); return false; }
        owner = Id(st);
        lock (_lock)
            if (!_disposed && _mounts.Count < MaxEntries && _mounts.TryAdd(mnt, (pin, owner))) return true;
        pin.Dispose();
        return true;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var e in _mounts.Values) e.Pin.Dispose();
            _mounts.Clear();
        }
        Users.Dispose();
    }
}
