using System.Runtime.InteropServices;

namespace SandboxRunc.Fuse;

/// <summary>
/// The kernel's FUSE wire format (include/uapi/linux/fuse.h), protocol 7.x with x up to 38: only the
/// structs and constants the server uses. Every message from /dev/fuse is a <see cref="InHeader"/> followed
/// by the opcode's argument struct (and names, NUL-terminated); every reply is an <see cref="OutHeader"/>
/// followed by the opcode's result struct, written with one write(2). All fields are host-endian and
/// the structs are padded to 8 bytes. Sizes are checked against the C header in FuseAbiTests.
/// </summary>
static class FuseProtocol
{
    public const uint KernelMajor = 7;
    /// <summary>The minor we speak (FOPEN_NOFLUSH needs 35; init_out is 64 bytes from 23 on).</summary>
    public const uint OurMinor = 38;
    /// <summary>Oldest kernel minor we accept: 7.31 (Linux 5.4) has max_pages and fuse_write_in's 40 bytes.</summary>
    public const uint OldestMinor = 31;
    public const ulong RootId = 1;

    /// <summary>Largest WRITE payload we negotiate; the read buffer must hold it plus the headers.</summary>
    public const int MaxWrite = 128 * 1024;
    public const int InBufferSize = MaxWrite + 4096;
    /// <summary>Largest READ reply: max_pages (32) pages.</summary>
    public const int MaxRead = 128 * 1024;
    public const int OutBufferSize = MaxRead + 4096;

    public enum Opcode : uint
    {
        Lookup = 1, Forget = 2, Getattr = 3, Setattr = 4, Readlink = 5, Symlink = 6, Mknod = 8, Mkdir = 9,
        Unlink = 10, Rmdir = 11, Rename = 12, Link = 13, Open = 14, Read = 15, Write = 16, Statfs = 17,
        Release = 18, Fsync = 20, Setxattr = 21, Getxattr = 22, Listxattr = 23, Removexattr = 24, Flush = 25,
        Init = 26, Opendir = 27, Readdir = 28, Releasedir = 29, Fsyncdir = 30, Getlk = 31, Setlk = 32,
        Setlkw = 33, Access = 34, Create = 35, Interrupt = 36, Bmap = 37, Destroy = 38, Ioctl = 39, Poll = 40,
        NotifyReply = 41, BatchForget = 42, Fallocate = 43, Readdirplus = 44, Rename2 = 45, Lseek = 46,
        CopyFileRange = 47, Syncfs = 50, Tmpfile = 51,
    }

    // fuse_init_in/out flags (the low 32 bits; we need nothing from flags2).
    public const uint FUSE_ASYNC_READ = 1 << 0, FUSE_ATOMIC_O_TRUNC = 1 << 3, FUSE_BIG_WRITES = 1 << 5,
        FUSE_PARALLEL_DIROPS = 1 << 18, FUSE_MAX_PAGES = 1 << 22;
    // fuse_open_out.open_flags
    public const uint FOPEN_DIRECT_IO = 1 << 0, FOPEN_NOFLUSH = 1 << 5;
    // fuse_setattr_in.valid
    public const uint FATTR_MODE = 1 << 0, FATTR_UID = 1 << 1, FATTR_GID = 1 << 2, FATTR_SIZE = 1 << 3,
        FATTR_ATIME = 1 << 4, FATTR_MTIME = 1 << 5, FATTR_FH = 1 << 6, FATTR_ATIME_NOW = 1 << 7,
        FATTR_MTIME_NOW = 1 << 8, FATTR_LOCKOWNER = 1 << 9, FATTR_CTIME = 1 << 10, FATTR_KILL_SUIDGID = 1 << 11;
    /// <summary>Set in the unique of an INTERRUPT (and of the reply to it) to tell it from the request; requests
    /// have even uniques. Not in the uapi header: fs/fuse/fuse_dev_i.h defines it, the protocol relies on it.</summary>
    public const ulong FUSE_INT_REQ_BIT = 1;

