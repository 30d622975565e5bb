using System.Diagnostics;
using System.Text;
using CliWrap;
using SandboxRunc.Tests.TestSupport;

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

    /// <summary>As <see cref="Run(string[])"/>, with a bound of its own (a command meant to run for a while).</summary>
    public Task<Result> Run(TimeSpan within, params string[] args) => Execute(null, within, args, diagnose: true);

    public Task<Result> RunWithStdin(string? stdin, params string[] args) => Execute(stdin, Patience.Command, args, diagnose: true);

    /// <summary>
    /// Runs the docker CLI. A command still running after <paramref name="within"/> is a hang: it is killed
    /// and the failure shows what it printed so far and, for the containers of this test it names, their
    /// state, logs and the runtime's log.json.
    /// </summary>
    async Task<Result> Execute(string? stdin, TimeSpan within, string[] args, bool diagnose)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var cmd = CliWrap.Cli.Wrap("docker").WithArguments(args).WithValidation(CommandResultValidation.None)
            .WithStandardOutputPipe(PipeTarget.ToStringBuilder(stdout, Encoding.UTF8))
            .WithStandardErrorPipe(PipeTarget.ToStringBuilder(stderr, Encoding.UTF8));
        if (stdin is not null) cmd = cmd.WithStandardInputPipe(PipeSource.FromString(stdin));
        using var cts = new CancellationTokenSource(within);
        var sw = Stopwatch.StartNew();
        CommandResult r;
        try
        {
            r = await cmd.ExecuteAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"docker {Show(args)} did not finish within {within.TotalSeconds:0} s (hung; killed)" +
                $"\nstdout so far: {stdout}\nstderr so far: {stderr}" + (diagnose ? await Diagnose(args) : ""));
        }
        return new Result(r.ExitCode, stdout.ToString(), stderr.ToString(), sw.Elapsed);
    }

    static string Show(string[] args) => string.Join(' ', args.Select(a => a.Contains(' ') ? $"'{a}'" : a));

    /// <summary>
    /// What a failure message needs about the containers of this test named in a command: docker's view of
    /// each (status, pid, exit code, error), the tail of its logs, and the runtime's log.json if it wrote one.
    /// </summary>
    public async Task<string> Diagnose(params string[] args)
    {
        string[] mine;
        lock (_names) mine = [.. _names.Where(args.Contains)];
        var text = new StringBuilder();
        foreach (var name in mine) text.Append(await Describe(name));
        return text.ToString();
    }

    /// <summary>One container's state, last log lines and runtime log.json, for a failure message (never throws).</summary>
    public async Task<string> Describe(string name)
    {
        var text = new StringBuilder($"\n--- container {name}:");
        try
        {
            var bound = TimeSpan.FromSeconds(20);
            var state = await Execute(null, bound, ["inspect", "--format",
                "{{.Id}} {{.State.Status}} pid={{.State.Pid}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} error={{.State.Error}}", name], diagnose: false);
            text.Append($"\n  docker inspect: {(state.Stdout + state.Stderr).Trim()}");
            var logs = await Execute(null, bound, ["logs", "--tail", "40", name], diagnose: false);
            text.Append($"\n  docker logs --tail 40:\n{Indent(logs.Stdout)}\n  (stderr)\n{Indent(logs.Stderr)}");
            string id = state.Stdout.Split(' ')[0];
            string logJson = $"/var/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/{id}/log.json";
            if (id.Length == 64 && File.Exists(logJson))
                text.Append($"\n  runtime {logJson}:\n{Indent(string.Join('\n', File.ReadLines(logJson).TakeLast(40)))}");
        }
        catch (Exception e)
        {
            text.Append($"\n  (could not describe it: {e.Message})");
        }
        return text.ToString();
    }

    static string Indent(string s) => "    " + s.TrimEnd().Replace("\n", "\n    ");

    /// <summary>Runs and asserts exit 0; the failure message carries both output streams.</summary>
    public async Task<Result> Ok(params string[] args)
    {
        var r = await Run(args);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"docker {Show(args)} failed: {r}{await Diagnose(args)}");
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
            // Another dockerd (its own --exec-root, as a private one for trying a build): the --root of the container's supervisor.
            ?? SandboxRunc.Container.Supervisor.AllRunning().Where(s => s.Id == id).Select(s => Path.Combine(s.Root, id)).FirstOrDefault(Directory.Exists)
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

    /// <summary>Waits until the container's logs contain the text (a trap is set, a loop has begun...).</summary>
    public Task WaitForLog(string name, string text, TimeSpan? timeout = null) =>
        Eventually.Holds(() => Run("logs", name), r => r.Stdout.Contains(text) || r.Stderr.Contains(text),
            $"container {name} to log \"{text}\"", timeout);

    /// <summary>As above; a bound in milliseconds counts only when it is the more generous one.</summary>
    public Task WaitForLog(string name, string text, int timeoutMs) =>
        WaitForLog(name, text, TimeSpan.FromMilliseconds(Math.Max(timeoutMs, Patience.Condition.TotalMilliseconds)));

    public void Dispose()
    {
        string[] names;
        lock (_names) names = [.. _names];
        if (names.Length == 0) return;
        try { Run(["rm", "-f", .. names]).GetAwaiter().GetResult(); } catch { }
    }
}
