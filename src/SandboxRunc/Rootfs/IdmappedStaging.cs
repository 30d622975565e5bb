using System.Text;
using SandboxRunc.Interop;
using SandboxRunc.Policy;

namespace SandboxRunc.Rootfs;

/// <summary>
/// ID-mapped views of the container's files, made on the host once the container's user namespace
/// exists and before its mount namespace is copied from the host's (nsexec.c waits for us between the
/// two). Everything lives under one private tmpfs per container, /run/sandbox-runc/mnt/KEY, which
/// `delete` detaches in one umount.
///
/// The rootfs: Docker hands over an overlayfs "merged" dir, which cannot be ID-mapped itself. We mount a
/// new overlay over the same layers, each layer (lower and upper) an ID-mapped mount, and mount it with
/// the container root's host IDs as mounter credentials (fsuid/fsgid = range base, capabilities kept):
/// overlayfs writes the upper layer with the mounter's credentials, which the ID-mapped upper maps back
/// to 0. So files on disk keep the owners they would have under runc (root is 0, uid 1000 is 1000)
/// whatever range the container gets next time, and `docker diff`/`commit` see what they expect.
/// A plain rootfs directory (a bundle) becomes an ID-mapped bind mount. Bind mounts and volumes are
/// ID-mapped the same way; a filesystem that cannot be ID-mapped keeps a plain bind (files owned by
/// host IDs outside the range then show as nobody inside) and the log says so.
/// </summary>
internal sealed unsafe class IdmappedStaging
{
    public const string StagingRoot = "/run/sandbox-runc/mnt";
    public string Dir { get; }
    readonly int _userns;
    readonly IdRange? _range;
    int _next;

    IdmappedStaging(string dir, int userns, IdRange? range)
    {
        Dir = dir;
        _userns = userns;
        _range = range;
    }

