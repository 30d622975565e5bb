using System.Runtime.InteropServices;
using System.Text;

namespace SandboxRunc.Interop;

/// <summary>
/// Walking and removing a directory tree that someone else can write to (a container's engine storage, a cgroup
/// subtree it was delegated) as host root, by file descriptor only: each level is opened relative to its parent's fd
/// with O_NOFOLLOW|O_DIRECTORY and every unlink is relative to the directory it was listed in, so a name swapped for a
/// symbolic link meanwhile is removed as a link (never followed into the host), no path grows past PATH_MAX however
/// deep the tree, and a directory on another filesystem (a mount point) is never entered.
/// (System.IO's recursive delete works by path: it opens each directory again by its full name, following a symlink
/// put there after it was listed.)
/// </summary>
public static unsafe partial class DirTree
{
    /// <summary>One fd is open per level: deeper than this, a directory is moved up to the top of the tree first.</summary>
    public const int MaxDepth = 512;

    const long SYS_getdents64 = 217;
    const int AT_REMOVEDIR = 0x200;
    const int ENOTEMPTY = 39;

    /// <summary>The names in the directory open at fd (not "." and ".."), read from the kernel in batches.</summary>
    public static List<string> Names(int fd) => Entries(fd).Select(e => e.Name).ToList();

    /// <summary>The entries of the directory open at fd (not "." and ".."), with whether each is a directory (d_type).</summary>
    public static List<(string Name, bool IsDir)> Entries(int fd)
    {
        var entries = new List<(string, bool)>();
        const int Size = 32768;
        byte* buffer = (byte*)NativeMemory.Alloc(Size);
        try
        {
            // From the start: the fd may have been read before.
            Libc.syscall(8 /* lseek */, fd, 0, 0, 0, 0, 0);
            while (true)
            {
                long n = Libc.syscall(SYS_getdents64, fd, (long)buffer, Size, 0, 0, 0);
                if (n < 0) throw new SysException("getdents64", null, Libc.Errno);
                if (n == 0) return entries;
                for (long off = 0; off < n;)
                {
                    ushort reclen = *(ushort*)(buffer + off + 16);
                    byte type = buffer[off + 18];
                    byte* name = buffer + off + 19;
                    int len = 0;
                    while (19 + len < reclen && name[len] != 0) len++;
                    var s = Encoding.UTF8.GetString(name, len);
                    if (s is not ("." or "..")) entries.Add((s, type == 4 /* DT_DIR */));
                    off += reclen;
                }
            }
        }
        finally { NativeMemory.Free(buffer); }
    }

    /// <summary>Opens the directory NAME in the directory open at dirFd, never through a symbolic link; -1 with errno.</summary>
    public static int OpenDir(int dirFd, string name) =>
        Libc.openat(dirFd, name, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);

    /// <summary>The device of an open file (st_dev).</summary>
    public static ulong DeviceOf(int fd)
    {
        byte* st = stackalloc byte[256];
        SysException.Check(Libc.fstat(fd, st), "fstat", null);
        return *(ulong*)(st + Libc.StatDevOffset);
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int unlinkat(int dirfd, string path, int flags);

    /// <summary>unlinkat(dirFd, name, AT_REMOVEDIR); 0 or the errno.</summary>
    public static int RemoveDirAt(int dirFd, string name) => unlinkat(dirFd, name, AT_REMOVEDIR) == 0 ? 0 : Libc.Errno;

    /// <summary>
    /// Removes the directory at <paramref name="path"/> and everything in it, by fd as the class says (the path itself
    /// is opened with O_NOFOLLOW at its last component: its parents must be trusted). Returns null when nothing is
    /// left, else why (a mount point below, an error). A directory deeper than <see cref="MaxDepth"/> below it is first
    /// moved up to its top (renameat between fds of the same tree), so any depth goes with a bounded number of fds.
    /// </summary>
    public static string? Remove(string path)
    {
        string parent = Path.GetDirectoryName(path.TrimEnd('/')) ?? "/";
        string name = Path.GetFileName(path.TrimEnd('/'));
        int pfd = Libc.open(parent, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (pfd == -1) return Libc.Errno == Libc.ENOENT ? null : $"open {parent}: {Marshal.GetPInvokeErrorMessage(Libc.Errno)}";
        try
        {
            return RemoveEntry(pfd, name, new Walk(DeviceOf(pfd)), 0, path);
        }
        catch (SysException e) { return e.Message; }
        finally { Libc.close(pfd); }
    }

    sealed class Walk(ulong device)
    {
        public ulong Device { get; } = device;
        /// <summary>The tree's top, open while its contents are removed (where deep directories are moved up to).</summary>
        public int TopFd { get; set; } = -1;
        public int Hoisted { get; set; }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int renameat(int olddirfd, string oldpath, int newdirfd, string newpath);

    /// <summary>Removes NAME (of any type) in the directory dirFd; a directory with its contents. Null or why not.</summary>
    static string? RemoveEntry(int dirFd, string name, Walk walk, int depth, string shown)
    {
        // Anything but a directory (a symbolic link included) goes by its name, whatever it points to.
        if (unlinkat(dirFd, name, 0) == 0) return null;
        int err = Libc.Errno;
        if (err == Libc.ENOENT) return null;
        if (err != Libc.EISDIR) return $"unlink {shown}: {Marshal.GetPInvokeErrorMessage(err)}";
        if (depth >= MaxDepth)
        {
            // Moved up to the top, which lists it again on its next pass.
            string moved = $".sandbox-runc-deep-{++walk.Hoisted}";
            return renameat(dirFd, name, walk.TopFd, moved) == 0 ? null
                : $"rename {shown} to the top: {Marshal.GetPInvokeErrorMessage(Libc.Errno)}";
        }
        // Opened without following a link: one swapped in since the unlink above fails here (ELOOP, ENOTDIR) and is
        // removed as a link on the next pass.
        for (int pass = 0; pass < 3 + (depth == 0 ? walk.Hoisted : 0); pass++)
        {
            int fd = OpenDir(dirFd, name);
            if (fd == -1)
            {
                err = Libc.Errno;
                if (err == Libc.ENOENT) return null;
                if (err is Libc.ELOOP or Libc.ENOTDIR)
                {
                    if (unlinkat(dirFd, name, 0) == 0 || Libc.Errno == Libc.ENOENT) return null;
                    continue;
                }
                return $"open {shown}: {Marshal.GetPInvokeErrorMessage(err)}";
            }
            try
            {
                if (DeviceOf(fd) != walk.Device) return $"{shown} is a mount point (another filesystem): left in place";
                if (depth == 0) walk.TopFd = fd;
                foreach (var child in Names(fd))
                    if (RemoveEntry(fd, child, walk, depth + 1, shown + "/" + child) is { } why) return why;
            }
            finally
            {
                if (depth == 0) walk.TopFd = -1;
                Libc.close(fd);
            }
            err = RemoveDirAt(dirFd, name);
            if (err is 0 or Libc.ENOENT) return null;
            if (err != ENOTEMPTY) return $"rmdir {shown}: {Marshal.GetPInvokeErrorMessage(err)}";
            // Something was added while we removed, or moved up from below: another pass.
        }
        return $"rmdir {shown}: still not empty after {3 + walk.Hoisted} passes";
    }
}
