using SandboxRunc.Cgroups;
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

    /// <summary>What the container's final rules let open (the cgroup code appends runc's defaults, as it does).</summary>
    static bool Opens(Spec spec, uint type, uint major, uint minor, uint access = DeviceFilter.AccessRead | DeviceFilter.AccessWrite) =>
        DeviceFilter.Allows(DeviceFilter.Rules([.. spec.Linux!.Resources!.Devices!, .. DockerDefaults()]), type, major, minor, access);

    static IEnumerable<DeviceCgroup> DockerDefaults() =>
    [
        new() { Allow = true, Type = "c", Access = "m" }, new() { Allow = true, Type = "b", Access = "m" },
        .. new (long, long?)[] { (1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (136, null), (5, 2), (10, 200) }
            .Select(d => new DeviceCgroup { Allow = true, Type = "c", Major = d.Item1, Minor = d.Item2, Access = "rwm" }),
    ];

    static Spec Privileged(params Device[] listed) => new()
    {
        Linux = new Linux { Devices = [.. listed], Resources = new Resources { Devices = [new() { Allow = true, Access = "rwm" }] } },
    };

    [Fact]
    public void NoBlockDeviceOpens_EvenWhenPrivilegedAllowsAll()
    {
        // docker --privileged: allow "a *:* rwm". A block node the container could open is a host disk bound in.
        var spec = Privileged(new Device { Type = "b", Path = "/dev/vda", Major = 254, Minor = 0 });
        IsolationPolicy.Rewrite(spec, new IdRange(100000, 100000, 65536));
        Assert.False(Opens(spec, DeviceFilter.TypeBlock, 254, 0, DeviceFilter.AccessRead));
        Assert.False(Opens(spec, DeviceFilter.TypeBlock, 8, 0, DeviceFilter.AccessRead));
    }

    [Theory]
    [InlineData(5, 1)]    // the host's console (docker's default rules allow it)
    [InlineData(1, 1)]    // /dev/mem
    [InlineData(1, 11)]   // /dev/kmsg
    [InlineData(4, 1)]    // a host virtual terminal
    [InlineData(10, 229)] // fuse, not asked for
    [InlineData(10, 1)]   // psaux and the other misc devices
    public void OnlyListedAndDefaultDevicesOpen_WhateverTheRulesAllow(uint major, uint minor)
    {
        var privileged = Privileged(new Device { Type = "c", Path = "/dev/null", Major = 1, Minor = 3 });
        IsolationPolicy.Rewrite(privileged, new IdRange(100000, 100000, 65536));
        Assert.False(Opens(privileged, DeviceFilter.TypeChar, major, minor));
        Assert.True(Opens(privileged, DeviceFilter.TypeChar, 1, 3));

        // docker's default list (deny all, then 5:1 among others)
        var docker = new Spec { Linux = new Linux { Resources = new Resources { Devices =
            [new() { Allow = false, Access = "rwm" }, new() { Allow = true, Type = "c", Major = 5, Minor = 1, Access = "rwm" }, new() { Allow = true, Type = "c", Major = 136, Access = "rwm" }] } } };
        IsolationPolicy.Rewrite(docker, new IdRange(100000, 100000, 65536));
        Assert.False(Opens(docker, DeviceFilter.TypeChar, major, minor));
        Assert.True(Opens(docker, DeviceFilter.TypeChar, 136, 7)); // the container's console is one of its own pts
    }

    [Fact]
    public void AListedDeviceOpens_WithNoMoreThanTheRulesGrant()
    {
        var fuse = new Device { Type = "c", Path = "/dev/fuse", Major = 10, Minor = 229 };
        var granted = new Spec { Linux = new Linux { Devices = [fuse], Resources = new Resources { Devices =
            [new() { Allow = false, Access = "rwm" }, new() { Allow = true, Type = "c", Major = 10, Minor = 229, Access = "rw" }] } } };
        IsolationPolicy.Rewrite(granted, new IdRange(100000, 100000, 65536));
        Assert.True(Opens(granted, DeviceFilter.TypeChar, 10, 229));

        var readOnly = new Spec { Linux = new Linux { Devices = [fuse], Resources = new Resources { Devices =
            [new() { Allow = false, Access = "rwm" }, new() { Allow = true, Type = "c", Major = 10, Minor = 229, Access = "r" }] } } };
        IsolationPolicy.Rewrite(readOnly, new IdRange(100000, 100000, 65536));
        Assert.True(Opens(readOnly, DeviceFilter.TypeChar, 10, 229, DeviceFilter.AccessRead));
        Assert.False(Opens(readOnly, DeviceFilter.TypeChar, 10, 229));

        // a --device-cgroup-rule for a device neither listed nor a default opens nothing
        var ruleOnly = new Spec { Linux = new Linux { Resources = new Resources { Devices =
            [new() { Allow = false, Access = "rwm" }, new() { Allow = true, Type = "c", Major = 1, Minor = 11, Access = "rwm" }] } } };
        IsolationPolicy.Rewrite(ruleOnly, new IdRange(100000, 100000, 65536));
        Assert.False(Opens(ruleOnly, DeviceFilter.TypeChar, 1, 11));
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