    /// <param name="range">the container's own range (ID-mapped mounts onto it), or null for a spec's own mappings (plain binds only).</param>
    public static IdmappedStaging Create(string key, int usernsFd, IdRange? range)
    {
        string dir = Path.Combine(StagingRoot, key);
        Directory.CreateDirectory(dir);
        // A private tmpfs: nothing staged here propagates to other mount namespaces (dockerd's, ...).
        RootfsBuilder.Mount("tmpfs", dir, "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, "mode=711");
        RootfsBuilder.Mount(null, dir, null, Libc.MS_PRIVATE, null);
        return new IdmappedStaging(dir, usernsFd, range);
    }

    /// <summary>
    /// Detaches everything staged for a container and removes its directory (no-op if it is gone). A directory that
    /// is still a mount point (a staging tmpfs stacked on another) is detached again, a few times; one that still
    /// cannot be removed is named in a warning, never left behind without a word.
    /// </summary>
    public static void Remove(string? dir)
    {
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir)) return;
        for (int attempt = 0; ; attempt++)
        {
            Libc.umount2(dir, Libc.MNT_DETACH);
            try
            {
                Directory.Delete(dir);
                return;
            }
            catch (DirectoryNotFoundException) { return; }
            catch (IOException e) when (attempt < 4)
            {
                Cli.Log.Debug($"staging dir {dir}: {e.Message}; detaching again");
                Thread.Sleep(20 << attempt);
            }
            catch (IOException e)
            {
                Cli.Log.Warn($"staging dir {dir} could not be removed: {e.Message}");
                return;
            }
        }
    }

    /// <summary>The rootfs the init should use instead of <paramref name="rootfs"/>.</summary>
    /// <param name="mountpoints">the spec's mount points to make in the engine's overlay first (<see cref="EngineMountpoints"/>).</param>
    public string StageRootfs(string rootfs, IEnumerable<(string Path, bool IsDirectory)> mountpoints)
    {
        var overlay = MountInfo.Find(rootfs);
        if (overlay is { FsType: "overlay" })
        {
            // Our overlay and the engine's do not see each other's changes: mount points go through the engine's.
            EngineMountpoints.Create(rootfs, mountpoints);
            return StageOverlay(rootfs, overlay);
        }
        string target = NewDir();
        string? why = TryIdmap(rootfs, target, recursive: true);
        if (why is not null)
            throw new RuntimeException(
                $"rootfs {rootfs}: cannot make an ID-mapped mount of it ({why}); sandbox-runc needs a filesystem that supports ID-mapped mounts (ext4, xfs, btrfs, tmpfs on kernel >= 6.3, overlayfs layers)");
        return target;
    }

    string StageOverlay(string merged, MountInfo.Entry m)
    {
        var opts = MountInfo.SuperOptions(m.SuperOptions);
        if (!opts.TryGetValue("lowerdir", out var lowers) || !opts.TryGetValue("upperdir", out var upper) || !opts.TryGetValue("workdir", out var work))
            throw new RuntimeException($"rootfs {merged}: overlay without lowerdir, upperdir and workdir cannot be ID-mapped");
        string upperParent = Path.GetDirectoryName(upper)!;
        if (Path.GetDirectoryName(work) != upperParent)
            throw new RuntimeException($"rootfs {merged}: upperdir and workdir must share a parent directory to be ID-mapped together");

        var stagedLowers = new List<string>();
        foreach (var lower in lowers.Split(':'))
        {
            string target = NewDir();
            string? why = TryIdmap(lower, target, recursive: false);
            if (why is not null) throw new RuntimeException($"rootfs layer {lower}: cannot make an ID-mapped mount ({why})");
            stagedLowers.Add(target);
        }
        string stagedUpper = NewDir();
        string? upperWhy = TryIdmap(upperParent, stagedUpper, recursive: false);
        if (upperWhy is not null) throw new RuntimeException($"rootfs upper layer {upperParent}: cannot make an ID-mapped mount ({upperWhy})");

        // A volatile overlay (podman run --rm; "fsync=volatile" in mountinfo since kernel 6.6) marks its
        // workdir with work/incompat/volatile, and the kernel then refuses any other mount using that
        // workdir: ours gets its own, next to the engine's (same filesystem, removed with the layer),
        // emptied first, and is volatile too. "userxattr" (rootless-style stores) must be repeated as well.
        bool isVolatile = false, userXattr = false;
        foreach (var flag in m.SuperOptions.Split(','))
        {
            if (flag is "volatile" or "fsync=volatile") isVolatile = true;
            else if (flag is "userxattr") userXattr = true;
        }
        string workName = Path.GetFileName(work);
        if (isVolatile)
        {
            workName = "sandbox-runc-work";
            string ours = Path.Combine(upperParent, workName);
            if (Directory.Exists(ours)) Directory.Delete(ours, recursive: true);
            Directory.CreateDirectory(ours);
            File.SetUnixFileMode(ours, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        string data = $"lowerdir={string.Join(':', stagedLowers)},upperdir={stagedUpper}/{Path.GetFileName(upper)},workdir={stagedUpper}/{workName}";
        if (isVolatile) data += ",volatile";
        if (userXattr) data += ",userxattr";
        if (Encoding.UTF8.GetByteCount(data) >= 4096)
            throw new RuntimeException($"rootfs {merged}: too many layers ({stagedLowers.Count}) for one overlay mount");
        string rootfs = Path.Combine(Dir, "rootfs");
        Directory.CreateDirectory(rootfs);
        AsContainerRoot(() => RootfsBuilder.Mount("overlay", rootfs, "overlay", 0, data));
        return rootfs;
    }

    /// <summary>
    /// A view of a bind mount's source, cloned from the fd the policy judged: ID-mapped when asked and the
    /// filesystem can do it (else a plain bind, logged: its files keep their host owners, shown as nobody).
    /// </summary>
    public string StageBind(SafeFd source, string shownPath, bool recursive, bool idmap)
    {
        string target = IsDirectory(source.Fd) ? NewDir() : NewFile();
        if (idmap && _range is not null)
        {
            string? why = TryClone(source.Fd, target, recursive, idmap: true);
            if (why is null) return target;
            Cli.Log.Warn($"bind mount {shownPath}: not ID-mapped ({why}); its files keep their host owners, shown as nobody inside the container");
        }
        if (TryClone(source.Fd, target, recursive, idmap: false) is { } failed)
            throw new RuntimeException($"bind mount {shownPath}: {failed} (a source the kernel will not copy, e.g. a path in another mount namespace such as /proc/PID/root/...)");
        return target;
    }

    internal static bool IsDirectory(int fd)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        return Libc.fstat(fd, st) == 0 && (*(uint*)(st + 24) & 0xF000) == 0x4000;
    }

    string NewDir()
    {
        string p = Path.Combine(Dir, (_next++).ToString());
        Directory.CreateDirectory(p);
        return p;
    }

    string NewFile()
    {
        string p = Path.Combine(Dir, (_next++).ToString());
        File.WriteAllBytes(p, []);
        return p;
    }

    /// <summary>open_tree(clone) + mount_setattr(idmap) + move_mount; returns null on success, else why not.</summary>
    string? TryIdmap(string source, string target, bool recursive)
    {
        string p = source;
        int fd = Libc.open(p, Libc.O_PATH | Libc.O_CLOEXEC, 0);
        if (fd < 0) return new SysException("open", source, Libc.Errno).Message;
        using var pinned = new SafeFd(fd);
        return TryClone(fd, target, recursive, idmap: true);
    }

    /// <summary>open_tree(fd, CLONE [| RECURSIVE]) [+ mount_setattr(IDMAP)] + move_mount onto target; null on success, else why not.</summary>
    string? TryClone(int sourceFd, string target, bool recursive, bool idmap)
    {
        fixed (byte* dst = Encoding.UTF8.GetBytes(target + "\0"))
        fixed (byte* empty = "\0"u8)
        {
            long rec = recursive ? Libc.AT_RECURSIVE : 0;
            int fd = (int)Libc.syscall(Libc.SYS_open_tree, sourceFd, (long)empty, Libc.OPEN_TREE_CLONE | Libc.OPEN_TREE_CLOEXEC | Libc.AT_EMPTY_PATH | rec, 0, 0, 0);
            if (fd < 0) return new SysException("open_tree", target, Libc.Errno).Message;
            using var tree = new SafeFd(fd);
            if (idmap)
            {
                var attr = new Libc.MountAttr { AttrSet = Libc.MOUNT_ATTR_IDMAP, UsernsFd = (ulong)_userns };
                if (Libc.syscall(Libc.SYS_mount_setattr, fd, (long)empty, Libc.AT_EMPTY_PATH | rec, (long)&attr, sizeof(Libc.MountAttr), 0) < 0)
                    return new SysException("mount_setattr(MOUNT_ATTR_IDMAP)", target, Libc.Errno).Message;
            }
            SysException.Check(Libc.syscall(Libc.SYS_move_mount, fd, (long)empty, Libc.AT_FDCWD, (long)dst, Libc.MOVE_MOUNT_F_EMPTY_PATH, 0), "move_mount", target);
            return null;
        }
    }

    /// <summary>
    /// Runs an action on a fresh thread whose fsuid/fsgid are the container root's host IDs, with its
    /// capabilities kept (setfsuid clears the file capabilities from the effective set; capset restores
    /// them). Credentials are per-thread, so the rest of the process is untouched.
    /// </summary>
    void AsContainerRoot(Action action)
    {
        Exception? failure = null;
        var t = new Thread(() =>
        {
            try
            {
                Libc.syscall(Libc.SYS_setfsgid, _range!.GidBase, 0, 0, 0, 0, 0);
                Libc.syscall(Libc.SYS_setfsuid, _range.UidBase, 0, 0, 0, 0, 0);
                var caps = CapabilitySets.Get();
                (caps with { Effective = caps.Permitted }).Set();
                action();
            }
            catch (Exception e) { failure = e; }
        });
        t.Start();
        t.Join();
        if (failure is not null) throw failure;
    }
}

/// <summary>/proc/self/mountinfo, as far as the staging needs it.</summary>
internal static class MountInfo
{
    public sealed record Entry(string MountPoint, string FsType, string Source, string SuperOptions);

    /// <summary>The topmost mount at exactly this path, or null.</summary>
    public static Entry? Find(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        Entry? found = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            var parts = line.Split(' ');
            int dash = Array.IndexOf(parts, "-");
            if (dash < 0 || parts.Length < dash + 4) continue;
            if (Unescape(parts[4]) == full)
                found = new Entry(full, parts[dash + 1], Unescape(parts[dash + 2]), Unescape(parts[dash + 3]));
        }
        return found;
    }

    public static Dictionary<string, string> SuperOptions(string options) =>
        options.Split(',').Select(o => o.Split('=', 2)).Where(kv => kv.Length == 2)
            .GroupBy(kv => kv[0]).ToDictionary(g => g.Key, g => g.Last()[1]);

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo.</summary>
    public static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && IsOctal(s, i + 1))
            {
                sb.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                i += 3;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s.Substring(at, 3).All(c => c is >= '0' and <= '7');
}
