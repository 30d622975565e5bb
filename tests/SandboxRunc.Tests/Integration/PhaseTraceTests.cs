using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// SANDBOX_RUNC_TRACE=FILE: every process of a container's lifecycle (the CLI commands and the helpers create
/// starts) appends one line per phase it finished. What is checked is the shape and the names (what
/// tests/bench/bench.sh's phase table rests on), never a duration.
/// </summary>
public sealed class PhaseTraceTests : IDisposable
{
    readonly string _trace = Path.Combine(Path.GetTempPath(), "sr-trace-" + Guid.NewGuid().ToString("N")[..8]);
    readonly RuntimeCli _rt;

    public PhaseTraceTests() => _rt = new RuntimeCli(environment: new Dictionary<string, string> { ["SANDBOX_RUNC_TRACE"] = _trace });

    sealed record Line(long Ns, int Pid, string Command, string Id, string Phase, long Us);

    List<Line> Lines() => File.ReadAllLines(_trace).Select(l =>
    {
        var f = l.Split(' ');
        Assert.True(f.Length >= 6, $"a trace line has 6 fields at least: \"{l}\"");
        return new Line(long.Parse(f[0]), int.Parse(f[1]), f[2], f[3], string.Join(' ', f[4..^1]), long.Parse(f[^1]));
    }).ToList();

    [IntegrationFact]
    public async Task ALifecycleNamesEveryPhaseOfEveryProcessInOrder()
    {
        using var b = new Bundle("true");
        await _rt.Create(b.Write(), "trace1");
        await _rt.Ok("start", "trace1");
        await _rt.WaitStatus("trace1", "stopped");
        await _rt.Ok("delete", "trace1");

        var lines = Lines();
        List<string> Phases(string command) => lines.Where(l => l.Command == command).Select(l => l.Phase).ToList();
        Assert.Equal(
            ["main", "spec loaded", "policy", "state dir and ID range", "seccomp compiled", "cgroup", "supervisor spawned", "exec fifo",
             "nsexec spawned", "user namespace made", "ID maps written", "ID-mapped rootfs staged", "FUSE mounted, emulation started",
             "binds staged", "init cloned", "init config built", "init mounts (emulated binds wait for FUSE INIT)",
             "init pivot, seccomp, ready", "vetting attached", "state saved", "done"],
            Phases("create"));
        Assert.Equal(["main", "listening", "request emulation handled", "request container handled"], Phases("supervise").Take(4));
        Assert.Equal(["main", "waiting for its settings", "file system ready", "serving"], Phases("emulate").Where(p => p != "FUSE INIT answered").Take(4));
        Assert.Contains("FUSE INIT answered", Phases("emulate"));
        Assert.Equal(["main", "state loaded", "exec fifo read", "done"], Phases("start"));
        Assert.Equal(["main", "state loaded", "processes killed", "cgroup removed", "supervisor stopped", "staging removed",
            "state dir and ID range released", "done"], Phases("delete"));
        Assert.Contains(lines, l => l.Command == "state" && l.Phase == "done");

        // Every process names the container once it knows it; its marks never go back in time.
        foreach (var process in lines.Where(l => l.Command != "state").GroupBy(l => l.Pid))
        {
            Assert.All(process.Skip(1), l => Assert.Equal("trace1", l.Id));
            var ns = process.Select(l => l.Ns).ToList();
            Assert.Equal(ns.Order(), ns);
            Assert.All(process, l => Assert.True(l.Us >= 0, $"a negative duration: {l}"));
        }
        // The helpers' lines carry the same clock as create's: they fall within the lifecycle.
        var create = lines.Where(l => l.Command == "create").ToList();
        Assert.All(lines.Where(l => l.Command is "supervise" or "emulate").Take(3), l => Assert.InRange(l.Ns, create[0].Ns, lines.Max(x => x.Ns)));
    }

    public void Dispose()
    {
        _rt.Dispose();
        try { File.Delete(_trace); } catch { }
    }
}
