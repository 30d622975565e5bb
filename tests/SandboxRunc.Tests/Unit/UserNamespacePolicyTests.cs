using SandboxRunc.Oci;
using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.Unit;

public class UserNamespacePolicyTests
{
    static bool NotHost(string _) => false;

    static Spec WithMaps(string uid, string gid)
    {
        static List<IdMapping> Parse(string s) => s.Split(';').Select(m => m.Split(' ').Select(uint.Parse).ToArray())
            .Select(v => new IdMapping { ContainerId = v[0], HostId = v[1], Size = v[2] }).ToList();
        return new Spec
        {
            Linux = new Linux { Namespaces = [new() { Type = "user" }, new() { Type = "mount" }], UidMappings = Parse(uid), GidMappings = Parse(gid) },
        };
    }

    [Fact]
    public void DockersSpecWithoutUserNamespaceGetsOne()
    {
        var spec = new Spec { Linux = new Linux { Namespaces = [new() { Type = "pid" }, new() { Type = "network" }] } };
        Assert.Equal(UserNamespaceDecision.AllocateRange, UserNamespacePolicy.Decide(spec, NotHost));
        IsolationPolicy.Rewrite(spec, new IdRange(165536, 165536, 65536));
        Assert.Equal("user", spec.Linux.Namespaces[0].Type);
        Assert.Equal((0u, 165536u, 65536u), (spec.Linux.UidMappings![0].ContainerId, spec.Linux.UidMappings[0].HostId, spec.Linux.UidMappings[0].Size));
        Assert.Single(spec.Linux.GidMappings!);
    }

    [Fact]
    public void AUserNamespaceWithoutMapsGetsARange() =>
        Assert.Equal(UserNamespaceDecision.AllocateRange, UserNamespacePolicy.Decide(
            new Spec { Linux = new Linux { Namespaces = [new() { Type = "user" }] } }, NotHost));

    [Fact]
    public void AValidRemapIsKept() =>
        Assert.Equal(UserNamespaceDecision.KeepSpecMappings, UserNamespacePolicy.Decide(WithMaps("0 300000 65536", "0 300000 131072"), NotHost));

    [Theory]
    [InlineData("0 100000 65536;65536 300000 10", "0 100000 65536", "exactly one contiguous range")]
    [InlineData("1 100000 65536", "0 100000 65536", "start at container ID 0")]
    [InlineData("0 100000 1000", "0 100000 65536", "at least 65536 IDs")]
    [InlineData("0 0 65536", "0 100000 65536", "must not contain host ID 0")]
    [InlineData("0 100000 65536", "0 0 4294967295", "must not contain host ID 0")]
    [InlineData("0 4294967000 65536", "0 100000 65536", "runs past the last host ID")]
    public void BadMappingsAreRefused(string uid, string gid, string why)
    {
        var e = Assert.Throws<PolicyException>(() => UserNamespacePolicy.Decide(WithMaps(uid, gid), NotHost));
        Assert.Contains("user namespace mapping refused", e.Message);
        Assert.Contains(why, e.Message);
    }

    [Fact]
    public void JoiningTheHostsUserNamespaceIsRefusedAnotherIsAllowed()
    {
        var spec = new Spec { Linux = new Linux { Namespaces = [new() { Type = "user", Path = "/proc/1/ns/user" }] } };
        var e = Assert.Throws<PolicyException>(() => UserNamespacePolicy.Decide(spec, p => p == "/proc/1/ns/user"));
        Assert.Contains("host's user namespace", e.Message);
        spec.Linux.Namespaces[0].Path = "/proc/4242/ns/user";
        Assert.Equal(UserNamespaceDecision.JoinExisting, UserNamespacePolicy.Decide(spec, p => p == "/proc/1/ns/user"));
    }

    [Fact]
    public void PrivilegedDeviceListKeepsOnlyWhatIsSafeInAUserNamespace()
    {
        var spec = new Spec
        {
            Linux = new Linux
            {
                Devices =
                [
                    new() { Type = "b", Path = "/dev/vda", Major = 254, Minor = 0 },
                    new() { Type = "c", Path = "/dev/mem", Major = 1, Minor = 1 },
                    new() { Type = "c", Path = "/dev/console", Major = 5, Minor = 1 },
                    new() { Type = "c", Path = "/dev/pts/0", Major = 136, Minor = 0 },
                    new() { Type = "c", Path = "/dev/null", Major = 1, Minor = 3 },
                    new() { Type = "c", Path = "/dev/fuse", Major = 10, Minor = 229 },
                    new() { Type = "c", Path = "/dev/net/tun", Major = 10, Minor = 200 },
                    new() { Type = "p", Path = "/dev/myfifo" },
                ],
            },
        };
        IsolationPolicy.Rewrite(spec, new IdRange(100000, 100000, 65536));
        // A FIFO reaches nothing of the host's: it stays (it was dropped silently).
        Assert.Equal(["/dev/null", "/dev/fuse", "/dev/net/tun", "/dev/myfifo"], spec.Linux.Devices.Select(d => d.Path));
    }

    [Fact]
    public void NoBlockDeviceOpens_EvenWhenPrivilegedAllowsAll()
    {
        // docker --privileged: allow "a *:* rwm". A block node the container could open is a host disk bound in.
        var spec = new Spec { Linux = new Linux { Resources = new Resources { Devices = [new() { Allow = true, Access = "rwm" }] } } };
        IsolationPolicy.Rewrite(spec, new IdRange(100000, 100000, 65536));
        var last = spec.Linux.Resources.Devices![^1];
        Assert.Equal((false, "b", (long?)null, (long?)null, "rwm"), (last.Allow, last.Type, last.Major, last.Minor, last.Access));
        Assert.Equal(2, spec.Linux.Resources.Devices.Count);
    }

    [Theory]
    [InlineData("0 2147483647", "0 65535")]
    [InlineData("1 1", "1 1")]
    [InlineData("100 70000", "100 65535")]
    public void PingGroupRangeIsClampedToTheContainersGids(string docker, string expected)
    {
        var spec = new Spec { Linux = new Linux { Sysctl = new() { ["net.ipv4.ping_group_range"] = docker, ["net.core.somaxconn"] = "1024" } } };
        IsolationPolicy.Rewrite(spec, new IdRange(100000, 100000, 65536));
        Assert.Equal(expected, spec.Linux.Sysctl["net.ipv4.ping_group_range"]);
        Assert.Equal("1024", spec.Linux.Sysctl["net.core.somaxconn"]);
    }
}
