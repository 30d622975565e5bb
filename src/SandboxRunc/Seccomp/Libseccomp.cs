using System.Runtime.InteropServices;
using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp;

/// <summary>
/// The thin typed layer over libseccomp, used only to turn an OCI profile into a BPF program
/// (in the runtime, never inside the container: the container's init installs the exported
/// bytes with a raw syscall). libseccomp reports failure as a negative errno return value, not
/// as -1 + errno, so <see cref="Check"/> turns that into the usual <see cref="SysException"/>.
/// Values are checked against /usr/include/seccomp.h by the ABI test.
/// </summary>
internal static unsafe partial class Libseccomp
{
    const string L = "libseccomp.so.2";

    [LibraryImport(L)]
    public static partial nint seccomp_init(uint defAction);
    [LibraryImport(L)]
    public static partial void seccomp_release(nint ctx);
    [LibraryImport(L)]
    public static partial int seccomp_arch_add(nint ctx, uint archToken);
    [LibraryImport(L)]
    public static partial int seccomp_arch_remove(nint ctx, uint archToken);
    [LibraryImport(L)]
    public static partial uint seccomp_arch_native();
    [LibraryImport(L, StringMarshalling = StringMarshalling.Utf8)]
    public static partial uint seccomp_arch_resolve_name(string archName);
    [LibraryImport(L, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int seccomp_syscall_resolve_name(string name);
    [LibraryImport(L)]
    public static partial int seccomp_rule_add_array(nint ctx, uint action, int syscall, uint argCount, ScmpArgCmp* args);
    [LibraryImport(L)]
    public static partial int seccomp_attr_set(nint ctx, int attr, uint value);
    [LibraryImport(L)]
    public static partial int seccomp_export_bpf(nint ctx, int fd);

    /// <summary>Throws for a negative (-errno) libseccomp result.</summary>
    public static int Check(int result, string call, string? target = null)
    {
        if (result < 0) throw new SysException(call, target, -result);
        return result;
    }

    /// <summary>struct scmp_arg_cmp: 4 + 4 + 8 + 8 bytes, no padding.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ScmpArgCmp
    {
        public uint Arg;
        public int Op;
        public ulong DatumA;
        public ulong DatumB;
    }

    /// <summary>seccomp_syscall_resolve_name's "no such syscall" (__NR_SCMP_ERROR).</summary>
    public const int NR_SCMP_ERROR = -1;

    // Actions (the SCMP_ACT_ERRNO/TRACE macros OR the low 16 bits with the return value).
    public const uint SCMP_ACT_KILL_PROCESS = 0x80000000, SCMP_ACT_KILL_THREAD = 0, SCMP_ACT_TRAP = 0x00030000,
        SCMP_ACT_NOTIFY = 0x7fc00000, SCMP_ACT_ERRNO = 0x00050000, SCMP_ACT_TRACE = 0x7ff00000,
        SCMP_ACT_LOG = 0x7ffc0000, SCMP_ACT_ALLOW = 0x7fff0000;
    public static uint ActErrno(uint errno) => SCMP_ACT_ERRNO | (errno & 0xffff);
    public static uint ActTrace(uint msg) => SCMP_ACT_TRACE | (msg & 0xffff);

    // enum scmp_compare
    public const int SCMP_CMP_NE = 1, SCMP_CMP_LT = 2, SCMP_CMP_LE = 3, SCMP_CMP_EQ = 4, SCMP_CMP_GE = 5,
        SCMP_CMP_GT = 6, SCMP_CMP_MASKED_EQ = 7;

    // enum scmp_filter_attr
    public const int SCMP_FLTATR_CTL_NNP = 3, SCMP_FLTATR_CTL_TSYNC = 4, SCMP_FLTATR_CTL_LOG = 6,
        SCMP_FLTATR_CTL_SSB = 7, SCMP_FLTATR_API_SYSRAWRC = 9;
}
