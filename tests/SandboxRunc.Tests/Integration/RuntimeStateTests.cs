using System.Diagnostics;
using System.Text.Json;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// The runtime's own state against corruption, pid reuse and partial failure, through the real binary:
/// a range table that cannot be trusted (create refused cleanly, delete goes on, `ranges --rebuild`),
/// a spec's own mappings checked and recorded in the table, a supervisor pid that now names another
/// process, and a corrupt state.json removed by `delete --force`. Each test has a private ID pool far
/// from the host's (3000000000 up), so other containers on the host never meet its ranges.
/// </summary>
public sealed class RuntimeStateTests
{
    const long R = UserNs.RangeSize;
    const long PoolStart = 3_000_000_000;
    const long OutsidePool = 3_500_000_000;

    static readonly string[] Controllers = ["memory", "pids", "freezer", "systemd"];

    /// <summary>(kind, id, index) of every holder in a table file, as stored.</summary>
    static List<(string Kind, string Id, long? Index)> Holders(string table)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(table));
        return doc.RootElement.GetProperty("holders").EnumerateArray().Select(h => (
            h.TryGetProperty("kind", out var k) ? k.GetString()! : "pool",
            h.TryGetProperty("id", out var id) ? id.GetString()! : "",
            h.TryGetProperty("index", out var i) ? i.GetInt64() : (long?)null)).ToList();
    }

    static string Key(RuntimeCli rt, string id) => Path.GetFileName(UserNs.StagingDir(Path.Combine(rt.StateRoot, id)));

    static int SupervisorPid(RuntimeCli rt, string id) =>
        int.Parse(File.ReadAllText(Path.Combine(rt.StateRoot, id, "supervisor.pid")).Trim());

    /// <summary>What a container leaves on the host until it is deleted; empty when nothing is left.</summary>
    static async Task<List<string>> Leftovers(RuntimeCli rt, string id, Bundle b, params int[] pids)
    {
        var left = new List<string>();
        if (Directory.Exists(Path.Combine(rt.StateRoot, id))) left.Add("state dir");
        string staging = UserNs.StagingDir(Path.Combine(rt.StateRoot, id));
        if (Directory.Exists(staging)) left.Add($"staging dir {staging}");
        if (UserNs.MountsUnder(staging).Length > 0) left.Add($"mounts under {staging}");
        string socket = $"/run/sandbox-runc/sv/{Key(rt, id)}.sock";
        if (File.Exists(socket)) left.Add($"supervisor socket {socket}");
        foreach (int pid in pids)
            if (!await Procs.WaitGone(pid)) left.Add($"process {pid} ({File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ')})");
        foreach (var c in Controllers)
            if (Directory.Exists(b.CgroupDir(c))) left.Add($"cgroup {b.CgroupDir(c)}");
        return left;
    }

    static void AssertOneLineError(RuntimeCli.Result r, string what)
    {
        Assert.True(r.ExitCode == 1, $"{what}: exit {r.ExitCode} (1 expected: no crash)\n{r}");
        Assert.DoesNotContain("Unhandled", r.Stderr);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    public static TheoryData<string, string> CorruptTables => new()
    {
        { "garbage", "\u0007\u0008 not json" },
        { "empty", "" },
        { "truncated", "{\"holders\": [{\"index\": 0, \"id\": \"x\", \"st" },
        { "list", "[]" },
        { "null", "null" },
        { "empty object", "{}" },
        { "null holders", "{\"holders\":null}" },
        { "duplicate index", "{\"holders\":[{\"index\":0,\"id\":\"a\",\"stateDir\":\"/a\"},{\"index\":0,\"id\":\"b\",\"stateDir\":\"/b\"}]}" },
    };

    /// <summary>
    /// Every corrupt shape stops create with one line naming the table and the way out, leaves nothing
    /// and keeps the file as it is; delete still removes a container (with a warning); `ranges --rebuild`
    /// then restores the holders of the running containers, and creates get ranges of their own again.
    /// </summary>
    [IntegrationFact]
    public async Task RangeTable_CorruptTableStopsCreateAndRebuildRestoresTheHolders()
    {
        using var pool = new PrivateIdPool(PoolStart, 8 * R);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var keep = new Bundle("sleep", "60");
        using var keep2 = new Bundle("sleep", "60");
        using var doomed = new Bundle("sleep", "60");
        using var fresh = new Bundle("sleep", "60");
        await rt.Create(keep.Write(), "tkeep");
        await rt.Create(keep2.Write(), "tkeep2");
        await rt.Create(doomed.Write(), "tdoomed");
        await rt.Ok("start", "tkeep");
        await rt.Ok("start", "tkeep2");
        var before = Holders(pool.Table).ToDictionary(h => h.Id, h => h.Index);
        Assert.Equal(3, before.Values.Distinct().Count());

        foreach (var (what, content) in CorruptTables.Select(row => ((string)row[0], (string)row[1])))
        {
            File.WriteAllText(pool.Table, content);
            var r = await rt.Detached("create", "--bundle", fresh.Write(), "tfresh");
            AssertOneLineError(r, what);
            Assert.Contains($"the ID range table {pool.Table} cannot be trusted", r.Stderr);
            Assert.Contains("sandbox-runc ranges --rebuild", r.Stderr);
            Assert.Equal(content, File.ReadAllText(pool.Table)); // never reset
            Assert.Empty(await Leftovers(rt, "tfresh", fresh));
            var listed = await rt.Run("ranges");
            AssertOneLineError(listed, $"ranges with a {what} table");
            Assert.Contains("cannot be trusted", listed.Stderr);
        }

        // delete is not stopped by the table: the container goes, the warning says the table needs rebuilding.
        int doomedSupervisor = SupervisorPid(rt, "tdoomed");
        var d = await rt.Run("delete", "--force", "tdoomed");
        Assert.True(d.ExitCode == 0, d.ToString());
        Assert.Contains("cannot be trusted", d.Stderr);
        Assert.Contains("ranges --rebuild", d.Stderr);
        Assert.Empty(await Leftovers(rt, "tdoomed", doomed, doomedSupervisor));

        var rebuilt = await rt.Run("ranges", "--rebuild");
        Assert.True(rebuilt.ExitCode == 0, rebuilt.ToString());
        Assert.Contains("kept as", rebuilt.Stdout);
        var mine = Holders(pool.Table).Where(h => h.Id.StartsWith("tkeep")).ToList();
        Assert.Equal([("pool", "tkeep", before["tkeep"]), ("pool", "tkeep2", before["tkeep2"])], mine.OrderBy(h => h.Id));
        // Nothing else in this private pool: the deleted container's range is free again.
        Assert.DoesNotContain(Holders(pool.Table), h => h.Id == "tdoomed");

        await rt.Create(fresh.Write(), "tfresh");
        var freshBase = UserNs.ParseMap((await UserNs.StateMappings(rt, "tfresh")).Uid).Base;
        Assert.True(PoolStart + before["tdoomed"]!.Value * R == freshBase, $"the freed range was not handed out again\n{rebuilt.Stdout}");
        foreach (var id in new[] { "tkeep", "tkeep2" })
            Assert.NotEqual(freshBase, UserNs.ParseMap((await UserNs.StateMappings(rt, id)).Uid).Base);
        await rt.Ok("ranges");
    }

    static Bundle WithMappings(Bundle b, long uid, long gid)
    {
        b.Spec.Linux!.Namespaces!.Add(new Namespace { Type = "user" });
        b.Spec.Linux.UidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)uid, Size = (uint)R }];
        b.Spec.Linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)gid, Size = (uint)R }];
        return b;
    }

    /// <summary>
    /// A spec's own mappings: refused on another container's range (which is in the pool) and anywhere in the
    /// pool; outside it they run, are recorded, keep a second container off the same range (the userns-remap
    /// case) and are released on delete. A container joining another's namespaces shares its range and runs.
    /// </summary>
    [IntegrationFact]
    public async Task OwnMappings_CheckedAgainstThePoolAndHeldRangesAndRecorded()
    {
        using var pool = new PrivateIdPool(PoolStart, 8 * R);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var first = new Bundle("sleep", "60");
        await rt.Create(first.Write(), "ofirst");
        await rt.Ok("start", "ofirst");
        long firstBase = UserNs.ParseMap((await UserNs.StateMappings(rt, "ofirst")).Uid).Base;

        foreach (var (what, uid, gid) in new[] { ("the first container's range", firstBase, firstBase), ("a free range of the pool", PoolStart + 5 * R, OutsidePool), ("gids in the pool", OutsidePool, PoolStart + 7 * R) })
        {
            using var b = WithMappings(new Bundle("sleep", "60"), uid, gid);
            var check = await rt.Run("policy", "check", b.Write());
            Assert.True(check.ExitCode == 1 && check.Stdout.StartsWith("refused: "), $"policy check, {what}: {check}");
            var r = await rt.Detached("create", "--bundle", b.Write(), "oinpool");
            AssertOneLineError(r, what);
            Assert.Contains("user namespace mapping refused", r.Stderr);
            Assert.Contains($"overlap sandbox-runc's ID pool (uids {PoolStart}-{PoolStart + 8 * R - 1}", r.Stderr);
            Assert.Contains("map host IDs outside the pool", r.Stderr);
            Assert.Empty(await Leftovers(rt, "oinpool", b));
        }

        using var remap1 = WithMappings(new Bundle("cat", "/proc/self/uid_map"), OutsidePool, OutsidePool);
        using var remap2 = WithMappings(new Bundle("sleep", "60"), OutsidePool, OutsidePool);
        await rt.Create(remap2.Write(), "oremap2");
        Assert.Contains(("own", "oremap2", (long?)null), Holders(pool.Table));
        var refused = await rt.Detached("create", "--bundle", remap1.Write(), "oremap1");
        AssertOneLineError(refused, "a range held by another container");
        Assert.Contains("held by container oremap2", refused.Stderr);
        Assert.Contains("userns-remap gives every container the same range", refused.Stderr);
        Assert.Empty(await Leftovers(rt, "oremap1", remap1));

        await rt.Ok("delete", "--force", "oremap2");
        Assert.DoesNotContain(Holders(pool.Table), h => h.Id == "oremap2");
        string output = await rt.RunOk(remap1.Write(), "oremap1");
        Assert.Equal((OutsidePool, R), UserNs.ParseMap(output));
        Assert.DoesNotContain(Holders(pool.Table), h => h.Id == "oremap1");

        // --ipc=container:ofirst: joins its user namespace too, and shares (and holds) its range.
        using var joiner = new Bundle("cat", "/proc/self/uid_map");
        int firstPid = await rt.Pid("ofirst");
        joiner.Spec.Linux!.Namespaces!.First(n => n.Type == "ipc").Path = $"/proc/{firstPid}/ns/ipc";
        await rt.Create(joiner.Write(), "ojoiner");
        Assert.Contains(("shared", "ojoiner", (long?)null), Holders(pool.Table));
        await rt.Ok("delete", "--force", "ofirst");
        // The joiner still holds the range: the next container gets another one.
        using var next = new Bundle("true");
        await rt.Create(next.Write(), "onext");
        Assert.NotEqual(firstBase, UserNs.ParseMap((await UserNs.StateMappings(rt, "onext")).Uid).Base);
        await rt.Ok("delete", "--force", "ojoiner");
        await rt.Ok("delete", "--force", "onext");
        Assert.Empty(Holders(pool.Table));
    }

    /// <summary>
    /// After pid reuse, supervisor.pid names another process. Neither one whose command line merely mentions
    /// "supervise" nor the real supervisor with another start time recorded may be signalled by delete, and
    /// `state` does not count them as the supervisor.
    /// </summary>
    [IntegrationFact]
    public async Task Supervisor_DeleteNeverSignalsAProcessThatIsNotThisContainersSupervisor()
    {
        using var pool = new PrivateIdPool(PoolStart, 8 * R);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var b = new Bundle("sleep", "60");
        using var impostor = System.Diagnostics.Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "sleep 60; : supervise", "supervise"]))!;
        try
        {
            await rt.Create(b.Write(), "simpostor");
            int real = SupervisorPid(rt, "simpostor");
            Assert.True(await SupervisorRunning(rt, "simpostor"));
            File.WriteAllText(Path.Combine(rt.StateRoot, "simpostor", "supervisor.pid"), impostor.Id.ToString());
            Assert.False(await SupervisorRunning(rt, "simpostor"));
            File.WriteAllText(Path.Combine(rt.StateRoot, "simpostor", "supervisor.pid"), real.ToString());
            string startFile = Path.Combine(rt.StateRoot, "simpostor", "supervisor.starttime");
            File.WriteAllText(startFile, (ulong.Parse(File.ReadAllText(startFile)) + 1).ToString());
            Assert.False(await SupervisorRunning(rt, "simpostor"));
            File.WriteAllText(Path.Combine(rt.StateRoot, "simpostor", "supervisor.pid"), impostor.Id.ToString());
            await rt.Ok("delete", "--force", "simpostor");
            await Task.Delay(200);
            Assert.True(Procs.Alive(impostor.Id), "delete killed a process that was not the container's supervisor");
            // The real supervisor was not signalled either: it ends by itself with its container.
            Assert.True(await Procs.WaitGone(real), "the supervisor outlived its container");
        }
        finally
        {
            impostor.Kill(entireProcessTree: true);
            impostor.WaitForExit();
        }
    }

    static async Task<bool> SupervisorRunning(RuntimeCli rt, string id)
    {
        using var doc = JsonDocument.Parse((await rt.Ok("state", id)).Stdout);
        return doc.RootElement.GetProperty("supervisorRunning").GetBoolean();
    }

    public static TheoryData<string> CorruptStates => ["garbage", "empty", "truncated"];

    /// <summary>
    /// A running container whose state.json became unreadable: `delete` says so in one line; `delete --force`
    /// removes everything without it (processes, cgroups incl. name=systemd, supervisor and its socket,
    /// staging mounts, the ID range) and warns what was corrupt.
    /// </summary>
    [IntegrationTheory]
    [MemberData(nameof(CorruptStates))]
    public async Task CorruptState_DeleteForceRemovesEverythingWithoutIt(string how)
    {
        using var pool = new PrivateIdPool(PoolStart, 8 * R);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var b = new Bundle("sleep", "60");
        string id = "corrupt" + how;
        await rt.Create(b.Write(), id);
        await rt.Ok("start", id);
        int init = await rt.Pid(id), supervisor = SupervisorPid(rt, id);
        Assert.Single(Holders(pool.Table));
        Assert.True(Directory.Exists(UserNs.StagingDir(Path.Combine(rt.StateRoot, id))));
        Assert.All(Controllers, c => Assert.True(Directory.Exists(b.CgroupDir(c)), $"no {c} cgroup to check"));

        string state = Path.Combine(rt.StateRoot, id, "state.json");
        string text = File.ReadAllText(state);
        File.WriteAllText(state, how switch { "garbage" => "\u0001garbage}", "empty" => "", _ => text[..(text.Length / 2)] });

        var plain = await rt.Run("delete", id);
        AssertOneLineError(plain, "delete of a corrupt state");
        Assert.Contains($"its state file {state} is corrupt", plain.Stderr);
        Assert.Contains($"\"delete --force {id}\"", plain.Stderr);
        Assert.True(Procs.Alive(init), "a refused delete killed the container");

        var forced = await rt.Run("delete", "--force", id);
        Assert.True(forced.ExitCode == 0, forced.ToString());
        Assert.Contains("is corrupt", forced.Stderr);
        Assert.Empty(Holders(pool.Table));
        Assert.Empty(await Leftovers(rt, id, b, init, supervisor));
    }
}
