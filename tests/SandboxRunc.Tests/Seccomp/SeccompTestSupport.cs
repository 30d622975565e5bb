using System.Runtime.InteropServices;
using System.Text.Json;
using SandboxRunc.Interop;
using SandboxRunc.Oci;
using SandboxRunc.Seccomp;

namespace SandboxRunc.Tests.Seccomp;

/// <summary>
/// Shared helpers: fixture lookup, and running code on a dedicated thread that has its own
/// seccomp filter. Without TSYNC both no_new_privs and the filter are per-thread, so the test
/// runner's other threads are not affected; the thread ends right after the check.
/// </summary>
static class SeccompTestSupport
{
    public const long SYS_getpid = 39, SYS_getppid = 110, SYS_getpgid = 121, SYS_getpriority = 140,
        SYS_unshare = 272, SYS_clone3 = 435;
    public const long CLONE_NEWUSER = 0x10000000;
    public const int EPERM = 1, EACCES = 13, EINVAL = 22, ENOSYS = 38;

    public static string FixtureDir
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "SandboxRunc.sln")))
                    return Path.Combine(dir.FullName, "spec-fixtures", "seccomp");
            throw new InvalidOperationException($"no SandboxRunc.sln above {AppContext.BaseDirectory}");
        }
    }

    public static Oci.Seccomp Load(string relativePath) =>
        JsonSerializer.Deserialize(File.ReadAllBytes(Path.Combine(FixtureDir, relativePath)), OciJson.Default.Seccomp)
        ?? throw new InvalidOperationException($"{relativePath}: null document");

    public static CompiledSeccomp Compile(string relativePath) => SeccompCompiler.Compile(Load(relativePath));

    /// <summary>A raw syscall's result and errno (0 on success).</summary>
    public static (long Result, int Errno) Sys(long nr, long a1 = 0, long a2 = 0)
    {
        long r = Libc.syscall(nr, a1, a2, 0, 0, 0, 0);
        return (r, r == -1 ? Marshal.GetLastPInvokeError() : 0);
    }

    /// <summary>Runs <paramref name="body"/> on a new thread after installing <paramref name="filter"/> there.</summary>
    public static T OnFilteredThread<T>(CompiledSeccomp? filter, Func<T> body) =>
        OnFilteredThread(filter, 0, _ => body());

    /// <summary>As above; <paramref name="body"/> gets seccomp(2)'s result (the listener fd with NEW_LISTENER), closed afterwards.</summary>
    public static T OnFilteredThread<T>(CompiledSeccomp? filter, uint extraFlags, Func<int, T> body)
    {
        T result = default!;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                int fd = 0;
                if (filter is not null)
                {
                    SysException.Check(Libc.prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl", "PR_SET_NO_NEW_PRIVS");
                    fd = SeccompFilter.Install(filter.Program, filter.Flags | extraFlags);
                }
                try { result = body(fd); }
                finally { if (fd > 0) Libc.close(fd); }
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        thread.Join();
        if (error is not null) throw new InvalidOperationException("filtered thread failed: " + error.Message, error);
        return result;
    }
}
