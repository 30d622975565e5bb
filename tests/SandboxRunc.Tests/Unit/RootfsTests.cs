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

    [Fact]
    public void EngineMountpointsAreTheOutermostDestinations()
    {
        var kinds = EngineMountpoints.Outermost([("/proc", true), ("/dev", true), ("/dev/shm", true), ("/etc/hosts", false),
            ("//etc/./resolv.conf", false), ("/a/../etc/passwd", false), ("/sys", true), ("/sys/fs/cgroup", true), ("/etc/hosts", false)]);
        Assert.Equal([("/proc", true), ("/dev", true), ("/etc/hosts", false), ("/etc/resolv.conf", false), ("/sys", true)], kinds);
        Assert.Empty(EngineMountpoints.Outermost([("/", true), ("/etc/hosts", false)])); // a mount over / holds every other
    }

    [Fact]
    public void EngineMountpointsAreMadeWithoutFollowingTheImagesSymlinks()
    {
        string rootfs = Path.Combine(_root, "rootfs"), outside = Path.Combine(_root, "outside");
        Directory.CreateDirectory(rootfs);
        Directory.CreateDirectory(outside);
        Directory.CreateDirectory(Path.Combine(rootfs, "etc"));
        File.WriteAllText(Path.Combine(rootfs, "etc", "hostname"), "kept");
        File.CreateSymbolicLink(Path.Combine(rootfs, "evil"), outside);
        File.CreateSymbolicLink(Path.Combine(rootfs, "etc", "resolv.conf"), Path.Combine(outside, "resolv.conf"));

        EngineMountpoints.Create(rootfs, [("/etc/hosts", false), ("/etc/hostname", false), ("/etc/resolv.conf", false),
            ("/evil/x", true), ("/evil", true), ("/new/deep/dir", true), ("/evil/y", false)]);

        Assert.True(File.Exists(Path.Combine(rootfs, "etc", "hosts")));
        Assert.Equal(0, new FileInfo(Path.Combine(rootfs, "etc", "hosts")).Length);
        Assert.Equal("kept", File.ReadAllText(Path.Combine(rootfs, "etc", "hostname")));
        Assert.True(Directory.Exists(Path.Combine(rootfs, "new", "deep", "dir")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(outside)); // nothing through either symlink
        Assert.NotNull(new FileInfo(Path.Combine(rootfs, "etc", "resolv.conf")).LinkTarget);
    }

    public void Dispose() => Directory.Delete(_root, true);
}
