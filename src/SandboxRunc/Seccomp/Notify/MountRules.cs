using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>A place in a filesystem: the device (major:minor) and a path from that filesystem's root.</summary>
public readonly record struct FsLocation(uint Major, uint Minor, string Path);

/// <summary>A mount the container's init had before any user code ran.</summary>
/// <param name="Covers">what it is mounted over: the place in its parent mount's filesystem (null for the
/// namespace's root mount, whose parent lies outside).</param>
public sealed record InitialMount(uint Major, uint Minor, string Root, string MountPoint, MountFlags Flags, FsLocation? Covers = null);

/// <summary>
/// The container's mount policy and the pure decision over one trapped mount/umount2/pivot_root: no
/// system calls here, everything the decision needs is in <see cref="MountCall"/> and <see cref="CallerFacts"/>.
///
/// A mount "derives from" an initial mount when it shows the same filesystem (major:minor) at or
/// below the initial mount's root: binds of it, and its copies in new mount namespaces
/// (`unshare -m`), wherever they are mounted. Such mounts carry the initial mount's restrictions as the
/// kernel's MNT_LOCK_* flags would: read-only stays read-only, nosuid/nodev/noexec cannot be cleared (a
/// remount that would clear one fails with EPERM), flags may be added.
///
/// Protection (no unmount, no move, no pivot_root away) follows what a mount HIDES, not where it
/// stands: a protected initial mount (/proc, /sys, the masked and read-only paths, the emulated
/// files; every initial mount with protect-initial-mounts) covers a place in its parent's
/// filesystem — /proc/uptime's emulated file covers procfs's "/uptime", a read-only bind over a
/// volume's "sub" covers that directory of the volume. Every mount that covers the same place is
/// protected too: the copies made by `mount --rbind /proc /tmp/x`, by `unshare -m`, by pivot_root,
/// wherever they now stand, since taking one off would show what the original hides. Places in the
/// container's own rootfs (its root mount's tree) are the exception (unmounting a copy of /proc from a chroot only shows
/// the image's empty /proc directory, which the container can see anyway).
/// A new anonymous filesystem may reuse the device number of an initial one the container
/// unmounted; it then inherits that mount's restrictions: stricter, never looser.
/// </summary>
public sealed class MountRules
{
    public string ContainerId { get; }
    public IReadOnlyList<InitialMount> Initial { get; }
    /// <summary>Mount points whose initial mount may not be unmounted or moved: /, /proc, /sys, masked and read-only paths, emulated submounts.</summary>
    public IReadOnlySet<string> Protected { get; }
    public bool ProtectAllInitialMounts { get; }

    public static readonly string[] AlwaysProtected = ["/", "/proc", "/sys"];

    /// <summary>The places that protected initial mounts cover (see the class summary).</summary>
    public IReadOnlySet<FsLocation> ProtectedPlaces { get; }

    public MountRules(string containerId, IEnumerable<InitialMount> initial, IEnumerable<string> protectedPaths, bool protectAllInitialMounts = false)
    {
        ContainerId = containerId;
        Initial = initial.ToList();
        Protected = new HashSet<string>(AlwaysProtected.Concat(protectedPaths).Select(Normalize), StringComparer.Ordinal);
        ProtectAllInitialMounts = protectAllInitialMounts;
        var root = Initial.FirstOrDefault(i => i.MountPoint == "/");
        ProtectedPlaces = Initial
            .Where(i => i.Covers is not null && (ProtectAllInitialMounts || Protected.Contains(i.MountPoint)))
            .Select(i => i.Covers!.Value)
            .Where(c => root is null || c.Major != root.Major || c.Minor != root.Minor || !IsAtOrBelow(c.Path, root.Root))
            .ToHashSet();
    }

    /// <summary>
    /// The lead's entry point: the container init's /proc/PID/mountinfo, read when the supervisor
    /// starts (before user code runs), and the protected paths (the spec's maskedPaths and
    /// readonlyPaths, the emulated /proc and /sys submounts).
    /// </summary>
    public static MountRules FromMountInfo(string containerId, string initMountInfo, IEnumerable<string> protectedPaths, bool protectAllInitialMounts = false)
    {
        var table = MountInfo.Parse(initMountInfo);
        return new(containerId,
            table.Select(m => new InitialMount(m.Major, m.Minor, m.Root, m.MountPoint, m.Flags, Covered(m, table))),
            protectedPaths, protectAllInitialMounts);
    }

