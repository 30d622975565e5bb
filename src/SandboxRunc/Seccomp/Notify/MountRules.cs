using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>A mount the container's init had before any user code ran.</summary>
public sealed record InitialMount(uint Major, uint Minor, string Root, string MountPoint, MountFlags Flags);

/// <summary>
/// The container's mount policy and the pure decision over one trapped mount/umount2: no system
/// calls here, everything the decision needs is in <see cref="MountCall"/> and <see cref="CallerFacts"/>.
///
/// A mount "derives from" an initial mount when it shows the same filesystem (major:minor) at or
/// below the initial mount's root: binds of it, and its copies in new mount namespaces
/// (`unshare -m`), wherever they are mounted. Such mounts carry the initial mount's restrictions.
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

    public MountRules(string containerId, IEnumerable<InitialMount> initial, IEnumerable<string> protectedPaths, bool protectAllInitialMounts = false)
    {
        ContainerId = containerId;
        Initial = initial.ToList();
        Protected = new HashSet<string>(AlwaysProtected.Concat(protectedPaths).Select(Normalize), StringComparer.Ordinal);
        ProtectAllInitialMounts = protectAllInitialMounts;
    }

    /// <summary>
    /// The lead's entry point: the container init's /proc/PID/mountinfo, read when the supervisor
    /// starts (before user code runs), and the protected paths (the spec's maskedPaths and
    /// readonlyPaths, the emulated /proc and /sys submounts).
    /// </summary>
    public static MountRules FromMountInfo(string containerId, string initMountInfo, IEnumerable<string> protectedPaths, bool protectAllInitialMounts = false) =>
        new(containerId,
            MountInfo.Parse(initMountInfo).Select(m => new InitialMount(m.Major, m.Minor, m.Root, m.MountPoint, m.Flags)),
            protectedPaths, protectAllInitialMounts);

    public static bool DerivesFrom(MountEntry m, InitialMount i) =>
        m.Major == i.Major && m.Minor == i.Minor && IsAtOrBelow(m.Root, i.Root);

    public IEnumerable<InitialMount> AncestorsOf(MountEntry m) => Initial.Where(i => DerivesFrom(m, i));

    /// <summary>The initial mount this mount is a copy of where it stands (same mount point), if any.</summary>
    InitialMount? InitialAtItsPlace(MountEntry m) =>
        Initial.LastOrDefault(i => i.MountPoint == m.MountPoint && DerivesFrom(m, i));

    bool IsProtected(MountEntry m) =>
        InitialAtItsPlace(m) is { } i && (ProtectAllInitialMounts || Protected.Contains(i.MountPoint));

    /// <summary>Protected mounts strictly below <paramref name="mountPoint"/> in the caller's table.</summary>
    bool HasProtectedBelow(string mountPoint, IReadOnlyList<MountEntry> mounts) =>
        mounts.Any(m => IsStrictlyBelow(m.MountPoint, mountPoint) && IsProtected(m));

    public MountDecision Decide(MountCall call, CallerFacts caller)
    {
        if (!caller.HasCapSysAdmin)
            return new MountDecision.Refuse(Libc.EPERM, "caller lacks CAP_SYS_ADMIN");
        return call.Syscall == MountSyscall.Umount2 ? DecideUmount(call, caller) : DecideMount(call, caller);
    }

    /// <summary>
    /// The decisions that need no look-up in the caller's mount namespace (no privilege,
    /// propagation change, a new filesystem other than proc/sysfs); null when one is needed.
    /// The same answers <see cref="Decide"/> gives: it saves the namespace round trip.
    /// </summary>
    public MountDecision? DecideWithoutLookup(MountCall call, bool hasCapSysAdmin)
    {
        if (!hasCapSysAdmin || call.Syscall == MountSyscall.Umount2) return hasCapSysAdmin ? null : Decide(call, new CallerFacts(false, null, null, []));
        ulong flags = call.EffectiveFlags;
        if ((flags & (Libc.MS_REMOUNT | Libc.MS_BIND)) != 0) return null;
        if ((flags & (Libc.MS_SHARED | Libc.MS_PRIVATE | Libc.MS_SLAVE | Libc.MS_UNBINDABLE)) != 0 ||
            ((flags & Libc.MS_MOVE) == 0 && call.FsType is not ("proc" or "sysfs")))
            return DecideMount(call, new CallerFacts(true, null, null, []));
        return null;
    }

    MountDecision DecideUmount(MountCall call, CallerFacts caller)
    {
        if (caller.Target is not { } t) return Kernel(Libc.ENOENT, "target not found");
        if (!t.IsMountRoot) return Kernel(Libc.EINVAL, "target is not a mount point");
        if (IsProtected(t.Mount))
            return new MountDecision.Refuse(Libc.EPERM, $"{t.Mount.MountPoint} is a protected mount of the container");
        return new MountDecision.Unmount((int)call.Flags);
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

        var closest = ancestors.OrderBy(a => a.Root.Length).ThenBy(a => a.MountPoint == t.Mount.MountPoint).Last();
        var added = requested & Kept & ~closest.Flags;
        if (added != 0)
            return new MountDecision.Refuse(Libc.EPERM,
                $"{t.Mount.MountPoint} derives from {closest.MountPoint} of the container, whose flags cannot change (adding {added})");

        var result = (requested & MountFlags.ReadOnly) | (closest.Flags & Kept);
        return new MountDecision.SetFlags(result, MountFlags.All & ~result, superblock);
    }

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
        if (IsProtected(s.Mount))
            return new MountDecision.Refuse(Libc.EPERM, $"{s.Mount.MountPoint} is a protected mount of the container and cannot be moved");
        if (HasProtectedBelow(s.Mount.MountPoint, caller.Mounts))
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
            default:
                return new MountDecision.Continue($"new {call.FsType} filesystem: created by the kernel as the caller");
        }
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
