using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using SandboxRunc.Oci;

namespace SandboxRunc.Rootfs;

/// <summary>
/// Builds the container's filesystem view inside its new mount namespace: the spec's mounts under
/// the rootfs, the device nodes, then pivot_root (or MS_MOVE + chroot with --no-pivot), then the
/// masked and read-only paths. Runs in the container's init, as root of its user namespace.
/// </summary>
internal sealed unsafe class RootfsBuilder(InitConfig config)
{
    readonly Spec _spec = config.Spec;
    readonly string _rootfs = config.Rootfs;

    static readonly (string Path, uint Major, uint Minor)[] DefaultDevices =
    [
        ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
        ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
    ];

    /// <summary>Everything up to (not including) pivot_root: hooks that run before it see this view.</summary>
    public void PrepareMounts()
    {
        // Keep our mounts from propagating back to the host (rslave unless the spec says otherwise).
        ulong propagation = MountOptions.RootfsPropagation(_spec.Linux?.RootfsPropagation) ?? (Libc.MS_SLAVE | Libc.MS_REC);
        Mount(null, "/", null, propagation, null);
        // The rootfs must be a mount point for pivot_root.
        Mount(_rootfs, _rootfs, null, Libc.MS_BIND | Libc.MS_REC, null);

        var mounts = _spec.Mounts ?? [];
        for (int i = 0; i < mounts.Count; i++)
        {
            try { MountOne(mounts[i], config.MountSources.GetValueOrDefault(i)); }
            catch (Exception e) when (e is SysException or IOException or UnauthorizedAccessException)
            {
                // Name the spec's mount, not the host staging path the kernel was given.
                var m = mounts[i];
                string reason = e is SysException s ? System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(s.Errno) : e.Message;
                throw new RuntimeException($"mounts[{i}]: mount {m.Source ?? m.Type} on {m.Destination} (type {m.Type ?? "none"}" +
                    $"{(m.Options is { Count: > 0 } opts ? ", options " + string.Join(',', opts) : "")}): {reason}");
            }
        }
        if (!(_spec.Mounts ?? []).Any(m => m.Destination == "/dev"))
            Directory.CreateDirectory(_rootfs + "/dev");
        CreateDevices();
        CreateDevSymlinks();
        if (config.EmulationDir is { } emulation) EmulationBinds.Apply(_rootfs, emulation);
    }

    /// <param name="stagedSource">an ID-mapped view of the bind source made by the host, if any.</param>
    void MountOne(Oci.Mount m, string? stagedSource)
    {
        string dest = SecureJoin.Join(_rootfs, m.Destination);
        var o = MountOptions.Parse(m.Options, m.Type);
        if (m.Type == "cgroup" || m.Type == "cgroup2")
        {
            MountCgroup(dest, o);
            return;
        }
        if (o.Bind)
        {
            string source = stagedSource ?? m.Source ?? throw new InvalidOperationException($"mount {m.Destination}: a bind mount needs a source");
            if (!Path.Exists(source)) throw new IOException("the source does not exist");
            CreateMountpoint(dest, isDirectory: Directory.Exists(source));
            Mount(source, dest, null, Libc.MS_BIND | (o.Recursive ? Libc.MS_REC : 0), null);
            ulong wanted = o.Flags & ~(Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_REC);
            if (wanted != 0)
                Remount(dest, wanted, recursive: false);
        }
        else
        {
            CreateMountpoint(dest, isDirectory: true);
            try
            {
                Mount(m.Source ?? m.Type, dest, m.Type, o.Flags, o.Data.Length > 0 ? o.Data : null);
            }
            catch (SysException e) when (m.Type == "sysfs" && e.Errno == Libc.EPERM)
            {
                // A user namespace that does not own the network namespace may not mount sysfs: bind the host's, read-only.
                Mount("/sys", dest, null, Libc.MS_BIND | Libc.MS_REC, null);
                Remount(dest, Libc.MS_RDONLY | (o.Flags & (Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC)), recursive: false);
            }
        }
        foreach (var p in o.Propagation)
            Mount(null, dest, null, p, null);
    }

