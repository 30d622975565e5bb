// Who may do what through the emulation, without root: the capability decision (the kernel's cap_capable)
// from hand-made namespace facts, writes from a nested user namespace, the host's owner semantics of the
// /sys and /proc/sys mirror, and large mirrored files served by offset.
using System.Text;
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using Xunit;
using static SandboxRunc.Tests.Emulation.EmulationFixture;

namespace SandboxRunc.Tests.Emulation;

public class EmulationPrivilegeTests : IDisposable
{
    const int EACCES = -13, EPERM = -1, EFBIG = -27;
    const int CAP_NET_ADMIN = 12, CAP_SYS_ADMIN = 21;
    readonly EmulationFixture _fx = new();
    static readonly FuseCaller Root = new(1000, 100000, 100000);
    static readonly FuseCaller RootNoCaps = new(1001, 100000, 100000);
    static readonly FuseCaller Nested = new(1003, 100000, 100000);
    static readonly FuseCaller Gone = new(1999, 100000, 100000);

    public void Dispose() => _fx.Dispose();

    // ------------------------------------------------------------------ the decision

    static readonly UserNamespaceFacts Sibling = new(new FileId(4, 4026532003), 0);
    static readonly UserNamespaceFacts NestedByOther = new(new FileId(4, 4026532004), 100005);

    [Theory]
    // caller's namespace, euid, CapEff | target namespace | capability | held?
    [InlineData("container", 100000, AllCaps, "container", CAP_SYS_ADMIN, true)]     // its own namespace: CapEff decides
    [InlineData("container", 100000, 1UL << 12, "container", CAP_SYS_ADMIN, false)]
    [InlineData("container", 100000, 1UL << 12, "container", CAP_NET_ADMIN, true)]
    [InlineData("nested", 100000, AllCaps, "container", CAP_SYS_ADMIN, false)]       // a child never holds capabilities in its parent
    [InlineData("nested", 100000, AllCaps, "host", CAP_SYS_ADMIN, false)]
    [InlineData("nested", 100000, AllCaps, "nested", CAP_SYS_ADMIN, true)]           // but does in its own namespace
    [InlineData("container", 100000, 0, "nested", CAP_SYS_ADMIN, true)]              // the owner of a child namespace holds all in it
    [InlineData("container", 100001, 0, "nested", CAP_SYS_ADMIN, false)]             // ... only the owner (euid)
    [InlineData("container", 100000, 0, "nested-by-other", CAP_SYS_ADMIN, false)]
    [InlineData("container", 100000, AllCaps, "nested-by-other", CAP_SYS_ADMIN, true)] // a capability in the parent covers the child
    [InlineData("container", 100000, AllCaps, "sibling", CAP_SYS_ADMIN, false)]      // another container's namespace
    [InlineData("host", 0, AllCaps, "container", CAP_SYS_ADMIN, true)]               // host root created it: owner
    [InlineData("host", 0, 0, "container", CAP_SYS_ADMIN, true)]
    [InlineData("host", 1000, 0, "container", CAP_SYS_ADMIN, false)]
    [InlineData("host", 0, AllCaps, "nested", CAP_SYS_ADMIN, true)]                  // all of the host's capabilities reach down
    [InlineData("container", 100000, AllCaps, "host", CAP_SYS_ADMIN, false)]
    public void CapableFollowsTheKernelsRule(string callerNs, uint euid, ulong capEff, string targetNs, int capability, bool held)
    {
        var caller = new CallerCredentials(Chain(callerNs), euid, capEff);
        Assert.Equal(held, NamespaceCapability.Holds(caller, Chain(targetNs), capability));
    }

    static UserNamespaceChain Chain(string name) => name switch
    {
        "host" => HostChain,
        "container" => ContainerChain,
        "nested" => NestedChain,
        "sibling" => new([Sibling, HostNs]),
        "nested-by-other" => new([NestedByOther, ContainerNs, HostNs]),
        _ => throw new ArgumentException(name),
    };

    [Fact]
    public void StatusParsing()
    {
        const string status = "Name:\tsh\nUid:\t0\t100000\t0\t100000\nGid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        Assert.Equal(100000u, CallerIdentity.EffectiveUid(status));
        Assert.Equal(AllCaps, Sysctls.EffectiveCaps(status));
        Assert.Null(CallerIdentity.EffectiveUid("Name:\tsh\n"));
    }

