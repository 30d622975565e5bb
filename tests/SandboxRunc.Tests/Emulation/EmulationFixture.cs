// A fake host for the emulation tests: a temp dir with proc/ (meminfo, stat, cpuinfo, sys/...), sys/
// (kernel, module/nf_conntrack) and cgroup dirs (v1 per controller, or one v2 dir) filled with fixture text.
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Tests.Emulation;

public sealed class EmulationFixture : IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("emu-").FullName;
    public string Proc => Root + "/proc";
    public string Sys => Root + "/sys";
    public long Now = 10_000_000_000_000;   // fake CLOCK_BOOTTIME, ns

    public const string Meminfo = """
        MemTotal:       24684092 kB
        MemFree:        24395968 kB
        MemAvailable:   24339596 kB
        Buffers:            3004 kB
        Cached:            31856 kB
        SwapCached:            0 kB
        Active:            16000 kB
        Inactive:          15092 kB
        Active(anon):        940 kB
        Inactive(anon):     4232 kB
        Active(file):      15060 kB
        Inactive(file):    10860 kB
        SwapTotal:       1048572 kB
        SwapFree:        1048572 kB
        Shmem:              8940 kB
        SReclaimable:     139492 kB
        HugePages_Total:       0
        Hugepagesize:       2048 kB

        """;

    public const string Stat = """
        cpu  1003491 0 115643 1087201 3256 0 1807 2568 0 0
        cpu0 497840 0 56583 548779 1965 0 601 1286 0 0
        cpu1 505650 0 59059 538421 1290 0 1206 1282 0 0
        intr 13846993 0 0 0
        ctxt 35356996
        btime 1795885589
        processes 510724
        procs_running 3
        procs_blocked 0
        softirq 5911136 0 618650 11799 46105 917680 0 3 947464 0 3369435

        """;

    public static string CpuBlock(int n) => $"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nsiblings\t: 2\ncpu cores\t: 2\nflags\t\t: fpu vme\n\n";

    public EmulationFixture()
    {
        Write("proc/meminfo", Meminfo);
        Write("proc/stat", Stat);
        Write("proc/cpuinfo", CpuBlock(0) + CpuBlock(1));
        Write("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sda2 partition 1048572 0 -2\n");
        Write("proc/loadavg", "0.50 0.25 0.10 3/179 25020\n");
        Write("proc/diskstats", "   8       0 sda 100 0 800 10 50 0 400 5 0 20 15 0 0 0 0 0 0\n 253       0 dm-0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
        Write("proc/sys/kernel/panic", "0\n");
        Write("proc/sys/kernel/printk", "4\t4\t1\t7\n");
        Write("proc/sys/kernel/pid_max", "4194304\n");
        Write("proc/sys/kernel/kptr_restrict", "0\n");
        Write("proc/sys/kernel/dmesg_restrict", "0\n");
        Write("proc/sys/kernel/yama/ptrace_scope", "1\n");
        Write("proc/sys/kernel/ostype", "Linux\n");
        Write("proc/sys/kernel/hostname", "host-name\n");
        Write("proc/sys/kernel/ns_last_pid", "25020\n");
        Write("proc/sys/vm/overcommit_memory", "0\n");
        Write("proc/sys/fs/file-max", "1000000\n");
        Write("proc/sys/net/ipv4/ip_forward", "0\n");
        Write("proc/sys/user/max_user_namespaces", "96365\n");
        Write("sys/kernel/uevent_seqnum", "1234\n");
        Write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
        Write("sys/kernel/debug/secret", "x\n");
        Write("sys/module/nf_conntrack/parameters/hashsize", "65536\n");
        Write("sys/module/nf_conntrack/parameters/acct", "0\n");
    }

    // User namespaces by hand: the host's, the container's (made by host root) and one nested in it by the
    // container's root (unshare -U -r).
    public static readonly UserNamespaceFacts HostNs = new(new FileId(4, 0xEFFFFFFD), 0);
    public static readonly UserNamespaceFacts ContainerNs = new(new FileId(4, 4026532001), 0);
    public static readonly UserNamespaceFacts NestedNs = new(new FileId(4, 4026532002), 100000);
    public static readonly UserNamespaceChain HostChain = new([HostNs]);
    public static readonly UserNamespaceChain ContainerChain = new([ContainerNs, HostNs]);
    public static readonly UserNamespaceChain NestedChain = new([NestedNs, ContainerNs, HostNs]);
    public const ulong AllCaps = 0x1ffffffffff;

    /// <summary>Callers by pid: 1000 container root with every capability, 1001 without any, 1002 with CAP_NET_ADMIN
    /// only, 1003 root of a nested user namespace (all capabilities there, none in the container's).</summary>
    public readonly Dictionary<int, CallerCredentials> Callers = new()
    {
        [1000] = new(ContainerChain, 100000, AllCaps),
        [1001] = new(ContainerChain, 100000, 0),
        [1002] = new(ContainerChain, 100000, 1UL << 12),
        [1003] = new(NestedChain, 100000, AllCaps),
    };

    public void Write(string rel, string text, string? under = null)
    {
        string path = (under ?? Root) + "/" + rel;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
    }

    /// <summary>v1 cgroup dirs with the given files (controller -> file -> text).</summary>
    public Dictionary<string, string> V1(Dictionary<string, Dictionary<string, string>> files)
    {
        var paths = new Dictionary<string, string>();
        foreach (var c in new[] { "memory", "cpu", "cpuacct", "cpuset", "blkio", "pids" })
        {
            string dir = Root + "/cgroup/" + c + "/ctr";
            Directory.CreateDirectory(dir);
            paths[c] = dir;
            if (files.TryGetValue(c, out var fs)) foreach (var (f, t) in fs) File.WriteAllText(dir + "/" + f, t);
        }
        return paths;
    }

    public Dictionary<string, string> V2(Dictionary<string, string> files)
    {
        string dir = Root + "/cgroup/unified/ctr";
        Directory.CreateDirectory(dir);
        foreach (var (f, t) in files) File.WriteAllText(dir + "/" + f, t);
        return new() { [""] = dir };
    }

    public ContainerFileSystem Fs(IReadOnlyDictionary<string, string> cgroups, string id = "c1",
        INamespacedSysctls? ns = null, IHostSysctlWriter? host = null) =>
        new(new ContainerView(id, 1_000_000_000_000, 100000, 100000, cgroups)
        {
            ProcRoot = Proc, SysRoot = Sys, BoottimeNs = () => Now, Namespaced = ns ?? new RecordingNamespaces(), HostWriter = host,
            UserNs = ContainerChain, Credentials = c => Callers.TryGetValue(c.Pid, out var credentials) ? credentials : null,
        });

    public void Dispose()
    {
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}

/// <summary>
/// Namespaced access that answers from a dictionary per pid and records calls. The caller's namespaces are
/// owned by <see cref="Owners"/>[pid] (the container's user namespace unless set), which is what the
/// authorizers are asked about.
/// </summary>
public sealed class RecordingNamespaces : INamespacedSysctls
{
    public readonly List<(int Pid, NamespaceKind Ns, string Key, string Op)> Calls = [];
    public readonly Dictionary<(int, string), string> Values = [];
    public readonly Dictionary<int, UserNamespaceChain> Owners = [];
    /// <summary>Entries "other" may not read (the authorizer decides).</summary>
    public readonly HashSet<string> Private = [];

    UserNamespaceChain OwnerOf(int pid) => Owners.TryGetValue(pid, out var o) ? o : EmulationFixture.ContainerChain;

    public int Stat(FuseCaller caller, NamespaceKind ns, string key, out FuseNodeKind kind, out uint mode)
    {
        lock (Calls) Calls.Add((caller.Pid, ns, key, "stat"));
        kind = FuseNodeKind.File;
        mode = Private.Contains(key) ? 0x180u : 0x1A4;
        return Values.ContainsKey((caller.Pid, key)) ? 0 : -2;
    }

    public int List(FuseCaller caller, NamespaceKind ns, string key, out List<(string Name, FuseNodeKind Kind)> entries)
    {
        lock (Calls) Calls.Add((caller.Pid, ns, key, "list"));
        entries = [("ns-entry", FuseNodeKind.File)];
        return 0;
    }

    public int Read(FuseCaller caller, NamespaceKind ns, string key, NamespaceAuthorizer mayReadPrivate, out byte[] content)
    {
        lock (Calls) Calls.Add((caller.Pid, ns, key, "read"));
        content = [];
        if (!Values.TryGetValue((caller.Pid, key), out var v)) return -2;
        if (Private.Contains(key) && mayReadPrivate(OwnerOf(caller.Pid)) is var r && r != 0) return r;
        content = System.Text.Encoding.ASCII.GetBytes(v);
        return 0;
    }

    public int Write(FuseCaller caller, NamespaceKind ns, string key, ReadOnlySpan<byte> data, NamespaceAuthorizer authorize)
    {
        lock (Calls) Calls.Add((caller.Pid, ns, key, "write"));
        int r = authorize(OwnerOf(caller.Pid));
        if (r != 0) return r;
        if (caller.Request is { } request && !request.Commit()) return -4;
        Values[(caller.Pid, key)] = System.Text.Encoding.ASCII.GetString(data);
        return 0;
    }

    public void Dispose() { }
}

/// <summary>A host /proc/sys that lives in memory and records writes.</summary>
public sealed class FakeHostSysctls : IHostSysctlWriter
{
    public readonly Dictionary<string, string> Values = [];
    public readonly List<(string Key, string Value)> Writes = [];

    public int Read(string key, out string value) => Values.TryGetValue(key, out value!) ? 0 : -2;

    public int Write(string key, string value)
    {
        Writes.Add((key, value));
        Values[key] = value + "\n";
        return 0;
    }
}
