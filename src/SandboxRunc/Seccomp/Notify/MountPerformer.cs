using System.Text;
using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>The caller's view of the file system, opened from /proc/PID before any setns.</summary>
public sealed class CallerHandles : IDisposable
{
    public required SafeFd Root { get; init; }
    public required SafeFd Cwd { get; init; }
    public required SafeFd MountNs { get; init; }
    public required SafeFd MountInfo { get; init; }

    public static CallerHandles Open(int pid)
    {
        const int Path = Libc.O_PATH | Libc.O_CLOEXEC;
        string proc = $"/proc/{pid}";
        var root = Open($"{proc}/root", Path | Libc.O_DIRECTORY);
        try
        {
            return new CallerHandles
            {
                Root = root,
                Cwd = Open($"{proc}/cwd", Path | Libc.O_DIRECTORY),
                MountNs = Open($"{proc}/ns/mnt", Libc.O_RDONLY | Libc.O_CLOEXEC),
                MountInfo = Open($"{proc}/mountinfo", Libc.O_RDONLY | Libc.O_CLOEXEC),
            };
        }
        catch
        {
            root.Dispose();
            throw;
        }
    }

    static SafeFd Open(string path, int flags) => new(SysException.Check(Libc.open(path, flags, 0), "open", path));

    public void Dispose()
    {
        Root.Dispose();
        Cwd.Dispose();
        MountNs.Dispose();
        MountInfo.Dispose();
    }
}

/// <summary>
/// Does the mount work of one worker thread, in the caller's mount namespace, root and working
/// directory. Thread-confined: the constructor unshares CLONE_FS so that setns(CLONE_NEWNS) and
/// chroot change this thread only; create it on the thread that uses it and never share it.
/// Everything acts on file descriptors opened and checked under the container's lock, so a
/// thread of the caller rewriting its path buffers after we read them changes nothing.
/// </summary>
public sealed unsafe class MountPerformer : IDisposable
{
    const int CAP_SYS_ADMIN = 21;
    readonly SafeFd _ownMountNs;
    public int ThreadId { get; } = Environment.CurrentManagedThreadId;