    // ------------------------------------------------------------------ writes from a nested user namespace

    [Fact]
    public void NestedUserNamespaceRoot_CannotSetPerContainerValues_NorRaiseTheHost()
    {
        var host = new FakeHostSysctls();
        host.Values["fs/inotify/max_user_instances"] = "128\n";
        _fx.Write("proc/sys/fs/inotify/max_user_instances", "128\n");
        var fs = _fx.Fs(_fx.V1(new()), host: host);
        Assert.Equal(EPERM, fs.Write("proc/sys/fs/inotify/max_user_instances", Nested, "131"u8));
        Assert.Equal(EPERM, fs.Write("proc/sys/kernel/panic", Nested, "7"u8));
        Assert.Equal(EPERM, fs.Write("sys/module/nf_conntrack/parameters/hashsize", Nested, "4096"u8));
        Assert.Empty(host.Writes);
        Assert.Equal(0, fs.Read("proc/sys/fs/inotify/max_user_instances", Root, out var v));
        Assert.Equal("128\n", Encoding.ASCII.GetString(v));
        // The container's own root may (and "max wins" raises the host).
        Assert.Equal(0, fs.Write("proc/sys/fs/inotify/max_user_instances", Root, "131"u8));
        Assert.Equal([("fs/inotify/max_user_instances", "131")], host.Writes);
        // A caller that cannot be identified (gone) gets nothing.
        Assert.Equal(EACCES, fs.Write("proc/sys/kernel/panic", Gone, "7"u8));
    }

    [Fact]
    public void NamespacedWrites_NeedTheCapabilityOverTheNamespacesOwner()
    {
        var ns = new RecordingNamespaces();
        var fs = _fx.Fs(_fx.V1(new()), ns: ns);
        // The nested root in the container's network namespace (owned by the container's user namespace): no.
        Assert.Equal(EPERM, fs.Write("proc/sys/net/ipv4/ip_forward", Nested, "1"u8));
        Assert.Equal(EPERM, fs.Write("proc/sys/kernel/hostname", Nested, "x"u8));
        Assert.False(ns.Values.ContainsKey((1003, "net/ipv4/ip_forward")));
        // In a network namespace of its own (unshare -U -r -n): its own, yes.
        ns.Owners[1003] = NestedChain;
        Assert.Equal(0, fs.Write("proc/sys/net/ipv4/ip_forward", Nested, "1"u8));
        Assert.Equal("1", ns.Values[(1003, "net/ipv4/ip_forward")]);
        // Container root without CAP_NET_ADMIN: no; with every capability: yes.
        Assert.Equal(EPERM, fs.Write("proc/sys/net/ipv4/ip_forward", RootNoCaps, "1"u8));
        Assert.Equal(0, fs.Write("proc/sys/net/ipv4/ip_forward", Root, "1"u8));
    }

    [Fact]
    public void NamespacedEntriesOtherMayNotRead_NeedTheCapability()
    {
        var ns = new RecordingNamespaces();
        ns.Private.Add("net/ipv6/conf/all/stable_secret");
        ns.Values[(1000, "net/ipv6/conf/all/stable_secret")] = "secret\n";
        ns.Values[(1001, "net/ipv6/conf/all/stable_secret")] = "secret\n";
        var fs = _fx.Fs(_fx.V1(new()), ns: ns);
        Assert.Equal(0, fs.Read("proc/sys/net/ipv6/conf/all/stable_secret", Root, out _));
        Assert.Equal(EPERM, fs.Read("proc/sys/net/ipv6/conf/all/stable_secret", RootNoCaps, out var none));
        Assert.Empty(none);
    }

