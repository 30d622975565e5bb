using System.Runtime.InteropServices;
using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp;

/// <summary>
/// Installs a BPF program compiled by <see cref="SeccompCompiler"/>. This runs in the container's
/// init as the last step before execve, so it uses nothing but the seccomp(2) system call: no
/// libseccomp (it may not exist in the container and must not be loaded there) and no allocation.
/// Without SECCOMP_FILTER_FLAG_TSYNC the filter applies to the calling thread only, and the kernel
/// requires either no_new_privs on that thread or CAP_SYS_ADMIN.
/// </summary>
public static class SeccompFilter
{
    public const int SECCOMP_SET_MODE_FILTER = 1;
    public const uint SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;
    const int SockFilterSize = 8;
    const int BpfMaxInstructions = 4096; // BPF_MAXINSNS

    /// <summary>struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SockFilter
    {
        public ushort Code;
        public byte Jt;
        public byte Jf;
        public uint K;
    }

    /// <summary>struct sock_fprog { unsigned short len; struct sock_filter *filter; }</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct SockFprog
    {
        public ushort Len;
        public SockFilter* Filter;
    }

    /// <summary>
    /// Loads <paramref name="program"/> (struct sock_filter[]) with <paramref name="flags"/>
    /// (SECCOMP_FILTER_FLAG_*). Returns the seccomp(2) result: the notification listener fd when
    /// SECCOMP_FILTER_FLAG_NEW_LISTENER is passed, otherwise 0.
    /// </summary>
    public static unsafe int Install(ReadOnlySpan<byte> program, uint flags)
    {
        if (program.Length == 0 || program.Length % SockFilterSize != 0 || program.Length / SockFilterSize > BpfMaxInstructions)
            throw new ArgumentException($"seccomp: a BPF program must be 1-{BpfMaxInstructions} instructions of {SockFilterSize} bytes, got {program.Length} bytes", nameof(program));

        fixed (byte* p = program)
        {
            var prog = new SockFprog { Len = (ushort)(program.Length / SockFilterSize), Filter = (SockFilter*)p };
            long rc = Libc.syscall(Libc.SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, (long)&prog, 0, 0, 0);
            return (int)SysException.Check(rc, "seccomp", "SECCOMP_SET_MODE_FILTER");
        }
    }
}
