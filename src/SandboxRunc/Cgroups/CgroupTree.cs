// A container's cgroup subtree, walked by file descriptor. Since delegation (CgroupManager.Delegate) the container
// makes what it likes below its top: any number of cgroups, nested deeper than PATH_MAX allows a path to name (a
// path-based walk fails there with ENAMETOOLONG and stops killing and removing), frozen ones (v1), ones it removes
// while we look. So every walk opens each cgroup relative to its parent's fd and climbs back through "..": in cgroupfs
// a cgroup never changes its parent (v1's rename stays within the parent, v2 has none), so ".." is the cgroup we came
// from, and only one fd is open however deep the tree. A cgroup removed under us (its ".." gone) is reopened from
// the top by the names we followed; one that cannot be is skipped, as a removed cgroup holds nothing.
using SandboxRunc.Interop;

namespace SandboxRunc.Cgroups;

internal static class CgroupTree
{
    /// <summary>
    /// Calls <paramref name="pre"/>(fd) for top and every cgroup below it, parents first, and
    /// <paramref name="post"/>(parentFd, name, fd) for every cgroup below top, children first (to remove it). Nothing
    /// when top does not exist.
    /// </summary>
    public static void Walk(string top, Action<int>? pre, Action<int, string, int>? post)
    {
        int cur = Libc.open(top, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (cur == -1)
        {
            if (Libc.Errno == Libc.ENOENT) return;
            throw new CgroupException($"cgroup: open {top}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        }
        // One level per cgroup we are in: the names of its children still to visit, and its own name in its parent.
        var levels = new List<(Queue<string> Pending, string Name)>();
        try
        {
            pre?.Invoke(cur);
            levels.Add((Children(cur), ""));
            while (levels.Count > 0)
            {
                var (pending, name) = levels[^1];
                if (pending.TryDequeue(out var child))
                {
                    int fd = DirTree.OpenDir(cur, child);
                    if (fd == -1) continue; // removed meanwhile
                    Libc.close(cur);
                    cur = fd;
                    pre?.Invoke(cur);
                    levels.Add((Children(cur), child));
                    continue;
                }
                levels.RemoveAt(levels.Count - 1);
                if (levels.Count == 0) break;
                int parent = DirTree.OpenDir(cur, "..");
                if (parent == -1) parent = Reopen(top, levels);
                if (parent == -1) return; // the branch we were in is gone, and so is the way back: nothing left to do there
                post?.Invoke(parent, name, cur);
                Libc.close(cur);
                cur = parent;
            }
        }
        finally { if (cur != -1) Libc.close(cur); }
    }

    static Queue<string> Children(int fd)
    {
        try { return new Queue<string>(DirTree.Entries(fd).Where(e => e.IsDir).Select(e => e.Name)); }
        catch (SysException) { return new Queue<string>(); } // a cgroup removed under us lists nothing
    }

    /// <summary>The cgroup of the last level, opened again from top by the names followed; -1 when gone.</summary>
    static int Reopen(string top, List<(Queue<string> Pending, string Name)> levels)
    {
        int fd = Libc.open(top, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        for (int i = 1; i < levels.Count && fd != -1; i++)
        {
            int next = DirTree.OpenDir(fd, levels[i].Name);
            Libc.close(fd);
            fd = next;
        }
        return fd;
    }

    /// <summary>The processes of top and of every cgroup below it.</summary>
    public static List<int> Pids(string top)
    {
        var pids = new List<int>();
        Walk(top, fd => pids.AddRange(ReadPids(fd)), null);
        return pids;
    }

    /// <summary>cgroup.procs of the cgroup open at fd (empty when it is gone).</summary>
    public static List<int> ReadPids(int fd)
    {
        var pids = new List<int>();
        foreach (var line in ReadAt(fd, "cgroup.procs").Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (int.TryParse(line, out int pid)) pids.Add(pid);
        return pids;
    }

    /// <summary>A control file of the cgroup open at fd, whole ("" when it cannot be opened).</summary>
    public static unsafe string ReadAt(int dirFd, string file)
    {
        int fd = Libc.openat(dirFd, file, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd == -1) return "";
        try
        {
            var bytes = new List<byte>();
            byte* buffer = stackalloc byte[4096];
            while (true)
            {
                nint n = Libc.read(fd, buffer, 4096);
                if (n == -1 && Libc.Errno == Libc.EINTR) continue;
                if (n <= 0) break;
                for (int i = 0; i < n; i++) bytes.Add(buffer[i]);
            }
            return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
        }
        finally { Libc.close(fd); }
    }

    /// <summary>Writes a control file of the cgroup open at fd; 0 or the errno.</summary>
    public static unsafe int WriteAt(int dirFd, string file, string value)
    {
        int fd = Libc.openat(dirFd, file, Libc.O_WRONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd == -1) return Libc.Errno;
        try
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(value);
            fixed (byte* p = bytes)
            {
                nint n;
                do n = Libc.write(fd, p, bytes.Length);
                while (n == -1 && Libc.Errno == Libc.EINTR);
                return n == -1 ? Libc.Errno : 0;
            }
        }
        finally { Libc.close(fd); }
    }
}
