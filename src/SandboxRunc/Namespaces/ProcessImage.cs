namespace SandboxRunc.Namespaces;

/// <summary>The program the container runs: its resolved path, argv and environment.</summary>
internal sealed record ProcessImage(string Path, List<string> Args, List<string> Env)
{
    const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>Looks the program up in the container's PATH (from process.env), as runc does, before `start`.</summary>
    public static ProcessImage Resolve(Oci.Process process)
    {
        var env = new List<string>(process.Env ?? []);
        if (!env.Any(e => e.StartsWith("HOME=", StringComparison.Ordinal)))
            env.Add("HOME=" + HomeOf(process.User.Uid));
        string name = process.Args![0];
        string? path = name.Contains('/') ? (IsExecutable(name) ? name : null) : Search(name, env);
        if (path is null)
            throw new InvalidOperationException(name.Contains('/')
                ? $"exec: \"{name}\": stat {name}: no such file or directory"
                : $"exec: \"{name}\": executable file not found in $PATH" );
        return new ProcessImage(path, process.Args, env);
    }

    static string? Search(string name, List<string> env)
    {
        string pathVar = env.LastOrDefault(e => e.StartsWith("PATH=", StringComparison.Ordinal))?[5..] ?? DefaultPath;
        foreach (var dir in pathVar.Split(':'))
        {
            string candidate = (dir.Length == 0 ? "." : dir) + "/" + name;
            if (IsExecutable(candidate)) return candidate;
        }
        return null;
    }

    // access(2) answers what execve will: the file exists (through symlinks) and root may execute it.
    static bool IsExecutable(string path) => !Directory.Exists(path) && Interop.Libc.access(path, 1 /* X_OK */) == 0;

    static string HomeOf(uint uid)
    {
        try
        {
            foreach (var line in File.ReadLines("/etc/passwd"))
            {
                var f = line.Split(':');
                if (f.Length >= 6 && uint.TryParse(f[2], out var u) && u == uid) return f[5];
            }
        }
        catch (IOException) { }
        return "/";
    }
}
