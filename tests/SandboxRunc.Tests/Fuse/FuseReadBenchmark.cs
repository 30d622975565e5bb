// Not a test but a measurement, run on request (tests/bench/bench.sh):
//   SANDBOX_RUNC_FUSE_BENCH=1 dotnet test tests/SandboxRunc.Tests -c Release --filter "FullyQualifiedName~FuseReadBenchmark"
// It mounts the server with a constant 7-byte file, compiles tests/bench/fuseread.c and runs it against
// the host's /proc/uptime and the mount, 1 and 4 threads, "once" (open+read+close) and "eof" (as cat).
// The lines fuseread prints go to $SANDBOX_RUNC_FUSE_BENCH_OUT if set, and to the test output.
using System.Diagnostics;
using System.Text;
using SandboxRunc.Fuse;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Fuse;

public sealed class FuseBenchFactAttribute : FactAttribute
{
    public FuseBenchFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("SANDBOX_RUNC_FUSE_BENCH") != "1")
            Skip = "a benchmark: set SANDBOX_RUNC_FUSE_BENCH=1 to run it";
        else if (Environment.UserName != "root")
            Skip = "needs root to mount";
    }
}

public sealed class FuseReadBenchmark(ITestOutputHelper output)
{
    [FuseBenchFact]
    public void OpenReadCloseThroughFuseAgainstProcfs()
    {
        string n = Environment.GetEnvironmentVariable("SANDBOX_RUNC_FUSE_BENCH_N") ?? "20000";
        string work = Directory.CreateTempSubdirectory("sandbox-runc-fusebench-").FullName;
        string mnt = Path.Combine(work, "mnt"), exe = Path.Combine(work, "fuseread");
        Directory.CreateDirectory(mnt);
        Run("cc", "-O2", "-pthread", "-o", exe, Path.Combine(Repo.Root, "tests/bench/fuseread.c"));

        var fs = new DictionaryFileSystem();
        fs.AddFile("uptime", "123.45\n");
        var results = new StringBuilder();
        using (var mount = FuseMount.Mount(mnt))
        {
            var server = FuseServer.Serve(mount.Device, fs);
            Run(exe, Path.Combine(mnt, "uptime"), "2000", "2"); // warm-up: JIT, reader threads
            foreach (var (threads, mode) in new[] { ("1", "once"), ("1", "eof"), ("4", "once") })
                foreach (string path in new[] { "/proc/uptime", Path.Combine(mnt, "uptime") })
                    results.Append(Run(exe, path, n, threads, mode));
            mount.Unmount();
            Assert.True(server.Wait(TimeSpan.FromSeconds(5)));
        }
        Directory.Delete(work, recursive: true);

        output.WriteLine(results.ToString());
        if (Environment.GetEnvironmentVariable("SANDBOX_RUNC_FUSE_BENCH_OUT") is { Length: > 0 } file)
            File.WriteAllText(file, results.ToString());
    }

    static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(300_000), $"{file} hung");
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr}");
        return stdout.Result;
    }
}
