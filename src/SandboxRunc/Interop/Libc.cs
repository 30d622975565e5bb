using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>
/// The thin typed layer over libc and raw syscalls. Every function returns the raw result; callers
/// wrap it in <see cref="SysException.Check(int,string,string?)"/> so errno and the path reach the message.
/// </summary>
public static unsafe partial class Libc
{
    const string C = "libc";

    // --- files ---
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int openat(int dirfd, string path, int flags, int mode);
    [LibraryImport(C, SetLastError = true)]
    public static partial int close(int fd);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint read(int fd, byte* buf, nint count);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint write(int fd, byte* buf, nint count);
    [LibraryImport(C, SetLastError = true)]
    public static partial int dup2(int oldfd, int newfd);
    [LibraryImport(C, SetLastError = true)]
    public static partial int dup3(int oldfd, int newfd, int flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);
    [LibraryImport(C, SetLastError = true)]
    public static partial int pipe2(int* fds, int flags);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int access(string path, int mode);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string path, uint mode);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknod(string path, uint mode, ulong dev);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chown(string path, uint uid, uint gid);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string path, uint mode);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirfd, string path, uint mode);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chmod(string path, uint mode);
    [LibraryImport(C, SetLastError = true)]
    public static partial int fchown(int fd, uint uid, uint gid);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint sendfile(int outFd, int inFd, long* offset, nint count);
    [LibraryImport(C, SetLastError = true)]
    public static partial int flock(int fd, int operation);
    [LibraryImport(C, SetLastError = true)]
    public static partial int fsync(int fd);
    [LibraryImport(C, SetLastError = true)]
    public static partial uint umask(uint mask);
    [LibraryImport(C, SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* arg);
    [LibraryImport(C, SetLastError = true)]
    public static partial int isatty(int fd);
    [LibraryImport(C, SetLastError = true)]
    public static partial int tcgetattr(int fd, byte* termios);
    [LibraryImport(C, SetLastError = true)]
    public static partial int tcsetattr(int fd, int action, byte* termios);
    [LibraryImport(C)]
    public static partial void cfmakeraw(byte* termios);

    // --- mounts and root ---
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string? source, string target, string? fstype, ulong flags, string? data);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chroot(string path);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chdir(string path);
    [LibraryImport(C, SetLastError = true)]
    public static partial int fchdir(int fd);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int symlink(string target, string linkpath);

    /// <summary>struct stat is 144 bytes on x86_64: st_dev at 0, st_ino at 8, st_mode (u32) at 24.</summary>
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int stat(string path, byte* buf);
    public const int StatSize = 144;

    /// <summary>struct statvfs is 112 bytes on x86_64; f_flag is the ulong at offset 72.</summary>
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lstat(string path, byte* buf);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint readlink(string path, byte* buf, nint size);

    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statvfs(string path, byte* buf);
    public const int StatvfsSize = 112, StatvfsFlagOffset = 72;

    // --- clocks ---
    /// <summary>struct timespec { long tv_sec; long tv_nsec; } (16 bytes on x86_64).</summary>
    [LibraryImport(C, SetLastError = true)]
    public static partial int clock_gettime(int clockId, long* timespec);
    public const int CLOCK_MONOTONIC = 1, CLOCK_BOOTTIME = 7;

    // --- identity and privileges ---
    [LibraryImport(C, SetLastError = true)]
    public static partial int setresuid(uint r, uint e, uint s);
    [LibraryImport(C, SetLastError = true)]
    public static partial int setresgid(uint r, uint e, uint s);
    [LibraryImport(C, SetLastError = true)]
    public static partial int setgroups(nint size, uint* list);
    [LibraryImport(C, SetLastError = true)]
    public static partial int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);
    [LibraryImport(C, SetLastError = true)]
    public static partial int prlimit(int pid, int resource, ulong* newLimit, ulong* oldLimit);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int sethostname(string name, nint len);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int setdomainname(string name, nint len);
    [LibraryImport(C, SetLastError = true)]
    public static partial int personality(ulong persona);

    // --- processes ---
    [LibraryImport(C, SetLastError = true)]
    public static partial int getpid();
    [LibraryImport(C)]
    public static partial int getppid();
    [LibraryImport(C, SetLastError = true)]
    public static partial int setsid();
    [LibraryImport(C, SetLastError = true)]
    public static partial int kill(int pid, int sig);
    [LibraryImport(C, SetLastError = true)]
    public static partial int waitpid(int pid, int* status, int options);
    [LibraryImport(C, SetLastError = true)]
    public static partial int execve(byte* path, byte** argv, byte** envp);
    [LibraryImport(C, SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawn_file_actions_init(void* fa);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawn_file_actions_destroy(void* fa);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawn_file_actions_adddup2(void* fa, int fd, int newfd);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawnattr_init(void* attr);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawnattr_destroy(void* attr);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawnattr_setflags(void* attr, short flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawnattr_setsigmask(void* attr, ulong* sigmask);
    [LibraryImport(C, SetLastError = true)]
    public static partial int posix_spawnattr_setsigdefault(void* attr, ulong* sigmask);
    [LibraryImport(C, SetLastError = true)]
    public static partial int sched_setscheduler(int pid, int policy, int* param);
    public const int SCHED_OTHER = 0, SCHED_IDLE = 5;

    // --- sockets ---
    [LibraryImport(C, SetLastError = true)]
    public static partial int socketpair(int domain, int type, int protocol, int* sv);
    [LibraryImport(C, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);
    [LibraryImport(C, SetLastError = true)]
    public static partial int connect(int fd, void* addr, int len);
    [LibraryImport(C, SetLastError = true)]
    public static partial int bind(int fd, void* addr, int len);
    [LibraryImport(C, SetLastError = true)]
    public static partial int listen(int fd, int backlog);
    [LibraryImport(C, SetLastError = true)]
    public static partial int accept4(int fd, void* addr, void* len, int flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint sendmsg(int fd, MsgHdr* msg, int flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint recvmsg(int fd, MsgHdr* msg, int flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial int poll(PollFd* fds, ulong nfds, int timeout);

    // --- raw syscalls (x86_64 numbers) ---
    public const long SYS_pivot_root = 155;
    public const long SYS_capget = 125;
    public const long SYS_capset = 126;
    public const long SYS_seccomp = 317;
    public const long SYS_pidfd_open = 434;
    public const long SYS_pidfd_send_signal = 424;
    public const long SYS_close_range = 436;
    public const long SYS_setns = 308;
    public const long SYS_open_tree = 428, SYS_move_mount = 429, SYS_mount_setattr = 442;
    public const long SYS_setfsuid = 122, SYS_setfsgid = 123;
    public const long OPEN_TREE_CLONE = 1, OPEN_TREE_CLOEXEC = 0x80000, AT_RECURSIVE = 0x8000, AT_EMPTY_PATH = 0x1000;
    public const long MOVE_MOUNT_F_EMPTY_PATH = 4;
    public const ulong MOUNT_ATTR_IDMAP = 0x00100000;

    /// <summary>struct mount_attr (linux/mount.h), 32 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MountAttr
    {
        public ulong AttrSet;
        public ulong AttrClr;
        public ulong Propagation;
        public ulong UsernsFd;
    }

    // --- constants ---
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_NOCTTY = 0x100,
        O_TRUNC = 0x200, O_APPEND = 0x400, O_NONBLOCK = 0x800, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000,
        O_CLOEXEC = 0x80000, O_PATH = 0x200000;
    public const int F_GETFD = 1, F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, FD_CLOEXEC = 1, F_ADD_SEALS = 1033,
        F_SEAL_SEAL = 1, F_SEAL_SHRINK = 2, F_SEAL_GROW = 4, F_SEAL_WRITE = 8;
    public const uint MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
    public const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;
    public const int AT_FDCWD = -100;
    public const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFDIR = 0x4000, S_IFBLK = 0x6000, S_IFREG = 0x8000;

    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_SYNCHRONOUS = 16,
        MS_REMOUNT = 32, MS_MANDLOCK = 64, MS_DIRSYNC = 128, MS_NOSYMFOLLOW = 256, MS_NOATIME = 1024,
        MS_NODIRATIME = 2048, MS_BIND = 4096, MS_MOVE = 8192, MS_REC = 16384, MS_SILENT = 32768,
        MS_UNBINDABLE = 1 << 17, MS_PRIVATE = 1 << 18, MS_SLAVE = 1 << 19, MS_SHARED = 1 << 20,
        MS_RELATIME = 1 << 21, MS_STRICTATIME = 1 << 24, MS_LAZYTIME = 1 << 25;
    public const int MNT_DETACH = 2;

    public const int PR_SET_PDEATHSIG = 1, PR_SET_KEEPCAPS = 8, PR_SET_NAME = 15, PR_CAPBSET_DROP = 24,
        PR_SET_CHILD_SUBREAPER = 36, PR_SET_NO_NEW_PRIVS = 38, PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_RAISE = 2,
        PR_CAP_AMBIENT_CLEAR_ALL = 4, PR_SET_DUMPABLE = 4;

    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0x80000, SOL_SOCKET = 1,
        SCM_RIGHTS = 1, MSG_CMSG_CLOEXEC = 0x40000000, MSG_CTRUNC = 8, MSG_NOSIGNAL = 0x4000;
    public const short POLLIN = 1, POLLERR = 8, POLLHUP = 0x10, POLLNVAL = 0x20;

    public const short POSIX_SPAWN_SETSIGMASK = 0x08, POSIX_SPAWN_SETSIGDEF = 0x04;
    public const int WNOHANG = 1;

    public const ulong TIOCSCTTY = 0x540E, TIOCGPTN = 0x80045430, TIOCSPTLCK = 0x40045431, TIOCSWINSZ = 0x5414;

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Len;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    public static int Errno => Marshal.GetLastPInvokeError();
    public const int ESTALE = 116, ECONNRESET = 104, EOPNOTSUPP = 95;
    public const int EINTR = 4, ENOENT = 2, ESRCH = 3, EEXIST = 17, EAGAIN = 11, EBUSY = 16, EINVAL = 22,
        EPERM = 1, ECHILD = 10, ENOTDIR = 20, EACCES = 13, ENXIO = 6, ELOOP = 40, EIO = 5, EISDIR = 21,
        ENAMETOOLONG = 36, ETIMEDOUT = 110;
}
