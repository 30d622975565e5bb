using SandboxRunc.Interop;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>The real realpath the policy uses on the host: symlinks in a temp dir, "..", trailing slashes, missing tails.</summary>
public sealed class PolicyHostPathTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("srp-path-").FullName;

    [Fact]
    public void PolicyHostPath_ResolvesLikeTheKernel()
    {
        string real = HostPath.Resolve(_dir);
        Directory.CreateDirectory(Path.Combine(_dir, "a", "b"));
        File.CreateSymbolicLink(Path.Combine(_dir, "link"), Path.Combine(_dir, "a", "b"));
        Assert.Equal(real + "/a/b", HostPath.Resolve(_dir + "/link"));
        Assert.Equal(real + "/a/b", HostPath.Resolve(_dir + "/link/"));
        // ".." after a symlink is the target's parent, not the link's directory.
        Assert.Equal(real + "/a", HostPath.Resolve(_dir + "/link/.."));
        Assert.Equal(real + "/a/b/missing/x", HostPath.Resolve(_dir + "/link/missing/x"));
        Assert.Equal(real + "/a/b", HostPath.Resolve(_dir + "/link/missing/.."));
        Assert.Equal("/run", HostPath.Resolve("/var/run"));
    }

    [Fact]
    public void PolicyHostPath_OwnerAndMode()
    {
        string f = Path.Combine(_dir, "f");
        File.WriteAllText(f, "");
        File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.GroupWrite);
        var om = HostPath.OwnerAndMode(f);
        Assert.NotNull(om);
        Assert.Equal(Convert.ToUInt32("420", 8), om!.Value.Mode);
        Assert.Null(HostPath.OwnerAndMode(Path.Combine(_dir, "none")));
    }

    public void Dispose() => Directory.Delete(_dir, true);
}
