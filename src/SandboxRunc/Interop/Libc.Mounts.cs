using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>
/// The mount-related calls the seccomp-notify supervisor needs: the new mount API (raw syscalls,
/// glibc has no wrappers for all of them), statx with the mount id, namespaces and another
/// process's memory. Raw results; callers use <see cref="SysException.Check(int,string,string?)"/>.
/// </summary>
public static unsafe partial class Libc
{
    public const long SYS_fspick = 433, SYS_fsconfig = 431, SYS_fsopen = 430, SYS_fsmount = 432,
        SYS_open_tree_attr = 467, SYS_mount = 165, SYS_umount2 = 166, SYS_swapon = 167, SYS_swapoff = 168,
        SYS_reboot = 169;

    [LibraryImport(C, SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);
    [LibraryImport(C, SetLastError = true)]
    public static partial int setns(int fd, int nstype);
    [LibraryImport(C, SetLastError = true)]
    public static partial int unshare(int flags);
    public const int CLONE_FS = 0x200, CLONE_NEWNS = 0x20000;

    /// <summary>process_vm_readv(2): reads another process's memory (needs ptrace access: we are host root).</summary>
    [LibraryImport(C, SetLastError = true)]
    public static partial nint process_vm_readv(int pid, IoVec* local, ulong liovcnt, IoVec* remote, ulong riovcnt, ulong flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint process_vm_writev(int pid, IoVec* local, ulong liovcnt, IoVec* remote, ulong riovcnt, ulong flags);
    [LibraryImport(C, SetLastError = true)]
    public static partial int sysinfo(byte* info);

    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirfd, string path, int flags, uint mask, Statx* buf);
    public const uint STATX_MNT_ID = 0x1000;
    public const ulong STATX_ATTR_MOUNT_ROOT = 0x2000;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;

    /// <summary>struct statx (linux/stat.h), 256 bytes; only the fields we read are named.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct Statx
    {
        [FieldOffset(0)] public uint Mask;
        [FieldOffset(8)] public ulong Attributes;
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(56)] public ulong AttributesMask;
        [FieldOffset(128)] public uint RdevMajor;
        [FieldOffset(132)] public uint RdevMinor;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
        [FieldOffset(144)] public ulong MntId;
    }

    public static int OpenTree(int dirfd, string path, uint flags)
    {
        fixed (byte* p = Utf8Z(path))
            return (int)syscall(SYS_open_tree, dirfd, (long)p, flags, 0, 0, 0);
    }

    public static int MoveMount(int fromDirfd, string fromPath, int toDirfd, string toPath, uint flags)
    {
        fixed (byte* f = Utf8Z(fromPath))
        fixed (byte* t = Utf8Z(toPath))
            return (int)syscall(SYS_move_mount, fromDirfd, (long)f, toDirfd, (long)t, flags, 0);
    }

    public static int MountSetattr(int dirfd, string path, uint flags, ref MountAttr attr)
    {
        fixed (byte* p = Utf8Z(path))
        fixed (MountAttr* a = &attr)
            return (int)syscall(SYS_mount_setattr, dirfd, (long)p, flags, (long)a, sizeof(MountAttr), 0);
    }

    public static int FsPick(int dirfd, string path, uint flags)
    {
        fixed (byte* p = Utf8Z(path))
            return (int)syscall(SYS_fspick, dirfd, (long)p, flags, 0, 0, 0);
    }

    /// <summary>fsconfig(2) with a string key and an optional string value (FSCONFIG_SET_FLAG/SET_STRING/CMD_*).</summary>
    public static int FsConfig(int fsfd, uint cmd, string? key, string? value)
    {
        fixed (byte* k = key is null ? null : Utf8Z(key))
        fixed (byte* v = value is null ? null : Utf8Z(value))
            return (int)syscall(SYS_fsconfig, fsfd, cmd, (long)k, (long)v, 0, 0);
    }

    public const uint OPEN_TREE_CLONE_FLAG = 1, OPEN_TREE_CLOEXEC_FLAG = 0x80000, AT_RECURSIVE_FLAG = 0x8000,
        AT_EMPTY_PATH_FLAG = 0x1000, MOVE_MOUNT_T_EMPTY_PATH = 0x40, FSPICK_CLOEXEC = 1, FSPICK_EMPTY_PATH = 8;
    public const uint FSCONFIG_SET_FLAG = 0, FSCONFIG_SET_STRING = 1, FSCONFIG_CMD_RECONFIGURE = 7;
    public const ulong MOUNT_ATTR_RDONLY = 1, MOUNT_ATTR_NOSUID = 2, MOUNT_ATTR_NODEV = 4, MOUNT_ATTR_NOEXEC = 8;
    public const int UMOUNT_NOFOLLOW = 8, MNT_FORCE = 1, MNT_EXPIRE = 4;
    public const int ENOSYS = 38, ENOMEM = 12, EFAULT = 14;

    static byte[] Utf8Z(string s)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}
