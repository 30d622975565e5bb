namespace SandboxRunc.Interop;

/// <summary>A file's identity (device, inode), e.g. to tell whether two namespace files are the same namespace.</summary>
public readonly record struct FileId(ulong Device, ulong Inode)
{
    public static unsafe FileId? Of(string path)
    {
        byte* buf = stackalloc byte[Libc.StatSize];
        if (Libc.stat(path, buf) != 0) return null;
        return new FileId(*(ulong*)buf, *(ulong*)(buf + 8));
    }
}
