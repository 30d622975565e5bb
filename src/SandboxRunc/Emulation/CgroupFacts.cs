// The numbers the emulated /proc files need from the container's cgroup, read from its v1 controller dirs
// or its v2 unified dir into plain records, so that the formatting in ProcText never sees a layout. A
// missing or unreadable file means "no limit" / 0, never an error: a container without a memory
// controller simply sees the host's memory.
using System.Globalization;

namespace SandboxRunc.Emulation;

/// <summary>Memory of the container in bytes. Limit/SwapLimit null = unlimited. SwapLimit is swap alone
/// (v1: memsw limit minus memory limit); SwapAccounted false when the kernel does not account swap.</summary>
public sealed record MemoryFacts(ulong? Limit, ulong Usage, bool SwapAccounted, ulong? SwapLimit, ulong SwapUsage,
    ulong Cache, ulong Anon, ulong Shmem, ulong Mapped, ulong ActiveAnon, ulong InactiveAnon, ulong ActiveFile,
    ulong InactiveFile, ulong SlabReclaimable, ulong SlabUnreclaimable);

/// <summary>CPU limits and usage. Cpuset null = no cpuset (all host CPUs). PerCpuNs indexed by host CPU
/// number (null when the cgroup has no per-CPU usage: v2). User/System: totals in ns.</summary>
public sealed record CpuFacts(IReadOnlyList<int>? Cpuset, long Quota, long Period, ulong[]? PerCpuUserNs,
    ulong[]? PerCpuSystemNs, ulong UserNs, ulong SystemNs)
{
    public ulong TotalNs => UserNs + SystemNs;
}

public readonly record struct DeviceIo(int Major, int Minor, ulong ReadIos, ulong WriteIos, ulong ReadBytes, ulong WriteBytes);

public static class CgroupFacts
{
    /// <summary>v1 reports "unlimited" as a huge page-aligned number (LONG_MAX rounded down).</summary>
    const ulong V1Unlimited = 1UL << 62;


    static string? Text(string? dir, string file) => dir is null ? null : HostFiles.ReadText(dir + "/" + file)?.Trim();

    static ulong Num(string? dir, string file) =>
        ulong.TryParse(Text(dir, file), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;

    /// <summary>A limit: "max", absent, or v1's huge value all mean unlimited.</summary>
    static ulong? Limit(string? dir, string file)
    {
        var t = Text(dir, file);
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n >= V1Unlimited) return null;
        return n;
    }

    static Dictionary<string, ulong> KeyValues(string? text) => Cgroups.CgroupStats.KeyValues(text);

    public static MemoryFacts Memory(Cgroups.CgroupPaths paths)
    {
        if (paths.IsV2)
        {
            string dir = paths.Unified!;
            var s = KeyValues(Text(dir, "memory.stat"));
            bool swapAccounted = File.Exists(dir + "/memory.swap.max");
            return new MemoryFacts(Limit(dir, "memory.max"), Num(dir, "memory.current"), swapAccounted,
                swapAccounted ? Limit(dir, "memory.swap.max") : 0, Num(dir, "memory.swap.current"),
                s.GetValueOrDefault("file"), s.GetValueOrDefault("anon"), s.GetValueOrDefault("shmem"),
                s.GetValueOrDefault("file_mapped"), s.GetValueOrDefault("active_anon"), s.GetValueOrDefault("inactive_anon"),
                s.GetValueOrDefault("active_file"), s.GetValueOrDefault("inactive_file"),
                s.GetValueOrDefault("slab_reclaimable"), s.GetValueOrDefault("slab_unreclaimable"));
        }
        string? mem = paths.Of("memory");
        var st = KeyValues(Text(mem, "memory.stat"));
        ulong? limit = Limit(mem, "memory.limit_in_bytes");
        ulong usage = Num(mem, "memory.usage_in_bytes");
        bool memsw = mem is not null && File.Exists(mem + "/memory.memsw.limit_in_bytes");
        ulong? swapLimit = 0;
        ulong swapUsage = 0;
        if (memsw)
        {
            ulong? both = Limit(mem, "memory.memsw.limit_in_bytes");
            swapLimit = both is null ? null : limit is null ? both : both.Value > limit.Value ? both.Value - limit.Value : 0;
            ulong bothUsage = Num(mem, "memory.memsw.usage_in_bytes");
            swapUsage = bothUsage > usage ? bothUsage - usage : 0;
        }
        return new MemoryFacts(limit, usage, memsw, swapLimit, swapUsage,
            st.GetValueOrDefault("total_cache"), st.GetValueOrDefault("total_rss"), st.GetValueOrDefault("total_shmem"),
            st.GetValueOrDefault("total_mapped_file"), st.GetValueOrDefault("total_active_anon"),
            st.GetValueOrDefault("total_inactive_anon"), st.GetValueOrDefault("total_active_file"),
            st.GetValueOrDefault("total_inactive_file"), 0, 0);
    }

