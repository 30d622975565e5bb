namespace SandboxRunc.Policy;

/// <summary>One "name:start:count" line of /etc/subuid or /etc/subgid.</summary>
public sealed record SubIdEntry(string Name, long Start, long Count)
{
    public long End => Start + Count;
    public override string ToString() => $"{Name}:{Start}:{Count}";
}

/// <summary>
/// The runtime's ID pool is a named entry in /etc/subuid and /etc/subgid, so that other tools
/// (useradd, podman, other runtimes) see it as taken. If it is missing it is appended at the first
/// hole at or above 100000 that no other entry overlaps.
/// </summary>
public static class SubIdFile
{
    public const long FirstId = 100000;
    public const long DefaultPoolSize = 268435456; // 4096 ranges of 65536

    public static List<SubIdEntry> Parse(string text)
    {
        var entries = new List<SubIdEntry>();
        foreach (var raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var f = line.Split(':');
            if (f.Length == 3 && long.TryParse(f[1], out long start) && long.TryParse(f[2], out long count) && start >= 0 && count > 0)
                entries.Add(new SubIdEntry(f[0], start, count));
        }
        return entries;
    }

    /// <summary>The first start ≥ 100000, aligned to 65536 above it, where [start, start+size) overlaps no entry.</summary>
    public static long FirstFreeHole(IEnumerable<SubIdEntry> entries, long size)
    {
        long start = FirstId;
        foreach (var e in entries.OrderBy(e => e.Start))
        {
            if (e.End <= start) continue;
            if (e.Start >= start + size) break;
            start = Align(e.End);
        }
        if (start + size > uint.MaxValue)
            throw new RuntimeException($"no room for a pool of {size} IDs below 2^32 in the subordinate ID files");
        return start;
    }

    static long Align(long id) => FirstId + (id - FirstId + 65535) / 65536 * 65536;

    /// <summary>Finds the named entry in the file, appending one if there is none. Returns the entry.</summary>
    public static SubIdEntry EnsureEntry(string path, string name, long size)
    {
        string text = File.Exists(path) ? File.ReadAllText(path) : "";
        var entries = Parse(text);
        var mine = entries.FirstOrDefault(e => e.Name == name);
        if (mine is not null) return mine;
        mine = new SubIdEntry(name, FirstFreeHole(entries, size), size);
        string updated = text.Length == 0 || text.EndsWith('\n') ? text + mine + "\n" : text + "\n" + mine + "\n";
        Interop.AtomicFile.Write(path, updated);
        return mine;
    }
}