    [Fact]
    public void HugeWritesAreCutToAPage_AsTheKernelDoes()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        var data = new byte[128 * 1024];
        data.AsSpan().Fill((byte)' ');
        data[0] = (byte)'5';
        Assert.Equal(0, fs.Write("proc/sys/kernel/panic", Root, data));
        data[5000] = (byte)'x';   // beyond the first page: not looked at
        Assert.Equal(0, fs.Write("proc/sys/kernel/panic", Root, data));
        Assert.Equal(0, fs.Read("proc/sys/kernel/panic", Root, out var v));
        Assert.Equal("5\n", Encoding.ASCII.GetString(v));
    }

    // ------------------------------------------------------------------ the mirror keeps the host's owner semantics

    [Fact]
    public void HostRootOnlyFiles_AreNeitherShownReadableNorReadable()
    {
        _fx.Write("proc/sys/vm/mmap_rnd_bits", "28\n");
        _fx.Write("sys/kernel/slab/kmalloc-64/objects", "1234\n");
        _fx.Write("sys/kernel/slab/kmalloc-64/order", "0\n");
        _fx.Write("sys/kernel/secret-dir/file", "x\n");
        File.SetUnixFileMode(_fx.Proc + "/sys/vm/mmap_rnd_bits", UnixFileMode.UserRead | UnixFileMode.UserWrite);   // 0600
        File.SetUnixFileMode(_fx.Sys + "/kernel/slab/kmalloc-64/objects", UnixFileMode.UserRead);                  // 0400
        File.SetUnixFileMode(_fx.Sys + "/kernel/secret-dir", UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.UserWrite); // 0700
        var fs = _fx.Fs(_fx.V1(new()));
        foreach (var path in new[] { "proc/sys/vm/mmap_rnd_bits", "sys/kernel/slab/kmalloc-64/objects" })
        {
            Assert.Equal(0, fs.Lookup(path, Root, out var node));
            Assert.Equal(0u, node.Mode);                       // what "other" gets on the host: nothing
            Assert.Equal(EACCES, fs.Read(path, Root, out var c));
            Assert.Empty(c);
            Assert.Equal(EACCES, fs.Open(path, Root, out var content));
            Assert.Null(content);
        }
        // Below a directory "other" may not search: not even a lookup; and no listing of it.
        Assert.Equal(EACCES, fs.Lookup("sys/kernel/secret-dir/file", Root, out _));
        Assert.Equal(EACCES, fs.Read("sys/kernel/secret-dir/file", Root, out _));
        Assert.Equal(EACCES, fs.List("sys/kernel/secret-dir", Root, out _));
        Assert.Equal(0, fs.Lookup("sys/kernel/secret-dir", Root, out var dir));
        Assert.Equal(0u, dir.Mode);
        // Ordinary 0444/0644 files still read, shown 0444.
        Assert.Equal(0, fs.Lookup("sys/kernel/slab/kmalloc-64/order", Root, out var order));
        Assert.Equal(0x124u, order.Mode);
        Assert.Equal(0, fs.Read("sys/kernel/slab/kmalloc-64/order", Root, out var o));
        Assert.Equal("0\n", Encoding.ASCII.GetString(o));
        Assert.Equal(0, fs.List("sys/kernel/slab/kmalloc-64", Root, out var entries));
        Assert.Equal(["objects", "order"], entries.Select(e => e.Name));
        Assert.Equal(0, fs.Read("proc/sys/kernel/ostype", Root, out _));
    }

    [Fact]
    public void LargeMirroredFiles_AreServedByOffsetWithTheirHostSize()
    {
        var data = new byte[200_000];
        new Random(3).NextBytes(data);
        Directory.CreateDirectory(_fx.Sys + "/kernel/btf");
        File.WriteAllBytes(_fx.Sys + "/kernel/btf/vmlinux", data);
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal(0, fs.Lookup("sys/kernel/btf/vmlinux", Root, out var node));
        Assert.Equal(data.Length, node.Size);          // known without reading it
        Assert.Equal(EFBIG, fs.Read("sys/kernel/btf/vmlinux", Root, out _));   // never read whole
        Assert.Equal(0, fs.Open("sys/kernel/btf/vmlinux", Root, out var content));
        using (content)
        {
            Assert.Null(content!.Snapshot);
            Assert.NotNull(content.File);
            Assert.Equal(data.Length, content.Length);
        }
        // A small one is a snapshot.
        Assert.Equal(0, fs.Lookup("sys/kernel/uevent_seqnum", Root, out var small));
        Assert.Equal(-1, small.Size);
        Assert.Equal(0, fs.Open("sys/kernel/uevent_seqnum", Root, out var snap));
        Assert.Equal("1234\n", Encoding.ASCII.GetString(snap!.Snapshot!));
    }
}
