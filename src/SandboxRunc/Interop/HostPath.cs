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

    /// <summary>
    /// The first directory on the way to <paramref name="path"/> (each ancestor, then the path itself) that a
    /// process with fsuid <paramref name="uid"/>, fsgid <paramref name="gid"/> and no capabilities cannot
    /// search, with its owner and mode; null when there is none. The kernel answers (modes and ACLs alike): a
    /// thread of ours takes those ids (setfsuid is per thread, and drops the file capabilities) and looks up
    /// "DIR/.", which needs search permission on DIR. <paramref name="capable"/>(owner uid, gid) says whether the
    /// process may enter a directory anyway (root of a user namespace, in one whose owner ids are both mapped
    /// there): past such a directory the thread cannot tell, and nothing more is said.
    /// </summary>
    public static (string Dir, uint Uid, uint Gid, uint Mode)? FirstUnsearchable(string path, uint uid, uint gid, Func<uint, uint, bool> capable)
    {
        var dirs = new List<string> { "/" };
        foreach (var part in Path.GetFullPath(path).Split('/', StringSplitOptions.RemoveEmptyEntries))
            dirs.Add(dirs[^1] == "/" ? "/" + part : dirs[^1] + "/" + part);
        var blocked = new bool[dirs.Count];
        var t = new Thread(() =>
        {
            Libc.syscall(Libc.SYS_setfsgid, gid, 0, 0, 0, 0, 0);
            Libc.syscall(Libc.SYS_setfsuid, uid, 0, 0, 0, 0, 0);
            byte* st = stackalloc byte[Libc.StatSize];
            for (int i = 0; i < dirs.Count; i++)
                blocked[i] = Libc.stat(dirs[i] == "/" ? "/." : dirs[i] + "/.", st) != 0 && Libc.Errno == Libc.EACCES;
        });
        t.Start();
        t.Join();
        byte* buf = stackalloc byte[Libc.StatSize];
        for (int i = 0; i < dirs.Count; i++)
        {
            if (!blocked[i]) continue;
            if (Libc.stat(dirs[i], buf) != 0) return null;
            uint owner = *(uint*)(buf + 28), group = *(uint*)(buf + 32), mode = *(uint*)(buf + 24) & 0xfff;
            return capable(owner, group) ? null : (dirs[i], owner, group, mode);
        }
        return null;
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