    /// <summary>
    /// The place a mount covers: its mount point seen in its parent mount's filesystem (the parent's root
    /// joined with the mount point's path below the parent's mount point). Null when the parent is not in
    /// the table (the root of the namespace or of a chroot).
    /// </summary>
    public static FsLocation? Covered(MountEntry m, IReadOnlyList<MountEntry> table)
    {
        MountEntry? parent = null;
        foreach (var p in table)
            if (p.Id == m.ParentId && p.Id != m.Id) { parent = p; break; }
        if (parent is null || !IsAtOrBelow(m.MountPoint, parent.MountPoint)) return null;
        string below = parent.MountPoint == "/" ? m.MountPoint : m.MountPoint[parent.MountPoint.Length..];
        string path = parent.Root == "/" ? (below.Length == 0 ? "/" : below) : parent.Root + below;
        return new FsLocation(parent.Major, parent.Minor, path);
    }

    public static bool DerivesFrom(MountEntry m, InitialMount i) =>
        m.Major == i.Major && m.Minor == i.Minor && IsAtOrBelow(m.Root, i.Root);

    public IEnumerable<InitialMount> AncestorsOf(MountEntry m) => Initial.Where(i => DerivesFrom(m, i));

    /// <summary>
    /// The initial mount this mount is a copy of where it stands (same mount point, covering the same place), if any.
    /// A copy stacked on another mount at that mount point covers that mount instead: runc's pivot_root(".", ".") leaves
    /// the old root (a copy of the container's "/") stacked on the inner container's new root, and its umount2(".")
    /// shows only that new root. Such a copy is protected by what it hides (ProtectedPlaces), like any other.
    /// </summary>
    InitialMount? InitialAtItsPlace(MountEntry m, IReadOnlyList<MountEntry> table)
    {
        var i = Initial.LastOrDefault(i => i.MountPoint == m.MountPoint && DerivesFrom(m, i));
        if (i is null) return null;
        var covered = Covered(m, table);
        bool stacked = covered is not null && table.Any(p => p.Id == m.ParentId && p.Id != m.Id && p.MountPoint == m.MountPoint);
        return stacked && covered != i.Covers ? null : i;
    }

    /// <summary>Why a mount of the caller's table is protected, or null: at its initial place, or covering what a protected one covers.</summary>
    public string? ProtectedBecause(MountEntry m, IReadOnlyList<MountEntry> table)
    {
        if (InitialAtItsPlace(m, table) is { } i && (ProtectAllInitialMounts || Protected.Contains(i.MountPoint)))
            return $"{m.MountPoint} is a protected mount of the container";
        if (ProtectedPlaces.Count > 0 && Covered(m, table) is { } place && ProtectedPlaces.Contains(place))
        {
            var original = Initial.FirstOrDefault(x => x.Covers == place);
            return $"{m.MountPoint} is a copy of the protected mount {original?.MountPoint ?? "?"} of the container (it hides what that one hides)";
        }
        return null;
    }

    bool IsProtected(MountEntry m, IReadOnlyList<MountEntry> table) => ProtectedBecause(m, table) is not null;

    /// <summary>Protected mounts strictly below <paramref name="mountPoint"/> in the caller's table.</summary>
    bool HasProtectedBelow(string mountPoint, IReadOnlyList<MountEntry> mounts) =>
        mounts.Any(m => IsStrictlyBelow(m.MountPoint, mountPoint) && IsProtected(m, mounts));

    public MountDecision Decide(MountCall call, CallerFacts caller)
    {
        if (!caller.HasCapSysAdmin)
            return new MountDecision.Refuse(Libc.EPERM, "caller lacks CAP_SYS_ADMIN");
        return call.Syscall switch
        {
            MountSyscall.Umount2 => DecideUmount(call, caller),
            MountSyscall.PivotRoot => DecidePivotRoot(caller),
            _ => DecideMount(call, caller),
        };
    }

    /// <summary>
    /// The decisions that need no look-up in the caller's mount namespace (no privilege,
    /// propagation change, a new filesystem other than proc/sysfs); null when one is needed.
    /// The same answers <see cref="Decide"/> gives: it saves the namespace round trip.
    /// </summary>
    public MountDecision? DecideWithoutLookup(MountCall call, bool hasCapSysAdmin)
    {
        if (!hasCapSysAdmin || call.Syscall != MountSyscall.Mount) return hasCapSysAdmin ? null : Decide(call, new CallerFacts(false, null, null, []));
        ulong flags = call.EffectiveFlags;
        if ((flags & (Libc.MS_REMOUNT | Libc.MS_BIND)) != 0) return null;
        if ((flags & (Libc.MS_SHARED | Libc.MS_PRIVATE | Libc.MS_SLAVE | Libc.MS_UNBINDABLE)) != 0 ||
            ((flags & Libc.MS_MOVE) == 0 && call.FsType is not ("proc" or "sysfs" or "overlay")))
            return DecideMount(call, new CallerFacts(true, null, null, []));
        return null;
    }

