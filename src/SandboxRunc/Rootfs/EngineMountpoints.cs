using System.Runtime.InteropServices;
using SandboxRunc.Interop;

namespace SandboxRunc.Rootfs;

/// <summary>
/// Mount points made in the rootfs the engine gave, before the container gets its own overlay of the same layers.
///
/// runc creates a missing mount point (the /etc/hosts and /etc/resolv.conf of a BuildKit step, a volume's
/// directory) in the very mount the engine handed over. This runtime mounts a second overlay over the engine's
/// layers (ID-mapped), and two overlays of one upper dir do not see each other's changes: the engine's keeps
/// what it had looked up. dockerd's BuildKit looks for /etc/hosts and /etc/resolv.conf in its mount before a
/// step, finds nothing, and after the step removes the empty mount points runc left; through its stale view it
/// found none to remove, so every image built under the lock carried an empty /etc/hosts and /etc/resolv.conf
/// in the first RUN layer that runc's build does not have. Made here, through the engine's own mount, they are
/// in its view, and it removes them as it does under runc.
///
/// As host root over a tree the image controls: every step is relative to a directory fd and follows no
/// symlink; a path with a symlink, "..", or anything but a directory on the way is left to the container's
/// init, which resolves it inside the rootfs as before (and so is any failure here: nothing is refused).
/// Files on disk are owned by 0:0 as under runc.
/// </summary>
internal static class EngineMountpoints
{
    /// <summary>
    /// The mount points to make in the rootfs: the spec's destinations (directory or file) that no other
    /// mount's destination contains, since those are made inside the parent mount (a /dev/shm inside the
    /// /dev tmpfs), never in the rootfs.
    /// </summary>
    public static List<(string Path, bool IsDirectory)> Outermost(IReadOnlyList<(string Destination, bool IsDirectory)> mounts)
    {
        var dests = mounts.Select(m => (Path: Normal(m.Destination), m.IsDirectory)).ToList();
        var result = new List<(string, bool)>();
        foreach (var (path, isDir) in dests)
        {
            if (path is null || path == "/") continue;
            if (dests.Any(o => o.Path is { } other && other != path && (other == "/" || path.StartsWith(other + "/", StringComparison.Ordinal))))
                continue;
            if (!result.Contains((path, isDir))) result.Add((path, isDir));
        }
        return result;
    }

    /// <summary>"/a//b/./c" as "/a/b/c"; null for a path with ".." (left to the init, which resolves it in the rootfs).</summary>
    static string? Normal(string destination)
    {
        var parts = destination.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(p => p != ".").ToList();
        if (parts.Contains("..")) return null;
        return "/" + string.Join('/', parts);
    }

    /// <summary>Makes each missing mount point under <paramref name="rootfs"/> (the engine's mount); see the class.</summary>
    public static void Create(string rootfs, IEnumerable<(string Path, bool IsDirectory)> mountpoints)
    {
        int root = Libc.open(rootfs, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (root < 0) return;
        using var rootFd = new SafeFd(root);
        foreach (var (path, isDir) in mountpoints)
            CreateOne(rootFd.Fd, path.Split('/', StringSplitOptions.RemoveEmptyEntries), isDir);
    }

    static void CreateOne(int root, string[] parts, bool isDirectory)
    {
        if (parts.Length == 0) return;
        int dir = root;
        var opened = new List<SafeFd>();
        try
        {
            for (int i = 0; i < parts.Length - 1; i++)
            {
                int next = OpenDir(dir, parts[i]);
                if (next < 0 && Marshal.GetLastPInvokeError() == Libc.ENOENT && Libc.mkdirat(dir, parts[i], 0x1ED /* 0755 */) == 0)
                    next = OpenDir(dir, parts[i]);
                if (next < 0) return; // a symlink, a file, or no way to make it: the init decides
                opened.Add(new SafeFd(next));
                dir = next;
            }
            string last = parts[^1];
            int existing = Libc.openat(dir, last, Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
            if (existing >= 0) { Libc.close(existing); return; }
            if (Marshal.GetLastPInvokeError() != Libc.ENOENT) return;
            if (isDirectory)
                Libc.mkdirat(dir, last, 0x1ED /* 0755 */);
            else
            {
                int f = Libc.openat(dir, last, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1A4 /* 0644 */);
                if (f >= 0) Libc.close(f);
            }
        }
        finally
        {
            foreach (var fd in opened) fd.Dispose();
        }
    }

    static int OpenDir(int dir, string name) =>
        Libc.openat(dir, name, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
}
