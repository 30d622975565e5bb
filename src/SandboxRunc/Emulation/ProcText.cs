// Pure functions from host /proc text plus the container's cgroup numbers to the text the container reads.
// The host's text is the template: lines we have container values for are rewritten in the kernel's own
// format, the rest is kept as is, so busybox and procps (free, top, uptime, nproc, vmstat) parse the result.
//
// What each file shows:
//  uptime    seconds since the container was created (CLOCK_BOOTTIME); idle = uptime x visible CPUs minus
//            the container's CPU time, clamped to [0, uptime x CPUs] and never decreasing (caller's job).
//  swaps     the host's header line only.
//  meminfo   MemTotal = min(host, limit); MemFree = MemTotal - usage (usage includes page cache, as the
//            cgroup counts it); MemAvailable = MemFree + file cache (active+inactive file), at most MemTotal;
//            Cached/Shmem/Active*/Inactive*/AnonPages/Mapped/Slab* from memory.stat (v1 has no slab split:
//            0); Buffers/SwapCached 0; SwapTotal = min(host, swap limit) (0 without swap accounting),
//            SwapFree = SwapTotal - swap usage. Other lines (Vmalloc, HugePages, DirectMap...) are the host's.
//  cpuinfo   the host blocks of the visible CPUs, renumbered 0..n-1; siblings/cpu cores say n.
//  stat      "cpu" + one "cpuN" per visible CPU with the container's user/system times (USER_HZ) and
//            idle = the host CPU's elapsed total minus the container's time on it; usage on CPUs beyond
//            the quota-reduced count is folded onto the visible ones. intr/ctxt/btime/processes/
//            procs_*/softirq are the host's (btime must stay the host's: ps adds it to /proc/PID/stat times).
//  loadavg   the host's three averages (a computed per-container load needs a sampler: not done); the
//            running/total field is min(host running, tasks)/tasks of the pids controller; last pid 0.
//  diskstats only devices the container did I/O on, with its reads/writes completed and sectors; other
//            counters 0.
using System.Globalization;
using System.Text;

namespace SandboxRunc.Emulation;

