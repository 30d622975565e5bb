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

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }
}
