// Reads a container's resource usage from its cgroup files and writes it in the shape of runc's
// `events` stats (types.Stats: cpu, memory, pids, blkio). Written with Utf8JsonWriter directly, so no
// model classes or JSON context are needed (AOT). Missing files leave their fields out or at 0.
using System.Globalization;
using System.Text.Json;

namespace SandboxRunc.Cgroups;

public static class CgroupStats
{
    static string? TryRead(string? dir, string file)
    {
        if (dir is null) return null;
        try { return File.ReadAllText(Path.Combine(dir, file)).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>A single number; "max" (v2 unlimited) and missing files are 0.</summary>
    static ulong Num(string? dir, string file) =>
        ulong.TryParse(TryRead(dir, file), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;

    /// <summary>"key value" lines (memory.stat, cpu.stat, memory.events, ...).</summary>
    public static Dictionary<string, ulong> KeyValues(string? text)
    {
        var d = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (var line in (text ?? "").Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 2 && ulong.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out var n)) d[f[0]] = n;
        }
        return d;
    }

    /// <summary>The container's OOM kill count so far (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).</summary>
    public static ulong OomKills(CgroupPaths paths)
    {
        if (paths.Unified is { } v2) return KeyValues(TryRead(v2, "memory.events")).GetValueOrDefault("oom_kill");
        if (paths.Of("memory") is { } mem) return KeyValues(TryRead(mem, "memory.oom_control")).GetValueOrDefault("oom_kill");
        return 0;
    }

    public static void Write(Utf8JsonWriter w, CgroupPaths paths)
    {
        w.WriteStartObject();
        if (paths.Unified is { } v2) WriteV2(w, v2);
        else WriteV1(w, paths);
        w.WriteEndObject();
    }

    static void WriteV1(Utf8JsonWriter w, CgroupPaths paths)
    {
        string? acct = paths.Of("cpuacct"), cpu = paths.Of("cpu"), mem = paths.Of("memory"), pids = paths.Of("pids"), blkio = paths.Of("blkio");

        // cpuacct.stat counts USER_HZ ticks (100 per second on Linux): convert to nanoseconds as runc does.
        var ticks = KeyValues(TryRead(acct, "cpuacct.stat"));
        var throttling = KeyValues(TryRead(cpu, "cpu.stat"));
        w.WriteStartObject("cpu");
        w.WriteStartObject("usage");
        w.WriteNumber("total", Num(acct, "cpuacct.usage"));
        WriteList(w, "percpu", TryRead(acct, "cpuacct.usage_percpu"));
        w.WriteNumber("kernel", ticks.GetValueOrDefault("system") * 10_000_000);
        w.WriteNumber("user", ticks.GetValueOrDefault("user") * 10_000_000);
        w.WriteEndObject();
        w.WriteStartObject("throttling");
        w.WriteNumber("periods", throttling.GetValueOrDefault("nr_periods"));
        w.WriteNumber("throttledPeriods", throttling.GetValueOrDefault("nr_throttled"));
        w.WriteNumber("throttledTime", throttling.GetValueOrDefault("throttled_time"));
        w.WriteEndObject();
        w.WriteEndObject();

        var stat = KeyValues(TryRead(mem, "memory.stat"));
        w.WriteStartObject("memory");
        w.WriteNumber("cache", stat.GetValueOrDefault("cache"));
        MemoryEntry(w, "usage", Num(mem, "memory.limit_in_bytes"), Num(mem, "memory.usage_in_bytes"),
            Num(mem, "memory.max_usage_in_bytes"), Num(mem, "memory.failcnt"));
        MemoryEntry(w, "swap", Num(mem, "memory.memsw.limit_in_bytes"), Num(mem, "memory.memsw.usage_in_bytes"),
            Num(mem, "memory.memsw.max_usage_in_bytes"), Num(mem, "memory.memsw.failcnt"));
        MemoryEntry(w, "kernel", Num(mem, "memory.kmem.limit_in_bytes"), Num(mem, "memory.kmem.usage_in_bytes"),
            Num(mem, "memory.kmem.max_usage_in_bytes"), Num(mem, "memory.kmem.failcnt"));
        MemoryEntry(w, "kernelTCP", Num(mem, "memory.kmem.tcp.limit_in_bytes"), Num(mem, "memory.kmem.tcp.usage_in_bytes"),
            Num(mem, "memory.kmem.tcp.max_usage_in_bytes"), Num(mem, "memory.kmem.tcp.failcnt"));
        WriteRaw(w, stat);
        w.WriteEndObject();

        WritePids(w, Num(pids, "pids.current"), Num(pids, "pids.max"));

        w.WriteStartObject("blkio");
        BlkioV1(w, "ioServiceBytesRecursive", TryRead(blkio, "blkio.throttle.io_service_bytes_recursive"));
        BlkioV1(w, "ioServicedRecursive", TryRead(blkio, "blkio.throttle.io_serviced_recursive"));
        w.WriteEndObject();
    }

    static void WriteV2(Utf8JsonWriter w, string dir)
    {
        var cpu = KeyValues(TryRead(dir, "cpu.stat"));
        w.WriteStartObject("cpu");
        w.WriteStartObject("usage");
        w.WriteNumber("total", cpu.GetValueOrDefault("usage_usec") * 1000);
        w.WriteNumber("kernel", cpu.GetValueOrDefault("system_usec") * 1000);
        w.WriteNumber("user", cpu.GetValueOrDefault("user_usec") * 1000);
        w.WriteEndObject();
        w.WriteStartObject("throttling");
        w.WriteNumber("periods", cpu.GetValueOrDefault("nr_periods"));
        w.WriteNumber("throttledPeriods", cpu.GetValueOrDefault("nr_throttled"));
        w.WriteNumber("throttledTime", cpu.GetValueOrDefault("throttled_usec") * 1000);
        w.WriteEndObject();
        w.WriteEndObject();

        var stat = KeyValues(TryRead(dir, "memory.stat"));
        var events = KeyValues(TryRead(dir, "memory.events"));
        ulong usage = Num(dir, "memory.current"), swapUsage = Num(dir, "memory.swap.current");
        w.WriteStartObject("memory");
        w.WriteNumber("cache", stat.GetValueOrDefault("file"));
        // v2 has no failcnt: the "max" event count (times the limit was hit) is the closest.
        MemoryEntry(w, "usage", Num(dir, "memory.max"), usage, Num(dir, "memory.peak"), events.GetValueOrDefault("max"));
        // runc reports v2 swap as memory+swap, like v1 memsw.
        MemoryEntry(w, "swap", Num(dir, "memory.swap.max"), usage + swapUsage, 0, 0);
        WriteRaw(w, stat);
        w.WriteEndObject();

        WritePids(w, Num(dir, "pids.current"), Num(dir, "pids.max"));

        w.WriteStartObject("blkio");
        var bytes = new List<(string, string, ulong)>();
        var ios = new List<(string, string, ulong)>();
        foreach (var line in (TryRead(dir, "io.stat") ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (var kv in f.Skip(1))
            {
                var p = kv.Split('=');
                if (p.Length != 2 || !ulong.TryParse(p[1], out var n)) continue;
                switch (p[0])
                {
                    case "rbytes": bytes.Add((f[0], "Read", n)); break;
                    case "wbytes": bytes.Add((f[0], "Write", n)); break;
                    case "rios": ios.Add((f[0], "Read", n)); break;
                    case "wios": ios.Add((f[0], "Write", n)); break;
                }
            }
        }
        BlkioEntries(w, "ioServiceBytesRecursive", bytes);
        BlkioEntries(w, "ioServicedRecursive", ios);
        w.WriteEndObject();
    }

    static void WriteList(Utf8JsonWriter w, string name, string? text)
    {
        var values = (text ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => ulong.TryParse(s, out var n) ? n : 0).ToList();
        if (values.Count == 0) return;
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }

    static void MemoryEntry(Utf8JsonWriter w, string name, ulong limit, ulong usage, ulong max, ulong failcnt)
    {
        w.WriteStartObject(name);
        w.WriteNumber("limit", limit);
        w.WriteNumber("usage", usage);
        w.WriteNumber("max", max);
        w.WriteNumber("failcnt", failcnt);
        w.WriteEndObject();
    }

    static void WriteRaw(Utf8JsonWriter w, Dictionary<string, ulong> stat)
    {
        w.WriteStartObject("raw");
        foreach (var (k, v) in stat) w.WriteNumber(k, v);
        w.WriteEndObject();
    }

    static void WritePids(Utf8JsonWriter w, ulong current, ulong limit)
    {
        w.WriteStartObject("pids");
        w.WriteNumber("current", current);
        w.WriteNumber("limit", limit);
        w.WriteEndObject();
    }

    /// <summary>v1 blkio lines "8:0 Read 4096" (and a final "Total N", skipped).</summary>
    static void BlkioV1(Utf8JsonWriter w, string name, string? text)
    {
        var entries = new List<(string, string, ulong)>();
        foreach (var line in (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 3 && f[0].Contains(':') && ulong.TryParse(f[2], out var n)) entries.Add((f[0], f[1], n));
        }
        BlkioEntries(w, name, entries);
    }

    static void BlkioEntries(Utf8JsonWriter w, string name, List<(string Dev, string Op, ulong Value)> entries)
    {
        if (entries.Count == 0) return;
        w.WriteStartArray(name);
        foreach (var (dev, op, value) in entries)
        {
            var mm = dev.Split(':');
            w.WriteStartObject();
            if (mm.Length == 2 && ulong.TryParse(mm[0], out var major) && ulong.TryParse(mm[1], out var minor))
            {
                w.WriteNumber("major", major);
                w.WriteNumber("minor", minor);
            }
            w.WriteString("op", op);
            w.WriteNumber("value", value);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
