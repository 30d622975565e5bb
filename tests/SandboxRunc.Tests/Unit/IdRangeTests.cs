using SandboxRunc.Container;
using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.Unit;

public sealed class IdRangeTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("sr-ids").FullName;

    IdPoolConfig Config(long poolSize = SubIdFile.DefaultPoolSize) =>
        new("sandbox-runc", Path.Combine(_dir, "subuid"), Path.Combine(_dir, "subgid"), Path.Combine(_dir, "table.json"), poolSize);

    string StateDir(string id)
    {
        string d = Path.Combine(_dir, "state", id);
        Directory.CreateDirectory(d);
        return d;
    }

    [Fact]
    public void SubIdLinesParseAndBadOnesAreSkipped()
    {
        var e = SubIdFile.Parse("alice:100000:65536\n# comment\nbroken\nbob:x:1\n\ncarol:165536:65536\n");
        Assert.Equal([new SubIdEntry("alice", 100000, 65536), new SubIdEntry("carol", 165536, 65536)], e);
    }

    [Fact]
    public void PoolGoesToTheFirstAlignedHoleAbove100000()
    {
        Assert.Equal(100000, SubIdFile.FirstFreeHole([], 1 << 20));
        // useradd's usual entries: alice 100000+65536, bob 165536+65536 -> the pool starts right after them.
        var users = SubIdFile.Parse("alice:100000:65536\nbob:165536:65536\n");
        Assert.Equal(231072, SubIdFile.FirstFreeHole(users, 1 << 20));
        // A hole big enough between entries is used.
        var gap = SubIdFile.Parse("a:100000:65536\nb:10000000:65536\n");
        Assert.Equal(165536, SubIdFile.FirstFreeHole(gap, 65536 * 4));
        // An unaligned entry pushes the start to the next 65536 boundary above 100000.
        Assert.Equal(100000 + 2 * 65536, SubIdFile.FirstFreeHole(SubIdFile.Parse("x:100000:70000\n"), 65536));
    }

    [Fact]
    public void EnsureEntryAppendsOnceAndKeepsOtherLines()
    {
        string path = Path.Combine(_dir, "subuid");
        File.WriteAllText(path, "alice:100000:65536");
        var first = SubIdFile.EnsureEntry(path, "sandbox-runc", 131072);
        Assert.Equal(new SubIdEntry("sandbox-runc", 165536, 131072), first);
        Assert.Equal(first, SubIdFile.EnsureEntry(path, "sandbox-runc", 999999));
        Assert.Equal("alice:100000:65536\nsandbox-runc:165536:131072\n", File.ReadAllText(path));
    }

    [Fact]
    public void RangesAreExclusiveReleasedAndReclaimed()
    {
        var alloc = new IdRangeAllocator(Config());
        var a = alloc.Allocate("a", StateDir("a"));
        var b = alloc.Allocate("b", StateDir("b"));
        Assert.Equal(new IdRange(100000, 100000, 65536), a);
        Assert.Equal(new IdRange(165536, 165536, 65536), b);
        Assert.Equal("0 100000 65536", a.UidMapLine);

        alloc.Release(StateDir("a"));
        Assert.Equal(a, alloc.Allocate("c", StateDir("c")));

        // b's container vanished without delete (its state dir is gone): its range is reclaimed.
        Directory.Delete(StateDir("b"));
        Assert.Equal(b, alloc.Allocate("d", StateDir("d")));
        Assert.Equal(["c", "d"], alloc.Held().Select(h => h.Id).Order());
    }

    [Fact]
    public void AnExhaustedPoolRefusesAndNeverReusesAHeldRange()
    {
        var alloc = new IdRangeAllocator(Config(poolSize: 2 * 65536));
        alloc.Allocate("a", StateDir("a"));
        alloc.Allocate("b", StateDir("b"));
        var e = Assert.Throws<RuntimeException>(() => alloc.Allocate("c", StateDir("c")));
        Assert.Contains("ID pool is exhausted", e.Message);
        Assert.Contains("all 2 ranges", e.Message);
        Assert.Equal(2, alloc.Held().Count);
    }

    [Fact]
    public void FiftyConcurrentAllocationsGetFiftyDistinctRanges()
    {
        var alloc = new IdRangeAllocator(Config());
        var dirs = Enumerable.Range(0, 50).Select(i => StateDir("c" + i)).ToArray();
        var ranges = new IdRange[50];
        Parallel.For(0, 50, new ParallelOptions { MaxDegreeOfParallelism = 8 },
            i => ranges[i] = new IdRangeAllocator(Config()).Allocate("c" + i, dirs[i]));
        Assert.Equal(50, ranges.Select(r => r.UidBase).Distinct().Count());
        Assert.All(ranges, r => Assert.Equal(0, (r.UidBase - 100000) % 65536));
        Assert.Equal(50, alloc.Held().Count);
    }

    public void Dispose() => Directory.Delete(_dir, true);
}