    MountDecision DecideUmount(MountCall call, CallerFacts caller)
    {
        if (caller.Target is not { } t) return Kernel(Libc.ENOENT, "target not found");
        if (!t.IsMountRoot) return Kernel(Libc.EINVAL, "target is not a mount point");
        if (ProtectedBecause(t.Mount, caller.Mounts) is { } why)
            return new MountDecision.Refuse(Libc.EPERM, why);
        // MNT_FORCE needs CAP_SYS_ADMIN in the host's user namespace (the kernel's can_umount), which no container
        // has, and we unmount as host root: the kernel would call the superblock's umount_begin before anything else,
        // and FUSE aborts its connection there (every mount of it, the host's too), NFS kills its client's calls.
        if ((call.Flags & Libc.MNT_FORCE) != 0)
            return new MountDecision.Refuse(Libc.EPERM, "a forced unmount (umount -f, MNT_FORCE) needs CAP_SYS_ADMIN in the host's user namespace");
        return new MountDecision.Unmount((int)call.Flags);
    }

    /// <summary>
    /// pivot_root detaches new_root's mount from where it stands (its whole tree moves to the root) and
    /// moves the old root under put_old. What new_root covered becomes visible: refused when it is a
    /// protected mount or a copy of one. Performed by us on the checked fds.
    /// </summary>
    MountDecision DecidePivotRoot(CallerFacts caller)
    {
        if (caller.Target is not { } t) return Kernel(Libc.ENOENT, "new_root not found");
        if (caller.Source is null) return Kernel(Libc.ENOENT, "put_old not found");
        if (!t.IsMountRoot) return Kernel(Libc.EINVAL, "new_root is not a mount point");
        if (ProtectedBecause(t.Mount, caller.Mounts) is { } why)
            return new MountDecision.Refuse(Libc.EPERM, $"pivot_root would move it away: {why}");
        return new MountDecision.PivotRoot();
    }

    /// <summary>The kernel's own dispatch order in path_mount(), so that we judge what the kernel would do.</summary>
    MountDecision DecideMount(MountCall call, CallerFacts caller)
    {
        ulong flags = call.EffectiveFlags;
        const ulong Propagation = Libc.MS_SHARED | Libc.MS_PRIVATE | Libc.MS_SLAVE | Libc.MS_UNBINDABLE;

        if ((flags & Libc.MS_REMOUNT) != 0) return DecideRemount(call, caller, bind: (flags & Libc.MS_BIND) != 0);
        if ((flags & Libc.MS_BIND) != 0) return DecideBind(caller, recursive: (flags & Libc.MS_REC) != 0);
        if ((flags & Propagation) != 0)
            return new MountDecision.Continue("propagation change only: harmless whatever path the kernel re-reads");
        if ((flags & Libc.MS_MOVE) != 0) return DecideMove(caller);
        return DecideNewMount(call, caller);
    }

    MountDecision DecideRemount(MountCall call, CallerFacts caller, bool bind)
    {
        if (caller.Target is not { } t) return Kernel(Libc.ENOENT, "target not found");
        if (!t.IsMountRoot) return Kernel(Libc.EINVAL, "target is not a mount point");

        var requested = (MountFlags)(call.EffectiveFlags & (ulong)MountFlags.All);
        var superblock = bind ? [] : SuperblockOptions(call.Data);
        var ancestors = AncestorsOf(t.Mount).ToList();
        if (ancestors.Count == 0)
            return new MountDecision.SetFlags(requested, MountFlags.All & ~requested, superblock);

        const MountFlags Kept = MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec;
        var readOnlyAncestor = ancestors.FirstOrDefault(a => a.Flags.HasFlag(MountFlags.ReadOnly));
        if (readOnlyAncestor is not null && !requested.HasFlag(MountFlags.ReadOnly))
            return new MountDecision.Refuse(Libc.EPERM,
                $"{t.Mount.MountPoint} derives from the read-only mount {readOnlyAncestor.MountPoint} of the container and stays read-only");

        // The kernel's MNT_LOCK_* rule, as for mounts a more privileged namespace made (runc in a user
        // namespace, rootless podman): a flag the container's creator set cannot be cleared, and a remount that
        // would clear it fails with EPERM rather than succeed with the flag quietly kept. Adding flags is free.
        var closest = ancestors.OrderBy(a => a.Root.Length).ThenBy(a => a.MountPoint == t.Mount.MountPoint).Last();
        var cleared = closest.Flags & Kept & ~requested;
        if (cleared != 0)
            return new MountDecision.Refuse(Libc.EPERM,
                $"{t.Mount.MountPoint} derives from {closest.MountPoint} of the container, whose {FlagWords(cleared)} cannot be cleared (locked, as the kernel locks a more privileged creator's flags)");

        return new MountDecision.SetFlags(requested, MountFlags.All & ~requested, superblock);
    }

