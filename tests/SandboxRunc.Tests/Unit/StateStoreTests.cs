using SandboxRunc.Container;
using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests.Unit;

public sealed class StateStoreTests : IDisposable
{
    readonly string _root = Path.Combine(Path.GetTempPath(), "sr-store-" + Guid.NewGuid().ToString("N")[..8]);

    [Theory]
    [InlineData("abc")]
    [InlineData("a.b-c_d+e")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void ValidIds(string id) => StateStore.ValidateId(id);

    [Theory]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("../x")]
    [InlineData("a/b")]
    [InlineData("a b")]
    [InlineData("a\nb")]
    public void InvalidIdsAreRefused(string id) =>
        Assert.Throws<RuntimeException>(() => StateStore.ValidateId(id));

    [Fact]
    public void StateSurvivesARoundTripAndIsListed()
    {
        var store = new StateStore(_root);
        store.CreateDir("c1");
        var record = new ContainerRecord
        {
            Id = "c1", Bundle = "/b", Rootfs = "/b/rootfs", Pid = 42, PidStartTime = 7, Created = DateTime.UtcNow,
            CgroupPaths = new() { ["memory"] = "/sys/fs/cgroup/memory/x" },
            Annotations = new() { ["k"] = "v" },
        };
        store.Save(record);
        var back = store.Load("c1");
        Assert.Equal(42, back.Pid);
        Assert.Equal("/sys/fs/cgroup/memory/x", back.CgroupPaths["memory"]);
        Assert.Equal("v", back.Annotations!["k"]);
        Assert.Equal(["c1"], store.Ids());
        Assert.False(File.Exists(Path.Combine(_root, "c1", "state.json.tmp")));
    }

    [Fact]
    public void ADuplicateIdIsRefused()
    {
        var store = new StateStore(_root);
        store.CreateDir("dup");
        var e = Assert.Throws<RuntimeException>(() => store.CreateDir("dup"));
        Assert.Equal("container with id exists: dup", e.Message);
    }

    [Fact]
    public void MissingContainerSaysSo()
    {
        var e = Assert.Throws<RuntimeException>(() => new StateStore(_root).Load("ghost"));
        Assert.Equal("container does not exist: ghost", e.Message);
    }

    [Fact]
    public void StatusFollowsTheInitAndTheFifo()
    {
        var store = new StateStore(_root);
        store.CreateDir("me");
        var self = new ContainerRecord { Id = "me", Pid = Environment.ProcessId, PidStartTime = ProcStat.StartTime(Environment.ProcessId) };
        Assert.Equal(ContainerStatus.Running, store.StatusOf(self));
        File.WriteAllText(store.FifoPath("me"), "");
        Assert.Equal(ContainerStatus.Created, store.StatusOf(self));
        // Same pid, other start time: the pid was reused by another process, so the container is gone.
        self.PidStartTime++;
        Assert.Equal(ContainerStatus.Stopped, store.StatusOf(self));
        Assert.Equal(0, store.ToOci(self, ContainerStatus.Stopped).Pid);
    }

    /// <summary>
    /// The note create keeps for delete: cgroup v1 keys include "name=systemd", whose '=' once split the
    /// line in the wrong place (a killed create then left that cgroup behind).
    /// </summary>
    [Fact]
    public void TheCreateNoteKeepsCgroupKeysWithEqualsSignsAndTheIds()
    {
        var store = new StateStore(_root);
        string dir = store.CreateDir("noted");
        var paths = new Dictionary<string, string>
        {
            ["name=systemd"] = "/sys/fs/cgroup/systemd/sandbox-runc-test/noted",
            ["memory"] = "/sys/fs/cgroup/memory/sandbox-runc-test/noted",
        };
        var ids = new SandboxRunc.Policy.RangeHolder(SandboxRunc.Policy.HolderKind.Own, "noted", dir, null,
            new SandboxRunc.Policy.IdSpan(900000000, 65536), new SandboxRunc.Policy.IdSpan(800000000, 131072));
        store.NoteCreating("noted", SandboxRunc.Cgroups.CgroupManager.Of(paths), ids);
        var note = store.ReadNote("noted")!;
        Assert.Equal(paths.OrderBy(kv => kv.Key), note.CgroupPaths.OrderBy(kv => kv.Key));
        Assert.Equal(ids, note.Ids);
    }

    [Fact]
    public void TheNoteOfTheEarlierFormatSplitsAtTheDirectory()
    {
        var store = new StateStore(_root);
        string dir = store.CreateDir("old");
        File.WriteAllText(Path.Combine(dir, StateStore.LegacyCreatingFile),
            "name=systemd=/sys/fs/cgroup/systemd/x\nmemory=/sys/fs/cgroup/memory/x\n=/sys/fs/cgroup/unified/x\n");
        var note = store.ReadNote("old")!;
        Assert.Equal("/sys/fs/cgroup/systemd/x", note.CgroupPaths["name=systemd"]);
        Assert.Equal("/sys/fs/cgroup/memory/x", note.CgroupPaths["memory"]);
        Assert.Equal("/sys/fs/cgroup/unified/x", note.CgroupPaths[""]);
        Assert.Equal(3, note.CgroupPaths.Count);
        Assert.Null(note.Ids);
    }

    [Theory]
    [InlineData("garbage", "\u0000\u0001{{")]
    [InlineData("empty", "")]
    [InlineData("truncated", "{\"id\":\"bad\",\"bundle\":\"/b\",\"pid\":4")]
    [InlineData("null", "null")]
    [InlineData("no init pid", "{\"id\":\"bad\"}")]
    [InlineData("another container's", "{\"id\":\"other\",\"pid\":42}")]
    [InlineData("null cgroups", "{\"id\":\"bad\",\"pid\":42,\"cgroupPaths\":null}")]
    public void ACorruptStateSaysSoInOneLine(string what, string content)
    {
        var store = new StateStore(_root);
        string dir = store.CreateDir("bad");
        File.WriteAllText(Path.Combine(dir, StateStore.StateFile), content);
        Assert.Null(store.TryLoad("bad", out var problem));
        var e = Assert.Throws<RuntimeException>(() => store.Load("bad"));
        Assert.Equal($"{problem}; \"delete --force bad\" removes what it can find without it", e.Message);
        Assert.StartsWith($"container bad: its state file {Path.Combine(dir, "state.json")} is corrupt (", e.Message);
        Assert.EndsWith("\"delete --force bad\" removes what it can find without it", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        _ = what;
    }

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }
}
