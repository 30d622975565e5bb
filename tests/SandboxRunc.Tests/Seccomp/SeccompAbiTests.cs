using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using SandboxRunc.Seccomp;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using L = SandboxRunc.Seccomp.Libseccomp;

namespace SandboxRunc.Tests.Seccomp;

/// <summary>Skips (with the reason) when there is no C compiler or no seccomp.h to check against.</summary>
/// <summary>
/// Checks the hand-written C# declarations against the C headers, in the manner of Tmds.LibC:
/// a small C program is generated from the C# tables, compiled with the system's cc, and prints
/// sizeof/offsetof and constant values, which must equal what the C# side uses.
/// </summary>
public class SeccompAbiTests
{
    /// <summary>C expression → the value the C# code uses for it.</summary>
    static unsafe Dictionary<string, long> Expectations()
    {
        var e = new Dictionary<string, long>
        {
            ["sizeof(struct scmp_arg_cmp)"] = sizeof(L.ScmpArgCmp),
            ["offsetof(struct scmp_arg_cmp, arg)"] = Offset<L.ScmpArgCmp>(nameof(L.ScmpArgCmp.Arg)),
            ["offsetof(struct scmp_arg_cmp, op)"] = Offset<L.ScmpArgCmp>(nameof(L.ScmpArgCmp.Op)),
            ["offsetof(struct scmp_arg_cmp, datum_a)"] = Offset<L.ScmpArgCmp>(nameof(L.ScmpArgCmp.DatumA)),
            ["offsetof(struct scmp_arg_cmp, datum_b)"] = Offset<L.ScmpArgCmp>(nameof(L.ScmpArgCmp.DatumB)),
            ["sizeof(struct sock_filter)"] = sizeof(SeccompFilter.SockFilter),
            ["offsetof(struct sock_filter, code)"] = Offset<SeccompFilter.SockFilter>(nameof(SeccompFilter.SockFilter.Code)),
            ["offsetof(struct sock_filter, jt)"] = Offset<SeccompFilter.SockFilter>(nameof(SeccompFilter.SockFilter.Jt)),
            ["offsetof(struct sock_filter, jf)"] = Offset<SeccompFilter.SockFilter>(nameof(SeccompFilter.SockFilter.Jf)),
            ["offsetof(struct sock_filter, k)"] = Offset<SeccompFilter.SockFilter>(nameof(SeccompFilter.SockFilter.K)),
            ["sizeof(struct sock_fprog)"] = sizeof(SeccompFilter.SockFprog),
            ["offsetof(struct sock_fprog, len)"] = Offset<SeccompFilter.SockFprog>(nameof(SeccompFilter.SockFprog.Len)),
            ["offsetof(struct sock_fprog, filter)"] = Offset<SeccompFilter.SockFprog>(nameof(SeccompFilter.SockFprog.Filter)),

            ["SCMP_ACT_KILL_PROCESS"] = L.SCMP_ACT_KILL_PROCESS,
            ["SCMP_ACT_KILL_THREAD"] = L.SCMP_ACT_KILL_THREAD,
            ["SCMP_ACT_KILL"] = L.SCMP_ACT_KILL_THREAD,
            ["SCMP_ACT_TRAP"] = L.SCMP_ACT_TRAP,
            ["SCMP_ACT_NOTIFY"] = L.SCMP_ACT_NOTIFY,
            ["SCMP_ACT_ERRNO(0)"] = L.SCMP_ACT_ERRNO,
            ["SCMP_ACT_ERRNO(38)"] = L.ActErrno(38),
            ["SCMP_ACT_ERRNO(70000)"] = L.ActErrno(70000),
            ["SCMP_ACT_TRACE(0)"] = L.SCMP_ACT_TRACE,
            ["SCMP_ACT_TRACE(1)"] = L.ActTrace(1),
            ["SCMP_ACT_LOG"] = L.SCMP_ACT_LOG,
            ["SCMP_ACT_ALLOW"] = L.SCMP_ACT_ALLOW,

            ["SCMP_FLTATR_CTL_NNP"] = L.SCMP_FLTATR_CTL_NNP,
            ["SCMP_FLTATR_CTL_TSYNC"] = L.SCMP_FLTATR_CTL_TSYNC,
            ["SCMP_FLTATR_CTL_LOG"] = L.SCMP_FLTATR_CTL_LOG,
            ["SCMP_FLTATR_CTL_SSB"] = L.SCMP_FLTATR_CTL_SSB,
            ["SCMP_FLTATR_API_SYSRAWRC"] = L.SCMP_FLTATR_API_SYSRAWRC,
            ["__NR_SCMP_ERROR"] = L.NR_SCMP_ERROR,

            ["__NR_seccomp"] = Libc.SYS_seccomp,
            ["SECCOMP_SET_MODE_FILTER"] = SeccompFilter.SECCOMP_SET_MODE_FILTER,
            ["SECCOMP_FILTER_FLAG_TSYNC"] = SeccompCompiler.SECCOMP_FILTER_FLAG_TSYNC,
            ["SECCOMP_FILTER_FLAG_LOG"] = SeccompCompiler.SECCOMP_FILTER_FLAG_LOG,
            ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"] = SeccompCompiler.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            ["SECCOMP_FILTER_FLAG_NEW_LISTENER"] = SeccompCompiler.SECCOMP_FILTER_FLAG_NEW_LISTENER,
            ["PR_SET_NO_NEW_PRIVS"] = Libc.PR_SET_NO_NEW_PRIVS,
        };
        foreach (var (name, op) in SeccompCompiler.Operators)
            e[name] = op;
        // The compiler maps OCI names to libseccomp's names; the token it gets back must be the C macro.
        foreach (var (ociName, scmpName) in SeccompCompiler.Architectures)
            e[ociName] = L.seccomp_arch_resolve_name(scmpName);
        return e;
    }

    static long Offset<T>(string field) => Marshal.OffsetOf<T>(field).ToInt64();

    [FactNeedsCc]
    public void DeclarationsMatchTheCHeaders()
    {
        CHeaderCheck.AssertMatches("""
            #include <stddef.h>
            #include <stdio.h>
            #include <sys/prctl.h>
            #include <sys/syscall.h>
            #include <linux/filter.h>
            #include <linux/seccomp.h>
            #include <seccomp.h>
            """, Expectations());
    }
}
