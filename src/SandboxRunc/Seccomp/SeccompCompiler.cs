using Microsoft.Win32.SafeHandles;
using SandboxRunc.Interop;
using static SandboxRunc.Seccomp.Libseccomp;

namespace SandboxRunc.Seccomp;

/// <summary>A seccomp profile that cannot be compiled: the message names the syscall or field and why.</summary>
public sealed class SeccompException : SandboxRuncException
{
    public SeccompException(string message) : base(message) { }
    public SeccompException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// A profile turned into what seccomp(2) takes: <paramref name="Program"/> is the raw
/// struct sock_filter[] (8 bytes per instruction), <paramref name="Flags"/> the
/// SECCOMP_FILTER_FLAG_* bits, and <paramref name="UsesNotify"/> says the profile has
/// SCMP_ACT_NOTIFY rules (so the installer must ask for a listener fd).
/// </summary>
public sealed record CompiledSeccomp(byte[] Program, uint Flags, bool UsesNotify);

/// <summary>
/// Compiles an OCI seccomp profile with libseccomp, in the runtime process, so that the
/// container's init only has to hand a finished BPF program to the kernel (no libseccomp, no
/// allocation-heavy work after the rootfs is switched). The translation follows runc 1.1: names
/// libseccomp does not know on this architecture are skipped (Docker's profile lists syscalls of
/// other architectures), rules whose action equals the default action are skipped (libseccomp
/// rejects them), and a rule with several conditions on the same argument becomes one rule per
/// condition, because libseccomp ANDs conditions and cannot test one argument twice.
/// </summary>
public static class SeccompCompiler
{
    public const uint SECCOMP_FILTER_FLAG_TSYNC = 1, SECCOMP_FILTER_FLAG_LOG = 2,
        SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4, SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;

    const uint EPERM = 1;
    const int MaxSyscallArgs = 6;

    /// <summary>OCI architecture name → libseccomp's own name (resolved to a token at run time).</summary>
    internal static readonly Dictionary<string, string> Architectures = new()
    {
        ["SCMP_ARCH_X86"] = "x86", ["SCMP_ARCH_X86_64"] = "x86_64", ["SCMP_ARCH_X32"] = "x32",
        ["SCMP_ARCH_ARM"] = "arm", ["SCMP_ARCH_AARCH64"] = "aarch64",
        ["SCMP_ARCH_MIPS"] = "mips", ["SCMP_ARCH_MIPS64"] = "mips64", ["SCMP_ARCH_MIPS64N32"] = "mips64n32",
        ["SCMP_ARCH_MIPSEL"] = "mipsel", ["SCMP_ARCH_MIPSEL64"] = "mipsel64", ["SCMP_ARCH_MIPSEL64N32"] = "mipsel64n32",
        ["SCMP_ARCH_PPC"] = "ppc", ["SCMP_ARCH_PPC64"] = "ppc64", ["SCMP_ARCH_PPC64LE"] = "ppc64le",
        ["SCMP_ARCH_S390"] = "s390", ["SCMP_ARCH_S390X"] = "s390x",
        ["SCMP_ARCH_PARISC"] = "parisc", ["SCMP_ARCH_PARISC64"] = "parisc64",
        ["SCMP_ARCH_RISCV64"] = "riscv64",
    };

    internal static readonly Dictionary<string, int> Operators = new()
    {
        ["SCMP_CMP_NE"] = SCMP_CMP_NE, ["SCMP_CMP_LT"] = SCMP_CMP_LT, ["SCMP_CMP_LE"] = SCMP_CMP_LE,
        ["SCMP_CMP_EQ"] = SCMP_CMP_EQ, ["SCMP_CMP_GE"] = SCMP_CMP_GE, ["SCMP_CMP_GT"] = SCMP_CMP_GT,
        ["SCMP_CMP_MASKED_EQ"] = SCMP_CMP_MASKED_EQ,
    };

    /// <summary>OCI flag → (seccomp(2) flag bit, libseccomp attribute that checks kernel support).</summary>
    static readonly Dictionary<string, (uint Bit, int Attr)> FlagTable = new()
    {
        ["SECCOMP_FILTER_FLAG_TSYNC"] = (SECCOMP_FILTER_FLAG_TSYNC, SCMP_FLTATR_CTL_TSYNC),
        ["SECCOMP_FILTER_FLAG_LOG"] = (SECCOMP_FILTER_FLAG_LOG, SCMP_FLTATR_CTL_LOG),
        ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"] = (SECCOMP_FILTER_FLAG_SPEC_ALLOW, SCMP_FLTATR_CTL_SSB),
    };

