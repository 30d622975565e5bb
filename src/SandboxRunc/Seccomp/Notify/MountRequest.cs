namespace SandboxRunc.Seccomp.Notify;

public enum MountSyscall { Mount, Umount2, PivotRoot }

/// <summary>
/// The trapped call as the caller made it: flags and the strings read from its memory. For pivot_root,
/// <see cref="Target"/> is new_root and <see cref="Source"/> is put_old.
/// </summary>
public sealed record MountCall(MountSyscall Syscall, ulong Flags, string? Source, string Target, string? FsType = null, string? Data = null)
{
    public const ulong MS_MGC_MSK = 0xffff0000, MS_MGC_VAL = 0xC0ED0000;

    /// <summary>The flags as the kernel sees them (path_mount drops the historic magic number in the top half).</summary>
    public ulong EffectiveFlags => Syscall == MountSyscall.Mount && (Flags & MS_MGC_MSK) == MS_MGC_VAL ? Flags & ~MS_MGC_MSK : Flags;
}

/// <summary>A path resolved as the caller would: the mount it lies on and whether it is that mount's root.</summary>
public sealed record PathFacts(MountEntry Mount, bool IsMountRoot);

/// <summary>What the server found out about the caller before deciding.</summary>
public sealed record CallerFacts(
    bool HasCapSysAdmin,
    PathFacts? Target,
    PathFacts? Source,
    IReadOnlyList<MountEntry> Mounts,
    bool InContainerPidNamespace = true,
    bool InContainerNetNamespace = true,
    IReadOnlyList<LayerFacts>? Layers = null);

/// <summary>An overlay layer as it resolved in the caller's root: the mount it lies on and its path there (null: not resolved, with the errno).</summary>
public sealed record LayerFacts(OverlayLayer Layer, PathFacts? Facts, string? Path, int Errno = 0);

/// <summary>
/// The outcome of <see cref="MountRules.Decide"/>, in crun's shape: let the kernel do it
/// (Continue), answer an errno (Refuse), or one of the operations we perform ourselves on the
/// file descriptors we checked, then answer with its result.
/// </summary>
public abstract record MountDecision
{
    /// <summary>SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel runs the call as the caller.</summary>
    public sealed record Continue(string Why) : MountDecision;

    /// <summary>Answer -Errno. <paramref name="Policy"/>: a refusal by our rules (logged), not a mirrored kernel error.</summary>
    public sealed record Refuse(int Errno, string Reason, bool Policy = true) : MountDecision;

    /// <summary>Per-mount flags on the target (mount_setattr); then the superblock options, if any (fspick + fsconfig).</summary>
    public sealed record SetFlags(MountFlags Set, MountFlags Clear, IReadOnlyList<string> SuperblockOptions) : MountDecision;

    /// <summary>open_tree(source, CLONE [| RECURSIVE]) + move_mount onto the target; read-only afterwards if asked.</summary>
    public sealed record Bind(bool Recursive, bool MakeReadOnly) : MountDecision;

    /// <summary>move_mount of the source mount onto the target.</summary>
    public sealed record Move : MountDecision;

    /// <summary>umount2 of the target mount, through its parent directory, with UMOUNT_NOFOLLOW.</summary>
    public sealed record Unmount(int Flags) : MountDecision;

    /// <summary>A new proc or sysfs: recursive bind of the caller namespace's own /proc or /sys, then these flags.</summary>
    public sealed record BindKernelFs(string MountPoint, MountFlags Set) : MountDecision;

    /// <summary>
    /// A new overlayfs, made by us from the layers as resolved (pinned fds, handed to the kernel by fd), with
    /// the caller's user namespace and root's credentials as its mounter, then attached at the target.
    /// </summary>
    public sealed record Overlay(IReadOnlyList<OverlayLayer> Layers, IReadOnlyList<string> Options, MountFlags Set) : MountDecision;

    /// <summary>pivot_root of the caller onto the checked new root, put_old as resolved.</summary>
    public sealed record PivotRoot : MountDecision;
}
