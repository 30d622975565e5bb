using System.Diagnostics;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Integration;

/// <summary>Many short containers in parallel: every one exits 0 and none leaves state, cgroups or processes.</summary>
public sealed class StressTests(ITestOutputHelper output) : IDisposable
{
    readonly RuntimeCli _rt = new();

    /// <summary>Live processes in any of these bundles' cgroups (other test classes run containers at the same time).</summary>
    static int[] ProcessesIn(Bundle[] bundles)
    {
        var names = bundles.Select(b => b.Spec.Linux!.CgroupsPath!).ToArray();
        return Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Select(n => int.Parse(n!))
            .Where(pid =>
            {
                try
                {
                    string cg = File.ReadAllText($"/proc/{pid}/cgroup");
                    return names.Any(n => cg.Contains(n + "\n")) && Procs.Alive(pid);
                }
                catch (IOException) { return false; }
            }).ToArray();
    }

    [IntegrationFact]
    public async Task TwoHundredRunsFourAtATime()
    {
        // One bundle each: every container gets its own cgroupsPath, as an engine would give it.
        var bundles = Enumerable.Range(0, 200).Select(_ => new Bundle("true")).ToArray();
        try
        {
            foreach (var b in bundles) b.Write();
            await RunAll(bundles);
        }
        finally
        {
            foreach (var b in bundles) b.Dispose();
        }
    }

    async Task RunAll(Bundle[] bundles)
    {
        var sw = Stopwatch.StartNew();
        var failures = new List<string>();
        await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, _) =>
        {
            var r = await _rt.Run("run", "--bundle", bundles[i].Dir, $"stress{i}");
            if (r.ExitCode != 0) lock (failures) failures.Add($"stress{i}: {r}");
        });
        // Each run has the command's hang bound; how long they take together is a figure, not a verdict.
        output.WriteLine($"200 runs, 4 at a time: {sw.Elapsed.TotalSeconds:0.0} s");
        Assert.True(failures.Count == 0, $"{failures.Count} runs failed, first: {failures.FirstOrDefault()}");
        Assert.Empty(_rt.StateDirs());
        Assert.Equal("[]", (await _rt.Ok("list", "--format", "json")).Stdout.Trim());
        foreach (var b in bundles)
            Assert.False(Directory.Exists(b.CgroupDir("memory")) || Directory.Exists(b.CgroupDir("pids")), $"cgroup of {b.Dir} left behind");
        var leftover = ProcessesIn(bundles);
        Assert.True(leftover.Length == 0, $"left running: {string.Join(' ', leftover)}");
    }

    public void Dispose() => _rt.Dispose();
}
