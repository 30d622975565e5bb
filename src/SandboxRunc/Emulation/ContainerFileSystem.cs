// The emulated /proc and /sys of one container, served to the FUSE server through IFuseFileSystem. The tree:
//
//   proc/{uptime,swaps,meminfo,cpuinfo,stat,loadavg,diskstats}   from the host's text + the container's cgroup (ProcText)
//   proc/sys/**                                                  the host's /proc/sys, entry by entry as Sysctls classifies it
//   sys/kernel/**                                                read-only mirror; config, debug, tracing, security empty
//   sys/devices/virtual/dmi/id/product_uuid                      per container, derived from its id
//   sys/module/nf_conntrack/parameters/**                        read-only mirror; hashsize per container
//
// Every node is owned by the container's root (host uid/gid), so inside the user namespace it is root's.
// Modes: fixed directories 0555, generated files 0444, per-container writable files 0644, namespaced
// sysctls the mode the kernel shows in the caller's namespace.
//
// The mirrors (/sys/kernel, /proc/sys entries that stay the host's, the nf_conntrack parameters) keep the
// host's owner semantics: the container's root is never host root, so it gets what an unprivileged host
// user gets, the host node's "other" bits. Shown modes say so (a 0600 host file shows 0000), and since
// container root holds CAP_DAC_OVERRIDE over nodes it owns, which makes the kernel's default_permissions
// check pass whatever the mode, the server enforces it itself: a lookup needs "other" search permission
// on every host directory from the mirror's root down, a read or a listing "other" read permission on the
// node (-EACCES). Large mirrored files (sysfs binary attributes such as btf/vmlinux) are served by offset
// from the host file (FuseContent.Streamed), never copied whole; other contents are snapshots, capped.
//
// Writes: only from the container's root uid (-EACCES otherwise), holding CAP_NET_ADMIN (net/*, hashsize)
// or CAP_SYS_ADMIN (the rest) over the user namespace the write touches (-EPERM otherwise, see
// Namespaces/NamespaceCapability.cs): the container's own user namespace for per-container values and
// "max wins" host raises, the user namespace owning the caller's net/uts/ipc namespace for namespaced
// sysctls. A write to a read-only entry is -EACCES. A write's side effect happens only while its caller
// still waits (IFuseRequest.Commit). Thread-safe; throws nothing.
using System.Security.Cryptography;
using System.Text;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Emulation;

public sealed class ContainerFileSystem : IFuseFileSystem, IDisposable
{
    const uint DirMode = 0x16D /*0555*/, RoMode = 0x124 /*0444*/, RwMode = 0x1A4 /*0644*/;
    /// <summary>The kernel reads at most a page less one of a sysctl write (proc_dointvec and friends); so do we.</summary>
    const int MaxWrite = 4095;
    const string ConntrackParams = "sys/module/nf_conntrack/parameters";
    static readonly string[] HiddenKernelDirs = ["config", "debug", "security", "tracing"];
    static readonly string[] ProcFiles = ["cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps", "uptime"];