public static class ProcText
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>"12.34 56.78\n" from ns values, truncated to centiseconds like the kernel.</summary>
    public static byte[] Uptime(long upNs, long idleNs)
    {
        Span<byte> buf = stackalloc byte[64];
        int n = Centis(buf, upNs);
        buf[n++] = (byte)' ';
        n += Centis(buf[n..], idleNs);
        buf[n++] = (byte)'\n';
        return buf[..n].ToArray();

        static int Centis(Span<byte> dst, long ns)
        {
            if (ns < 0) ns = 0;
            long cs = ns / 10_000_000;
            ((ulong)(cs / 100)).TryFormat(dst, out int w, default, Inv);
            dst[w] = (byte)'.';
            long frac = cs % 100;
            dst[w + 1] = (byte)('0' + frac / 10);
            dst[w + 2] = (byte)('0' + frac % 10);
            return w + 3;
        }
    }

    public static string Swaps(string host)
    {
        int nl = host.IndexOf('\n');
        return nl < 0 ? host + "\n" : host[..(nl + 1)];
    }

    /// <summary>The kernel's meminfo line: "Name:" padded to 16, value right-aligned in 8, " kB".</summary>
    static string KbLine(string name, ulong kb) => (name + ":").PadRight(16) + kb.ToString(Inv).PadLeft(8) + " kB";

    /// <summary>The kB value of one line of meminfo text ("Name:   123 kB"), or null if it has none.</summary>
    internal static ulong? MeminfoKb(string meminfo, string name)
    {
        foreach (var line in meminfo.Split('\n'))
            if (line.StartsWith(name, StringComparison.Ordinal) && line.Length > name.Length && line[name.Length] == ':')
            {
                var f = line[(name.Length + 1)..].Trim().Split(' ');
                if (ulong.TryParse(f[0], Inv, out var v)) return v;
            }
        return null;
    }

    public static string Meminfo(string host, MemoryFacts m)
    {
        ulong hostTotal = MeminfoKb(host, "MemTotal") ?? 0, hostSwap = MeminfoKb(host, "SwapTotal") ?? 0;
        ulong total = m.Limit is { } lim ? Math.Min(hostTotal, lim / 1024) : hostTotal;
        ulong used = Math.Min(total, m.Usage / 1024);
        ulong free = total - used;
        ulong fileCache = (m.ActiveFile + m.InactiveFile) / 1024;
        ulong available = Math.Min(total, free + fileCache);
        ulong swapTotal = !m.SwapAccounted ? 0 : m.SwapLimit is { } sl ? Math.Min(hostSwap, sl / 1024) : hostSwap;
        ulong swapFree = swapTotal - Math.Min(swapTotal, m.SwapUsage / 1024);
        ulong cached = Math.Min(used, m.Cache / 1024);
        var values = new Dictionary<string, ulong>(StringComparer.Ordinal)
        {
            ["MemTotal"] = total, ["MemFree"] = free, ["MemAvailable"] = available, ["Buffers"] = 0,
            ["Cached"] = cached, ["SwapCached"] = 0,
            ["Active"] = (m.ActiveAnon + m.ActiveFile) / 1024, ["Inactive"] = (m.InactiveAnon + m.InactiveFile) / 1024,
            ["Active(anon)"] = m.ActiveAnon / 1024, ["Inactive(anon)"] = m.InactiveAnon / 1024,
            ["Active(file)"] = m.ActiveFile / 1024, ["Inactive(file)"] = m.InactiveFile / 1024,
            ["SwapTotal"] = swapTotal, ["SwapFree"] = swapFree, ["AnonPages"] = m.Anon / 1024,
            ["Mapped"] = m.Mapped / 1024, ["Shmem"] = m.Shmem / 1024,
            ["KReclaimable"] = m.SlabReclaimable / 1024, ["Slab"] = (m.SlabReclaimable + m.SlabUnreclaimable) / 1024,
            ["SReclaimable"] = m.SlabReclaimable / 1024, ["SUnreclaim"] = m.SlabUnreclaimable / 1024,
        };
        var sb = new StringBuilder(host.Length);
        foreach (var line in host.Split('\n'))
        {
            if (line.Length == 0) continue;
            int colon = line.IndexOf(':');
            if (colon > 0 && values.TryGetValue(line[..colon], out var v)) sb.Append(KbLine(line[..colon], v));
            else sb.Append(line);
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Host CPU numbers the container sees: its cpuset (or all host CPUs) in order, cut to
    /// ceil(quota/period) when a quota is set; at least one.</summary>
    public static int[] VisibleCpus(IReadOnlyList<int> hostCpus, IReadOnlyList<int>? cpuset, long quota, long period)
    {
        var set = new List<int>();
        foreach (int c in cpuset ?? hostCpus)
            if (cpuset is null || hostCpus.Count == 0 || hostCpus.Contains(c)) set.Add(c);
        if (set.Count == 0) set.Add(hostCpus.Count > 0 ? hostCpus[0] : 0);
        int n = set.Count;
        if (quota > 0 && period > 0) n = (int)Math.Clamp((quota + period - 1) / period, 1, n);
        return set.GetRange(0, n).ToArray();
    }

    /// <summary>Host CPU numbers that have a "cpuN" line in host /proc/stat (the online ones).</summary>
    public static List<int> HostCpus(string hostStat)
    {
        var list = new List<int>();
        foreach (var line in hostStat.Split('\n'))
        {
            if (!line.StartsWith("cpu", StringComparison.Ordinal) || line.Length < 4 || !char.IsAsciiDigit(line[3])) continue;
            int sp = line.IndexOf(' ');
            if (int.TryParse(line.AsSpan(3, (sp < 0 ? line.Length : sp) - 3), out int c)) list.Add(c);
        }
        return list;
    }

    public static string Cpuinfo(string host, int[] visible)
    {
        var sb = new StringBuilder();
        int next = 0;
        foreach (var block in host.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            if (block.Trim().Length == 0) continue;
            var lines = block.Split('\n');
            int proc = -1;
            foreach (var l in lines)
                if (l.StartsWith("processor", StringComparison.Ordinal) && int.TryParse(l[(l.IndexOf(':') + 1)..].Trim(), out var p)) { proc = p; break; }
            if (proc < 0)
            {
                // Blocks without a processor number (e.g. the trailing "Hardware" block on arm): keep as is.
                sb.Append(block.TrimEnd('\n')).Append("\n\n");
                continue;
            }
            if (Array.IndexOf(visible, proc) < 0) continue;
            foreach (var l in lines)
            {
                if (l.Length == 0) continue;
                int colon = l.IndexOf(':');
                string key = colon > 0 ? l[..colon].TrimEnd() : "";
                if (key == "processor") sb.Append(l[..(colon + 1)]).Append(' ').Append(next.ToString(Inv));
                else if (key is "siblings" or "cpu cores") sb.Append(l[..(colon + 1)]).Append(' ').Append(visible.Length.ToString(Inv));
                else sb.Append(l);
                sb.Append('\n');
            }
            sb.Append('\n');
            next++;
        }
        return sb.ToString();
    }

    /// <summary>Per visible CPU: the container's (user, system) in USER_HZ ticks.</summary>
    public static (ulong User, ulong System)[] CpuTicks(CpuFacts cpu, int[] visible, IReadOnlyList<int> memberOrder)
    {
        var result = new (ulong, ulong)[visible.Length];
        if (cpu.PerCpuUserNs is { } pu && cpu.PerCpuSystemNs is { } ps)
        {
            // Usage on every CPU the container may run on, folded onto the visible ones round-robin.
            for (int j = 0; j < memberOrder.Count; j++)
            {
                int host = memberOrder[j];
                if (host >= pu.Length) continue;
                int k = j % visible.Length;
                result[k].Item1 += pu[host] / 10_000_000;
                result[k].Item2 += ps[host] / 10_000_000;
            }
        }
        else
        {
            // v2: only totals; spread evenly.
            ulong u = cpu.UserNs / 10_000_000, s = cpu.SystemNs / 10_000_000;
            for (int k = 0; k < visible.Length; k++)
                result[k] = (u / (ulong)visible.Length + (k == 0 ? u % (ulong)visible.Length : 0),
                             s / (ulong)visible.Length + (k == 0 ? s % (ulong)visible.Length : 0));
        }
        return result;
    }

    public static string Stat(string host, int[] visible, (ulong User, ulong System)[] ticks)
    {
        // Each host cpuN's elapsed total (sum of its fields) bounds the visible CPU's idle.
        var hostTotals = new Dictionary<int, ulong>();
        var rest = new StringBuilder();
        foreach (var line in host.Split('\n'))
        {
            if (line.Length == 0) continue;
            if (line.StartsWith("cpu", StringComparison.Ordinal))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f[0].Length > 3 && int.TryParse(f[0].AsSpan(3), out int c))
                {
                    ulong sum = 0;
                    for (int i = 1; i < f.Length && i <= 8; i++) sum += ulong.TryParse(f[i], out var v) ? v : 0;   // guest is inside user
                    hostTotals[c] = sum;
                }
                continue;
            }
            rest.Append(line).Append('\n');
        }
        var cpuLines = new StringBuilder();
        ulong tu = 0, ts = 0, ti = 0;
        for (int k = 0; k < visible.Length; k++)
        {
            var (u, s) = ticks[k];
            ulong total = hostTotals.GetValueOrDefault(visible[k]);
            ulong idle = total > u + s ? total - u - s : 0;
            tu += u; ts += s; ti += idle;
            cpuLines.Append(CultureInfo.InvariantCulture, $"cpu{k} {u} 0 {s} {idle} 0 0 0 0 0 0\n");
        }
        return $"cpu  {tu} 0 {ts} {ti} 0 0 0 0 0 0\n" + cpuLines.ToString() + rest.ToString();
    }

    public static string Loadavg(string host, ulong? tasks)
    {
        // "0.00 0.01 0.05 1/79 25020"
        var f = host.Trim().Split(' ');
        if (f.Length < 5 || tasks is null) return f.Length >= 3 ? $"{f[0]} {f[1]} {f[2]} {(f.Length > 3 ? f[3] : "0/0")} 0\n" : host;
        int slash = f[3].IndexOf('/');
        ulong running = slash > 0 && ulong.TryParse(f[3].AsSpan(0, slash), out var r) ? r : 1;
        ulong total = Math.Max(1, tasks.Value);
        return $"{f[0]} {f[1]} {f[2]} {Math.Clamp(running, 1, total)}/{total} 0\n";
    }

    public static string Diskstats(string host, IReadOnlyList<DeviceIo> io)
    {
        var sb = new StringBuilder();
        foreach (var line in host.Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 14 || !int.TryParse(f[0], out int ma) || !int.TryParse(f[1], out int mi)) continue;
            DeviceIo? d = null;
            foreach (var x in io)
                if (x.Major == ma && x.Minor == mi && (x.ReadIos | x.WriteIos | x.ReadBytes | x.WriteBytes) != 0) { d = x; break; }
            if (d is not { } dev) continue;
            // major minor name, then (reads merged sectors ms) (writes merged sectors ms) inflight io_ms weighted_ms ...
            sb.Append(ma.ToString(Inv).PadLeft(4)).Append(' ').Append(mi.ToString(Inv).PadLeft(7)).Append(' ').Append(f[2]);
            int fields = f.Length - 3;
            for (int i = 0; i < fields; i++)
            {
                ulong v = i switch
                {
                    0 => dev.ReadIos, 2 => dev.ReadBytes / 512, 4 => dev.WriteIos, 6 => dev.WriteBytes / 512, _ => 0,
                };
                sb.Append(' ').Append(v.ToString(Inv));
            }
            sb.Append('\n');
        }
        return sb.ToString();
    }
}