    /// <summary>A checked syscall rule: one entry per name, conditions already translated.</summary>
    readonly record struct Rule(string Name, uint Action, Libseccomp.ScmpArgCmp[] Conditions, bool SplitConditions);

    public static CompiledSeccomp Compile(Oci.Seccomp profile)
    {
        // Check the whole profile before touching libseccomp, so errors do not depend on the arch.
        uint defaultAction = ParseAction(profile.DefaultAction, profile.DefaultErrnoRet, "defaultAction", "defaultErrnoRet");
        if (defaultAction == SCMP_ACT_NOTIFY)
            throw new SeccompException("seccomp: defaultAction: SCMP_ACT_NOTIFY cannot be the default action");

        var (flags, flagAttrs) = ParseFlags(profile.Flags);
        var archTokens = ParseArchitectures(profile.Architectures);
        var rules = ParseRules(profile.Syscalls);
        bool usesNotify = rules.Any(r => r.Action == SCMP_ACT_NOTIFY);
        if (usesNotify && (flags & SECCOMP_FILTER_FLAG_TSYNC) != 0)
            throw new SeccompException("seccomp: flags: SECCOMP_FILTER_FLAG_TSYNC cannot be combined with SCMP_ACT_NOTIFY rules");

        nint ctx = seccomp_init(defaultAction);
        if (ctx == 0)
            throw new SeccompException($"seccomp: seccomp_init failed for defaultAction \"{profile.DefaultAction}\"");
        try
        {
            // The container's init sets no_new_privs itself (or not) as process.noNewPrivileges says.
            Check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set", "SCMP_FLTATR_CTL_NNP");
            Check(seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1), "seccomp_attr_set", "SCMP_FLTATR_API_SYSRAWRC");
            foreach (var (name, attr) in flagAttrs)
            {
                int rc = seccomp_attr_set(ctx, attr, 1);
                if (rc < 0)
                    throw LibseccompFailed($"flags: \"{name}\" is not supported here", "seccomp_attr_set", name, rc);
            }

            foreach (var (name, token) in archTokens)
            {
                int rc = seccomp_arch_add(ctx, token);
                if (rc < 0 && rc != -Libc.EEXIST) // the native arch is already in the filter
                    throw LibseccompFailed($"architectures: cannot add \"{name}\"", "seccomp_arch_add", name, rc);
            }

            foreach (var rule in rules)
            {
                if (rule.Action == defaultAction)
                    continue;
                int nr = seccomp_syscall_resolve_name(rule.Name);
                if (nr == NR_SCMP_ERROR)
                    continue;
                AddRule(ctx, nr, rule);
            }

            return new CompiledSeccomp(Export(ctx), flags, usesNotify);
        }
        finally
        {
            seccomp_release(ctx);
        }
    }

    static unsafe void AddRule(nint ctx, int nr, Rule rule)
    {
        fixed (Libseccomp.ScmpArgCmp* conds = rule.Conditions)
        {
            if (!rule.SplitConditions)
            {
                Add(conds, (uint)rule.Conditions.Length);
                return;
            }
            for (int i = 0; i < rule.Conditions.Length; i++)
                Add(conds + i, 1);
        }

        void Add(Libseccomp.ScmpArgCmp* conds, uint count)
        {
            int rc = seccomp_rule_add_array(ctx, rule.Action, nr, count, conds);
            if (rc < 0)
                throw LibseccompFailed($"syscall \"{rule.Name}\": cannot add rule", "seccomp_rule_add_array", rule.Name, rc);
        }
    }

    /// <summary>A profile libseccomp refused: our context first, libseccomp's errno second.</summary>
    static SeccompException LibseccompFailed(string what, string call, string target, int rc)
    {
        var inner = new SysException(call, target, -rc);
        return new SeccompException($"seccomp: {what}: {inner.Message}", inner);
    }

