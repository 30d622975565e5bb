// /proc/sys of the emulation from a fixture tree, without root: classification, range checks, per-container
// isolation, "max wins", write permission, and the caller's namespaces for namespaced entries.
using System.Text;
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using Xunit;

namespace SandboxRunc.Tests.Emulation;

public class EmulationSysctlTests : IDisposable
{
    const int EACCES = -13, EPERM = -1, EINVAL = -22, ENOENT = -2;
    readonly EmulationFixture _fx = new();
    static readonly FuseCaller Root = new(1000, 100000, 100000);        // container root, all caps
    static readonly FuseCaller RootNoCaps = new(1001, 100000, 100000);
    static readonly FuseCaller RootNetAdmin = new(1002, 100000, 100000);
    static readonly FuseCaller NotRoot = new(1000, 100001, 100001);
    static readonly FuseCaller Unknown = new(0, 100000, 100000);

    public void Dispose() => _fx.Dispose();

    static string Read(ContainerFileSystem fs, string path, FuseCaller? caller = null)
    {
        Assert.Equal(0, fs.Read(path, caller ?? Root, out var bytes));
        return Encoding.ASCII.GetString(bytes);
    }

    static int Write(ContainerFileSystem fs, string path, string value, FuseCaller? caller = null) =>
        fs.Write(path, caller ?? Root, Encoding.ASCII.GetBytes(value));

    [Theory]
    [InlineData("vm/overcommit_memory", "2\n", 0, "2\n")]
    [InlineData("vm/overcommit_memory", "3\n", EINVAL, null)]
    [InlineData("vm/overcommit_memory", "-1", EINVAL, null)]
    [InlineData("vm/overcommit_memory", "abc", EINVAL, null)]
    [InlineData("vm/overcommit_memory", "1x", EINVAL, null)]
    [InlineData("vm/overcommit_memory", "", EINVAL, null)]
    [InlineData("vm/overcommit_memory", "  1  \n", 0, "1\n")]
    [InlineData("kernel/kptr_restrict", "2", 0, "2\n")]
    [InlineData("kernel/kptr_restrict", "3", EINVAL, null)]
    [InlineData("kernel/dmesg_restrict", "1", 0, "1\n")]
    [InlineData("kernel/dmesg_restrict", "2", EINVAL, null)]
    [InlineData("kernel/yama/ptrace_scope", "3", 0, "3\n")]
    [InlineData("kernel/yama/ptrace_scope", "4", EINVAL, null)]
    [InlineData("kernel/pid_max", "300", EINVAL, null)]
    [InlineData("kernel/pid_max", "301", 0, "301\n")]
    [InlineData("kernel/pid_max", "4194305", EINVAL, null)]
    [InlineData("kernel/printk", "3", 0, "3\t4\t1\t7\n")]
    [InlineData("kernel/printk", "1 2 3 4", 0, "1\t2\t3\t4\n")]
    [InlineData("kernel/printk", "1 2 3 4 5", 0, "1\t2\t3\t4\n")]
    [InlineData("kernel/panic", "-1", 0, "-1\n")]
    [InlineData("kernel/panic", "2147483648", EINVAL, null)]
    [InlineData("fs/file-max", "9223372036854775807", 0, "9223372036854775807\n")]
    [InlineData("fs/file-max", "-5", EINVAL, null)]
    public void RangeChecks(string key, string written, int expected, string? after)
    {
        var fs = _fx.Fs(_fx.V1(new()));
        string before = Read(fs, "proc/sys/" + key);
        Assert.Equal(expected, Write(fs, "proc/sys/" + key, written));
        Assert.Equal(after ?? before, Read(fs, "proc/sys/" + key));
    }

