using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>Host path facts the isolation policy needs: realpath(3) and a file's owner and mode.</summary>
public static unsafe partial class HostPath
{
    [LibraryImport("libc", EntryPoint = "realpath", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial byte* realpath(string path, byte* resolved);

    /// <summary>
    /// The path with every symlink, "." and ".." resolved, as the kernel would walk it. A path that does
    /// not exist (yet: docker makes missing bind sources) resolves its longest existing prefix and keeps
    /// the rest lexically normalised.
    /// </summary>
    public static string Resolve(string path)
    {
        string full = Path.GetFullPath(path.Length == 0 ? "." : path);
        if (Real(path) is { } real) return real;
        // Walk up the path as given (not the lexically normalised one: ".." after a symlink is the link target's parent).
        string trimmed = path.TrimEnd('/');
        int slash = trimmed.LastIndexOf('/');
        if (slash <= 0 || trimmed.Length == 0) return full;
        string name = trimmed[(slash + 1)..];
        string parent = Resolve(trimmed[..slash]);
        return name switch
        {
            "." => parent,
            ".." => Path.GetDirectoryName(parent) ?? "/",
            _ => parent == "/" ? "/" + name : parent + "/" + name,
        };
    }

    static string? Real(string path)
    {
        byte* buf = stackalloc byte[4097];
        byte* r = realpath(path, buf);
        return r == null ? null : Marshal.PtrToStringUTF8((nint)r);
    }

    /// <summary>The owner uid and permission bits of a file (following symlinks), or null if it cannot be stat'ed.</summary>
    public static (uint Uid, uint Mode)? OwnerAndMode(string path)
    {
        byte* buf = stackalloc byte[Libc.StatSize];
        if (Libc.stat(path, buf) != 0) return null;
        // x86_64 struct stat: st_dev(8) st_ino(8) st_nlink(8) st_mode(4) st_uid(4) st_gid(4)
        return (*(uint*)(buf + 28), *(uint*)(buf + 24) & 0xfff);
    }
}
