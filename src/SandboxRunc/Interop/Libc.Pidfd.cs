namespace SandboxRunc.Interop;

// pidfds and namespace files (nsfs): naming a process and a namespace by an open descriptor rather than by a number.
public static partial class Libc
{
    /// <summary>pidfd_open flag (Linux 6.9): a pidfd for one thread rather than a thread-group leader (= O_EXCL).</summary>
    public const int PIDFD_THREAD = O_EXCL;

    // linux/nsfs.h: _IO(0xb7, n)
    /// <summary>A new fd for the user namespace that owns the namespace of the fd.</summary>
    public const ulong NS_GET_USERNS = 0xb701;
    /// <summary>A new fd for the parent of a user (or pid) namespace; EPERM when it lies outside the caller's view.</summary>
    public const ulong NS_GET_PARENT = 0xb702;
    /// <summary>The uid (in the caller's user namespace) of the creator of a user namespace, into a uint.</summary>
    public const ulong NS_GET_OWNER_UID = 0xb704;

    public const int CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000, CLONE_NEWUSER = 0x10000000, CLONE_NEWNET = 0x40000000;
}
