using SandboxRunc.Interop;

namespace SandboxRunc.Rootfs;

/// <summary>
/// The host directories an inner engine keeps its images and containers in (see Policy/SystemContainerPolicy):
/// /var/lib/sandbox-runc/storage/KEY/{docker,containerd,kubelet}, KEY the container's staging key. Overlay cannot use
/// the container's own overlay rootfs as its upper layer, so inner dockerd would fall back to vfs there; these live on
/// the host filesystem of /var/lib (ext4, xfs: what overlay2 needs), each owned by the container's root (its host uid
/// and gid, mode 0700: no other host user looks in). Plain binds, not ID-mapped: the files an inner engine writes
/// keep the host IDs of the container's range. `delete` removes the whole directory by fd (see Remove).
/// </summary>
internal static class EngineStorage
{
    public const string Root = "/var/lib/sandbox-runc/storage";

    public static string DirOf(string key) => Path.Combine(Root, key);

    /// <summary>The host directory bound at a container path (/var/lib/docker -> KEY/docker).</summary>
    public static string HostDirFor(string key, string containerPath) => Path.Combine(DirOf(key), Path.GetFileName(containerPath));

    /// <summary>Makes KEY/ (root's, 0711) and one directory per container path, owned by uid:gid, 0700.</summary>
    public static void Create(string key, IEnumerable<string> containerPaths, uint uid, uint gid)
    {
        Directory.CreateDirectory(Root);
        SysException.Check(Libc.chmod(Root, 0x1c9 /* 0711 */), "chmod", Root);
        string dir = DirOf(key);
        // A leftover of a container that died without delete (same state dir, same key): start empty.
        Remove(key);
        SysException.Check(Libc.mkdir(dir, 0x1c9), "mkdir", dir);
        foreach (var p in containerPaths)
        {
            string sub = HostDirFor(key, p);
            SysException.Check(Libc.mkdir(sub, 0x1c0 /* 0700 */), "mkdir", sub);
            SysException.Check(Libc.chown(sub, uid, gid), "chown", sub);
        }
    }

    /// <summary>
    /// Removes KEY/ and everything in it; true if there is nothing left. By file descriptor (Interop/DirTree): the tree
    /// is written by the container's root, and by anyone it let in (a 0777 directory, bound by another container), who
    /// may be running still and swap a directory for a symbolic link while it is being removed: a removal by path
    /// would then follow the link and remove host files as host root.
    /// </summary>
    public static bool Remove(string key)
    {
        string dir = DirOf(key);
        if (DirTree.Remove(dir) is not { } why) return true;
        Cli.Log.Warn($"engine storage {dir}: {why}");
        return false;
    }
}