    static string FlagWords(MountFlags f) => string.Join(",",
        new[] { (MountFlags.NoSuid, "nosuid"), (MountFlags.NoDev, "nodev"), (MountFlags.NoExec, "noexec"), (MountFlags.ReadOnly, "ro") }
            .Where(x => f.HasFlag(x.Item1)).Select(x => x.Item2));

    MountDecision DecideBind(CallerFacts caller, bool recursive)
    {
        if (caller.Source is not { } s) return Kernel(Libc.ENOENT, "source not found");
        if (caller.Target is null) return Kernel(Libc.ENOENT, "target not found");
        bool readOnly = AncestorsOf(s.Mount).Any(a => a.Flags.HasFlag(MountFlags.ReadOnly));
        // A plain bind copies one mount without what is mounted below it: it would show the files
        // that masked paths (/proc/kcore ...) hide. Such a bind is made recursive.
        bool mustRecurse = !recursive && HasProtectedBelow(s.Mount.MountPoint, caller.Mounts);
        return new MountDecision.Bind(recursive || mustRecurse, readOnly);
    }

    MountDecision DecideMove(CallerFacts caller)
    {
        if (caller.Source is not { } s) return Kernel(Libc.ENOENT, "source not found");
        if (caller.Target is null) return Kernel(Libc.ENOENT, "target not found");
        if (!s.IsMountRoot) return Kernel(Libc.EINVAL, "source is not a mount point");
        if (ProtectedBecause(s.Mount, caller.Mounts) is { } why)
            return new MountDecision.Refuse(Libc.EPERM, $"{why} and cannot be moved");
        // Mounts below move with it: one protected by what it hides stays so (its parent and its place in it move
        // along), so only one protected by where it stands would lose that by the move. systemd's sandboxing moves
        // an rbind copy of "/" (with its copies of /proc's masks) onto "/".
        if (caller.Mounts.Any(m => IsStrictlyBelow(m.MountPoint, s.Mount.MountPoint) && InitialAtItsPlace(m, caller.Mounts) is { } i
                && (ProtectAllInitialMounts || Protected.Contains(i.MountPoint))))
            return new MountDecision.Refuse(Libc.EPERM, $"protected mounts of the container lie below {s.Mount.MountPoint}");
        return new MountDecision.Move();
    }

    /// <summary>
    /// proc and sysfs become binds of the caller namespace's own /proc and /sys, so they carry
    /// the masked paths and the emulated submounts. Only for callers in the container's own pid
    /// (net) namespace: a nested pid namespace needs a procfs of its own; the kernel gives it one
    /// only when a procfs is already fully visible to the caller (mnt_too_revealing), which the
    /// container's masked /proc is not, so it fails there rather than showing the host's files.
    /// Any other filesystem is created by the kernel as the caller (its superblock must belong
    /// to the container's user namespace). Residual: a racing thread can rewrite the fstype
    /// string between our read and the kernel's; the kernel then mounts that other type, still
    /// as the caller, with every check the kernel makes, and proc/sysfs still hit the
    /// mnt_too_revealing refusal above.
    /// </summary>
    MountDecision DecideNewMount(MountCall call, CallerFacts caller)
    {
        var set = (MountFlags)(call.EffectiveFlags & (ulong)MountFlags.All);
        switch (call.FsType)
        {
            case "proc" when caller.InContainerPidNamespace:
                return caller.Target is null ? Kernel(Libc.ENOENT, "target not found") : new MountDecision.BindKernelFs("/proc", set);
            case "sysfs" when caller.InContainerNetNamespace:
                return caller.Target is null ? Kernel(Libc.ENOENT, "target not found") : new MountDecision.BindKernelFs("/sys", set);
            case "proc" or "sysfs":
                return new MountDecision.Continue($"{call.FsType} for another namespace: the kernel decides (mnt_too_revealing)");
            case "overlay":
                return DecideOverlay(call, caller, set);
            default:
                return new MountDecision.Continue($"new {call.FsType} filesystem: created by the kernel as the caller");
        }
    }

