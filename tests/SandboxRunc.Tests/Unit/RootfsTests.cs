using SandboxRunc.Interop;
using SandboxRunc.Rootfs;
using Xunit;

namespace SandboxRunc.Tests.Unit;

public sealed class RootfsTests : IDisposable
{
    readonly string _root = Directory.CreateTempSubdirectory("sr-rootfs").FullName;

    [Fact]
    public void MountOptionsSplitIntoFlagsPropagationAndData()
    {
        var o = MountOptions.Parse(["nosuid", "strictatime", "mode=755", "size=65536k"], "tmpfs");
        Assert.Equal(Libc.MS_NOSUID | Libc.MS_STRICTATIME, o.Flags);
        Assert.Equal("mode=755,size=65536k", o.Data);
        Assert.False(o.Bind);

        var b = MountOptions.Parse(["rbind", "rprivate", "ro"], "bind");
        Assert.True(b.Bind && b.Recursive && b.ReadOnly);
        Assert.Equal([Libc.MS_PRIVATE | Libc.MS_REC], b.Propagation);

        var rw = MountOptions.Parse(["ro", "rw"]);
        Assert.False(rw.ReadOnly);
    }

    [Fact]
    public void SecureJoinKeepsSymlinksInsideTheRoot()
    {
        Directory.CreateDirectory(Path.Combine(_root, "real"));
        File.CreateSymbolicLink(Path.Combine(_root, "abs"), "/etc");
        File.CreateSymbolicLink(Path.Combine(_root, "up"), "../../../../etc");
        File.CreateSymbolicLink(Path.Combine(_root, "rel"), "real");
        File.CreateSymbolicLink(Path.Combine(_root, "loop"), "loop");

        Assert.Equal(_root + "/etc/passwd", SecureJoin.Join(_root, "/abs/passwd"));
        Assert.Equal(_root + "/etc/passwd", SecureJoin.Join(_root, "/up/passwd"));
        Assert.Equal(_root + "/real/x", SecureJoin.Join(_root, "/rel/x"));
        Assert.Equal(_root + "/x", SecureJoin.Join(_root, "/../../x"));
        Assert.Equal(_root, SecureJoin.Join(_root, "/"));
        Assert.Throws<IOException>(() => SecureJoin.Join(_root, "/loop/x"));
    }

    public void Dispose() => Directory.Delete(_root, true);
}
