// Which /proc/sys entries are what, and how a written value is checked: pure, no I/O. Keys are in slash
// form below /proc/sys ("kernel/yama/ptrace_scope"), because net device names may contain dots.
//
// Three kinds of entries:
//  * Namespaced: the kernel keeps one value per namespace, so the caller's namespace is entered and the
//    real file read or written there (NamespacedSysctls): net/** (net), kernel.hostname/domainname (uts),
//    kernel.shm*/msg*/sem*/auto_msgmni and fs/mqueue/** (ipc). kernel.ns_last_pid is per pid namespace,
//    which a thread cannot enter (setns(CLONE_NEWPID) only affects children): refused, never the host's.
//  * Per-container: global in the kernel but written by system software at boot; each container keeps its
//    own value (initially the host's), range-checked as the kernel's handler does. "Max wins" entries may
//    additionally raise the host value (never lower it). user/** is per user namespace in the kernel, but a
//    multi-threaded process cannot setns into a user namespace: it is served per container too, starting
//    from what a fresh user namespace shows (2147483647), and not applied to the kernel.
//  * Everything else: a read-only mirror of the host's value.
using System.Globalization;
using System.Text;

namespace SandboxRunc.Emulation;

public enum SysctlKind { Mirror, Namespaced, PerContainer, Refused }

public enum NamespaceKind { Net, Uts, Ipc }

/// <summary>A per-container entry: Count integers in [Min, Max] (Unsigned: parsed as unsigned long, as
/// proc_doulongvec_minmax); MaxWins may raise the host value; Sticky: once this value is set it cannot be
/// changed (yama ptrace_scope 3); Initial: start value instead of the host's.</summary>
public sealed record SysctlRule(long Min, long Max, int Count = 1, bool Unsigned = false, bool MaxWins = false,
    long? Sticky = null, string? Initial = null);

public readonly record struct SysctlClass(SysctlKind Kind, NamespaceKind Namespace = default, SysctlRule? Rule = null);

public static class Sysctls
{
    public const int CAP_NET_ADMIN = 12, CAP_SYS_ADMIN = 21;
    const long IntMin = int.MinValue, IntMax = int.MaxValue;

    static readonly Dictionary<string, SysctlRule> PerContainer = new(StringComparer.Ordinal)
    {
        ["kernel/panic"] = new(IntMin, IntMax),
        ["kernel/panic_on_oops"] = new(IntMin, IntMax),
        ["kernel/printk"] = new(IntMin, IntMax, Count: 4),
        ["kernel/sysrq"] = new(IntMin, IntMax),
        ["kernel/pid_max"] = new(301, 4194304, MaxWins: true),               // PID_MAX_LIMIT on 64-bit
        ["kernel/kptr_restrict"] = new(0, 2),
        ["kernel/dmesg_restrict"] = new(0, 1),
        ["kernel/yama/ptrace_scope"] = new(0, 3, Sticky: 3),                // 3 ("no attach") cannot be undone
        ["fs/protected_hardlinks"] = new(0, 1),
        ["fs/protected_symlinks"] = new(0, 1),
        ["fs/protected_fifos"] = new(0, 2),
        ["fs/protected_regular"] = new(0, 2),
        ["fs/suid_dumpable"] = new(0, 2),
        ["vm/overcommit_memory"] = new(0, 2),
        ["vm/mmap_min_addr"] = new(0, long.MaxValue, Unsigned: true),
        ["vm/max_map_count"] = new(0, IntMax, MaxWins: true),               // Elasticsearch & co. raise it
        ["fs/file-max"] = new(0, long.MaxValue, Unsigned: true, MaxWins: true),
        ["fs/nr_open"] = new(64, 2147483584, MaxWins: true),                // BITS_PER_LONG .. INT_MAX & -64
        ["fs/inotify/max_user_watches"] = new(0, IntMax, MaxWins: true),
        ["fs/inotify/max_user_instances"] = new(0, IntMax, MaxWins: true),
        ["net/netfilter/nf_conntrack_max"] = new(0, IntMax, MaxWins: true), // only init_net may write it
    };

    static readonly SysctlRule UserNamespaceLimit = new(0, IntMax, Initial: "2147483647");

    /// <summary>The writable module parameter /sys/module/nf_conntrack/parameters/hashsize (unsigned, not 0).</summary>
    public static readonly SysctlRule ConntrackHashsize = new(1, uint.MaxValue, Unsigned: true);

    static readonly HashSet<string> Ipc = new(StringComparer.Ordinal)
    {
        "kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced", "kernel/shm_next_id",
        "kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/msg_next_id", "kernel/sem", "kernel/sem_next_id",
        "kernel/auto_msgmni",
    };