    readonly ContainerView _view;
    readonly INamespacedSysctls _ns;
    readonly bool _ownsNs;
    /// <summary>Made on the first read: its SHA-1 loads OpenSSL (libssl, libcrypto: ~10 ms and some private memory) into the process.</summary>
    byte[]? _productUuid;
    readonly object _valuesLock = new();
    readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);   // per-container sysctls ("module/..." for hashsize)

    // Cheap-uptime cache: visible CPU count and the container's CPU time, refreshed at most every 500 ms.
    readonly object _cpuLock = new();
    long _cpuAt = long.MinValue, _cpuUsageNs;
    int _cpuCount = 1;
    long _lastIdleNs;

    // The host's cpuinfo does not change while we run (CPU hotplug aside): reread at most every second.
    string? _cpuinfo;
    long _cpuinfoAt = long.MinValue;

    public ContainerFileSystem(ContainerView view)
    {
        _view = view;
        _ownsNs = view.Namespaced is null;
        _ns = view.Namespaced ?? new SetnsSysctls(view.NamespaceTimeout);
    }

    public void Dispose()
    {
        if (_ownsNs) _ns.Dispose();
    }

    /// <summary>A name-based (version 5 style, SHA-1) UUID from the container id: unique per container,
    /// stable for its life, and not revealing the host's.</summary>
    public static string ProductUuid(string containerId)
    {
        // Namespace: a fixed UUID for "sandbox-runc product_uuid".
        ReadOnlySpan<byte> ns = [0x6b, 0x1f, 0x2e, 0x8a, 0x3c, 0x55, 0x4d, 0x0e, 0x9a, 0x41, 0x7d, 0x2b, 0x0c, 0x93, 0xe4, 0x17];
        var input = new byte[16 + Encoding.UTF8.GetByteCount(containerId)];
        ns.CopyTo(input);
        Encoding.UTF8.GetBytes(containerId, input.AsSpan(16));
        Span<byte> h = stackalloc byte[20];
        SHA1.HashData(input, h);
        h[6] = (byte)((h[6] & 0x0F) | 0x50);
        h[8] = (byte)((h[8] & 0x3F) | 0x80);
        return Convert.ToHexStringLower(h[..4]) + "-" + Convert.ToHexStringLower(h[4..6]) + "-" + Convert.ToHexStringLower(h[6..8])
            + "-" + Convert.ToHexStringLower(h[8..10]) + "-" + Convert.ToHexStringLower(h[10..16]);
    }

    FuseNode Node(FuseNodeKind kind, uint mode) => new(kind, mode, _view.RootUid, _view.RootGid);

    static bool Under(string path, string dir, out string rest)
    {
        rest = "";
        if (path == dir) return true;
        if (path.Length > dir.Length && path[dir.Length] == '/' && path.StartsWith(dir, StringComparison.Ordinal))
        {
            rest = path[(dir.Length + 1)..];
            return true;
        }
        return false;
    }

    /// <summary>Paths come from the FUSE server already split by component; refuse anything that could climb.</summary>
    static bool BadPath(string path) =>
        path.Contains("..", StringComparison.Ordinal) || path.Contains("//", StringComparison.Ordinal)
        || path.StartsWith('/') || path.EndsWith('/') || path.Contains('\0');

    static bool IsFixedDir(string path) => path is "" or "proc" or "sys" or "sys/devices" or "sys/devices/virtual"
        or "sys/devices/virtual/dmi" or "sys/devices/virtual/dmi/id" or "sys/module" or "sys/module/nf_conntrack";

    // ---------------------------------------------------------------- Lookup

    public int Lookup(string path, FuseCaller caller, out FuseNode node)
    {
        node = default;
        try { return BadPath(path) ? -Libc.ENOENT : LookupCore(path, caller, out node); }
        catch (Exception) { return -Libc.EIO; }
    }

    int LookupCore(string path, FuseCaller caller, out FuseNode node)
    {
        node = default;
        if (IsFixedDir(path)) { node = Node(FuseNodeKind.Directory, DirMode); return 0; }
        if (path.StartsWith("proc/", StringComparison.Ordinal) && Array.IndexOf(ProcFiles, path[5..]) >= 0)
        { node = Node(FuseNodeKind.File, RoMode); return 0; }
        if (path == "sys/devices/virtual/dmi/id/product_uuid") { node = Node(FuseNodeKind.File, RoMode); return 0; }
        if (Under(path, "proc/sys", out var key)) return LookupSysctl(key, caller, out node);
        if (Under(path, "sys/kernel", out var rest))
        {
            int slash = rest.IndexOf('/');
            string first = slash < 0 ? rest : rest[..slash];
            if (Array.IndexOf(HiddenKernelDirs, first) >= 0)
            {
                if (slash >= 0) return -Libc.ENOENT;
                node = Node(FuseNodeKind.Directory, DirMode);
                return 0;
            }
            return MirrorNode(_view.SysRoot + "/kernel", rest, out node);
        }
        if (Under(path, ConntrackParams, out var param))
        {
            int r = MirrorNode(_view.SysRoot + "/module/nf_conntrack/parameters", param, out node);
            if (r == 0 && param == "hashsize") node = Node(FuseNodeKind.File, RwMode);
            return r;
        }
        return -Libc.ENOENT;
    }

    /// <summary>
    /// A host node of a mirror, as an unprivileged host user sees it: reachable only through directories
    /// "other" may search (-EACCES), shown with its "other" read (and, for directories, search) bits for
    /// everyone and no write bits. A large file reports its host size (it is served by offset).
    /// </summary>
    int MirrorNode(string hostRoot, string rest, out FuseNode node)
    {
        node = default;
        int r = Reach(hostRoot, rest, out string hostPath);
        if (r != 0) return r;
        r = HostFiles.Stat(hostPath, out var kind, out var mode, out long size);
        if (r != 0) return r;
        node = kind switch
        {
            FuseNodeKind.Directory => Node(kind, OtherBits(mode, 5)),
            FuseNodeKind.Symlink => Node(kind, 0x1FF),
            _ => Node(kind, OtherBits(mode, 4)) with { Size = size > HostFiles.StreamAbove ? size : -1 },
        };
        return 0;
    }

    /// <summary>The host mode's "other" bits among <paramref name="mask"/> (4 read, 1 search), for owner, group and other.</summary>
    internal static uint OtherBits(uint hostMode, uint mask)
    {
        uint o = hostMode & mask;
        return (o << 6) | (o << 3) | o;
    }

    /// <summary>
    /// The host path of <paramref name="rest"/> below a mirror's host root, if an unprivileged host user could
    /// reach it: the root and every directory on the way must grant "other" search permission; -EACCES
    /// otherwise (-ENOTDIR for a non-directory on the way). Nothing is followed: the kernel walks our tree
    /// itself, component by component, and never asks for a name below a symlink node.
    /// </summary>
    static int Reach(string hostRoot, string rest, out string hostPath)
    {
        hostPath = rest.Length == 0 ? hostRoot : hostRoot + "/" + rest;
        int r = Searchable(hostRoot);
        for (int slash = rest.IndexOf('/'); r == 0 && slash >= 0; slash = rest.IndexOf('/', slash + 1))
            r = Searchable(hostRoot + "/" + rest[..slash]);
        return r;
    }

    static int Searchable(string hostDir)
    {
        int r = HostFiles.Stat(hostDir, out var kind, out var mode);
        if (r != 0) return r;
        if (kind != FuseNodeKind.Directory) return -Libc.ENOTDIR;
        return (mode & 1) != 0 ? 0 : -Libc.EACCES;
    }

    /// <summary>A mirrored node an unprivileged host user may read (a file) or list (a directory): its host path, else -EACCES.</summary>
    static int Readable(string hostRoot, string rest, out string hostPath)
    {
        int r = Reach(hostRoot, rest, out hostPath);
        if (r != 0) return r;
        r = HostFiles.Stat(hostPath, out _, out var mode);
        if (r != 0) return r;
        return (mode & 4) != 0 ? 0 : -Libc.EACCES;
    }

    int LookupSysctl(string key, FuseCaller caller, out FuseNode node)
    {
        node = default;
        if (key.Length == 0) { node = Node(FuseNodeKind.Directory, DirMode); return 0; }
        if (key.Contains("..", StringComparison.Ordinal)) return -Libc.ENOENT;
        var c = Sysctls.Classify(key);
        switch (c.Kind)
        {
            case SysctlKind.Namespaced:
            {
                if (caller.Pid <= 0) return -Libc.EACCES;
                int r = _ns.Stat(caller, c.Namespace, key, out var kind, out var mode);
                if (r != 0) return r;
                node = Node(kind, kind == FuseNodeKind.Directory ? DirMode : mode & 0x1B6 /*rw bits only*/);
                return 0;
            }
            case SysctlKind.PerContainer:
            {
                int r = HostFiles.Stat(HostSysctlPath(key), out var kind, out _);
                if (r != 0) return r;
                node = Node(kind, kind == FuseNodeKind.Directory ? DirMode : RwMode);
                return 0;
            }
            default:
                return MirrorNode(_view.ProcRoot + "/sys", key, out node);
        }
    }

    string HostSysctlPath(string key) => _view.ProcRoot + "/sys/" + key;

    // ---------------------------------------------------------------- List

    public int List(string path, FuseCaller caller, out IReadOnlyList<(string Name, FuseNodeKind Kind)> entries)
    {
        entries = [];
        try
        {
            List<(string Name, FuseNodeKind Kind)> list = [];
            int r = BadPath(path) ? -Libc.ENOENT : ListCore(path, caller, out list);
            if (r == 0) entries = list;
            return r;
        }
        catch (Exception) { return -Libc.EIO; }
    }

    int ListCore(string path, FuseCaller caller, out List<(string Name, FuseNodeKind Kind)> list)
    {
        list = [];
        const FuseNodeKind D = FuseNodeKind.Directory, F = FuseNodeKind.File;
        switch (path)
        {
            case "": list = [("proc", D), ("sys", D)]; return 0;
            case "proc":
                foreach (var f in ProcFiles) list.Add((f, F));
                list.Add(("sys", D));
                return 0;
            case "sys": list = [("devices", D), ("kernel", D), ("module", D)]; return 0;
            case "sys/devices": list = [("virtual", D)]; return 0;
            case "sys/devices/virtual": list = [("dmi", D)]; return 0;
            case "sys/devices/virtual/dmi": list = [("id", D)]; return 0;
            case "sys/devices/virtual/dmi/id": list = [("product_uuid", F)]; return 0;
            case "sys/module": list = [("nf_conntrack", D)]; return 0;
            case "sys/module/nf_conntrack": list = [("parameters", D)]; return 0;
        }
        if (Under(path, "proc/sys", out var key))
        {
            if (key.Contains("..", StringComparison.Ordinal)) return -Libc.ENOENT;
            var c = key.Length == 0 ? new SysctlClass(SysctlKind.Mirror) : Sysctls.Classify(key);
            if (c.Kind == SysctlKind.Namespaced)
            {
                if (caller.Pid <= 0) return -Libc.EACCES;
                return _ns.List(caller, c.Namespace, key, out list);
            }
            return ListMirror(_view.ProcRoot + "/sys", key, out list);
        }
        if (Under(path, "sys/kernel", out var rest))
        {
            int slash = rest.IndexOf('/');
            string first = slash < 0 ? rest : rest[..slash];
            if (Array.IndexOf(HiddenKernelDirs, first) >= 0) return slash < 0 ? 0 : -Libc.ENOENT;
            int r = ListMirror(_view.SysRoot + "/kernel", rest, out list);
            if (r == 0 && rest.Length == 0)
            {
                list.RemoveAll(e => Array.IndexOf(HiddenKernelDirs, e.Name) >= 0);
                foreach (var h in HiddenKernelDirs) list.Add((h, D));
                list.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
            }
            return r;
        }
        if (Under(path, ConntrackParams, out var param))
            return ListMirror(_view.SysRoot + "/module/nf_conntrack/parameters", param, out list);
        return -Libc.ENOENT;
    }

    static int ListMirror(string hostRoot, string rest, out List<(string Name, FuseNodeKind Kind)> list)
    {
        list = [];
        int r = Readable(hostRoot, rest, out string hostPath);
        return r != 0 ? r : HostFiles.List(hostPath, out list);
    }

    // ---------------------------------------------------------------- Read

    public int Read(string path, FuseCaller caller, out byte[] content)
    {
        content = [];
        try { return BadPath(path) ? -Libc.ENOENT : ReadCore(path, caller, out content); }
        catch (Exception) { return -Libc.EIO; }
    }

    /// <summary>
    /// The resource views read several host and cgroup files each (memory.stat alone is ~40 lines): a
    /// view at most <see cref="ViewCacheMs"/> old is served as is. They are the same for every caller.
    /// </summary>
    const long ViewCacheMs = 50;
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, (byte[] Content, long At)> _views = new();

    int ReadCore(string path, FuseCaller caller, out byte[] content)
    {
        if (path is "proc/meminfo" or "proc/stat" or "proc/loadavg" or "proc/diskstats" or "proc/swaps")
        {
            long now = Environment.TickCount64;
            if (_views.TryGetValue(path, out var cached) && now - cached.At < ViewCacheMs)
            {
                content = cached.Content;
                return 0;
            }
            int r = ReadView(path, caller, out content);
            if (r == 0) _views[path] = (content, now);
            return r;
        }
        return ReadView(path, caller, out content);
    }

    int ReadView(string path, FuseCaller caller, out byte[] content)
    {
        content = [];
        switch (path)
        {
            case "proc/uptime": content = Uptime(); return 0;
            case "proc/swaps": return Text(ProcText.Swaps, "swaps", out content);
            case "proc/meminfo": return Text(h => ProcText.Meminfo(h, CgroupFacts.Memory(_view.Cgroup)), "meminfo", out content);
            case "proc/cpuinfo": return Cpuinfo(out content);
            case "proc/stat": return Stat(out content);
            case "proc/loadavg": return Text(h => ProcText.Loadavg(h, CgroupFacts.Tasks(_view.Cgroup)), "loadavg", out content);
            case "proc/diskstats": return Text(h => ProcText.Diskstats(h, CgroupFacts.Io(_view.Cgroup)), "diskstats", out content);
            case "sys/devices/virtual/dmi/id/product_uuid": content = _productUuid ??= Encoding.ASCII.GetBytes(ProductUuid(_view.Id) + "\n"); return 0;
        }
        if (IsFixedDir(path)) return -Libc.EISDIR;
        if (Under(path, "proc/sys", out var key))
        {
            if (key.Length == 0) return -Libc.EISDIR;
            if (key.Contains("..", StringComparison.Ordinal)) return -Libc.ENOENT;
            var c = Sysctls.Classify(key);
            switch (c.Kind)
            {
                case SysctlKind.Namespaced:
                {
                    if (caller.Pid <= 0) return -Libc.EACCES;
                    int cap = Sysctls.RequiredCapability(key);
                    // An entry "other" may not read (net.ipv6.conf.*.stable_secret, 0600): as the kernel, only to a
                    // holder of the capability over the namespace's owner (net_ctl_permissions gives it the owner's bits).
                    return _ns.Read(caller, c.Namespace, key, owner => MayActIn(caller, owner, cap), out content);
                }
                case SysctlKind.PerContainer:
                {
                    int r = CurrentValue(key, HostSysctlPath(key), c.Rule!, out var value);
                    if (r == 0) content = Encoding.ASCII.GetBytes(value);
                    return r;
                }
                case SysctlKind.Refused:
                    return -Libc.EACCES;
                default:
                    return ReadMirror(_view.ProcRoot + "/sys", key, out content);
            }
        }
        if (Under(path, "sys/kernel", out var rest))
        {
            int slash = rest.IndexOf('/');
            string first = slash < 0 ? rest : rest[..slash];
            if (rest.Length == 0 || Array.IndexOf(HiddenKernelDirs, first) >= 0) return slash < 0 ? -Libc.EISDIR : -Libc.ENOENT;
            return ReadMirror(_view.SysRoot + "/kernel", rest, out content);
        }
        if (Under(path, ConntrackParams, out var param))
        {
            string host = _view.SysRoot + "/module/nf_conntrack/parameters/" + param;
            if (param == "hashsize")
            {
                int r = CurrentValue("module/nf_conntrack/hashsize", host, Sysctls.ConntrackHashsize, out var value);
                if (r == 0) content = Encoding.ASCII.GetBytes(value);
                return r;
            }
            return param.Length == 0 ? -Libc.EISDIR : ReadMirror(_view.SysRoot + "/module/nf_conntrack/parameters", param, out content);
        }
        return -Libc.ENOENT;
    }

    /// <summary>A mirrored file read whole (small ones only: a larger one is -EFBIG here, <see cref="Open"/> streams it).</summary>
    static int ReadMirror(string hostRoot, string rest, out byte[] content)
    {
        content = [];
        int r = Readable(hostRoot, rest, out string hostPath);
        return r != 0 ? r : HostFiles.Read(hostPath, out content, HostFiles.MaxMirrored);
    }

    /// <summary>Whether a path is a file of a mirror (the host's node, read-only): its mirror's host root and the rest.</summary>
    bool MirrorOf(string path, out string hostRoot, out string rest)
    {
        hostRoot = "";
        if (Under(path, "sys/kernel", out rest) && rest.Length > 0)
        {
            int slash = rest.IndexOf('/');
            hostRoot = _view.SysRoot + "/kernel";
            return Array.IndexOf(HiddenKernelDirs, slash < 0 ? rest : rest[..slash]) < 0;
        }
        if (Under(path, ConntrackParams, out rest) && rest.Length > 0 && rest != "hashsize")
        {
            hostRoot = _view.SysRoot + "/module/nf_conntrack/parameters";
            return true;
        }
        if (Under(path, "proc/sys", out rest) && rest.Length > 0 && !rest.Contains("..", StringComparison.Ordinal)
            && Sysctls.Classify(rest).Kind == SysctlKind.Mirror)
        {
            hostRoot = _view.ProcRoot + "/sys";
            return true;
        }
        return false;
    }

    // ---------------------------------------------------------------- Open

    /// <summary>
    /// What an OPEN serves: a large mirrored file (host size above HostFiles.StreamAbove, e.g. a sysfs binary
    /// attribute) is served by offset from the host file opened now, never copied; everything else is a
    /// snapshot (<see cref="Read"/>).
    /// </summary>
    public int Open(string path, FuseCaller caller, out FuseContent? content)
    {
        content = null;
        try
        {
            if (BadPath(path)) return -Libc.ENOENT;
            if (MirrorOf(path, out var hostRoot, out var rest))
            {
                int r = Readable(hostRoot, rest, out string hostPath);
                if (r != 0) return r;
                r = HostFiles.Stat(hostPath, out var kind, out _, out long size);
                if (r != 0) return r;
                if (kind == FuseNodeKind.File && size > HostFiles.StreamAbove)
                {
                    r = HostFiles.OpenForOffsetReads(hostPath, out var file, out size);
                    if (r == 0) content = FuseContent.Streamed(file!, size);
                    return r;
                }
            }
            int rr = ReadCore(path, caller, out var bytes);
            if (rr == 0) content = FuseContent.Of(bytes);
            return rr;
        }
        catch (Exception) { return -Libc.EIO; }
    }

    int Text(Func<string, string> render, string file, out byte[] content)
    {
        content = [];
        int r = HostFiles.Read(_view.ProcRoot + "/" + file, out var host);
        if (r != 0) return r;
        content = Encoding.ASCII.GetBytes(render(Encoding.ASCII.GetString(host)));
        return 0;
    }

    /// <summary>The container's value of a per-container entry; on first use the host's (or the rule's Initial).</summary>
    int CurrentValue(string storeKey, string hostPath, SysctlRule rule, out string value)
    {
        lock (_valuesLock)
            if (_values.TryGetValue(storeKey, out value!)) return 0;
        value = "";
        string initial;
        if (rule.Initial is not null)
        {
            // Still only for entries the host has.
            int s = HostFiles.Stat(hostPath, out _, out _);
            if (s != 0) return s;
            initial = rule.Initial + "\n";
        }
        else
        {
            int r = HostFiles.Read(hostPath, out var bytes);
            if (r != 0) return r;
            initial = Encoding.ASCII.GetString(bytes);
        }
        lock (_valuesLock)
        {
            if (!_values.TryGetValue(storeKey, out value!)) _values[storeKey] = value = initial;
        }
        return 0;
    }

    // ---------------------------------------------------------------- uptime, cpuinfo, stat

    byte[] Uptime()
    {
        long now = _view.BoottimeNs();
        long up = Math.Max(0, now - _view.StartBoottimeNs);
        int cpus;
        long usage;
        lock (_cpuLock)
        {
            if (_cpuAt == long.MinValue || now - _cpuAt > 500_000_000 || now < _cpuAt)
            {
                _cpuCount = VisibleCpus(out _, out _).Length;
                _cpuUsageNs = (long)Math.Min(CgroupFacts.CpuUsageNs(_view.Cgroup), long.MaxValue);
                _cpuAt = now;
            }
            cpus = _cpuCount;
            usage = _cpuUsageNs;
            // idle = uptime x CPUs - container CPU time: clamped, and never going backwards (the usage is cached).
            long max = up > long.MaxValue / Math.Max(1, cpus) ? long.MaxValue : up * cpus;
            long idle = Math.Clamp(max - usage, 0, max);
            if (idle < _lastIdleNs) idle = Math.Min(_lastIdleNs, max);
            _lastIdleNs = idle;
            return ProcText.Uptime(up, idle);
        }
    }

    int[] VisibleCpus(out CpuFacts cpu, out List<int> hostCpus)
    {
        cpu = CgroupFacts.Cpu(_view.Cgroup);
        hostCpus = ProcText.HostCpus(HostFiles.ReadText(_view.ProcRoot + "/stat") ?? "");
        return ProcText.VisibleCpus(hostCpus, cpu.Cpuset, cpu.Quota, cpu.Period);
    }

    int Cpuinfo(out byte[] content)
    {
        content = [];
        long now = Environment.TickCount64;
        string? host;
        lock (_cpuLock)
        {
            host = _cpuinfo;
            if (host is null || now - _cpuinfoAt > 1000 || now < _cpuinfoAt)
            {
                int r = HostFiles.Read(_view.ProcRoot + "/cpuinfo", out var bytes);
                if (r != 0) return r;
                _cpuinfo = host = Encoding.ASCII.GetString(bytes);
                _cpuinfoAt = now;
            }
        }
        content = Encoding.ASCII.GetBytes(ProcText.Cpuinfo(host, VisibleCpus(out _, out _)));
        return 0;
    }

    int Stat(out byte[] content)
    {
        content = [];
        int r = HostFiles.Read(_view.ProcRoot + "/stat", out var bytes);
        if (r != 0) return r;
        string host = Encoding.ASCII.GetString(bytes);
        var cpu = CgroupFacts.Cpu(_view.Cgroup);
        var hostCpus = ProcText.HostCpus(host);
        var visible = ProcText.VisibleCpus(hostCpus, cpu.Cpuset, cpu.Quota, cpu.Period);
        var members = ProcText.VisibleCpus(hostCpus, cpu.Cpuset, -1, 1);   // every CPU it may run on
        content = Encoding.ASCII.GetBytes(ProcText.Stat(host, visible, ProcText.CpuTicks(cpu, visible, members)));
        return 0;
    }

    // ---------------------------------------------------------------- Write

    public int Write(string path, FuseCaller caller, ReadOnlySpan<byte> data)
    {
        try { return BadPath(path) ? -Libc.ENOENT : WriteCore(path, caller, data); }
        catch (Exception) { return -Libc.EIO; }
    }

    int WriteCore(string path, FuseCaller caller, ReadOnlySpan<byte> data)
    {
        if (data.Length > MaxWrite) data = data[..MaxWrite];
        if (Under(path, ConntrackParams, out var param) && param == "hashsize")
        {
            int p = CheckContainerWriter(caller, Sysctls.CAP_NET_ADMIN);
            if (p != 0) return p;
            return SetValue("module/nf_conntrack/hashsize", _view.SysRoot + "/module/nf_conntrack/parameters/hashsize",
                Sysctls.ConntrackHashsize, data, null, caller);
        }
        if (!Under(path, "proc/sys", out var key) || key.Length == 0 || key.Contains("..", StringComparison.Ordinal))
            return Lookup(path, caller, out _) == 0 ? -Libc.EACCES : -Libc.ENOENT;
        var c = Sysctls.Classify(key);
        if (c.Kind is SysctlKind.Mirror or SysctlKind.Refused) return -Libc.EACCES;
        int cap = Sysctls.RequiredCapability(key);
        if (c.Kind == SysctlKind.Namespaced)
        {
            if (caller.Uid != _view.RootUid || caller.Pid <= 0) return -Libc.EACCES;
            // Decided inside the caller's namespace, on the namespace the write lands in.
            return _ns.Write(caller, c.Namespace, key, data, owner => MayActIn(caller, owner, cap));
        }
        int perm = CheckContainerWriter(caller, cap);
        if (perm != 0) return perm;
        return SetValue(key, HostSysctlPath(key), c.Rule!, data, key, caller);
    }

    /// <summary>
    /// For per-container values (and the "max wins" host raises that come with them): the container's root
    /// uid (-EACCES otherwise) holding the capability over the container's own user namespace (-EPERM
    /// otherwise). A process in a nested user namespace holds none there, whatever its CapEff says.
    /// </summary>
    int CheckContainerWriter(FuseCaller caller, int capability)
    {
        if (caller.Uid != _view.RootUid || caller.Pid <= 0) return -Libc.EACCES;
        if (_view.UserNs is not { } container) return -Libc.EPERM;   // unknown: nobody may
        return MayActIn(caller, container, capability);
    }

    /// <summary>0 when the caller holds the capability over the user namespace <paramref name="target"/>; -EACCES
    /// when the caller cannot be identified (gone, or no longer waiting), -EPERM otherwise.</summary>
    int MayActIn(FuseCaller caller, UserNamespaceChain target, int capability)
    {
        if (_view.Credentials(caller) is not { } credentials) return -Libc.EACCES;
        return NamespaceCapability.Holds(credentials, target, capability) ? 0 : -Libc.EPERM;
    }

    int SetValue(string storeKey, string hostPath, SysctlRule rule, ReadOnlySpan<byte> data, string? hostKey, FuseCaller caller)
    {
        int r = CurrentValue(storeKey, hostPath, rule, out _);
        if (r != 0) return r;
        string value;
        lock (_valuesLock)
        {
            r = Sysctls.Check(rule, _values[storeKey], data, out value);
            if (r != 0) return r;
            // Nothing happens for a caller that no longer waits (answered EINTR/ETIMEDOUT already).
            if (caller.Request is { } request && !request.Commit()) return -Libc.EINTR;
            _values[storeKey] = value;
        }
        // "Max wins": raise the host value when this one is higher; never lower it. Best effort: the
        // container's own value stands whatever the host write says.
        if (rule.MaxWins && hostKey is not null && _view.HostWriter is { } host && host.Read(hostKey, out var current) == 0
            && Sysctls.HostRaise(current, value) is { } raise)
            host.Write(hostKey, raise);
        return 0;
    }

    // ---------------------------------------------------------------- ReadLink

    public int ReadLink(string path, FuseCaller caller, out string target)
    {
        target = "";
        try
        {
            if (BadPath(path)) return -Libc.ENOENT;
            if (Under(path, "sys/kernel", out var rest) && rest.Length > 0)
            {
                int slash = rest.IndexOf('/');
                if (Array.IndexOf(HiddenKernelDirs, slash < 0 ? rest : rest[..slash]) >= 0) return -Libc.ENOENT;
                int r = Reach(_view.SysRoot + "/kernel", rest, out string hostPath);
                return r != 0 ? r : HostFiles.ReadLink(hostPath, out target);
            }
            if (Under(path, ConntrackParams, out var param) && param.Length > 0)
            {
                int r = Reach(_view.SysRoot + "/module/nf_conntrack/parameters", param, out string hostPath);
                return r != 0 ? r : HostFiles.ReadLink(hostPath, out target);
            }
            return Lookup(path, caller, out _) == 0 ? -Libc.EINVAL : -Libc.ENOENT;
        }
        catch (Exception) { return -Libc.EIO; }
    }
}