    [Fact]
    public void PtraceScopeThreeIsPermanent()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal(0, Write(fs, "proc/sys/kernel/yama/ptrace_scope", "3"));
        Assert.Equal(EINVAL, Write(fs, "proc/sys/kernel/yama/ptrace_scope", "1"));
        Assert.Equal(0, Write(fs, "proc/sys/kernel/yama/ptrace_scope", "3"));
    }

    [Fact]
    public void PerContainerValuesAreIsolatedBetweenContainers_AndNeverReachTheHost()
    {
        var host = new FakeHostSysctls();
        host.Values["vm/overcommit_memory"] = "0\n";
        var a = _fx.Fs(_fx.V1(new()), "a", host: host);
        var b = _fx.Fs(_fx.V1(new()), "b", host: host);
        Assert.Equal("0\n", Read(a, "proc/sys/vm/overcommit_memory"));
        Assert.Equal(0, Write(a, "proc/sys/vm/overcommit_memory", "1"));
        Assert.Equal(0, Write(b, "proc/sys/kernel/panic", "10"));
        Assert.Equal("1\n", Read(a, "proc/sys/vm/overcommit_memory"));
        Assert.Equal("0\n", Read(b, "proc/sys/vm/overcommit_memory"));
        Assert.Equal("0\n", Read(a, "proc/sys/kernel/panic"));
        Assert.Equal("10\n", Read(b, "proc/sys/kernel/panic"));
        Assert.Equal("0\n", File.ReadAllText(_fx.Proc + "/sys/vm/overcommit_memory"));
        Assert.Empty(host.Writes);
    }

    [Fact]
    public void MaxWinsRaisesTheHost_NeverLowersIt()
    {
        var host = new FakeHostSysctls();
        host.Values["fs/file-max"] = "1000000\n";
        var fs = _fx.Fs(_fx.V1(new()), host: host);
        Assert.Equal(0, Write(fs, "proc/sys/fs/file-max", "500000"));
        Assert.Empty(host.Writes);
        Assert.Equal("500000\n", Read(fs, "proc/sys/fs/file-max"));   // the container still sees its own value
        Assert.Equal(0, Write(fs, "proc/sys/fs/file-max", "2000000"));
        Assert.Equal([("fs/file-max", "2000000")], host.Writes);
        Assert.Equal(0, Write(fs, "proc/sys/fs/file-max", "1500000"));
        Assert.Single(host.Writes);
        Assert.Equal("2000000\n", host.Values["fs/file-max"]);
        Assert.Equal("1500000\n", Read(fs, "proc/sys/fs/file-max"));
    }

    [Fact]
    public void MaxWinsWithoutAHostWriterNeverTouchesTheHost()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal(0, Write(fs, "proc/sys/fs/file-max", "9000000"));
        Assert.Equal("1000000\n", File.ReadAllText(_fx.Proc + "/sys/fs/file-max"));
    }

    [Fact]
    public void WritesNeedTheContainersRootAndTheCapability()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal(EACCES, Write(fs, "proc/sys/kernel/panic", "5", NotRoot));
        Assert.Equal(EPERM, Write(fs, "proc/sys/kernel/panic", "5", RootNoCaps));
        Assert.Equal(EPERM, Write(fs, "proc/sys/kernel/panic", "5", RootNetAdmin));       // needs CAP_SYS_ADMIN
        Assert.Equal(EACCES, Write(fs, "proc/sys/kernel/panic", "5", Unknown));
        Assert.Equal("0\n", Read(fs, "proc/sys/kernel/panic"));
        Assert.Equal(0, Write(fs, "proc/sys/kernel/panic", "5", Root));
        Assert.Equal(0, Write(fs, "proc/sys/net/ipv4/ip_forward", "1", RootNetAdmin));   // net.* needs CAP_NET_ADMIN
        Assert.Equal(EPERM, Write(fs, "proc/sys/net/ipv4/ip_forward", "1", RootNoCaps));
    }

    [Fact]
    public void ReadOnlyMirror_WriteIsEacces_Mode0444()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal("Linux\n", Read(fs, "proc/sys/kernel/ostype"));
        Assert.Equal(EACCES, Write(fs, "proc/sys/kernel/ostype", "BSD"));
        Assert.Equal(0, fs.Lookup("proc/sys/kernel/ostype", Root, out var ro));
        Assert.Equal(0x124u, ro.Mode);
        Assert.Equal(0, fs.Lookup("proc/sys/kernel/panic", Root, out var rw));
        Assert.Equal(0x1A4u, rw.Mode);
        Assert.Equal(0, fs.Lookup("proc/sys/kernel", Root, out var dir));
        Assert.Equal((FuseNodeKind.Directory, 0x16Du), (dir.Kind, dir.Mode));
        Assert.Equal(ENOENT, fs.Lookup("proc/sys/kernel/nope", Root, out _));
    }

    [Fact]
    public void NamespacedEntries_UnknownCallerIsEacces_NeverTheHostsValue()
    {
        var ns = new RecordingNamespaces();
        var fs = _fx.Fs(_fx.V1(new()), ns: ns);
        Assert.Equal(EACCES, fs.Read("proc/sys/net/ipv4/ip_forward", Unknown, out var c1));
        Assert.Empty(c1);
        Assert.Equal(EACCES, fs.Read("proc/sys/kernel/hostname", Unknown, out _));
        Assert.Equal(EACCES, fs.Lookup("proc/sys/net/ipv4", Unknown, out _));
        Assert.Equal(EACCES, fs.List("proc/sys/net", Unknown, out _));
        Assert.Equal(EACCES, fs.Write("proc/sys/net/ipv4/ip_forward", Unknown, "1"u8));
        Assert.Empty(ns.Calls);
        // ns_last_pid is per pid namespace, which a thread cannot enter: refused for everyone.
        Assert.Equal(EACCES, fs.Read("proc/sys/kernel/ns_last_pid", Root, out _));
    }

    [Fact]
    public void NamespacedEntries_GoToTheCallersNamespaces()
    {
        var ns = new RecordingNamespaces();
        ns.Values[(1000, "kernel/hostname")] = "box\n";
        ns.Values[(1000, "net/ipv4/ip_forward")] = "0\n";
        var fs = _fx.Fs(_fx.V1(new()), ns: ns);
        Assert.Equal("box\n", Read(fs, "proc/sys/kernel/hostname"));
        Assert.Equal(0, Write(fs, "proc/sys/net/ipv4/ip_forward", "1"));
        Assert.Equal("1", Read(fs, "proc/sys/net/ipv4/ip_forward"));
        Assert.Equal(0, fs.List("proc/sys/net/ipv4", Root, out var list));
        Assert.Equal([("ns-entry", FuseNodeKind.File)], list);
        Assert.Contains((1000, NamespaceKind.Uts, "kernel/hostname", "read"), ns.Calls);
        Assert.Contains((1000, NamespaceKind.Net, "net/ipv4/ip_forward", "write"), ns.Calls);
        Assert.Equal(0, Write(fs, "proc/sys/kernel/shmmax", "4096"));
        Assert.Contains((1000, NamespaceKind.Ipc, "kernel/shmmax", "write"), ns.Calls);
    }

    [Fact]
    public void ConntrackMaxIsPerContainer_NotNamespaced()
    {
        Assert.Equal(SysctlKind.PerContainer, Sysctls.Classify("net/netfilter/nf_conntrack_max").Kind);
        Assert.Equal(SysctlKind.Namespaced, Sysctls.Classify("net/netfilter/nf_conntrack_tcp_timeout_established").Kind);
        Assert.Equal(SysctlKind.Namespaced, Sysctls.Classify("fs/mqueue/msg_max").Kind);
        Assert.Equal(NamespaceKind.Ipc, Sysctls.Classify("fs/mqueue/msg_max").Namespace);
        Assert.Equal(SysctlKind.Mirror, Sysctls.Classify("kernel/ostype").Kind);
    }

    [Fact]
    public void UserNamespaceLimitsStartAtAFreshUserNamespacesValue()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal("2147483647\n", Read(fs, "proc/sys/user/max_user_namespaces"));
        Assert.Equal(0, Write(fs, "proc/sys/user/max_user_namespaces", "10"));
        Assert.Equal("10\n", Read(fs, "proc/sys/user/max_user_namespaces"));
        Assert.Equal(ENOENT, fs.Read("proc/sys/user/max_nothing", Root, out _));
    }

    [Fact]
    public void ListingOfProcSysMirrorsTheHostTree()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Assert.Equal(0, fs.List("proc/sys", Root, out var top));
        Assert.Equal(new[] { "fs", "kernel", "net", "user", "vm" }, top.Select(e => e.Name));
        Assert.All(top, e => Assert.Equal(FuseNodeKind.Directory, e.Kind));
        Assert.Equal(0, fs.List("proc/sys/kernel", Root, out var kernel));
        Assert.Equal(new[] { "dmesg_restrict", "hostname", "kptr_restrict", "ns_last_pid", "ostype", "panic", "pid_max", "printk", "yama" }, kernel.Select(e => e.Name));
        Assert.Contains(("yama", FuseNodeKind.Directory), kernel);
        Assert.Contains(("panic", FuseNodeKind.File), kernel);
    }

    [Fact]
    public void ConntrackHashsizeIsPerContainer_OtherParametersReadOnly()
    {
        var a = _fx.Fs(_fx.V1(new()), "a");
        var b = _fx.Fs(_fx.V1(new()), "b");
        const string p = "sys/module/nf_conntrack/parameters/";
        Assert.Equal("65536\n", Read(a, p + "hashsize"));
        Assert.Equal(0, Write(a, p + "hashsize", "131072"));
        Assert.Equal(EINVAL, Write(a, p + "hashsize", "0"));
        Assert.Equal(EPERM, Write(a, p + "hashsize", "1", RootNoCaps));
        Assert.Equal("131072\n", Read(a, p + "hashsize"));
        Assert.Equal("65536\n", Read(b, p + "hashsize"));
        Assert.Equal("65536\n", File.ReadAllText(_fx.Sys + "/module/nf_conntrack/parameters/hashsize"));
        Assert.Equal(EACCES, Write(a, p + "acct", "1"));
        Assert.Equal(0, a.Lookup(p + "hashsize", Root, out var n));
        Assert.Equal(0x1A4u, n.Mode);
        Assert.Equal(0, a.Lookup(p + "acct", Root, out var n2));
        Assert.Equal(0x124u, n2.Mode);
    }

    [Fact]
    public void ConcurrentWritersAndReaders()
    {
        var fs = _fx.Fs(_fx.V1(new()));
        Parallel.For(0, 200, i =>
        {
            if (i % 2 == 0) Assert.Equal(0, Write(fs, "proc/sys/kernel/panic", (i % 7).ToString()));
            else Assert.Matches("^[0-6]\n$", Read(fs, "proc/sys/kernel/panic"));
        });
    }
}
