using System.Text;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// Many containers at once through dockerd (issue 14): SANDBOX_RUNC_DENSITY_N (200) `docker run -d IMG sleep 600`
/// with --runtime=sandbox-runc, started by a few docker clients at a time. All run; each has its own user
/// namespace whose host IDs (its init's /proc/PID/uid_map and gid_map, read on the host) overlap no other's;
/// after `docker rm -f` nothing of any of them is left: state dir, staging dir and its mounts, supervisor
/// socket, helper processes, cgroups, ID range. Correctness only: how long it takes is the benchmark's
/// (tests/bench/bench.sh, section density), never asserted here.
/// </summary>
[Trait("Category", "Density")]
public sealed class DensityDockerTests(ITestOutputHelper output) : IDisposable
{
    static readonly int Count = int.TryParse(Environment.GetEnvironmentVariable("SANDBOX_RUNC_DENSITY_N"), out int n) && n > 1 ? n : 200;
    /// <summary>Docker clients at once: enough to keep dockerd busy on 2 cores, few enough not to time out.</summary>
    const int Clients = 8;

    readonly string _prefix = "srd-" + Guid.NewGuid().ToString("N")[..6];

    static async Task<BufferedCommandResult> Docker(TimeSpan within, params string[] args)
    {
        using var cts = new CancellationTokenSource(within);
        try
        {
            return await CliWrap.Cli.Wrap("docker").WithArguments(args).WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args.Take(6))} ... did not finish within {within.TotalSeconds:0} s (hung; killed)");
        }
    }

    static async Task<string> DockerOk(TimeSpan within, params string[] args)
    {
        var r = await Docker(within, args);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args.Take(8))}: exit {r.ExitCode}\nstdout: {r.StandardOutput}\nstderr: {r.StandardError}");
        return r.StandardOutput;
    }

    /// <summary>Runs the action on every item, <see cref="Clients"/> at a time.</summary>
    static Task ForAll<T>(IEnumerable<T> items, Func<T, Task> action) =>
        Parallel.ForEachAsync(items, new ParallelOptions { MaxDegreeOfParallelism = Clients }, async (item, _) => await action(item));

    sealed record Started(string Name, string Id, int Pid, (long Base, long Size) Uid, (long Base, long Size) Gid);

    static (long, long) OnlyMapping(string map, string what)
    {
        var lines = map.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"{what}: one mapping expected, got \"{map.Trim()}\"");
        var f = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(f[0] == "0" && long.Parse(f[1]) > 0, $"{what}: container root must map onto an unprivileged host ID: \"{lines[0]}\"");
        return (long.Parse(f[1]), long.Parse(f[2]));
    }

    [IntegrationFact]
    public async Task ManyContainersRunAtOnceWithDisjointRangesAndLeaveNothingBehind()
    {
        var names = Enumerable.Range(0, Count).Select(i => $"{_prefix}-{i}").ToList();
        var bound = Patience.Command * 2;
        await ForAll(names, name => DockerOk(bound, "run", "-d", "--name", name, "--runtime=sandbox-runc", "--network=none",
            Repo.TestImage, "sleep", "600"));

        var started = new List<Started>();
        foreach (var chunk in names.Chunk(50))
        {
            var lines = (await DockerOk(bound, ["inspect", "--format", "{{.Name}} {{.Id}} {{.State.Running}} {{.State.Pid}}", .. chunk]))
                .Split('\n', StringSplitOptions.RemoveEmptyEntries);
            foreach (var line in lines)
            {
                var f = line.Split(' ');
                Assert.True(f[2] == "true", $"container {f[0]} is not running: {line}");
                int pid = int.Parse(f[3]);
                started.Add(new Started(f[0].TrimStart('/'), f[1], pid,
                    OnlyMapping(File.ReadAllText($"/proc/{pid}/uid_map"), $"{f[0]} uid_map"),
                    OnlyMapping(File.ReadAllText($"/proc/{pid}/gid_map"), $"{f[0]} gid_map")));
            }
        }
        Assert.Equal(Count, started.Count);
        foreach (var pick in new Func<Started, (long Base, long Size)>[] { s => s.Uid, s => s.Gid })
        {
            var sorted = started.OrderBy(s => pick(s).Base).ToList();
            for (int i = 1; i < sorted.Count; i++)
                Assert.True(pick(sorted[i - 1]).Base + pick(sorted[i - 1]).Size <= pick(sorted[i]).Base,
                    $"the host IDs of {sorted[i - 1].Name} ({pick(sorted[i - 1])}) and {sorted[i].Name} ({pick(sorted[i])}) overlap");
        }
        // Where the runtime keeps each container's state: the --root of its supervisor (dockerd's exec root decides it).
        var supervisors = SandboxRunc.Container.Supervisor.AllRunning().GroupBy(s => s.Id).ToDictionary(g => g.Key, g => g.First().Root);
        var stateDirs = started.ToDictionary(s => s.Id, s => supervisors.TryGetValue(s.Id, out var root) ? Path.Combine(root, s.Id) : null);
        Assert.All(stateDirs, kv => Assert.True(kv.Value is not null, $"no supervisor runs for container {kv.Key}"));
        var stagingDirs = stateDirs.Values.Select(d => DockerCli.StagingDir(d!)).ToList();
        output.WriteLine($"{Count} containers running, ID ranges disjoint");

        await ForAll(names.Chunk(10), chunk => DockerOk(bound, ["rm", "-f", .. chunk]));

        var ids = started.Select(s => s.Id).ToHashSet();
        Assert.All(stateDirs.Values, d => Assert.False(Directory.Exists(d), $"state dir {d} is left"));
        Assert.All(stagingDirs, d => Assert.False(Directory.Exists(d), $"staging dir {d} is left"));
        string mountinfo = File.ReadAllText("/proc/self/mountinfo");
        Assert.All(stagingDirs, d => Assert.DoesNotContain(d + " ", mountinfo));
        Assert.All(stagingDirs, d => Assert.DoesNotContain(d + "/", mountinfo));
        // The supervisor's socket is named by the same key as the staging dir.
        Assert.All(stagingDirs, d => Assert.False(File.Exists(Path.Combine(SandboxRunc.Container.Supervisor.SocketDir, Path.GetFileName(d) + ".sock")),
            $"the supervisor socket of {d} is left"));
        var helpers = HelperProcesses().Where(h => ids.Contains(h.Id)).ToList();
        Assert.True(helpers.Count == 0, "helper processes left: " + string.Join(", ", helpers.Select(h => $"{h.Pid} {h.Command}")));
        var cgroups = CgroupDirs().Where(d => ids.Any(d.Contains)).ToList();
        Assert.True(cgroups.Count == 0, "cgroups left: " + string.Join(", ", cgroups.Take(10)));
        string table = File.Exists("/run/sandbox-runc/id-ranges.json") ? File.ReadAllText("/run/sandbox-runc/id-ranges.json") : "";
        Assert.All(ids, id => Assert.DoesNotContain(id, table));
    }

    /// <summary>(pid, container id, command line) of every `sandbox-runc ... supervise|emulate|socket-proxy ID` process.</summary>
    static IEnumerable<(int Pid, string Id, string Command)> HelperProcesses()
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0', StringSplitOptions.RemoveEmptyEntries); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (argv is [.., "supervise" or "emulate" or "socket-proxy", var id]) yield return (pid, id, string.Join(' ', argv));
        }
    }

    /// <summary>Every cgroup directory three levels deep at most under each hierarchy (docker's are docker/ID or system.slice/docker-ID.scope).</summary>
    static IEnumerable<string> CgroupDirs()
    {
        IEnumerable<string> Below(string dir, int depth)
        {
            if (depth == 0) yield break;
            string[] children;
            try { children = Directory.GetDirectories(dir); } catch (IOException) { yield break; } catch (UnauthorizedAccessException) { yield break; }
            foreach (var c in children)
            {
                yield return c;
                foreach (var d in Below(c, depth - 1)) yield return d;
            }
        }
        return Below("/sys/fs/cgroup", 4);
    }

    public void Dispose()
    {
        // Whatever an assertion left running: removed by name prefix.
        var r = Docker(Patience.Command, "ps", "-aq", "--filter", $"name={_prefix}-").GetAwaiter().GetResult();
        var left = r.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        foreach (var chunk in left.Chunk(20))
            try { Docker(Patience.Command * 2, ["rm", "-f", .. chunk]).GetAwaiter().GetResult(); } catch { }
    }
}
