using System.Text.Json;
using CliWrap;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>pause/resume, ps, update and events on bundles, and the errors users see.</summary>
[Trait("Category", "CgroupV2")]
public sealed class OpsTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    // Appended, one line a count: a container frozen between the truncate and the write of `echo > file`
    // would leave the file empty for as long as it stays paused.
    const string Counter = "i=0; while true; do i=$((i+1)); echo $i >> /tmp/c; sleep 0.05; done";

    async Task Started(Bundle b, string id)
    {
        await _rt.Create(b.Write(), id);
        await _rt.Ok("start", id);
    }

    /// <summary>The last complete count in the file, waited for while there is none yet.</summary>
    static Task<int> ReadCounter(string file) =>
        Eventually.Holds(() => LastCount(file), n => n > 0, $"{file} to hold a count");

    static int LastCount(string file)
    {
        if (!File.Exists(file)) return 0;
        string text = File.ReadAllText(file);
        var lines = text[..(text.LastIndexOf('\n') + 1)].Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return lines.Length > 0 ? int.Parse(lines[^1]) : 0;
    }

    JsonElement SavedResources(string id)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_rt.StateRoot, id, "state.json")));
        return doc.RootElement.GetProperty("resources").Clone();
    }

    [IntegrationFact]
    public async Task PauseStopsTheContainerAndResumeLetsItGoOn()
    {
        using var b = new Bundle("sh", "-c", Counter).WritableRootfs();
        await Started(b, "opause");
        string file = Path.Combine(b.Dir, "rootfs", "tmp", "c");
        int first = await ReadCounter(file);
        await Eventually.Holds(() => LastCount(file), n => n > first, "the counter to advance");

        await _rt.Ok("pause", "opause");
        Assert.Equal("paused", await _rt.Status("opause"));
        if (HostCgroups.V2)
            Assert.Contains("frozen 1", File.ReadAllLines(Path.Combine(b.CgroupDir("freezer"), "cgroup.events")));
        else
            Assert.Equal("FROZEN", File.ReadAllText(Path.Combine(b.CgroupDir("freezer"), "freezer.state")).Trim());
        int paused = await ReadCounter(file);
        await Task.Delay(400); // a paused container does nothing, however long we look
        Assert.Equal(paused, await ReadCounter(file));

        // Pausing twice and resuming a running container are refused, as in runc.
        var again = await _rt.Run("pause", "opause");
        Assert.NotEqual(0, again.ExitCode);
        Assert.Contains("container not running", again.Stderr);

        await _rt.Ok("resume", "opause");
        Assert.Equal("running", await _rt.Status("opause"));
        await Eventually.Holds(() => LastCount(file), n => n > paused + 2, $"the counter to advance after resume (paused at {paused})");

        var resume = await _rt.Run("resume", "opause");
        Assert.NotEqual(0, resume.ExitCode);
        Assert.Contains("container not paused", resume.Stderr);
    }

    [IntegrationFact]
    public async Task PauseOfACreatedOrStoppedContainerFails()
    {
        using var b = new Bundle("true");
        await _rt.Create(b.Write(), "opcreated");
        var created = await _rt.Run("pause", "opcreated");
        Assert.NotEqual(0, created.ExitCode);
        Assert.Contains("container not running", created.Stderr);
        Assert.Equal("created", await _rt.Status("opcreated"));

        await _rt.Ok("start", "opcreated");
        await _rt.WaitStatus("opcreated", "stopped");
        var stopped = await _rt.Run("pause", "opcreated");
        Assert.NotEqual(0, stopped.ExitCode);
        Assert.Contains("container not running", stopped.Stderr);

        var unknown = await _rt.Run("resume", "nosuchcontainer");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("does not exist", unknown.Stderr);
    }

    [IntegrationFact]
    public async Task PsListsTheInitAndItsChildren()
    {
        using var b = new Bundle("sh", "-c", "sleep 100 & sleep 101 & wait");
        await Started(b, "ops");
        int init = await _rt.Pid("ops");
        var pids = await Eventually.Holds(async () => JsonSerializer.Deserialize<List<int>>((await _rt.Ok("ps", "--format", "json", "ops")).Stdout)!,
            p => p.Count == 3, "ps to list the init and its two sleeps", show: p => string.Join(' ', p));
        Assert.Contains(init, pids);

        var table = await _rt.Ok("ps", "ops");
        var lines = table.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains("PID", lines[0]);
        Assert.Equal(4, lines.Length);
        Assert.Contains(lines, l => l.Contains("sleep 101"));
        Assert.Contains(lines, l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1] == init.ToString());

        var custom = await _rt.Ok("ps", "ops", "-e", "-o", "pid,comm");
        Assert.Equal(4, custom.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [IntegrationFact]
    public async Task UpdateMemoryFlagReachesTheCgroupAndTheSavedState()
    {
        using var b = new Bundle("sleep", "100");
        await Started(b, "oupd");
        await _rt.Ok("update", "--memory", "64m", "--cpu-quota", "50000", "--cpu-period", "100000", "oupd");
        if (HostCgroups.V2)
        {
            Assert.Equal("67108864", HostCgroups.Read(b.CgroupDir("memory"), "memory.max"));
            Assert.Equal("50000 100000", HostCgroups.Read(b.CgroupDir("cpu"), "cpu.max"));
        }
        else
        {
            Assert.Equal("67108864", HostCgroups.Read(b.CgroupDir("memory"), "memory.limit_in_bytes"));
            Assert.Equal("50000", HostCgroups.Read(b.CgroupDir("cpu"), "cpu.cfs_quota_us"));
        }
        var saved = SavedResources("oupd");
        Assert.Equal(67108864, saved.GetProperty("memory").GetProperty("limit").GetInt64());
        Assert.Equal(50000, saved.GetProperty("cpu").GetProperty("quota").GetInt64());

        // A later update keeps what the earlier one set.
        await _rt.Ok("update", "--pids-limit", "40", "oupd");
        saved = SavedResources("oupd");
        Assert.Equal(67108864, saved.GetProperty("memory").GetProperty("limit").GetInt64());
        Assert.Equal(40, saved.GetProperty("pids").GetProperty("limit").GetInt64());
        Assert.Equal("40", File.ReadAllText(Path.Combine(b.CgroupDir("pids"), "pids.max")).Trim());
    }

    [IntegrationFact]
    public async Task UpdateReadsResourcesFromStdin()
    {
        using var b = new Bundle("sleep", "100");
        await Started(b, "oupdin");
        const string json = """{"memory":{"limit":100663296,"swap":100663296},"cpu":{"shares":512},"pids":{"limit":33}}""";
        var r = await _rt.RunWith(c => c.WithStandardInputPipe(PipeSource.FromString(json)), "update", "--resources", "-", "oupdin");
        Assert.True(r.ExitCode == 0, r.ToString());
        if (HostCgroups.V2)
        {
            Assert.Equal("100663296", HostCgroups.Read(b.CgroupDir("memory"), "memory.max"));
            Assert.Equal("0", HostCgroups.Read(b.CgroupDir("memory"), "memory.swap.max")); // memory+swap = memory: no swap
            // shares 512 -> weight 59, runc's mapping since 1.3.2: ceil(10^((l^2 + 125 l) / 612 - 7/34)), l = log2(512).
            Assert.Equal("59", HostCgroups.Read(b.CgroupDir("cpu"), "cpu.weight"));
        }
        else
        {
            Assert.Equal("100663296", HostCgroups.Read(b.CgroupDir("memory"), "memory.limit_in_bytes"));
            Assert.Equal("512", HostCgroups.Read(b.CgroupDir("cpu"), "cpu.shares"));
        }
        Assert.Equal("33", File.ReadAllText(Path.Combine(b.CgroupDir("pids"), "pids.max")).Trim());
        Assert.Equal(512, SavedResources("oupdin").GetProperty("cpu").GetProperty("shares").GetInt64());
    }

    [IntegrationFact]
    public async Task UpdateRefusesBadInput()
    {
        var unknown = await _rt.Run("update", "--memory", "64m", "nosuchcontainer");
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("does not exist", unknown.Stderr);

        using var b = new Bundle("sleep", "100");
        await Started(b, "oupdbad");
        var size = await _rt.Run("update", "--memory", "64q", "oupdbad");
        Assert.NotEqual(0, size.ExitCode);
        Assert.Contains("invalid value \"64q\" for flag --memory", size.Stderr);

        var json = await _rt.RunWith(c => c.WithStandardInputPipe(PipeSource.FromString("{not json")), "update", "-r", "-", "oupdbad");
        Assert.NotEqual(0, json.ExitCode);
        Assert.Contains("--resources stdin: invalid JSON", json.Stderr);

        var weight = await _rt.Run("update", "--blkio-weight", "5", "oupdbad");
        Assert.NotEqual(0, weight.ExitCode);
        Assert.Contains("blkio-weight", weight.Stderr);
    }

    [IntegrationFact]
    public async Task EventsStatsPrintsOneStatsObject()
    {
        using var b = new Bundle("sh", "-c", "sleep 100 & wait");
        await Started(b, "oev");
        var r = await _rt.Ok("events", "--stats", "oev");
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.Equal("stats", root.GetProperty("type").GetString());
        Assert.Equal("oev", root.GetProperty("id").GetString());
        var data = root.GetProperty("data");
        Assert.True(data.GetProperty("memory").GetProperty("usage").GetProperty("usage").GetUInt64() > 0, r.Stdout);
        Assert.True(data.GetProperty("pids").GetProperty("current").GetUInt64() >= 1, r.Stdout);
        Assert.True(data.GetProperty("cpu").GetProperty("usage").GetProperty("total").GetUInt64() > 0, r.Stdout);
        Assert.True(data.GetProperty("memory").GetProperty("raw").TryGetProperty("rss", out _) ||
                    data.GetProperty("memory").GetProperty("raw").TryGetProperty("anon", out _), r.Stdout);
    }

    [IntegrationFact]
    public async Task EventsStreamsStatsAndReportsAnOomKillUntilTheContainerStops()
    {
        using var b = new Bundle("sh", "-c", "sleep 1; x=$(head -c 200m /dev/zero | tr '\\0' a); sleep 0.5");
        b.Spec.Linux!.Resources = new Resources { Memory = new MemoryResources { Limit = 32 << 20, Swap = 32 << 20 } };
        await Started(b, "oevoom");
        var r = await _rt.Run("events", "--interval", "300ms", "oevoom");
        Assert.True(r.ExitCode == 0, r.ToString());
        var events = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("type").GetString()).ToList();
        Assert.Contains("stats", events);
        Assert.Contains("oom", events);
        Assert.Equal("stopped", await _rt.Status("oevoom"));
    }

    public void Dispose() => _rt.Dispose();
}
