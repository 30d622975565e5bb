namespace SandboxRunc.Interop;

/// <summary>
/// Files a user or an engine names (config.json, --process, --resources, --pid-file, ...): read only when
/// they are regular files (a FIFO would block the command for ever, a directory reads as "access denied"),
/// with errors that name the flag or field, the path, and the reason in plain words.
/// </summary>
public static unsafe class UserFile
{
    /// <param name="what">what the path is, for the message: "--process", "config.json", ...</param>
    public static byte[] ReadAll(string what, string path)
    {
        if (path.Length == 0) throw new RuntimeException($"{what}: the path cannot be empty");
        byte* buf = stackalloc byte[Libc.StatSize];
        if (Libc.stat(path, buf) != 0)
            throw new RuntimeException($"{what} {path}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(Libc.Errno)}");
        uint type = *(uint*)(buf + 24) & Libc.S_IFMT;
        if (type != Libc.S_IFREG)
            throw new RuntimeException($"{what} {path}: {(type == Libc.S_IFDIR ? "is a directory" : "is not a regular file")}");
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"{what} {path}: {Reason(e)}");
        }
    }

    /// <summary>The reason of a .NET file error in plain words (its own message names temp files and says "Could not find a part of the path").</summary>
    public static string Reason(Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => "no such file or directory",
        UnauthorizedAccessException => "permission denied (or a read-only file system, or a directory in the way)",
        PathTooLongException => "the path is too long",
        _ => e.Message,
    };
}
