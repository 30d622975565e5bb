using SandboxRunc.Container;
using SandboxRunc.Oci;
using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// The range table when it cannot be trusted (every shape stops allocation with a message naming the
/// file and the fault, never resets, never crashes; release goes on with a warning), the own-mapping
/// decision, recording of own and joined ranges, and the rebuild. No root: the pool and table are temp files.
/// </summary>
public sealed class IdRangeTableTests : IDisposable
{
    const long R = 65536;
    readonly string _dir = Directory.CreateTempSubdirectory("sr-table").FullName;
    string Table => Path.Combine(_dir, "table.json");

    IdPoolConfig Config(long poolSize = 8 * R) =>
        new("sandbox-runc", Path.Combine(_dir, "subuid"), Path.Combine(_dir, "subgid"), Table, poolSize);

    // Pool: uids and gids 100000..100000+8*65536-1, indexes 0-7.
    static readonly IdPools Pools = new(new SubIdEntry("sandbox-runc", 100000, 8 * R), new SubIdEntry("sandbox-runc", 100000, 8 * R), "/etc/subuid", "/etc/subgid");

    string StateDir(string id)
    {
        string d = Path.Combine(_dir, "state", id);
        Directory.CreateDirectory(d);
        return d;
    }

    public static TheoryData<string, string, string> CorruptTables => new()
    {
        { "garbage", "\u0001\u0002zz{{", "not valid JSON" },
        { "empty", "", "the file is empty" },
        { "blank", "  \n", "the file is empty" },
        { "truncated", "{\"holders\": [{\"index\": 0, \"id\": \"a\", \"stateDir\": \"/x", "not valid JSON" },
        { "list", "[]", "it is a list instead of an object with a \"holders\" list" },
        { "null", "null", "it is null instead of an object" },
        { "number", "42", "it is the number 42 instead of an object" },
        { "no holders", "{}", "\"holders\" is missing" },
        { "null holders", "{\"holders\":null}", "\"holders\" is null instead of a list" },
        { "object holders", "{\"holders\":{}}", "\"holders\" is an object instead of a list" },
        { "holder not an object", "{\"holders\":[1]}", "holder 0: it is the number 1 instead of an object" },
        { "null holder", "{\"holders\":[null]}", "holder 0: it is null instead of an object" },
        { "missing index", "{\"holders\":[{\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"index\" of a is missing" },
        { "negative index", "{\"holders\":[{\"index\":-1,\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"index\" of a is missing or not a whole number" },
        { "string index", "{\"holders\":[{\"index\":\"0\",\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"index\" of a is missing or not a whole number" },
        { "fractional index", "{\"holders\":[{\"index\":1.5,\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"index\" of a is missing or not a whole number" },
        { "index outside the pool", "{\"holders\":[{\"index\":8,\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "a holds index 8, outside the pool (indexes 0-7" },
        { "duplicate index", "{\"holders\":[{\"index\":2,\"id\":\"a\",\"stateDir\":\"/s/a\"},{\"index\":2,\"id\":\"b\",\"stateDir\":\"/s/b\"}]}", "index 2 is held twice (container a and container b)" },
        { "duplicate state dir", "{\"holders\":[{\"index\":1,\"id\":\"a\",\"stateDir\":\"/s/a\"},{\"index\":2,\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "state dir /s/a is listed twice" },
        { "missing id", "{\"holders\":[{\"index\":1,\"stateDir\":\"/s/a\"}]}", "holder 0: \"id\" is missing or not a container id" },
        { "null id", "{\"holders\":[{\"index\":1,\"id\":null,\"stateDir\":\"/s/a\"}]}", "holder 0: \"id\" is missing" },
        { "id that is no container id", "{\"holders\":[{\"index\":1,\"id\":\"a/../b\\nc\",\"stateDir\":\"/s/a\"}]}", "holder 0: \"id\" is missing or not a container id" },
        { "multi-line string", "{\"holders\":\"one\\ntwo\"}", "\"holders\" is the string \"one?two\" instead of a list" },
        { "relative state dir", "{\"holders\":[{\"index\":1,\"id\":\"a\",\"stateDir\":\"s/a\"}]}", "\"stateDir\" of a is missing or not an absolute path" },
        { "unknown kind", "{\"holders\":[{\"kind\":\"borrowed\",\"index\":1,\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"kind\" is the string \"borrowed\"" },
        { "own without gid", "{\"holders\":[{\"kind\":\"own\",\"uid\":{\"start\":900000000,\"size\":65536},\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"gid\" is missing" },
        { "own from host root", "{\"holders\":[{\"kind\":\"own\",\"uid\":{\"start\":0,\"size\":65536},\"gid\":{\"start\":900000000,\"size\":65536},\"id\":\"a\",\"stateDir\":\"/s/a\"}]}", "\"uid\" 0+65536 is not a range of host IDs" },
        { "own overlapping a pool holder", "{\"holders\":[{\"index\":0,\"id\":\"a\",\"stateDir\":\"/s/a\"},{\"kind\":\"own\",\"uid\":{\"start\":150000,\"size\":65536},\"gid\":{\"start\":900000000,\"size\":65536},\"id\":\"b\",\"stateDir\":\"/s/b\"}]}", "container a (uids 100000-165535) and container b (uids 150000-215535) overlap" },
        { "live without process", "{\"holders\":[{\"kind\":\"live\",\"index\":1}]}", "\"process\" is missing" },
    };

    [Theory]
    [MemberData(nameof(CorruptTables))]
    public void ATableThatCannotBeTrustedIsAProblemNeverNothingHeld(string what, string content, string expected)
    {
        Assert.Null(IdRangeTable.Parse(System.Text.Encoding.UTF8.GetBytes(content), Pools, out var problem));
        Assert.NotNull(problem);
        Assert.Contains(expected, problem);
        Assert.DoesNotContain('\n', problem);
        _ = what;
    }

    [Theory]
    [MemberData(nameof(CorruptTables))]
    public void ACorruptTableStopsAllocationButNotRelease(string what, string content, string expected)
    {
        File.WriteAllText(Table, content);
        var alloc = new IdRangeAllocator(Config());
        var e = Assert.Throws<RuntimeException>(() => alloc.Allocate("c", StateDir("c")));
        Assert.StartsWith($"cannot create container c: the ID range table {Table} cannot be trusted: ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.Contains("sandbox-runc ranges --rebuild", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // Own mappings cannot be checked either.
        var own = new IdClaim(HolderKind.Own, new IdSpan(900000000, R), new IdSpan(900000000, R));
        Assert.Contains("cannot be trusted", Assert.Throws<RuntimeException>(() => alloc.Reserve("o", StateDir("o"), own)).Message);
        // delete goes on: release says the table needs rebuilding and leaves it as it is.
        var warning = alloc.Release(StateDir("a"));
        Assert.NotNull(warning);
        Assert.Contains(Table, warning);
        Assert.Contains("ranges --rebuild", warning);
        Assert.Contains("cannot be trusted", Assert.Throws<RuntimeException>(() => alloc.Held()).Message);
        Assert.Equal(content, File.ReadAllText(Table));
        _ = what;
    }

    [Fact]
    public void ATableOfTheEarlierFormatStillReads()
    {
        File.WriteAllText(Table, $"{{\"holders\":[{{\"index\":1,\"id\":\"a\",\"stateDir\":\"{StateDir("a")}\"}}]}}");
        var alloc = new IdRangeAllocator(Config());
        Assert.Equal(new IdRange(100000, 100000, R), alloc.Allocate("b", StateDir("b")));
        Assert.Equal(new IdRange(100000 + 2 * R, 100000 + 2 * R, R), alloc.Allocate("c", StateDir("c")));
        Assert.Equal(["a", "b", "c"], alloc.Held().Select(h => h.Id).Order());
    }

    public static TheoryData<string, long, long, string?> OwnMappings => new()
    {
        { "first pool range", 100000, 100000, "overlap sandbox-runc's ID pool" },
        { "gids only in the pool", 900000000, 165536, "overlap sandbox-runc's ID pool" },
        { "straddles the pool's start", 100000 - R + 1, 900000000, "overlap sandbox-runc's ID pool" },
        { "straddles the pool's end", 100000 + 8 * R - 1, 900000000, "overlap sandbox-runc's ID pool" },
        { "ends where the pool starts", 100000 - R, 100000 - R, null },
        { "starts where the pool ends", 100000 + 8 * R, 100000 + 8 * R, null },
        { "another container's own range", 500000000 + 100, 900000000, "overlap the range held by container held-own" },
        { "a joined range", 600000000, 900000000, "overlap the range held by container joiner" },
        { "far away", 700000000, 700000000, null },
    };

    [Theory]
    [MemberData(nameof(OwnMappings))]
    public void OwnMappingsMayNotOverlapThePoolOrAHeldRange(string what, long uid, long gid, string? refused)
    {
        var holders = new List<RangeHolder>
        {
            new(HolderKind.Pool, "pool0", "/s/pool0", 0, Pools.UidOf(0), Pools.GidOf(0)),
            new(HolderKind.Own, "held-own", "/s/held-own", null, new IdSpan(500000000, R), new IdSpan(500000000, R)),
            new(HolderKind.Shared, "joiner", "/s/joiner", null, new IdSpan(600000000, R), new IdSpan(600000000, R)),
        };
        string? why = IdRangeTable.RefuseOwn(new IdSpan(uid, R), new IdSpan(gid, R), holders, Pools);
        if (refused is null) Assert.True(why is null, $"{what}: {why}");
        else
        {
            Assert.NotNull(why);
            Assert.Contains(refused, why);
            Assert.StartsWith("user namespace mapping refused: ", why);
        }
    }

    [Fact]
    public void TheRefusalsSayWhatToDo()
    {
        string inPool = IdRangeTable.RefuseOwn(new IdSpan(100000, R), new IdSpan(100000, R), [], Pools)!;
        Assert.Contains("uids 100000-624287 (entry \"sandbox-runc\" in /etc/subuid)", inPool);
        Assert.Contains("map host IDs outside the pool", inPool);
        var held = new RangeHolder(HolderKind.Own, "remapped", "/s/r", null, new IdSpan(900000000, R), new IdSpan(900000000, R));
        string taken = IdRangeTable.RefuseOwn(new IdSpan(900000000, R), new IdSpan(900000000, R), [held], Pools)!;
        Assert.Contains("container remapped (uids 900000000-900065535, gids 900000000-900065535)", taken);
        Assert.Contains("userns-remap gives every container the same range", taken);
        Assert.Contains("only one such container can run at a time", taken);
    }

    [Fact]
    public void OwnRangesAreRecordedExclusiveAndReleasedOnDelete()
    {
        var alloc = new IdRangeAllocator(Config());
        var own = new IdClaim(HolderKind.Own, new IdSpan(900000000, R), new IdSpan(900000000, 2 * R));
        var mine = alloc.Reserve("remap1", StateDir("remap1"), own)!;
        Assert.Equal(HolderKind.Own, mine.Kind);
        Assert.Null(mine.AllocatedRange);
        var e = Assert.Throws<RuntimeException>(() => alloc.Reserve("remap2", StateDir("remap2"), own));
        Assert.Contains("held by container remap1", e.Message);
        // The same container created again (same state dir) replaces its own holder.
        alloc.Reserve("remap1", StateDir("remap1"), own);
        Assert.Single(alloc.Held());
        Assert.Null(alloc.Release(StateDir("remap1")));
        Assert.Empty(alloc.Held());
        Assert.Equal(HolderKind.Own, alloc.Reserve("remap2", StateDir("remap2"), own)!.Kind);
    }

    [Fact]
    public void AJoinerSharesTheRangeAndKeepsItHeldAfterTheOwnerIsGone()
    {
        var alloc = new IdRangeAllocator(Config(poolSize: 2 * R));
        var owner = alloc.Allocate("owner", StateDir("owner"));
        var claim = IdClaim.Of(UserNamespaceDecision.JoinExisting, new Spec(), owner)!;
        Assert.Equal(HolderKind.Shared, claim.Kind);
        alloc.Reserve("joiner", StateDir("joiner"), claim);
        Assert.Equal(2, alloc.Held().Count);
        alloc.Release(StateDir("owner"));
        // The joiner's processes still run as the owner's IDs: the range is not handed out again.
        var next = alloc.Allocate("next", StateDir("next"));
        Assert.NotEqual(owner, next);
        Assert.Throws<RuntimeException>(() => alloc.Allocate("more", StateDir("more")));
        alloc.Release(StateDir("joiner"));
        Assert.Equal(owner, alloc.Allocate("more", StateDir("more")));
    }

    [Fact]
    public void LegacyOwnRangesInsideThePoolBlockThePoolRangesTheyTouch()
    {
        var holders = new List<RangeHolder>
        {
            new(HolderKind.Own, "legacy", "/s/legacy", null, new IdSpan(100000 + R / 2, R), new IdSpan(100000 + R / 2, R)),
        };
        Assert.Equal(2, IdRangeTable.FreeIndex(holders, Pools));
    }

    [Fact]
    public void ClaimsFollowThePolicyDecision()
    {
        var spec = new Spec { Linux = new Linux
        {
            UidMappings = [new IdMapping { ContainerId = 0, HostId = 900000000, Size = 65536 }],
            GidMappings = [new IdMapping { ContainerId = 0, HostId = 800000000, Size = 131072 }],
        } };
        Assert.Equal(IdClaim.FromPool, IdClaim.Of(UserNamespaceDecision.AllocateRange, spec, null));
        Assert.Equal(new IdClaim(HolderKind.Own, new IdSpan(900000000, 65536), new IdSpan(800000000, 131072)),
            IdClaim.Of(UserNamespaceDecision.KeepSpecMappings, spec, null));
        Assert.Null(IdClaim.Of(UserNamespaceDecision.JoinExisting, spec, null)); // a user namespace joined by path
    }

    [Fact]
    public void RebuildRecordsFoundContainersSharersAndLiveRanges()
    {
        var notes = new List<string>();
        var found = new List<RangeHolder>
        {
            new(HolderKind.Pool, "a", "/s/a", null, Pools.UidOf(3), Pools.GidOf(3)),
            // The bug this table had: b got a's range. The rebuild keeps both as holders and says so.
            new(HolderKind.Pool, "b", "/s/b", null, Pools.UidOf(3), Pools.GidOf(3)),
            new(HolderKind.Own, "remap", "/s/remap", null, new IdSpan(900000000, R), new IdSpan(900000000, R)),
            new(HolderKind.Shared, "joiner", "/s/joiner", null, Pools.UidOf(3), Pools.GidOf(3)),
            // A range of a pool that has since moved: it stays held, as an own range.
            new(HolderKind.Pool, "moved", "/s/moved", null, new IdSpan(50000000, R), new IdSpan(50000000, R)),
        };
        var live = new List<IdRangeTable.LiveNamespace>
        {
            new("pid 10 (sleep)", [Pools.UidOf(3)], [Pools.GidOf(3)]),          // a's: held already
            new("pid 20 (orphan)", [Pools.UidOf(5)], [Pools.GidOf(5)]),         // nobody's: held as live
            new("pid 30 (elsewhere)", [new IdSpan(3000000000, R)], []),       // outside the pool: not ours
        };
        var table = IdRangeTable.Rebuild([], found, live, Pools, notes);
        Assert.Equal(3, table.Single(h => h.Id == "a").Index);
        Assert.Equal(HolderKind.Shared, table.Single(h => h.Id == "b").Kind);
        Assert.Equal(HolderKind.Shared, table.Single(h => h.Id == "joiner").Kind);
        Assert.Equal(HolderKind.Own, table.Single(h => h.Id == "remap").Kind);
        Assert.Equal(HolderKind.Own, table.Single(h => h.Id == "moved").Kind);
        var orphan = Assert.Single(table, h => h.Kind == HolderKind.Live);
        Assert.Equal(5, orphan.Index);
        Assert.Contains("pid 20 (orphan)", orphan.Process);
        Assert.Contains(notes, n => n.Contains("container b and container a both run in") && n.Contains("not isolated from each other"));
        Assert.Contains(notes, n => n.Contains("pool range 5") && n.Contains("pid 20 (orphan)"));
        Assert.Equal(2, notes.Count);
        // It reads back as a valid table, and allocation skips every range found in use.
        var back = IdRangeTable.Parse(IdRangeTable.Serialize(table), Pools, out var problem);
        Assert.Null(problem);
        Assert.Equal(table, back);
        Assert.Equal(0, IdRangeTable.FreeIndex(back!, Pools));
        var full = back!.Concat(Enumerable.Range(0, 8).Where(i => i is not (3 or 5)).Select(i =>
            new RangeHolder(HolderKind.Pool, $"x{i}", $"/s/x{i}", i, Pools.UidOf(i), Pools.GidOf(i)))).ToList();
        Assert.Null(IdRangeTable.FreeIndex(full, Pools));
    }

    [Fact]
    public void RebuildKeepsTheCorruptTableAsideAndAllocationResumes()
    {
        File.WriteAllText(Table, "{\"holders\":null}");
        var alloc = new IdRangeAllocator(Config());
        var notes = new List<string>();
        var held = new RangeHolder(HolderKind.Pool, "a", StateDir("a"), null, Pools.UidOf(0), Pools.GidOf(0));
        var table = alloc.Rebuild(() => ([held], []), notes);
        Assert.Equal(0, Assert.Single(table).Index);
        var backup = Assert.Single(Directory.GetFiles(_dir, "table.json.corrupt-*"));
        Assert.Equal("{\"holders\":null}", File.ReadAllText(backup));
        Assert.Contains(notes, n => n.Contains("\"holders\" is null") && n.Contains(backup));
        Assert.Equal(new IdRange(100000 + R, 100000 + R, R), alloc.Allocate("b", StateDir("b")));
    }

    [Fact]
    public void HostExtentsLeaveOutTheWholeIdSpace()
    {
        Assert.Empty(SandboxRunc.Container.RangesOperation.HostExtents("         0          0 4294967295\n"));
        Assert.Equal([new IdSpan(100000, 65536), new IdSpan(300000, 10)],
            SandboxRunc.Container.RangesOperation.HostExtents("0 100000 65536\n65536 300000 10\n"));
    }

    public void Dispose() => Directory.Delete(_dir, true);
}
