namespace SandboxRunc.Rootfs;

/// <summary>
/// Resolves a container path inside the rootfs the way the container would see it: symlinks are
/// followed relative to the rootfs, and ".." never climbs out of it. A hostile image that makes
/// /etc a symlink to /../../host/etc still only reaches rootfs/host/etc.
/// </summary>
public static class SecureJoin
{
    public static string Join(string root, string unsafePath)
    {
        root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var pending = new Stack<string>(Split(unsafePath).Reverse());
        var resolved = new List<string>();
        int links = 0;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { if (resolved.Count > 0) resolved.RemoveAt(resolved.Count - 1); continue; }
            string candidate = root + "/" + string.Join('/', resolved.Append(part));
            string? target;
            try { target = new FileInfo(candidate).LinkTarget; }
            catch (IOException) { target = null; }
            catch (UnauthorizedAccessException) { target = null; }
            if (target is not null)
            {
                if (++links > 255) throw new IOException($"too many levels of symbolic links resolving {unsafePath} in {root}");
                if (target.StartsWith('/')) resolved.Clear();
                foreach (var t in Split(target).Reverse()) pending.Push(t);
                continue;
            }
            resolved.Add(part);
        }
        return resolved.Count == 0 ? root : root + "/" + string.Join('/', resolved);
    }

    static IEnumerable<string> Split(string path) => path.Split('/', StringSplitOptions.RemoveEmptyEntries);
}