    public static SysctlClass Classify(string key)
    {
        if (PerContainer.TryGetValue(key, out var rule)) return new(SysctlKind.PerContainer, Rule: rule);
        if (key == "net" || key.StartsWith("net/", StringComparison.Ordinal)) return new(SysctlKind.Namespaced, NamespaceKind.Net);
        if (key is "kernel/hostname" or "kernel/domainname") return new(SysctlKind.Namespaced, NamespaceKind.Uts);
        if (Ipc.Contains(key) || key == "fs/mqueue" || key.StartsWith("fs/mqueue/", StringComparison.Ordinal))
            return new(SysctlKind.Namespaced, NamespaceKind.Ipc);
        if (key.StartsWith("user/", StringComparison.Ordinal)) return new(SysctlKind.PerContainer, Rule: UserNamespaceLimit);
        if (key == "kernel/ns_last_pid") return new(SysctlKind.Refused);
        return new(SysctlKind.Mirror);
    }

    /// <summary>The capability a write needs in the caller's user namespace.</summary>
    public static int RequiredCapability(string key) =>
        key.StartsWith("net/", StringComparison.Ordinal) ? CAP_NET_ADMIN : CAP_SYS_ADMIN;

    /// <summary>
    /// Checks a written value the way proc_dointvec_minmax / proc_doulongvec_minmax do: whitespace-separated
    /// decimal integers, each in range; fewer than Count keep the remaining current values; an empty or
    /// malformed write or an out-of-range value is -EINVAL. Returns 0 and the new value as the kernel would
    /// print it (tab-separated, newline-terminated).
    /// </summary>
    public static int Check(SysctlRule rule, string current, ReadOnlySpan<byte> written, out string value)
    {
        value = current;
        var cur = ParseValues(current, rule.Count);
        var next = new long[rule.Count];
        for (int i = 0; i < rule.Count; i++) next[i] = i < cur.Count ? cur[i] : 0;
        string text = Encoding.ASCII.GetString(written);
        int pos = 0, n = 0;
        while (true)
        {
            while (pos < text.Length && IsSpace(text[pos])) pos++;
            if (pos >= text.Length || text[pos] == '\0' || n == rule.Count) break;
            int start = pos;
            if (text[pos] == '-' || text[pos] == '+') pos++;
            while (pos < text.Length && char.IsAsciiDigit(text[pos])) pos++;
            if (pos < text.Length && !IsSpace(text[pos]) && text[pos] != '\0') return -Interop.Libc.EINVAL;
            var token = text.AsSpan(start, pos - start);
            long v;
            if (rule.Unsigned)
            {
                if (token.Length == 0 || token[0] == '-' || !ulong.TryParse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var u)
                    || u > (ulong)rule.Max) return -Interop.Libc.EINVAL;
                v = (long)u;
            }
            else if (!long.TryParse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out v)) return -Interop.Libc.EINVAL;
            if (v < rule.Min || v > rule.Max) return -Interop.Libc.EINVAL;
            next[n++] = v;
        }
        if (n == 0) return -Interop.Libc.EINVAL;
        if (rule.Sticky is { } sticky && cur.Count > 0 && cur[0] == sticky && next[0] != sticky) return -Interop.Libc.EINVAL;
        value = Format(next);
        return 0;
    }

    static bool IsSpace(char c) => c is ' ' or '\t' or '\n' or '\r' or '\v' or '\f';

    public static List<long> ParseValues(string text, int max)
    {
        var list = new List<long>();
        foreach (var f in text.Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (list.Count == max) break;
            if (long.TryParse(f, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v)) list.Add(v);
            else if (ulong.TryParse(f, NumberStyles.None, CultureInfo.InvariantCulture, out var u)) list.Add((long)Math.Min(u, long.MaxValue));
        }
        return list;
    }

    public static string Format(IReadOnlyList<long> values)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < values.Count; i++)
        {
            if (i > 0) sb.Append('\t');
            sb.Append(values[i].ToString(CultureInfo.InvariantCulture));
        }
        return sb.Append('\n').ToString();
    }

    /// <summary>"Max wins": the host value to write, or null when the host's is already as high (first field).</summary>
    public static string? HostRaise(string hostValue, string containerValue)
    {
        var h = ParseValues(hostValue, 1);
        var c = ParseValues(containerValue, 1);
        if (c.Count == 0) return null;
        if (h.Count > 0 && (ulong)h[0] >= (ulong)c[0]) return null;
        return c[0].ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>CapEff from the text of /proc/PID/status.</summary>
    public static ulong? EffectiveCaps(string status)
    {
        int i = status.IndexOf("\nCapEff:", StringComparison.Ordinal);
        if (i < 0) return null;
        int start = i + 8, end = status.IndexOf('\n', start);
        var hex = status.AsSpan(start, (end < 0 ? status.Length : end) - start).Trim();
        return ulong.TryParse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var v) ? v : null;
    }
}
