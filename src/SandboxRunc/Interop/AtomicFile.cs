using System.Text;

namespace SandboxRunc.Interop;

/// <summary>
/// Replacing a file so that readers see the old content or the new, never half of it: a temp file in
/// the same directory (named by our pid, so concurrent writers do not share it), then rename over the
/// target. The file's mode is kept. `durable` also fsyncs the file and the directory (for admins'
/// configuration files; state under /run does not need it).
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, ReadOnlySpan<byte> content, bool durable = false)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(path)) ?? "/";
        UnixFileMode? mode = File.Exists(path) ? File.GetUnixFileMode(path) : null;
        string tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                fs.Write(content);
                if (durable) fs.Flush(flushToDisk: true);
            }
            if (mode is { } m) File.SetUnixFileMode(tmp, m);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
        if (durable)
        {
            int fd = Libc.open(dir, Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
            if (fd >= 0)
            {
                Libc.fsync(fd);
                Libc.close(fd);
            }
        }
    }

    public static void Write(string path, string text, bool durable = false) =>
        Write(path, new UTF8Encoding(false).GetBytes(text), durable);
}
