using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>An owned file descriptor (0 is a valid fd, -1 is not).</summary>
public sealed class SafeFd : SafeHandle
{
    public SafeFd() : base(-1, ownsHandle: true) { }
    public SafeFd(int fd, bool ownsHandle = true) : base(-1, ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;
    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;

    /// <summary>Gives up ownership and returns the raw fd (e.g. before passing it to a child).</summary>
    public int Release()
    {
        int fd = (int)handle;
        SetHandleAsInvalid();
        return fd;
    }
}
