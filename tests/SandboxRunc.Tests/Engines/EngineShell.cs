using System.Text;
using CliWrap;

namespace SandboxRunc.Tests.Engines;

/// <summary>Runs engine CLIs (ctr, podman, docker...) with a deadline; failures carry both output streams.</summary>
public static class EngineShell
{
    /// <summary>
    /// The installed runtime the engines are pointed at (build.sh test installs the published binary
    /// there); SANDBOX_RUNC_INSTALLED picks another copy (e.g. while others install theirs concurrently).
    /// </summary>
    public static string Runtime { get; } =
        Environment.GetEnvironmentVariable("SANDBOX_RUNC_INSTALLED") is { Length: > 0 } p ? p : "/usr/local/bin/sandbox-runc";

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    /// <summary>The default hang bound of one engine command (see <see cref="TestSupport.Patience.Command"/>).</summary>
    const int CommandSeconds = 120;

    public static async Task<Result> Run(string file, IEnumerable<string> args, int timeoutSeconds = CommandSeconds)
    {
        var list = args.ToList();
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            var r = await CliWrap.Cli.Wrap(file).WithArguments(list).WithValidation(CommandResultValidation.None)
                .WithStandardOutputPipe(PipeTarget.ToStringBuilder(stdout, Encoding.UTF8))
                .WithStandardErrorPipe(PipeTarget.ToStringBuilder(stderr, Encoding.UTF8))
                .ExecuteAsync(cts.Token);
            return new Result(r.ExitCode, stdout.ToString(), stderr.ToString());
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"{file} {string.Join(' ', list)} did not finish within {timeoutSeconds} s (hung; killed)" +
                $"\nstdout so far: {stdout}\nstderr so far: {stderr}");
        }
    }

    public static async Task<Result> Ok(string file, IEnumerable<string> args, int timeoutSeconds = CommandSeconds)
    {
        var list = args.ToList();
        var r = await Run(file, list, timeoutSeconds);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{file} {string.Join(' ', list)} failed: {r}");
        return r;
    }

    /// <summary>Lazily unmounts everything mounted at or below dir (deepest first), then removes the tree.</summary>
    public static void RemoveTree(string dir)
    {
        try
        {
            string prefix = Path.TrimEndingDirectorySeparator(dir);
            var mounts = File.ReadAllLines("/proc/self/mountinfo")
                .Select(l => SandboxRunc.Rootfs.MountInfo.Unescape(l.Split(' ')[4]))
                .Where(m => m == prefix || m.StartsWith(prefix + "/", StringComparison.Ordinal))
                .OrderByDescending(m => m.Length).ToList();
            foreach (var m in mounts) Interop.Libc.umount2(m, Interop.Libc.MNT_DETACH);
        }
        catch { }
        try { Directory.Delete(dir, true); } catch { }
    }

    /// <summary>The test image as a docker-save tarball (podman load / ctr images import read it).</summary>
    public static async Task SaveImage(string tarPath) =>
        await Ok("docker", ["save", TestSupport.Repo.TestImage, "-o", tarPath], 120);
}