    /// <summary>
    /// An overlay shows each layer's directory in that layer's own filesystem, without anything mounted
    /// over it or below it: a layer of /sys would show the sysfs under the emulated files, a layer of a
    /// directory holding a masked path the file under the mask. So every layer (lowerdir, lowerdir+,
    /// datadir+, upperdir, workdir) is judged by what it resolved to in the caller's root: refused when it
    /// lies on a kernel filesystem, is a protected mount (or a copy of one), or has a protected mount below it
    /// covering a place in its own filesystem. Allowed overlays are made by us from the fds we judged
    /// (<see cref="MountDecision.Overlay"/>), never left to the kernel to resolve the names again.
    /// </summary>
    MountDecision DecideOverlay(MountCall call, CallerFacts caller, MountFlags set)
    {
        if (caller.Target is null) return Kernel(Libc.ENOENT, "target not found");
        if (caller.Layers is not { } layers) return new MountDecision.Refuse(Libc.EINVAL, "overlay layers not resolved");
        if (layers.Count == 0) return Kernel(Libc.EINVAL, "overlay without layers");
        foreach (var l in layers)
        {
            string what = $"overlay {l.Layer.Key}={l.Layer.Path}";
            if (l.Facts is not { } f || l.Path is null) return Kernel(l.Errno == 0 ? Libc.ENOENT : l.Errno, $"{what}: not resolved");
            if (Policy.HostPlaces.KernelFileSystems.Contains(f.Mount.FsType))
                return new MountDecision.Refuse(Libc.EPERM, $"{what} lies on a {f.Mount.FsType} filesystem: an overlay would show it without the container's masks");
            if (f.IsMountRoot && ProtectedBecause(f.Mount, caller.Mounts) is { } why)
                return new MountDecision.Refuse(Libc.EPERM, $"{what}: {why}; an overlay would show what it hides");
            foreach (var m in caller.Mounts)
            {
                if (!IsStrictlyBelow(m.MountPoint, l.Path) || Covered(m, caller.Mounts) is not { } place) continue;
                if (place.Major != f.Mount.Major || place.Minor != f.Mount.Minor) continue;
                if (ProtectedBecause(m, caller.Mounts) is { } below)
                    return new MountDecision.Refuse(Libc.EPERM, $"{what}: {below}, and an overlay of {l.Path} would show what it hides");
            }
        }
        // The source string is only a name shown in the mount table; "source" is the option the new API takes it as.
        var others = OverlayOptions.Parse(call.Data).Others.Where(o => !o.StartsWith("source=", StringComparison.Ordinal));
        var options = string.IsNullOrEmpty(call.Source) || call.Source.Contains(',') ? others : others.Prepend("source=" + call.Source);
        return new MountDecision.Overlay([.. layers.Select(l => l.Layer)], [.. options], set);
    }

    /// <summary>The data string of a superblock remount, minus the words that are per-mount flags (we apply those ourselves).</summary>
    public static IReadOnlyList<string> SuperblockOptions(string? data)
    {
        if (string.IsNullOrEmpty(data)) return [];
        string[] perMount = ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "remount", "bind", "rbind",
            "atime", "noatime", "relatime", "norelatime", "strictatime", "nodiratime", "diratime", "defaults"];
        return data.Split(',', StringSplitOptions.RemoveEmptyEntries).Where(o => !perMount.Contains(o)).ToList();
    }

    static MountDecision Kernel(int errno, string reason) => new MountDecision.Refuse(errno, reason, Policy: false);

    public static bool IsAtOrBelow(string path, string ancestor) =>
        ancestor == "/" || path == ancestor || path.StartsWith(ancestor + "/", StringComparison.Ordinal);

    static bool IsStrictlyBelow(string path, string ancestor) => path != ancestor && IsAtOrBelow(path, ancestor);

    static string Normalize(string p) => p.Length > 1 ? p.TrimEnd('/') : p;
}
