namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// The seccomp filter every container process installs with SECCOMP_FILTER_FLAG_NEW_LISTENER as
/// its last step before execve. Hand-built BPF (no libseccomp: it runs in the container's init).
///
/// What it does, per syscall ABI:
/// - x86_64: mount, umount2 and pivot_root → SECCOMP_RET_USER_NOTIF (vetted by <see cref="NotifyServer"/>:
///   pivot_root moves a mount away from what it covers, so it is judged like an unmount);
///   sysinfo → USER_NOTIF too, answered with the container's uptime and memory (<see cref="SysinfoAnswer"/>):
///   busybox's free and uptime read sysinfo(2), not /proc;
///   the new mount API (open_tree, open_tree_attr, move_mount, fsopen, fsconfig, fsmount, fspick,
///   mount_setattr) → ERRNO(ENOSYS), so tools fall back to mount(2) and nothing bypasses the
///   vetting; swapon/swapoff → ERRNO(EPERM) (swap is a host resource; the kernel would also refuse
///   them without CAP_SYS_ADMIN in the initial user namespace, we just answer without a round trip);
///   everything else → ALLOW: data-path syscalls never leave the kernel.
/// - x32 (x86_64 arch with nr bit 30 set) → ERRNO(ENOSYS) for every call. x32 binaries do not exist in
///   practice and most kernels disable the ABI (then the answer is ENOSYS anyway); trapping the
///   x32 mount numbers separately would be one more path to get right for no user.
/// - i386 (int 0x80 / 32-bit binaries): mount, umount, umount2, pivot_root and the new mount API → ERRNO(ENOSYS),
///   swapon/swapoff → EPERM, everything else ALLOW. Without this, a 64-bit process could issue
///   `int 0x80` with nr 21 and mount unvetted. 32-bit programs keep working except for mounts.
/// - any other arch (impossible on an x86_64 kernel) → ERRNO(ENOSYS), fail closed.
///
/// Not trapped, and why:
/// - reboot: in a non-initial pid namespace the kernel turns reboot() into killing that
///   namespace's init (the container stops; the host does not), and LINUX_REBOOT_CMD_CAD_ON/OFF
///   return EINVAL there. Nothing to vet.
/// - the xattr family: overlayfs in a user namespace uses user.overlay.* (since 5.11, "userxattr"),
///   which needs no privilege; trusted.* needs CAP_SYS_ADMIN in the initial namespace and fails
///   with EPERM as it should. No trap until the emulation of trusted.overlay.* is asked for.
/// - chown/openat2: the /sys and /proc emulation (FUSE) answers them on its own files; trapping
///   them would put a round trip on a data path. Left to that work if it needs it.
///
/// Precedence: the kernel runs every filter and keeps the most restrictive action
/// (KILL &gt; TRAP &gt; ERRNO &gt; USER_NOTIF &gt; TRACE &gt; LOG &gt; ALLOW), so the spec's own filter denying
/// mount with ERRNO wins over our USER_NOTIF, as it should. The kernel also allows one listener
/// per filter chain (NEW_LISTENER returns EBUSY when an earlier filter has one), so a process in
/// the container cannot install its own listener and CONTINUE mounts past ours.
/// </summary>
public static class NotifyFilter
{
    public const uint AUDIT_ARCH_X86_64 = 0xC000003E, AUDIT_ARCH_I386 = 0x40000003;
    public const uint X32_SYSCALL_BIT = 0x40000000;
    public const uint SECCOMP_RET_ALLOW = 0x7fff0000, SECCOMP_RET_USER_NOTIF = 0x7fc00000, SECCOMP_RET_ERRNO = 0x00050000;
    public const uint ENOSYS = 38, EPERM = 1;

    public static uint Errno(uint e) => SECCOMP_RET_ERRNO | (e & 0xffff);

    /// <summary>x86_64 numbers: trapped and answered.</summary>
    public static readonly uint[] Trapped64 = [165 /* mount */, 166 /* umount2 */, PivotRoot64, 99 /* sysinfo */];
    public const int PivotRoot64 = 155;
    /// <summary>The new mount API: same numbers on every ABI since 5.2 (the unified table).</summary>
    public static readonly uint[] NewMountApi =
        [428 /* open_tree */, 429 /* move_mount */, 430 /* fsopen */, 431 /* fsconfig */, 432 /* fsmount */,
         433 /* fspick */, 442 /* mount_setattr */, 467 /* open_tree_attr */];
    public static readonly uint[] Swap64 = [167 /* swapon */, 168 /* swapoff */];
    public static readonly uint[] Mount32 = [21 /* mount */, 22 /* umount */, 52 /* umount2 */, 217 /* pivot_root */];
    public static readonly uint[] Swap32 = [87 /* swapon */, 115 /* swapoff */];

    static byte[]? _program;

    /// <summary>struct sock_filter[] as bytes, for <see cref="SeccompFilter.Install"/> with NEW_LISTENER.</summary>
    public static byte[] Program() => _program ??= Build();

    static byte[] Build()
    {
        var b = new BpfBuilder();
        b.LoadArch();
        b.JumpIfEqual(AUDIT_ARCH_X86_64, "x86_64");
        b.JumpIfEqual(AUDIT_ARCH_I386, "i386");
        b.Return(Errno(ENOSYS));

        b.Label("x86_64");
        b.LoadNr();
        b.JumpIfAtLeast(X32_SYSCALL_BIT, "enosys");
        foreach (var nr in Trapped64) b.JumpIfEqual(nr, "notify");
        foreach (var nr in NewMountApi) b.JumpIfEqual(nr, "enosys");
        foreach (var nr in Swap64) b.JumpIfEqual(nr, "eperm");
        b.Return(SECCOMP_RET_ALLOW);

        b.Label("i386");
        b.LoadNr();
        foreach (var nr in Mount32) b.JumpIfEqual(nr, "enosys");
        foreach (var nr in NewMountApi) b.JumpIfEqual(nr, "enosys");
        foreach (var nr in Swap32) b.JumpIfEqual(nr, "eperm");
        b.Return(SECCOMP_RET_ALLOW);

        b.Label("notify");
        b.Return(SECCOMP_RET_USER_NOTIF);
        b.Label("enosys");
        b.Return(Errno(ENOSYS));
        b.Label("eperm");
        b.Return(Errno(EPERM));
        return b.Assemble();
    }
}
