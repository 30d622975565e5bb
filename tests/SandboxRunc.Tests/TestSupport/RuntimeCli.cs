using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// Drives the sandbox-runc executable (or another runtime, e.g. runc, for comparison) with its own
/// --root, through CliWrap. Dispose force-deletes whatever the test left.
/// </summary>
public sealed class RuntimeCli : IDisposable
{
    public string Binary { get; }
    public string StateRoot { get; }

    /// <summary>Extra environment for every command (e.g. SANDBOX_RUNC_SUBUID for a private ID pool).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; }

    public RuntimeCli(string? binary = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        Environment = environment ?? new Dictionary<string, string>();
        Binary = binary ?? Repo.Binary;
        if (!File.Exists(Binary))
            throw new InvalidOperationException($"runtime binary {Binary} is missing: run ./build.sh publish (or set SANDBOX_RUNC_BIN)");
        StateRoot = Path.Combine(Path.GetTempPath(), "sr-state-" + Guid.NewGuid().ToString("N")[..8]);
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr, string? OutputFile = null)
    {
        /// <summary>For <see cref="Detached"/>: what the container has written to its stdout so far.</summary>
        public string ContainerOutput => OutputFile is null ? "" : File.ReadAllText(OutputFile);

        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    public Task<Result> Run(params string[] args) => RunWith(null, args);

    public async Task<Result> RunWith(Func<Command, Command>? configure, params string[] args)
    {
        var cmd = CliWrap.Cli.Wrap(Binary)
            .WithArguments(new[] { "--root", StateRoot }.Concat(args))
            .WithEnvironmentVariables(Env)
            .WithValidation(CommandResultValidation.None);
        if (configure is not null) cmd = configure(cmd);
        using var cts = new CancellationTokenSource(HangLimits.Seconds(60));
        var r = await cmd.ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        return new Result(r.ExitCode, r.StandardOutput, r.StandardError);
    }

    /// <summary>
    /// Runs a command whose container outlives it (create, run -d). The container inherits our stdio, so
    /// they are files here, not pipes: a pipe would stay open until the container exits. stdout and
    /// stderr of the runtime and of the container land in <see cref="Result.OutputFile"/> and a .err file.
    /// </summary>
    public Task<Result> Detached(params string[] args) => DetachedWith("", args);

    /// <summary>As <see cref="Detached(string[])"/>, with extra shell redirections (e.g. "3&lt;/etc/hostname" for --preserve-fds).</summary>
    public async Task<Result> DetachedWith(string redirects, params string[] args)
    {
        Directory.CreateDirectory(StateRoot);
        string log = Path.Combine(StateRoot, "out-" + Guid.NewGuid().ToString("N")[..8]);
        string line = string.Join(' ', new[] { Binary, "--root", StateRoot }.Concat(args).Select(Quote))
            + $" >{Quote(log + ".out")} 2>{Quote(log + ".err")} </dev/null {redirects}";
        using var cts = new CancellationTokenSource(HangLimits.Seconds(60));
        var r = await CliWrap.Cli.Wrap("/bin/sh").WithArguments(["-c", line]).WithEnvironmentVariables(Env)
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        return new Result(r.ExitCode, File.ReadAllText(log + ".out"), File.ReadAllText(log + ".err"), log + ".out");
    }

    IReadOnlyDictionary<string, string?> Env => Environment.ToDictionary(kv => kv.Key, kv => (string?)kv.Value);

    public static string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    /// <summary>`create` (detached stdio), asserting success.</summary>
    public async Task<Result> Create(string bundleDir, string id, params string[] extra)
    {
        var r = await Detached(["create", .. extra, "--bundle", bundleDir, id]);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"sandbox-runc create {id} failed: {r}");
        return r;
    }

    /// <summary>Runs and asserts success; the failure message carries both output streams.</summary>
    public async Task<Result> Ok(params string[] args)
    {
        var r = await Run(args);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"sandbox-runc {string.Join(' ', args)} failed: {r}");
        return r;
    }

    public async Task<string> Status(string id)
    {
        var r = await Ok("state", id);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        return doc.RootElement.GetProperty("status").GetString()!;
    }

    /// <summary>Polls `state` until the container reaches the status (or fails after the timeout).</summary>
    public async Task WaitStatus(string id, string status, int timeoutMs = 10000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(HangLimits.Ms(timeoutMs));
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            last = await Status(id);
            if (last == status) return;
            await Task.Delay(20);
        }
        throw new Xunit.Sdk.XunitException($"container {id} stayed {last}, expected {status}");
    }

    /// <summary>`run` in the foreground (the container must exit), asserting exit 0; returns the container's stdout.</summary>
    public async Task<string> RunOk(string bundleDir, string id, params string[] extra)
    {
        var r = await Run(["run", .. extra, "--bundle", bundleDir, id]);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"sandbox-runc run {id} failed: {r}");
        return r.Stdout;
    }

    /// <summary>The container directories under the state root (an aborted create must leave none).</summary>
    public string[] StateDirs() => Directory.Exists(StateRoot) ? Directory.GetDirectories(StateRoot) : [];

    /// <summary>The init pid from `state`.</summary>
    public async Task<int> Pid(string id)
    {
        var r = await Ok("state", id);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        return doc.RootElement.GetProperty("pid").GetInt32();
    }

    public void Dispose()
    {
        if (!Directory.Exists(StateRoot)) return;
        foreach (var dir in Directory.GetDirectories(StateRoot))
        {
            try { Run("delete", "--force", Path.GetFileName(dir)).GetAwaiter().GetResult(); } catch { }
        }
        try { Directory.Delete(StateRoot, true); } catch { }
    }
}