    public MountPerformer()
    {
        SysException.Check(Libc.unshare(Libc.CLONE_FS), "unshare", "CLONE_FS");
        int own = SysException.Check(Libc.open("/proc/thread-self/ns/mnt", Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", "/proc/thread-self/ns/mnt");
        // Kept at a high number: the way back must not be an fd that a stray close elsewhere in the
        // process (a bug, a test) frees and the next open reuses. See also StillOurs.
        int high = Libc.fcntl(own, F_DUPFD_CLOEXEC, 900);
        if (high >= 0) { Libc.close(own); own = high; }
        _ownMountNs = new SafeFd(own);
        BindImports();
    }

    /// <summary>
    /// P/Invoke targets are resolved (dlopen/dlsym) on first call. Make that first call here, in
    /// our own root: resolved while chrooted, it would search the container's file system for libc.
    /// </summary>
    static void BindImports()
    {
        Libc.Statx stx;
        var attr = new Libc.MountAttr();
        Libc.IoVec v = default;
        Libc.setns(-1, 0);
        Libc.ioctl(-1, 0, null);
        Libc.fchdir(-1);
        Libc.chroot("");
        Libc.openat(-1, "", 0, 0);
        Libc.statx(-1, "", 0, 0, &stx);
        Libc.syscall(-1, 0, 0, 0, 0, 0, 0);
        Libc.MountSetattr(-1, "", 0, ref attr);
        Libc.umount2("", 0);
        Libc.read(-1, null, 0);
        Libc.lseek(-1, 0, 0);
        Libc.process_vm_readv(0, &v, 0, &v, 0, 0);
        _ = CapabilitySets.Get();
        _ = System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(1);
    }

    /// <summary>
    /// Enters the caller's mount namespace, root and cwd. When <paramref name="kernelFs"/> is given
    /// ("/proc" or "/sys"), it is opened from the namespace's root first (before the chroot) and returned.
    /// </summary>
    public SafeFd? Enter(CallerHandles caller, string? kernelFs)
    {
        // Never go in without a way back: the fd to return with must still be a mount namespace.
        if (!StillOurs()) throw new SysException("setns", "own mount namespace fd is no longer a mount namespace", 9 /* EBADF */);
        SysException.Check(Libc.setns(caller.MountNs.Fd, Libc.CLONE_NEWNS), "setns", "caller mount namespace");
        SafeFd? fs = null;
        if (kernelFs is not null)
        {
            int fd = Libc.openat(Libc.AT_FDCWD, kernelFs, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
            if (fd >= 0) fs = new SafeFd(fd);
        }
        SysException.Check(Libc.fchdir(caller.Root.Fd), "fchdir", "caller root");
        SysException.Check(Libc.chroot("."), "chroot", "caller root");
        SysException.Check(Libc.fchdir(caller.Cwd.Fd), "fchdir", "caller cwd");
        return fs;
    }

    const int F_DUPFD_CLOEXEC = 1030;
    const ulong NS_GET_NSTYPE = 0xb703;

    unsafe bool StillOurs() => Libc.ioctl(_ownMountNs.Fd, NS_GET_NSTYPE, null) == Libc.CLONE_NEWNS;

    /// <summary>
    /// Back to the supervisor's own mount namespace, which also resets root and cwd. If this fails
    /// the thread would keep acting inside a container: end the process (fail closed, see NotifyServer).
    /// </summary>
    public void Leave()
    {
        if (Libc.setns(_ownMountNs.Fd, Libc.CLONE_NEWNS) != 0)
            Environment.FailFast($"seccomp notify: setns back to the supervisor's mount namespace failed (errno {Libc.Errno})");
    }

    /// <summary>Opens a path as the caller would resolve it (O_PATH), with its mount id and mount-root bit.</summary>
    public static (SafeFd? Fd, ulong MountId, bool IsMountRoot, int Errno) Resolve(string path, bool follow)
    {
        int fd = Libc.openat(Libc.AT_FDCWD, path, Libc.O_PATH | Libc.O_CLOEXEC | (follow ? 0 : Libc.O_NOFOLLOW), 0);
        if (fd < 0) return (null, 0, false, Libc.Errno);
        var safe = new SafeFd(fd);
        var (id, root, errno) = MountIdOf(fd);
        if (errno != 0) { safe.Dispose(); return (null, 0, false, errno); }
        return (safe, id, root, 0);
    }

    public static (ulong MountId, bool IsMountRoot, int Errno) MountIdOf(int fd, string path = "", int flags = 0)
    {
        Libc.Statx stx;
        if (Libc.statx(fd, path, flags | (path.Length == 0 ? (int)Libc.AT_EMPTY_PATH_FLAG : 0), Libc.STATX_MNT_ID, &stx) != 0)
            return (0, false, Libc.Errno);
        if ((stx.Mask & Libc.STATX_MNT_ID) == 0) return (0, false, Libc.ENOSYS);
        bool root = (stx.AttributesMask & Libc.STATX_ATTR_MOUNT_ROOT) != 0 && (stx.Attributes & Libc.STATX_ATTR_MOUNT_ROOT) != 0;
        return (stx.MntId, root, 0);
    }

    /// <summary>The caller's mount table, read from the fd opened before setns (a fresh read each time).</summary>
    public static List<MountEntry> ReadMountInfo(SafeFd mountInfo)
    {
        Libc.lseek(mountInfo.Fd, 0, 0);
        var text = new StringBuilder();
        byte[] buffer = new byte[65536];
        fixed (byte* b = buffer)
            while (true)
            {
                nint n = Libc.read(mountInfo.Fd, b, buffer.Length);
                if (n < 0 && Libc.Errno == Libc.EINTR) continue;
                SysException.Check((int)Math.Min(n, 0), "read", "caller mountinfo");
                if (n == 0) break;
                text.Append(Encoding.UTF8.GetString(buffer, 0, (int)n));
            }
        return MountInfo.Parse(text.ToString());
    }

    /// <summary>Performs a decision other than Continue/Refuse; returns 0 or the errno the kernel gave.</summary>
    public int Perform(MountDecision decision, SafeFd? target, MountEntry? targetMount, SafeFd? source, SafeFd? kernelFs) => decision switch
    {
        MountDecision.SetFlags s => SetFlags(target!, s),
        MountDecision.Bind b => Bind(source!.Fd, target!, b.Recursive, b.MakeReadOnly ? MountFlags.ReadOnly : MountFlags.None),
        MountDecision.Move => Attach(source!.Fd, target!),
        MountDecision.Unmount u => Unmount(target!, targetMount!, u.Flags),
        MountDecision.BindKernelFs k => kernelFs is null ? Libc.ENOENT : Bind(kernelFs.Fd, target!, recursive: true, k.Set),
        _ => throw new ArgumentException($"not an operation: {decision}"),
    };

    static int SetFlags(SafeFd target, MountDecision.SetFlags s)
    {
        if (s.SuperblockOptions.Count > 0 && ReconfigureSuperblock(target, s.SuperblockOptions) is var e and not 0) return e;
        var attr = new Libc.MountAttr { AttrSet = (ulong)s.Set, AttrClr = (ulong)s.Clear };
        return Libc.MountSetattr(target.Fd, "", Libc.AT_EMPTY_PATH_FLAG, ref attr) == 0 ? 0 : Libc.Errno;
    }

    /// <summary>
    /// Superblock options (tmpfs size=...) through fspick + fsconfig on the checked mount. We run as
    /// host root, which may reconfigure any superblock; the caller may only touch superblocks its
    /// user namespace owns. So CAP_SYS_ADMIN leaves this thread's effective set for the call: the
    /// kernel then grants it only in user namespaces owned by our euid (0, the container's owner),
    /// exactly the container's own, and refuses the host's superblocks (an ext4 under a bind mount).
    /// </summary>
    static int ReconfigureSuperblock(SafeFd target, IReadOnlyList<string> options)
    {
        var caps = CapabilitySets.Get();
        (caps with { Effective = caps.Effective & ~(1UL << CAP_SYS_ADMIN) }).Set();
        int fsfd = -1;
        try
        {
            fsfd = Libc.FsPick(target.Fd, "", Libc.FSPICK_EMPTY_PATH | Libc.FSPICK_CLOEXEC);
            if (fsfd < 0) return Libc.Errno;
            foreach (var option in options)
            {
                int eq = option.IndexOf('=');
                int r = eq < 0 ? Libc.FsConfig(fsfd, Libc.FSCONFIG_SET_FLAG, option, null)
                               : Libc.FsConfig(fsfd, Libc.FSCONFIG_SET_STRING, option[..eq], option[(eq + 1)..]);
                if (r != 0) return Libc.Errno;
            }
            return Libc.FsConfig(fsfd, Libc.FSCONFIG_CMD_RECONFIGURE, null, null) == 0 ? 0 : Libc.Errno;
        }
        finally
        {
            if (fsfd >= 0) Libc.close(fsfd);
            caps.Set();
        }
    }

    static int Bind(int sourceFd, SafeFd target, bool recursive, MountFlags set)
    {
        uint flags = Libc.OPEN_TREE_CLONE_FLAG | Libc.OPEN_TREE_CLOEXEC_FLAG | Libc.AT_EMPTY_PATH_FLAG | (recursive ? Libc.AT_RECURSIVE_FLAG : 0);
        int tree = Libc.OpenTree(sourceFd, "", flags);
        if (tree < 0) return Libc.Errno;
        using var treeFd = new SafeFd(tree);
        if (set != MountFlags.None)
        {
            // Before it is attached: no moment where the copy is visible without these flags.
            var attr = new Libc.MountAttr { AttrSet = (ulong)set };
            if (Libc.MountSetattr(tree, "", Libc.AT_EMPTY_PATH_FLAG | (recursive && set != MountFlags.ReadOnly ? Libc.AT_RECURSIVE_FLAG : 0), ref attr) != 0)
                return Libc.Errno;
        }
        return Attach(tree, target);
    }

    static int Attach(int fromFd, SafeFd target) =>
        Libc.MoveMount(fromFd, "", target.Fd, "", (uint)Libc.MOVE_MOUNT_F_EMPTY_PATH | Libc.MOVE_MOUNT_T_EMPTY_PATH) == 0 ? 0 : Libc.Errno;

    /// <summary>
    /// There is no umount by fd: open the directory holding the mount point (its path in the
    /// caller's mountinfo, relative to the caller's root, which is ours now), check that its entry
    /// of that name still shows this very mount (by mount id), and unmount the name there without
    /// following symlinks. A rename race makes the ids differ and we answer EBUSY.
    /// </summary>
    static int Unmount(SafeFd target, MountEntry mount, int flags)
    {
        string name = Path.GetFileName(mount.MountPoint);
        string? dir = Path.GetDirectoryName(mount.MountPoint);
        if (name.Length == 0 || dir is null) return Libc.EINVAL;
        int parent = Libc.openat(Libc.AT_FDCWD, dir, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (parent < 0) return Libc.Errno;
        using var parentFd = new SafeFd(parent);
        var (id, _, errno) = MountIdOf(parent, name, Libc.AT_SYMLINK_NOFOLLOW);
        if (errno != 0) return errno;
        var (targetId, _, targetErrno) = MountIdOf(target.Fd);
        if (targetErrno != 0) return targetErrno;
        if (id != targetId) return Libc.EBUSY;
        // Our O_PATH fd holds a reference on the mount: the kernel would call it busy.
        target.Dispose();
        if (Libc.fchdir(parent) != 0) return Libc.Errno;
        return Libc.umount2(name, flags | Libc.UMOUNT_NOFOLLOW) == 0 ? 0 : Libc.Errno;
    }

    public void Dispose() => _ownMountNs.Dispose();
}
