using System.Text.Json;
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>
/// events: the container's resource usage as {"type":"stats","id":...,"data":{...}} lines, once (--stats)
/// or every interval, plus {"type":"oom","id":...} whenever the kernel OOM-kills a process of the
/// container's cgroup, until the container stops. OOM kills are found by polling the cgroup's oom_kill
/// counter (v1 memory.oom_control, v2 memory.events) a few times a second.
/// </summary>
public static class EventsOperation
{
    static readonly TimeSpan OomPoll = TimeSpan.FromMilliseconds(100);

    public static string StatsLine(string id, CgroupPaths paths)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("type", "stats");
            w.WriteString("id", id);
            w.WritePropertyName("data");
            CgroupStats.Write(w, paths);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    static string EventLine(string type, string id)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("type", type);
            w.WriteString("id", id);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    public static void Run(StateStore store, string id, bool statsOnly, TimeSpan interval, TextWriter output)
    {
        var r = store.Load(id);
        if (store.StatusOf(r) == ContainerStatus.Stopped) throw new RuntimeException($"container not running: {id}");
        var paths = CgroupPaths.FromMap(r.CgroupPaths);
        if (statsOnly)
        {
            output.WriteLine(StatsLine(id, paths));
            output.Flush();
            return;
        }
        if (interval <= TimeSpan.Zero) throw new Cli.UsageException("--interval must be greater than 0");

        ulong ooms = CgroupStats.OomKills(paths);
        var nextStats = DateTime.UtcNow;
        while (true)
        {
            ulong now = CgroupStats.OomKills(paths);
            for (; ooms < now; ooms++) output.WriteLine(EventLine("oom", id));
            bool alive = ProcStat.IsAlive(r.Pid, r.PidStartTime);
            if (alive && DateTime.UtcNow >= nextStats)
            {
                output.WriteLine(StatsLine(id, paths));
                nextStats = DateTime.UtcNow + interval;
            }
            output.Flush();
            if (!alive) return;
            Thread.Sleep(OomPoll);
        }
    }
}

public static class Durations
{
    /// <summary>A Go-style duration as runc's flags take it: "5s", "500ms", "1m30s", "2h"; a bare number is seconds.</summary>
    public static TimeSpan Parse(string flag, string value)
    {
        string v = value.Trim();
        if (double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double secs))
            return TimeSpan.FromSeconds(secs);
        var m = System.Text.RegularExpressions.Regex.Match(v, @"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$");
        if (!m.Success) throw new Cli.UsageException($"invalid value \"{value}\" for flag --{flag}: not a duration (e.g. 5s, 500ms)");
        double total = 0;
        for (int i = 0; i < m.Groups[1].Captures.Count; i++)
        {
            double n = double.Parse(m.Groups[1].Captures[i].Value, System.Globalization.CultureInfo.InvariantCulture);
            total += m.Groups[2].Captures[i].Value switch
            {
                "ns" => n / 1e9, "us" or "µs" => n / 1e6, "ms" => n / 1e3, "s" => n, "m" => n * 60, _ => n * 3600,
            };
        }
        return TimeSpan.FromSeconds(total);
    }
}
