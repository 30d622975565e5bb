using System.Diagnostics;
using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// Drives the docker CLI (on PATH) through CliWrap, as a user would. Container names made with
/// <see cref="Name"/> are unique per test and force-removed on Dispose, whatever the test did.
/// </summary>
public sealed class DockerCli : IDisposable
{
    /// <summary>The runtime name registered in /etc/docker/daemon.json.</summary>
    public const string Runtime = "sandbox-runc";

    public static string Image => TestSupport.Repo.TestImage;

    readonly List<string> _names = [];

    public sealed record Result(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
    {
        public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.00}s\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    /// <summary>A unique container name (removed on Dispose).</summary>
    public string Name(string what)
    {
        string name = $"srt-{what}-{Guid.NewGuid().ToString("N")[..8]}";
        lock (_names) _names.Add(name);
        return name;
    }

    public Task<Result> Run(params string[] args) => RunWithStdin(null, args);

    public async Task<Result> RunWithStdin(string? stdin, params string[] args)
    {
        var cmd = CliWrap.Cli.Wrap("docker").WithArguments(args).WithValidation(CommandResultValidation.None);
        if (stdin is not null) cmd = cmd.WithStandardInputPipe(PipeSource.FromString(stdin));
        var limit = TestSupport.HangLimits.Seconds(30);
        using var cts = new CancellationTokenSource(limit);
        var sw = Stopwatch.StartNew();
        BufferedCommandResult r;
        try
        {
            r = await cmd.ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)} did not finish within {limit.TotalSeconds:0} s");
        }
        return new Result(r.ExitCode, r.StandardOutput, r.StandardError, sw.Elapsed);
    }

    /// <summary>Runs and asserts exit 0; the failure message carries both output streams.</summary>
    public async Task<Result> Ok(params string[] args)
    {
        var r = await Run(args);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)} failed: {r}");
        return r;
    }

    /// <summary>
    /// `docker run --rm --runtime=sandbox-runc [options] IMAGE command...` (attached). Named all the same,
    /// so that Dispose removes the container should the run hang or --rm not happen.
    /// </summary>
    public Task<Result> RunRm(string[] options, params string[] command) =>
        Run(["run", "--rm", "--name", Name("run"), $"--runtime={Runtime}", .. options, Image, .. command]);

    /// <summary>Starts a detached container with the given runtime; returns its name.</summary>
    public async Task<string> RunDetached(string what, string runtime, string[] options, params string[] command)
    {
        string name = Name(what);
        await Ok(["run", "-d", "--name", name, $"--runtime={runtime}", .. options, Image, .. command]);
        return name;
    }

    /// <summary>`docker inspect --format` on one container.</summary>
    public async Task<string> Inspect(string name, string format) =>
        (await Ok("inspect", "--format", format, name)).Stdout.Trim();

    /// <summary>The runtime's state dir of a container: dockerd 20.10 gives every runtime the root runtime-runc.</summary>
    public async Task<string> StateDir(string name)
    {
        string id = await Inspect(name, "{{.Id}}");
        return new[] { "/run/docker/runtime-runc/moby", "/run/docker/runtime-sandbox-runc/moby" }
            .Select(r => Path.Combine(r, id)).FirstOrDefault(Directory.Exists)
            ?? throw new Xunit.Sdk.XunitException($"no state dir for container {name} ({id})");
    }

    /// <summary>
    /// The container's staging dir on the host (its ID-mapped mounts and FUSE mount), named by the runtime
    /// after its state dir as docker gave it: --root /var/run/..., a symlink to /run.
    /// </summary>
    public static string StagingDir(string stateDir)
    {
        foreach (var dir in new[] { stateDir, "/var" + stateDir })
        {
            string path = Path.Combine(SandboxRunc.Rootfs.IdmappedStaging.StagingRoot,
                SandboxRunc.Container.CreateOperation.StagingKey(new SandboxRunc.Container.StateStore(Path.GetDirectoryName(dir)!), Path.GetFileName(dir)));
            if (Directory.Exists(path)) return path;
        }
        throw new Xunit.Sdk.XunitException($"no staging dir for {stateDir}");
    }

    /// <summary>Polls the container's logs until they contain the text (a trap is set, a loop has begun...).</summary>
    public async Task WaitForLog(string name, string text, int timeoutMs = 10000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(TestSupport.HangLimits.Ms(timeoutMs));
        Result last;
        do
        {
            last = await Run("logs", name);
            if (last.Stdout.Contains(text) || last.Stderr.Contains(text)) return;
            await Task.Delay(50);
        } while (DateTime.UtcNow < deadline);
        throw new Xunit.Sdk.XunitException($"container {name} never logged \"{text}\": {last}");
    }

    public void Dispose()
    {
        string[] names;
        lock (_names) names = [.. _names];
        if (names.Length == 0) return;
        try { Run(["rm", "-f", .. names]).GetAwaiter().GetResult(); } catch { }
    }
}
