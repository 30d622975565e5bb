// The only place that touches cgroupfs files. Writes go through open(2)/write(2) rather than
// File.WriteAllText so the exact errno the kernel returns for a refused value (EINVAL, EBUSY, ...)
// reaches the message together with the file and the value. rmdir is declared here rather than in
// Interop/Libc.cs because only this folder needs it.
using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Interop;

namespace SandboxRunc.Cgroups;

internal static unsafe partial class CgroupFs
{
    [LibraryImport("libc", EntryPoint = "rmdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int sys_rmdir(string path);

    internal static string ErrText(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>Writes value to dir/file (the file must exist: cgroupfs files are never created).</summary>
    internal static void Write(string dir, string file, string value)
    {
        string path = Path.Combine(dir, file);
        int errno = TryWrite(path, value);
        if (errno != 0)
            throw new CgroupException($"cgroup: write {value} to {path}: {ErrText(errno)}", errno);
    }

    /// <summary>Writes without throwing; returns 0 or the errno.</summary>
    internal static int TryWrite(string path, string value)
    {
        int fd;
        do fd = Libc.open(path, Libc.O_WRONLY | Libc.O_TRUNC | Libc.O_CLOEXEC, 0);
        while (fd == -1 && Libc.Errno == Libc.EINTR);
        if (fd == -1) return Libc.Errno;
        try
        {
            byte[] bytes = Encoding.UTF8.GetBytes(value);
            fixed (byte* p = bytes)
            {
                nint n;
                do n = Libc.write(fd, p, bytes.Length);
                while (n == -1 && Libc.Errno == Libc.EINTR);
                if (n == -1) return Libc.Errno;
            }
            return 0;
        }
        finally { Libc.close(fd); }
    }

    /// <summary>
    /// Writes value to file in the cgroup reached from <paramref name="top"/> by <paramref name="names"/>, one name at a time
    /// from an fd of top, never following a symlink nor taking "." or "..": however the container rearranges its subtree
    /// meanwhile, the file written is below top. Returns 0 or the errno (EINVAL for a name that is no plain name).
    /// </summary>
    internal static int WriteBelow(string top, IReadOnlyList<string> names, string file, string value)
    {
        int fd = Libc.open(top, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd == -1) return Libc.Errno;
        try
        {
            foreach (string name in names.Append(file))
                if (name.Length == 0 || name == "." || name == ".." || name.Contains('/')) return Libc.EINVAL;
            foreach (string name in names)
            {
                int next;
                do next = Libc.openat(fd, name, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
                while (next == -1 && Libc.Errno == Libc.EINTR);
                if (next == -1) return Libc.Errno;
                Libc.close(fd);
                fd = next;
            }
            return CgroupTree.WriteAt(fd, file, value);
        }
        finally { Libc.close(fd); }
    }

    internal static string Read(string dir, string file)
    {
        string path = Path.Combine(dir, file);
        try { return File.ReadAllText(path).Trim(); }
        catch (IOException e) { throw new CgroupException($"cgroup: read {path}: {e.Message}"); }
        catch (UnauthorizedAccessException e) { throw new CgroupException($"cgroup: read {path}: {e.Message}"); }
    }

    internal static bool Exists(string dir, string file) => File.Exists(Path.Combine(dir, file));

    /// <summary>rmdir; returns 0 or the errno (ENOENT included).</summary>
    internal static int Rmdir(string path) => sys_rmdir(path) == 0 ? 0 : Marshal.GetLastPInvokeError();

    internal static List<int> ReadPids(string dir)
    {
        var pids = new List<int>();
        string text;
        try { text = File.ReadAllText(Path.Combine(dir, "cgroup.procs")); }
        catch (DirectoryNotFoundException) { return pids; }
        catch (FileNotFoundException) { return pids; }
        catch (IOException e) { throw new CgroupException($"cgroup: read {Path.Combine(dir, "cgroup.procs")}: {e.Message}"); }
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (int.TryParse(line, out int pid)) pids.Add(pid);
        return pids;
    }
}
