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

    public RuntimeCli(string? binary = null)
    {
        Binary = binary ?? Repo.Binary;
        if (!File.Exists(Binary))
            throw new InvalidOperationException($"runtime binary {Binary} is missing: run ./build.sh publish (or set SANDBOX_RUNC_BIN)");
        StateRoot = Path.Combine(Path.GetTempPath(), "sr-state-" + Guid.NewGuid().ToString("N")[..8]);
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    public Task<Result> Run(params string[] args) => RunWith(null, args);

    public async Task<Result> RunWith(Func<Command, Command>? configure, params string[] args)
    {
        var cmd = CliWrap.Cli.Wrap(Binary)
            .WithArguments(new[] { "--root", StateRoot }.Concat(args))
            .WithValidation(CommandResultValidation.None);
        if (configure is not null) cmd = configure(cmd);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var r = await cmd.ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        return new Result(r.ExitCode, r.StandardOutput, r.StandardError);
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
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            last = await Status(id);
            if (last == status) return;
            await Task.Delay(20);
        }
        throw new Xunit.Sdk.XunitException($"container {id} stayed {last}, expected {status}");
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
