using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>
/// The one error idiom of the interop layer: a failed system call, named with the call, the path
/// or object it acted on, and the errno text ("mount /proc: Operation not permitted").
/// </summary>
public sealed class SysException : SandboxRuncException
{
    public int Errno { get; }
    public string Call { get; }
    public string? Target { get; }

    public SysException(string call, string? target, int errno)
        : base(Format(call, target, errno))
    {
        Errno = errno;
        Call = call;
        Target = target;
    }

    static string Format(string call, string? target, int errno) =>
        target is null ? $"{call}: {Marshal.GetPInvokeErrorMessage(errno)}"
                       : $"{call} {target}: {Marshal.GetPInvokeErrorMessage(errno)}";

    /// <summary>Throws for a -1 result, reading errno right after the call.</summary>
    public static int Check(int result, string call, string? target = null)
    {
        if (result == -1) throw new SysException(call, target, Marshal.GetLastPInvokeError());
        return result;
    }

    public static long Check(long result, string call, string? target = null)
    {
        if (result == -1) throw new SysException(call, target, Marshal.GetLastPInvokeError());
        return result;
    }
}