    public static CpuFacts Cpu(Cgroups.CgroupPaths paths)
    {
        if (paths.IsV2)
        {
            string dir = paths.Unified!;
            var cpuset = CpuList.Parse(Text(dir, "cpuset.cpus.effective"));
            long quota = -1, period = 100000;
            var max = Text(dir, "cpu.max")?.Split(' ');
            if (max is { Length: 2 } && max[0] != "max" && long.TryParse(max[0], out var q) && long.TryParse(max[1], out var p))
                (quota, period) = (q, p);
            var s = KeyValues(Text(dir, "cpu.stat"));
            return new CpuFacts(cpuset, quota, period, null, null, s.GetValueOrDefault("user_usec") * 1000,
                s.GetValueOrDefault("system_usec") * 1000);
        }
        string? cs = paths.Of("cpuset"), cpu = paths.Of("cpu"), acct = paths.Of("cpuacct");
        var set = CpuList.Parse(Text(cs, "cpuset.effective_cpus")) ?? CpuList.Parse(Text(cs, "cpuset.cpus"));
        long qv = long.TryParse(Text(cpu, "cpu.cfs_quota_us"), out var qq) ? qq : -1;
        long pv = long.TryParse(Text(cpu, "cpu.cfs_period_us"), out var pp) && pp > 0 ? pp : 100000;
        // cpuacct.stat is in USER_HZ ticks (100/s); usage_all has per-CPU user/system in ns (kernel >= 4.7).
        var ticks = KeyValues(Text(acct, "cpuacct.stat"));
        ulong user = ticks.GetValueOrDefault("user") * 10_000_000, system = ticks.GetValueOrDefault("system") * 10_000_000;
        ulong[]? pu = null, ps = null;
        var all = Text(acct, "cpuacct.usage_all");
        if (all is not null)
        {
            var rows = new List<(int, ulong, ulong)>();
            foreach (var line in all.Split('\n'))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length == 3 && int.TryParse(f[0], out int c) && c >= 0 && c < 65536 && ulong.TryParse(f[1], out var u) && ulong.TryParse(f[2], out var y))
                    rows.Add((c, u, y));
            }
            if (rows.Count > 0)
            {
                int n = 0;
                foreach (var r in rows) n = Math.Max(n, r.Item1 + 1);
                pu = new ulong[n];
                ps = new ulong[n];
                foreach (var (c, u, y) in rows) { pu[c] = u; ps[c] = y; }
            }
        }
        if (pu is null && Text(acct, "cpuacct.usage_percpu") is { } percpu)
        {
            // Only totals per CPU: split each into user/system in the ratio of cpuacct.stat.
            var f = percpu.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            pu = new ulong[f.Length];
            ps = new ulong[f.Length];
            double userShare = user + system == 0 ? 1.0 : (double)user / (user + system);
            for (int i = 0; i < f.Length; i++)
            {
                ulong t = ulong.TryParse(f[i], out var v) ? v : 0;
                pu[i] = (ulong)(t * userShare);
                ps[i] = t - pu[i];
            }
        }
        return new CpuFacts(set, qv, pv, pu, ps, user, system);
    }

    public static List<DeviceIo> Io(Cgroups.CgroupPaths paths)
    {
        var devices = new Dictionary<(int, int), DeviceIo>();
        DeviceIo Get(int ma, int mi) => devices.TryGetValue((ma, mi), out var d) ? d : new DeviceIo(ma, mi, 0, 0, 0, 0);
        if (paths.IsV2)
        {
            // "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0"
            foreach (var line in (Text(paths.Unified!, "io.stat") ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (!ParseDev(f[0], out int ma, out int mi)) continue;
                var d = Get(ma, mi);
                for (int i = 1; i < f.Length; i++)
                {
                    int eq = f[i].IndexOf('=');
                    if (eq < 0 || !ulong.TryParse(f[i].AsSpan(eq + 1), out var v)) continue;
                    d = f[i][..eq] switch
                    {
                        "rbytes" => d with { ReadBytes = v }, "wbytes" => d with { WriteBytes = v },
                        "rios" => d with { ReadIos = v }, "wios" => d with { WriteIos = v }, _ => d,
                    };
                }
                devices[(ma, mi)] = d;
            }
        }
        else if (paths.Of("blkio") is { } blkio)
        {
            // "8:0 Read 4096" ... "Total N"; the _recursive files include the container's own sub-cgroups.
            string? ios = Text(blkio, "blkio.throttle.io_serviced_recursive") ?? Text(blkio, "blkio.throttle.io_serviced");
            string? bytes = Text(blkio, "blkio.throttle.io_service_bytes_recursive") ?? Text(blkio, "blkio.throttle.io_service_bytes");
            foreach (var (text, isBytes) in new[] { (ios, false), (bytes, true) })
                foreach (var line in (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (f.Length != 3 || !ParseDev(f[0], out int ma, out int mi) || !ulong.TryParse(f[2], out var v)) continue;
                    var d = Get(ma, mi);
                    d = (f[1], isBytes) switch
                    {
                        ("Read", false) => d with { ReadIos = v }, ("Write", false) => d with { WriteIos = v },
                        ("Read", true) => d with { ReadBytes = v }, ("Write", true) => d with { WriteBytes = v }, _ => d,
                    };
                    devices[(ma, mi)] = d;
                }
        }
        var list = new List<DeviceIo>(devices.Values);
        list.Sort((a, b) => a.Major != b.Major ? a.Major.CompareTo(b.Major) : a.Minor.CompareTo(b.Minor));
        return list;
    }

    static bool ParseDev(string s, out int major, out int minor)
    {
        minor = 0;
        int c = s.IndexOf(':');
        major = 0;
        return c > 0 && int.TryParse(s.AsSpan(0, c), out major) && int.TryParse(s.AsSpan(c + 1), out minor);
    }

    /// <summary>Tasks in the container (pids controller), null when unknown.</summary>
    public static ulong? Tasks(Cgroups.CgroupPaths paths)
    {
        string? dir = paths.IsV2 ? paths.Unified! : paths.Of("pids");
        var t = Text(dir, "pids.current");
        return ulong.TryParse(t, out var n) ? n : null;
    }

    /// <summary>Container CPU time in ns, the cheap way (one file): for /proc/uptime's idle field.</summary>
    public static ulong CpuUsageNs(Cgroups.CgroupPaths paths)
    {
        if (paths.IsV2)
        {
            var t = Text(paths.Unified!, "cpu.stat");
            return KeyValues(t).GetValueOrDefault("usage_usec") * 1000;
        }
        return Num(paths.Of("cpuacct"), "cpuacct.usage");
    }
}

/// <summary>Kernel CPU list syntax: "0-3,8,10-11".</summary>
public static class CpuList
{
    public static List<int>? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var list = new List<int>();
        foreach (var part in text.Trim().Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int dash = part.IndexOf('-');
            if (dash < 0)
            {
                if (!int.TryParse(part, out int c)) return null;
                list.Add(c);
            }
            else
            {
                if (!int.TryParse(part.AsSpan(0, dash), out int a) || !int.TryParse(part.AsSpan(dash + 1), out int b) || b < a || b - a > 65536)
                    return null;
                for (int c = a; c <= b; c++) list.Add(c);
            }
        }
        list.Sort();
        return list;
    }
}