    /// <summary>
    /// cgroup v1 without a cgroup namespace: a tmpfs with each hierarchy's container directory bound in,
    /// so the container sees its own cgroup as the root, as under runc.
    /// </summary>
    void MountCgroup(string dest, ParsedMountOptions o)
    {
        CreateMountpoint(dest, isDirectory: true);
        if (config.CgroupMounts.Count == 0)
        {
            // Unified hierarchy: mount cgroup2 (our cgroup namespace makes it show the container's own tree).
            Mount("cgroup", dest, "cgroup2", o.Flags & (Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC), null);
            return;
        }
        Mount("tmpfs", dest, "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, "mode=755");
        foreach (var c in config.CgroupMounts)
        {
            string target = dest + "/" + c.Name;
            Directory.CreateDirectory(target);
            Mount(c.HostDir, target, null, Libc.MS_BIND | Libc.MS_REC, null);
            Remount(target, (o.Flags & Libc.MS_RDONLY) | Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, recursive: false);
            // Joined hierarchies ("cpu,cpuacct") are also reachable by each controller's name.
            if (c.Name.Contains(','))
                foreach (var alias in c.Name.Split(','))
                    if (!Path.Exists(dest + "/" + alias)) Libc.symlink(c.Name, dest + "/" + alias);
        }
        if (o.ReadOnly)
            Remount(dest, Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, recursive: false);
    }

    void CreateDevices()
    {
        var devices = DefaultDevices.Select(d => new Device { Type = "c", Path = d.Path, Major = d.Major, Minor = d.Minor, FileMode = 0x1b6 /* 0666 */ })
            .Concat(_spec.Linux?.Devices ?? []);
        foreach (var d in devices)
        {
            // The container's own pty multiplexer and console are set up elsewhere (symlink, terminal bind).
            if (d.Path is "/dev/ptmx" or "/dev/console") continue;
            string dest = SecureJoin.Join(_rootfs, d.Path);
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            if (d.Type == "p")
            {
                // A FIFO is no device of the host's: it is made here, as runc makes it (mknod needs no privilege for it).
                MakeNode(dest, d, Libc.S_IFIFO);
                continue;
            }
            if (config.UserNamespace)
            {
                // mknod is not allowed in a user namespace: bind the host's node instead, the one that IS the
                // device the spec names (type, major, minor), wherever the engine asked to show it
                // (--device /dev/fuse:/dev/x), never a host node found by the container's path alone.
                if (HostDeviceNode(d) is not { } hostNode) continue;
                if (!File.Exists(dest)) File.WriteAllBytes(dest, []);
                Mount(hostNode, dest, null, Libc.MS_BIND, null);
                continue;
            }
            uint type = d.Type switch
            {
                "c" or "u" => Libc.S_IFCHR,
                "b" => Libc.S_IFBLK,
                _ => throw new InvalidOperationException($"device {d.Path}: unknown type \"{d.Type}\""),
            };
            MakeNode(dest, d, type);
        }
    }

    /// <summary>The host's node for a device of the spec: at its own path if that node is this device, else the
    /// first node under /dev (and /dev/net) that is; null if the host has none.</summary>
    static unsafe string? HostDeviceNode(Device d)
    {
        uint type = d.Type == "b" ? Libc.S_IFBLK : Libc.S_IFCHR;
        bool Is(string path)
        {
            Libc.Statx stx;
            return Libc.statx(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, 0x3 /* TYPE|MODE */, &stx) == 0
                && (stx.Mode & Libc.S_IFMT) == type && stx.RdevMajor == d.Major && stx.RdevMinor == d.Minor;
        }
        if (d.Path is { Length: > 0 } own && Is(own)) return own;
        foreach (var dir in new[] { "/dev", "/dev/net" })
        {
            try
            {
                foreach (var path in Directory.EnumerateFileSystemEntries(dir))
                    if (Is(path)) return path;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return null;
    }

    static void MakeNode(string dest, Device d, uint type)
    {
        uint mode = (d.FileMode ?? 0x1b6) & 0xfff;
        if (File.Exists(dest)) File.Delete(dest);
        ulong dev = type == Libc.S_IFIFO ? 0 : MakeDev((ulong)d.Major, (ulong)d.Minor);
        SysException.Check(Libc.mknod(dest, type | mode, dev), "mknod", d.Path);
        SysException.Check(Libc.chmod(dest, mode), "chmod", d.Path);
        SysException.Check(Libc.chown(dest, d.Uid ?? 0, d.Gid ?? 0), "chown", d.Path);
    }

    static ulong MakeDev(ulong major, ulong minor) =>
        ((major & 0xfffff000UL) << 32) | ((major & 0xfffUL) << 8) | ((minor & 0xffffff00UL) << 12) | (minor & 0xffUL);

    void CreateDevSymlinks()
    {
        (string Target, string Link)[] links =
        [
            ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
        ];
        foreach (var (target, link) in links)
        {
            string dest = _rootfs + link;
            if (!Path.Exists(dest) && new FileInfo(dest).LinkTarget is null)
                Libc.symlink(target, dest);
        }
        if (Directory.Exists(_rootfs + "/dev/pts"))
        {
            string ptmx = _rootfs + "/dev/ptmx";
            if (File.Exists(ptmx) && new FileInfo(ptmx).LinkTarget is null) File.Delete(ptmx);
            if (new FileInfo(ptmx).LinkTarget is null) Libc.symlink("pts/ptmx", ptmx);
        }
    }

    /// <summary>Makes the rootfs the container's "/".</summary>
    public void EnterRoot()
    {
        if (config.NoPivot)
        {
            SysException.Check(Libc.chdir(_rootfs), "chdir", _rootfs);
            Mount(_rootfs, "/", null, Libc.MS_MOVE, null);
            SysException.Check(Libc.chroot("."), "chroot", _rootfs);
            SysException.Check(Libc.chdir("/"), "chdir", "/");
            return;
        }
        using var oldRoot = new SafeFd(SysException.Check(Libc.open("/", Libc.O_DIRECTORY | Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", "/"));
        using var newRoot = new SafeFd(SysException.Check(Libc.open(_rootfs, Libc.O_DIRECTORY | Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", _rootfs));
        SysException.Check(Libc.fchdir(newRoot.Fd), "fchdir", _rootfs);
        // pivot_root(".", "."): the old root ends up on top of the new one, then we detach it.
        fixed (byte* dot = ".\0"u8)
            SysException.Check(Libc.syscall(Libc.SYS_pivot_root, (long)dot, (long)dot, 0, 0, 0, 0), "pivot_root", _rootfs);
        SysException.Check(Libc.fchdir(oldRoot.Fd), "fchdir", "old root");
        Mount(null, ".", null, Libc.MS_SLAVE | Libc.MS_REC, null);
        SysException.Check(Libc.umount2(".", Libc.MNT_DETACH), "umount2", "old root");
        SysException.Check(Libc.chdir("/"), "chdir", "/");
    }

    /// <summary>After pivot: masked paths, read-only paths, a read-only root.</summary>
    public void FinishRoot()
    {
        foreach (var p in _spec.Linux?.ReadonlyPaths ?? [])
        {
            if (!Path.Exists(p) || (config.EmulationDir is not null && EmulationBinds.ReplacesReadonlyPath(p))) continue;
            Mount(p, p, null, Libc.MS_BIND | Libc.MS_REC, null);
            Remount(p, Libc.MS_RDONLY, recursive: true);
        }
        foreach (var p in _spec.Linux?.MaskedPaths ?? [])
        {
            if (Directory.Exists(p)) Mount("tmpfs", p, "tmpfs", Libc.MS_RDONLY, null);
            else if (File.Exists(p)) Mount("/dev/null", p, null, Libc.MS_BIND, null);
        }
        if (_spec.Root?.Readonly == true)
            Remount("/", Libc.MS_RDONLY, recursive: false);
    }

    /// <summary>
    /// Remount a bind mount with extra flags. Flags the kernel locked on it (nosuid, nodev, noexec, atime
    /// flags inherited from a more privileged mount namespace) must be repeated or the kernel says EPERM.
    /// </summary>
    internal static void Remount(string target, ulong flags, bool recursive)
    {
        Mount(null, target, null, Libc.MS_BIND | Libc.MS_REMOUNT | (recursive ? Libc.MS_REC : 0) | flags | LockedFlags(target), null);
    }

    /// <summary>The per-mount flags of the mount <paramref name="path"/> is on (statvfs).</summary>
    internal static ulong LockedFlags(string path)
    {
        byte* buf = stackalloc byte[Libc.StatvfsSize];
        if (Libc.statvfs(path, buf) != 0) return 0;
        ulong st = *(ulong*)(buf + Libc.StatvfsFlagOffset);
        ulong flags = st & (Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC | Libc.MS_NOATIME | Libc.MS_NODIRATIME);
        if ((st & 4096) != 0) flags |= Libc.MS_RELATIME; // ST_RELATIME
        return flags;
    }

    static void CreateMountpoint(string dest, bool isDirectory)
    {
        if (isDirectory) { Directory.CreateDirectory(dest); return; }
        Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
        if (!File.Exists(dest)) File.WriteAllBytes(dest, []);
    }

    internal static void Mount(string? source, string target, string? type, ulong flags, string? data) =>
        SysException.Check(Libc.mount(source, target, type, flags, data), $"mount {source ?? type ?? "(none)"} on", target);
}