    /// <summary>Writes the BPF program to a memfd and reads it back.</summary>
    static byte[] Export(nint ctx)
    {
        int fd = SysException.Check(Libc.memfd_create("seccomp-bpf", Libc.MFD_CLOEXEC), "memfd_create", "seccomp-bpf");
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        Check(seccomp_export_bpf(ctx, fd), "seccomp_export_bpf");
        var program = new byte[RandomAccess.GetLength(handle)];
        int done = 0;
        while (done < program.Length)
        {
            int n = RandomAccess.Read(handle, program.AsSpan(done), done);
            if (n == 0) throw new SeccompException("seccomp: exported BPF program was truncated");
            done += n;
        }
        if (program.Length == 0 || program.Length % 8 != 0)
            throw new SeccompException($"seccomp: libseccomp exported a malformed BPF program ({program.Length} bytes)");
        return program;
    }

    static uint ParseAction(string action, uint? errnoRet, string where, string errnoField)
    {
        if (errnoRet is > 0xffff)
            throw new SeccompException($"seccomp: {where}: {errnoField} {errnoRet} is out of range (0-65535)");
        return action switch
        {
            "SCMP_ACT_KILL" or "SCMP_ACT_KILL_THREAD" => SCMP_ACT_KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS" => SCMP_ACT_KILL_PROCESS,
            "SCMP_ACT_TRAP" => SCMP_ACT_TRAP,
            "SCMP_ACT_ERRNO" => ActErrno(errnoRet ?? EPERM),
            "SCMP_ACT_TRACE" => ActTrace(errnoRet ?? EPERM),
            "SCMP_ACT_ALLOW" => SCMP_ACT_ALLOW,
            "SCMP_ACT_LOG" => SCMP_ACT_LOG,
            "SCMP_ACT_NOTIFY" => SCMP_ACT_NOTIFY,
            _ => throw new SeccompException($"seccomp: {where}: unknown action \"{action}\""),
        };
    }

    static (uint Flags, List<(string Name, int Attr)> Attrs) ParseFlags(List<string>? names)
    {
        uint flags = 0;
        var attrs = new List<(string, int)>();
        foreach (var name in names ?? [])
        {
            if (!FlagTable.TryGetValue(name, out var f))
                throw new SeccompException($"seccomp: flags: unknown flag \"{name}\" (known: {string.Join(", ", FlagTable.Keys)})");
            flags |= f.Bit;
            attrs.Add((name, f.Attr));
        }
        return (flags, attrs);
    }

    static List<(string Name, uint Token)> ParseArchitectures(List<string>? names)
    {
        var tokens = new List<(string, uint)>();
        foreach (var name in names ?? [])
        {
            if (!Architectures.TryGetValue(name, out var scmpName))
                throw new SeccompException($"seccomp: architectures: unknown architecture \"{name}\"");
            uint token = seccomp_arch_resolve_name(scmpName);
            if (token == 0)
                throw new SeccompException($"seccomp: architectures: \"{name}\" is not supported by this libseccomp");
            tokens.Add((name, token));
        }
        return tokens;
    }

    static List<Rule> ParseRules(List<Oci.SeccompSyscall>? syscalls)
    {
        var rules = new List<Rule>();
        foreach (var call in syscalls ?? [])
        {
            foreach (var name in call.Names)
            {
                if (string.IsNullOrEmpty(name))
                    throw new SeccompException("seccomp: syscalls: an empty string is not a valid syscall name");
                string where = $"syscall \"{name}\"";
                uint action = ParseAction(call.Action, call.ErrnoRet, where, "errnoRet");
                if (action == SCMP_ACT_NOTIFY && name == "write")
                    throw new SeccompException($"seccomp: {where}: SCMP_ACT_NOTIFY cannot be used for write (the runtime needs it)");

                var args = call.Args ?? [];
                var conditions = new Libseccomp.ScmpArgCmp[args.Count];
                var seen = new bool[MaxSyscallArgs];
                bool sameArgTwice = false;
                for (int i = 0; i < args.Count; i++)
                {
                    var arg = args[i];
                    if (arg.Index >= MaxSyscallArgs)
                        throw new SeccompException($"seccomp: {where}: args[{i}]: index {arg.Index} is out of range (0-{MaxSyscallArgs - 1})");
                    if (!Operators.TryGetValue(arg.Op, out int op))
                        throw new SeccompException($"seccomp: {where}: args[{i}]: unknown operator \"{arg.Op}\"");
                    sameArgTwice |= seen[arg.Index];
                    seen[arg.Index] = true;
                    conditions[i] = new Libseccomp.ScmpArgCmp { Arg = arg.Index, Op = op, DatumA = arg.Value, DatumB = arg.ValueTwo };
                }
                rules.Add(new Rule(name, action, conditions, sameArgTwice));
            }
        }
        return rules;
    }
}
