using SandboxRunc.Interop;

namespace SandboxRunc.Rootfs;

/// <summary>
/// Where the container's emulated files go: each path below is bind-mounted from the container's FUSE
/// fs (served by its supervisor, see Emulation/) over the same path of the procfs and sysfs mounted in
/// its rootfs, before pivot_root and before the masked and read-only paths. A bind over a read-only
/// mount is read-only too. Paths the container's /proc or /sys lack (no such module loaded, no /sys
/// mount in the spec) are skipped.
/// </summary>
internal static class EmulationBinds
{
    /// <summary>Paths relative to both the FUSE root and the container's root.</summary>
    public static readonly string[] Paths =
    [
        "proc/uptime", "proc/swaps", "proc/meminfo", "proc/cpuinfo", "proc/stat", "proc/loadavg", "proc/diskstats",
        "proc/sys",
        "sys/kernel", "sys/devices/virtual/dmi/id/product_uuid", "sys/module/nf_conntrack/parameters",
    ];

    /// <summary>
    /// /proc/sys is not made read-only when it is emulated: the emulation itself decides what a write may
    /// change (the container's own namespaces, its per-container values), and refuses the rest.
    /// </summary>
    public static bool ReplacesReadonlyPath(string path) => path.TrimEnd('/') == "/proc/sys";

    public static void Apply(string rootfs, string emulationDir)
    {
        foreach (var p in Paths)
        {
            string target = SecureJoin.Join(rootfs, "/" + p);
            string source = Path.Combine(emulationDir, p);
            if (!Path.Exists(target) || !Path.Exists(source)) continue;
            bool readOnly = (RootfsBuilder.LockedFlags(target) & Libc.MS_RDONLY) != 0;
            RootfsBuilder.Mount(source, target, null, Libc.MS_BIND, null);
            if (readOnly)
                RootfsBuilder.Remount(target, Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, recursive: false);
        }
    }
}
