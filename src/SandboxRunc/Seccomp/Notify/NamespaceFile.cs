using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// A bind whose source is a namespace file (nsfs: /proc/PID/ns/net, as `ip netns add` and dockerd's libnetwork bind
/// one to keep a network namespace): it has no mount in the caller's table, so the mount rules cannot judge it as a
/// path. It is bound only when the namespace belongs to the caller's user namespace or one below it, i.e. one the
/// caller's root owns anyway; the worker opened it as host root, so a namespace of anything else (a process the
/// caller could not ptrace, one of the host's) is refused.
/// </summary>
public static unsafe class NamespaceFile
{
    /// <summary>null: not a namespace file; true: owned within the caller's user namespace; false: not.</summary>
    public static bool? OwnedWithin(SafeFd source, SafeFd callerUserNs)
    {
        // ioctl does not work on the O_PATH fd the lookup made: reopen it through our own /proc entry.
        string self = $"/proc/thread-self/fd/{source.Fd}";
        int ns = Libc.open(self, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (ns < 0) return null;
        using var nsFd = new SafeFd(ns);
        int owner = Libc.ioctl(nsFd.Fd, Libc.NS_GET_USERNS, null);
        if (owner < 0) return Libc.Errno is 25 /* ENOTTY */ or Libc.EINVAL ? null : false;
        var current = new SafeFd(owner);
        try
        {
            for (int depth = 0; depth < 33; depth++) // user namespaces nest 32 deep at most
            {
                if (SameFile(current.Fd, callerUserNs.Fd)) return true;
                int parent = Libc.ioctl(current.Fd, Libc.NS_GET_PARENT, null);
                if (parent < 0) return false; // the top, or outside what we may see
                current.Dispose();
                current = new SafeFd(parent);
            }
            return false;
        }
        finally { current.Dispose(); }
    }

    static bool SameFile(int a, int b)
    {
        byte* sa = stackalloc byte[Libc.StatSize], sb = stackalloc byte[Libc.StatSize];
        if (Libc.fstat(a, sa) != 0 || Libc.fstat(b, sb) != 0) return false;
        return *(ulong*)sa == *(ulong*)sb && *(ulong*)(sa + 8) == *(ulong*)(sb + 8);
    }
}
