// Raw access to host procfs/sysfs files for the emulation: every function returns 0 or -errno and throws
// nothing (the FUSE contract). Reads go through open/read directly because procfs and sysfs report sizes of
// 0 or 4096 that have nothing to do with the content, and because the hot files (uptime, meminfo) must not
// pay for FileStream.
using System.Buffers;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;

namespace SandboxRunc.Emulation;

internal static unsafe class HostFiles
{
    /// <summary>The most a host text file may hold to be read whole (the host's /proc/cpuinfo and /proc/stat
    /// on a large machine are hundreds of KiB); beyond, -EFBIG.</summary>
    internal const int MaxText = 4 << 20;

    /// <summary>
    /// Files of the /sys and /proc/sys mirror whose host size is above this are served by offset from the host
    /// file (sysfs binary attributes such as /sys/kernel/btf/vmlinux report their real size; text attributes
    /// report one page, procfs files 0); the others are read whole, up to <see cref="MaxMirrored"/>.
    /// </summary>
    internal const long StreamAbove = 4096;
    internal const int MaxMirrored = 64 << 10;

    /// <summary>Buffers up to this size come from the shared pool; larger ones are plain arrays, so that a
    /// rare large host file does not leave a large buffer parked in the pool (and in the capped heap).</summary>
    const int PooledUpTo = 64 << 10;

    /// <summary>Whole content of a (small, procfs-like) file: at most <paramref name="max"/> bytes, -EFBIG beyond.</summary>
    internal static int Read(string path, out byte[] content, int max = MaxText)
    {
        content = [];
        int fd;
        do fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        while (fd == -1 && Libc.Errno == Libc.EINTR);
        if (fd == -1) return -Libc.Errno;
        byte[] buf = ArrayPool<byte>.Shared.Rent(16384);
        bool pooled = true;
        try
        {
            int len = 0;
            while (true)
            {
                if (len == buf.Length)
                {
                    if (buf.Length > max) return -Libc.EFBIG;
                    int size = buf.Length * 2;
                    var bigger = size <= PooledUpTo ? ArrayPool<byte>.Shared.Rent(size) : new byte[size];
                    Buffer.BlockCopy(buf, 0, bigger, 0, len);
                    if (pooled) ArrayPool<byte>.Shared.Return(buf);
                    pooled = size <= PooledUpTo;
                    buf = bigger;
                }
                nint n;
                fixed (byte* p = &buf[len]) n = Libc.read(fd, p, buf.Length - len);
                if (n == -1)
                {
                    if (Libc.Errno == Libc.EINTR) continue;
                    return -Libc.Errno;
                }
                if (n == 0) break;
                len += (int)n;
            }
            if (len > max) return -Libc.EFBIG;
            content = buf.AsSpan(0, len).ToArray();
            return 0;
        }
        finally
        {
            if (pooled) ArrayPool<byte>.Shared.Return(buf);
            Libc.close(fd);
        }
    }

    internal static string? ReadText(string path) =>
        Read(path, out var b) == 0 ? System.Text.Encoding.UTF8.GetString(b) : null;

    /// <summary>One write(2) of the whole value at offset 0, as sysctl(8) does.</summary>
    internal static int Write(string path, ReadOnlySpan<byte> data)
    {
        int fd;
        do fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        while (fd == -1 && Libc.Errno == Libc.EINTR);
        if (fd == -1) return -Libc.Errno;
        try
        {
            nint n;
            fixed (byte* p = data)
            {
                do n = Libc.write(fd, p, data.Length);
                while (n == -1 && Libc.Errno == Libc.EINTR);
            }
            return n == -1 ? -Libc.Errno : 0;
        }
        finally { Libc.close(fd); }
    }

    /// <summary>lstat: the node kind and permission bits (07777).</summary>
    internal static int Stat(string path, out FuseNodeKind kind, out uint mode) => Stat(path, out kind, out mode, out _);

    /// <summary>lstat: the node kind, permission bits (07777) and size.</summary>
    internal static int Stat(string path, out FuseNodeKind kind, out uint mode, out long size)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        kind = FuseNodeKind.File;
        mode = 0;
        size = 0;
        if (Libc.lstat(path, st) != 0) return -Libc.Errno;
        uint m = *(uint*)(st + Libc.StatModeOffset);
        mode = m & 0xFFF;
        kind = (m & 0xF000) switch { 0x4000 => FuseNodeKind.Directory, 0xA000 => FuseNodeKind.Symlink, _ => FuseNodeKind.File };
        size = *(long*)(st + Libc.StatSizeOffset);
        return 0;
    }

    /// <summary>Opens a regular host file for reading by offset; its size from fstat. -EISDIR etc. otherwise.</summary>
    internal static int OpenForOffsetReads(string path, out SafeFd? file, out long size)
    {
        file = null;
        size = 0;
        int fd;
        do fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, 0);
        while (fd == -1 && Libc.Errno == Libc.EINTR);
        if (fd == -1) return Libc.Errno == Libc.EMFILE ? -Libc.ENFILE : -Libc.Errno;
        var handle = new SafeFd(fd);
        byte* st = stackalloc byte[Libc.StatSize];
        if (Libc.fstat(fd, st) != 0 || (*(uint*)(st + Libc.StatModeOffset) & 0xF000) != 0x8000)
        {
            handle.Dispose();
            return -Libc.EINVAL;
        }
        size = *(long*)(st + Libc.StatSizeOffset);
        file = handle;
        return 0;
    }

    internal static int List(string path, out List<(string Name, FuseNodeKind Kind)> entries)
    {
        entries = [];
        try
        {
            foreach (var info in new DirectoryInfo(path).EnumerateFileSystemInfos())
            {
                var kind = (info.Attributes & FileAttributes.ReparsePoint) != 0 ? FuseNodeKind.Symlink
                    : (info.Attributes & FileAttributes.Directory) != 0 ? FuseNodeKind.Directory : FuseNodeKind.File;
                entries.Add((info.Name, kind));
            }
            entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
            return 0;
        }
        catch (DirectoryNotFoundException) { return -Libc.ENOENT; }
        catch (UnauthorizedAccessException) { return -Libc.EACCES; }
        catch (IOException) { return -Libc.EIO; }
    }

    internal static int ReadLink(string path, out string target)
    {
        byte* buf = stackalloc byte[4096];
        nint n = Libc.readlink(path, buf, 4096);
        target = "";
        if (n < 0) return -Libc.Errno;
        target = System.Text.Encoding.UTF8.GetString(buf, (int)n);
        return 0;
    }
}
