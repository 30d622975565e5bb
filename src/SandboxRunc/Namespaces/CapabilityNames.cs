namespace SandboxRunc.Namespaces;

/// <summary>Linux capability names as the OCI spec writes them ("CAP_SYS_ADMIN") and their numbers.</summary>
public static class CapabilityNames
{
    static readonly string[] Names =
    [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
        "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
        "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ];

    public static int Last => Names.Length - 1;
    public static IReadOnlyList<string> All => Names;

    public static bool TryParse(string name, out int cap)
    {
        string upper = name.ToUpperInvariant();
        if (!upper.StartsWith("CAP_", StringComparison.Ordinal)) upper = "CAP_" + upper;
        cap = Array.IndexOf(Names, upper);
        return cap >= 0;
    }

    /// <summary>A capability set as the 64-bit mask capset() takes. Unknown names were rejected at validation.</summary>
    public static ulong Mask(IEnumerable<string>? names)
    {
        ulong mask = 0;
        foreach (var n in names ?? [])
            if (TryParse(n, out int c)) mask |= 1UL << c;
        return mask;
    }
}
