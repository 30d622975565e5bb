using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

// Reading and writing a file by offset (the emulation serves large host files by offset; the notify server writes a
// caller's memory through /proc/PID/mem) and asking an open file what it is.
public static unsafe partial class Libc
{
    [LibraryImport(C, SetLastError = true)]
    public static partial nint pread(int fd, byte* buf, nint count, long offset);
    [LibraryImport(C, SetLastError = true)]
    public static partial nint pwrite(int fd, byte* buf, nint count, long offset);
    [LibraryImport(C, SetLastError = true)]
    public static partial int fstat(int fd, byte* buf);

    /// <summary>Offsets in struct stat (x86_64), a buffer of <see cref="StatSize"/> bytes.</summary>
    public const int StatDevOffset = 0, StatInoOffset = 8, StatModeOffset = 24, StatUidOffset = 28, StatSizeOffset = 48;

    public const int ENFILE = 23, EMFILE = 24, EFBIG = 27, ENOTCONN = 107;
}
