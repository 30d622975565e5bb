using SandboxRunc.Container;

namespace SandboxRunc.Install;

/// <summary>
/// `install --lock`: with isolation locked, a docker CLI user must not get an unisolated container by
/// asking for another runtime. dockerd refuses to redefine its reserved runtime name "runc", but for
/// "runc" (and "io.containerd.runc.v2") it starts containerd's runc shim with the binary name "runc",
/// which the shim looks up in the PATH dockerd (and so containerd) runs with. A `runc` symlink to
/// sandbox-runc in a PATH directory ahead of the real runc therefore makes `--runtime=runc` run
/// sandbox-runc too; with `default-runtime` set as well, every runtime name dockerd offers is isolated.
/// Only a symlink this command made is ever replaced or removed.
/// </summary>
public static class RuncTakeover
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>The PATH of the running dockerd (what its shims will search), or a root shell's default.</summary>
    public static string DockerdPath(string pidFile)
    {
        try
        {
            int pid = int.Parse(File.ReadAllText(pidFile).Trim());
            foreach (var entry in File.ReadAllText($"/proc/{pid}/environ").Split('\0'))
                if (entry.StartsWith("PATH=", StringComparison.Ordinal)) return entry[5..];
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { }
        return DefaultPath;
    }

    /// <summary>Where the link goes: the first existing PATH directory before the one holding the real runc.</summary>
    public static string LinkPath(string path, string binary)
    {
        var dirs = path.Split(':', StringSplitOptions.RemoveEmptyEntries);
        foreach (var dir in dirs)
        {
            string candidate = Path.Combine(dir, "runc");
            if (IsOurs(candidate, binary)) return candidate;
            if (File.Exists(candidate))
                break; // the real runc: we must come before it
        }
        int realAt = Array.FindIndex(dirs, d => File.Exists(Path.Combine(d, "runc")) && !IsOurs(Path.Combine(d, "runc"), binary));
        var candidates = (realAt < 0 ? dirs : dirs[..realAt]).Where(Directory.Exists).ToList();
        // A system directory rather than, say, a user's ~/.cargo/bin that happens to come first.
        var before = candidates.FirstOrDefault(d => d is "/usr/local/sbin" or "/usr/local/bin") ?? candidates.FirstOrDefault();
        if (before is null)
            throw new RuntimeException($"--lock: no directory of dockerd's PATH ({path}) comes before the real runc; sandbox-runc cannot take over the runtime name \"runc\"");
        return Path.Combine(before, "runc");
    }

    static bool IsOurs(string candidate, string binary) =>
        new FileInfo(candidate).LinkTarget is { } target && Interop.HostPath.Resolve(candidate) == Interop.HostPath.Resolve(binary) && target.Length > 0;

    public static string Lock(string path, string binary)
    {
        string link = LinkPath(path, binary);
        if (IsOurs(link, binary)) return $"{link}: no change (already runs sandbox-runc)";
        if (File.Exists(link) || new FileInfo(link).LinkTarget is not null)
            throw new RuntimeException($"--lock: {link} exists and is not a link to {binary}; remove it or choose another PATH");
        File.CreateSymbolicLink(link, binary);
        return $"{link}: added (-> {binary}): --runtime=runc and io.containerd.runc.v2 now run sandbox-runc";
    }

    public static string Unlock(string path, string binary)
    {
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "runc");
            if (IsOurs(candidate, binary))
            {
                File.Delete(candidate);
                return $"{candidate}: removed: --runtime=runc runs the real runc again";
            }
        }
        return "runc: no change (no runc link to sandbox-runc in dockerd's PATH)";
    }
}
