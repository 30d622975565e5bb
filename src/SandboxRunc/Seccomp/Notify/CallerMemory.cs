using System.Text;
using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// Reads NUL-terminated strings from a trapped caller's memory with process_vm_readv. Reads go
/// page by page: process_vm_readv fails (or stops short) at the first unmapped page, and a string
/// near the end of a mapping must still be readable without touching the next page.
/// </summary>
public static unsafe class CallerMemory
{
    public const int PathMax = 4096, DataMax = 4096, FsTypeMax = 64;
    const int Page = 4096;

    /// <summary>
    /// The string at <paramref name="address"/>, at most <paramref name="max"/> bytes before the NUL.
    /// Null for a NULL pointer. Throws <see cref="SysException"/> (EFAULT, ENAMETOOLONG) like the kernel would fail.
    /// </summary>
    public static string? ReadString(int pid, ulong address, int max)
    {
        if (address == 0) return null;
        // On the stack: a trapped call reads up to five strings, and the supervisor's heap is kept small.
        Span<byte> buffer = max < 8192 ? stackalloc byte[max + 1] : new byte[max + 1];
        int have = 0;
        while (have <= max)
        {
            ulong at = address + (ulong)have;
            int chunk = (int)Math.Min((ulong)(Page - (int)(at % Page)), (ulong)(max + 1 - have));
            nint n;
            fixed (byte* b = &buffer[have])
            {
                var local = new Libc.IoVec { Base = b, Len = (nuint)chunk };
                var remote = new Libc.IoVec { Base = (void*)at, Len = (nuint)chunk };
                n = Libc.process_vm_readv(pid, &local, 1, &remote, 1, 0);
            }
            if (n <= 0) throw new SysException("process_vm_readv", $"pid {pid} at 0x{at:x}", n < 0 ? Libc.Errno : Libc.EFAULT);
            int nul = buffer.Slice(have, (int)n).IndexOf((byte)0);
            if (nul >= 0) return Encoding.UTF8.GetString(buffer[..(have + nul)]);
            have += (int)n;
        }
        throw new SysException("process_vm_readv", $"pid {pid} at 0x{address:x}", 36 /* ENAMETOOLONG */);
    }
}