    // Mode bits and dirent types (sys/stat.h, dirent.h).
    public const uint S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000;
    public const uint DT_DIR = 4, DT_REG = 8, DT_LNK = 10;

    // errno values replies use (asm-generic/errno-base.h, errno.h).
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, EBADF = 9, EAGAIN = 11, EACCES = 13,
        EISDIR = 21, EINVAL = 22, ENFILE = 23, ENOSYS = 38, EPROTO = 71, ETIMEDOUT = 110, ENODEV = 19;

    [StructLayout(LayoutKind.Sequential)]
    public struct InHeader
    {
        public uint Len;
        public Opcode Opcode;
        public ulong Unique;
        public ulong NodeId;
        public uint Uid;
        public uint Gid;
        public uint Pid;
        public ushort TotalExtLen;
        public ushort Padding;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct OutHeader
    {
        public uint Len;
        public int Error;
        public ulong Unique;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Attr
    {
        public ulong Ino, Size, Blocks, Atime, Mtime, Ctime;
        public uint AtimeNsec, MtimeNsec, CtimeNsec, Mode, Nlink, Uid, Gid, Rdev, Blksize, Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct EntryOut
    {
        public ulong NodeId, Generation, EntryValid, AttrValid;
        public uint EntryValidNsec, AttrValidNsec;
        public Attr Attr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct AttrOut
    {
        public ulong AttrValid;
        public uint AttrValidNsec, Dummy;
        public Attr Attr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct InitIn
    {
        public uint Major, Minor, MaxReadahead, Flags, Flags2;
    }

    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct InitOut
    {
        public uint Major, Minor, MaxReadahead, Flags;
        public ushort MaxBackground, CongestionThreshold;
        public uint MaxWrite, TimeGran;
        public ushort MaxPages, MapAlignment;
        public uint Flags2;
        public fixed uint Unused[7];
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ForgetIn { public ulong Nlookup; }

    [StructLayout(LayoutKind.Sequential)]
    public struct BatchForgetIn { public uint Count, Dummy; }

    [StructLayout(LayoutKind.Sequential)]
    public struct ForgetOne { public ulong NodeId, Nlookup; }

    [StructLayout(LayoutKind.Sequential)]
    public struct SetattrIn
    {
        public uint Valid, Padding;
        public ulong Fh, Size, LockOwner, Atime, Mtime, Ctime;
        public uint AtimeNsec, MtimeNsec, CtimeNsec, Mode, Unused4, Uid, Gid, Unused5;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct OpenIn { public uint Flags, OpenFlags; }

    [StructLayout(LayoutKind.Sequential)]
    public struct OpenOut { public ulong Fh; public uint OpenFlags, Padding; }

    [StructLayout(LayoutKind.Sequential)]
    public struct ReleaseIn { public ulong Fh; public uint Flags, ReleaseFlags; public ulong LockOwner; }

    [StructLayout(LayoutKind.Sequential)]
    public struct ReadIn
    {
        public ulong Fh, Offset;
        public uint Size, ReadFlags;
        public ulong LockOwner;
        public uint Flags, Padding;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct WriteIn
    {
        public ulong Fh, Offset;
        public uint Size, WriteFlags;
        public ulong LockOwner;
        public uint Flags, Padding;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct WriteOut { public uint Size, Padding; }

    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct StatfsOut
    {
        public ulong Blocks, Bfree, Bavail, Files, Ffree;
        public uint Bsize, Namelen, Frsize, Padding;
        public fixed uint Spare[6];
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct InterruptIn { public ulong Unique; }

    /// <summary>struct fuse_dirent without its name; a record is this, the name, then zeros up to 8 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Dirent { public ulong Ino, Off; public uint NameLen, Type; }

    public static int DirentSize(int nameLen) => (sizeof_Dirent + nameLen + 7) & ~7;
    const int sizeof_Dirent = 24;
}
