using System.Text;
using System.Text.Json;

namespace SandboxRunc.Policy;

/// <summary>Host IDs [Start, Start + Size).</summary>
public readonly record struct IdSpan(long Start, long Size)
{
    public long End => Start + Size;
    public bool Overlaps(IdSpan other) => Start < other.End && other.Start < End;
    public override string ToString() => $"{Start}-{End - 1}";
}

/// <summary>Why a range is in the table.</summary>
public enum HolderKind
{
    /// <summary>Handed out from the pool by <see cref="IdRangeAllocator"/> (recorded by index).</summary>
    Pool,
    /// <summary>The spec's own mappings (userns-remap, podman --uidmap), or a range the pool no longer describes: exclusive too.</summary>
    Own,
    /// <summary>A container that joined another's user namespace (--pid/--ipc/--network=container:x): it shares that range.</summary>
    Shared,
    /// <summary>Found in use by `ranges --rebuild` with no container state naming it: held until a rebuild finds it unused.</summary>
    Live,
}

/// <summary>One entry of the range table: a container (by its state dir) holding host uid and gid ranges.</summary>
public sealed record RangeHolder(HolderKind Kind, string Id, string StateDir, long? Index, IdSpan Uid, IdSpan Gid, string? Process = null)
{
    /// <summary>Exclusive holders may not overlap one another; a shared one overlaps the holder it shares with.</summary>
    public bool Exclusive => Kind != HolderKind.Shared;

    public string Who => Kind == HolderKind.Live ? $"a process no container state names ({Process})" : $"container {Id}";

    /// <summary>The range as the container's maps show it, when it came from the pool.</summary>
    public IdRange? AllocatedRange => Kind == HolderKind.Pool ? new IdRange(Uid.Start, Gid.Start, Uid.Size) : null;

    public override string ToString() => $"uids {Uid}, gids {Gid}";
}

/// <summary>The pool entries of /etc/subuid and /etc/subgid, cut into ranges of 65536 IDs.</summary>
public sealed record IdPools(SubIdEntry Uid, SubIdEntry Gid, string SubUidPath, string SubGidPath)
{
    public const long RangeSize = 65536;
    public long Count => Math.Min(Uid.Count, Gid.Count) / RangeSize;
    public IdSpan UidSpan => new(Uid.Start, Count * RangeSize);
    public IdSpan GidSpan => new(Gid.Start, Count * RangeSize);
    public IdSpan UidOf(long index) => new(Uid.Start + index * RangeSize, RangeSize);
    public IdSpan GidOf(long index) => new(Gid.Start + index * RangeSize, RangeSize);

    public override string ToString() =>
        $"uids {UidSpan} (entry \"{Uid.Name}\" in {SubUidPath}), gids {GidSpan} (in {SubGidPath})";

    /// <summary>The pool indexes whose uid range overlaps <paramref name="uid"/> or whose gid range overlaps <paramref name="gid"/>.</summary>
    public IEnumerable<long> IndexesTouching(IdSpan uid, IdSpan gid) =>
        Touching(uid, Uid.Start).Concat(Touching(gid, Gid.Start)).Distinct();

    IEnumerable<long> Touching(IdSpan span, long start)
    {
        if (span.Size <= 0 || span.End <= start) yield break;
        long first = span.Start <= start ? 0 : (span.Start - start) / RangeSize;
        long last = Math.Min(Count - 1, (span.End - 1 - start) / RangeSize);
        for (long i = first; i <= last; i++) yield return i;
    }
}

/// <summary>
/// The range table, /run/sandbox-runc/id-ranges.json: pure functions to read it strictly, write it, and
/// decide what may be handed out. A table that cannot be read, or that is structurally wrong, is never
/// taken as "nothing held" (that handed a running container's range to the next one): its problem, one
/// line, stops allocation until `sandbox-runc ranges --rebuild` rebuilds it.
///
/// Format: { "holders": [ HOLDER, ... ] }, a holder being
///   { "index": 3, "id": "c1", "stateDir": "/run/.../c1" }                          a range of the pool
///   { "kind": "own",    "uid": {"start":S,"size":N}, "gid": {...}, "id", "stateDir" } the spec's own mappings
///   { "kind": "shared", "uid": ..., "gid": ..., "id", "stateDir" }                 joined another's namespace
///   { "kind": "live",   "index": 3, "process": "pid 42 (sleep)" }                  found in use by a rebuild
/// </summary>
public static class IdRangeTable
{
    /// <summary>Reads a table; returns null and what is wrong with it (one line, for the admin) when it cannot be trusted.</summary>
    public static List<RangeHolder>? Parse(ReadOnlySpan<byte> json, IdPools pools, out string? problem)
    {
        problem = null;
        var holders = new List<RangeHolder>();
        if (Encoding.UTF8.GetString(json).Trim().Length == 0)
        {
            problem = "the file is empty";
            return null;
        }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json.ToArray()); }
        catch (JsonException e)
        {
            problem = $"it is not valid JSON ({FirstLine(e.Message)})";
            return null;
        }
        using (doc)
        {
            string? why = ReadHolders(doc.RootElement, pools, holders) ?? Check(holders, pools);
            if (why is not null)
            {
                problem = why;
                return null;
            }
        }
        return holders;
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    static string? ReadHolders(JsonElement root, IdPools pools, List<RangeHolder> holders)
    {
        if (root.ValueKind != JsonValueKind.Object)
            return $"it is {Shown(root)} instead of an object with a \"holders\" list";
        if (!root.TryGetProperty("holders", out var list))
            return "\"holders\" is missing";
        if (list.ValueKind != JsonValueKind.Array)
            return $"\"holders\" is {Shown(list)} instead of a list";
        int i = 0;
        foreach (var h in list.EnumerateArray())
        {
            var (holder, why) = ReadHolder(h, pools);
            if (why is not null) return $"holder {i}: {why}";
            holders.Add(holder!);
            i++;
        }
        return null;
    }

    static (RangeHolder?, string?) ReadHolder(JsonElement h, IdPools pools)
    {
        if (h.ValueKind != JsonValueKind.Object) return (null, $"it is {Shown(h)} instead of an object");
        var kind = HolderKind.Pool;
        if (h.TryGetProperty("kind", out var k))
        {
            if (k.ValueKind != JsonValueKind.String || !TryKind(k.GetString()!, out kind))
                return (null, $"\"kind\" is {Shown(k)}: it must be \"pool\", \"own\", \"shared\" or \"live\"");
        }
        string id = "", stateDir = "", process = "";
        if (kind == HolderKind.Live)
        {
            if (!TryString(h, "process", out process) || process.Any(char.IsControl)) return (null, "\"process\" is missing or not a line of text");
        }
        else
        {
            if (!TryString(h, "id", out id) || !IsContainerId(id)) return (null, "\"id\" is missing or not a container id");
            if (!TryString(h, "stateDir", out stateDir) || !stateDir.StartsWith('/') || stateDir.Any(char.IsControl))
                return (null, $"\"stateDir\" of {id} is missing or not an absolute path");
        }
        string who = kind == HolderKind.Live ? "the live range" : id;
        if (kind is HolderKind.Pool or HolderKind.Live)
        {
            if (!h.TryGetProperty("index", out var ix) || ix.ValueKind != JsonValueKind.Number || !ix.TryGetInt64(out long index) || index < 0)
                return (null, $"\"index\" of {who} is missing or not a whole number >= 0");
            if (index >= pools.Count)
                return (null, $"{who} holds index {index}, outside the pool (indexes 0-{pools.Count - 1}: {pools})");
            return (new RangeHolder(kind, id, stateDir, index, pools.UidOf(index), pools.GidOf(index), kind == HolderKind.Live ? process : null), null);
        }
        var (uid, uidWhy) = ReadSpan(h, "uid");
        if (uidWhy is not null) return (null, $"{uidWhy} (of {who})");
        var (gid, gidWhy) = ReadSpan(h, "gid");
        if (gidWhy is not null) return (null, $"{gidWhy} (of {who})");
        return (new RangeHolder(kind, id, stateDir, null, uid, gid), null);
    }

    static (IdSpan, string?) ReadSpan(JsonElement h, string name)
    {
        if (!h.TryGetProperty(name, out var s) || s.ValueKind != JsonValueKind.Object)
            return (default, $"\"{name}\" is missing or not an object with \"start\" and \"size\"");
        if (!s.TryGetProperty("start", out var a) || a.ValueKind != JsonValueKind.Number || !a.TryGetInt64(out long start)
            || !s.TryGetProperty("size", out var b) || b.ValueKind != JsonValueKind.Number || !b.TryGetInt64(out long size))
            return (default, $"\"{name}\" needs whole numbers \"start\" and \"size\"");
        if (start < 1 || size < 1 || start + size > uint.MaxValue)
            return (default, $"\"{name}\" {start}+{size} is not a range of host IDs between 1 and 4294967294");
        return (new IdSpan(start, size), null);
    }

    /// <summary>The rules a whole table keeps: one entry per state dir, exclusive ranges overlap nothing exclusive.</summary>
    static string? Check(List<RangeHolder> holders, IdPools pools)
    {
        var dirs = new Dictionary<string, string>();
        foreach (var h in holders.Where(h => h.Kind != HolderKind.Live))
        {
            if (dirs.TryGetValue(h.StateDir, out var other))
                return $"state dir {h.StateDir} is listed twice ({other} and {h.Id})";
            dirs[h.StateDir] = h.Id;
        }
        var exclusive = holders.Where(h => h.Exclusive).ToList();
        return Overlap(exclusive, h => h.Uid, "uids") ?? Overlap(exclusive, h => h.Gid, "gids");
    }

    /// <summary>Sorted by start, each range must end before the next starts (n log n: tables can hold thousands).</summary>
    static string? Overlap(List<RangeHolder> holders, Func<RangeHolder, IdSpan> span, string what)
    {
        var sorted = holders.OrderBy(h => span(h).Start).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            RangeHolder a = sorted[i - 1], b = sorted[i];
            if (!span(a).Overlaps(span(b))) continue;
            return a.Index is { } ia && a.Index == b.Index
                ? $"index {ia} is held twice ({a.Who} and {b.Who})"
                : $"{a.Who} ({what} {span(a)}) and {b.Who} ({what} {span(b)}) overlap";
        }
        return null;
    }

    static bool IsContainerId(string id)
    {
        try { Container.StateStore.ValidateId(id); return true; }
        catch (Container.RuntimeException) { return false; }
    }

    static bool TryKind(string s, out HolderKind kind)
    {
        kind = s switch { "pool" => HolderKind.Pool, "own" => HolderKind.Own, "shared" => HolderKind.Shared, "live" => HolderKind.Live, _ => (HolderKind)(-1) };
        return (int)kind >= 0;
    }

    static bool TryString(JsonElement h, string name, out string value)
    {
        value = h.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "";
        return v.ValueKind == JsonValueKind.String;
    }

    static string Shown(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Null => "null",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => $"the string \"{Clip(e.GetString()!)}\"",
        JsonValueKind.Number => $"the number {Clip(e.GetRawText())}",
        JsonValueKind.True or JsonValueKind.False => e.GetRawText(),
        _ => "an object",
    };

    /// <summary>A value from the file, fit for a one-line message: control characters out, at most 40 characters.</summary>
    static string Clip(string s)
    {
        var clean = new string(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return clean.Length <= 40 ? clean : clean[..40] + "...";
    }

    public static byte[] Serialize(IEnumerable<RangeHolder> holders)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("holders");
            foreach (var h in holders) WriteHolder(w, h);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    static void WriteHolder(Utf8JsonWriter w, RangeHolder h)
    {
        w.WriteStartObject();
        if (h.Kind != HolderKind.Pool) w.WriteString("kind", KindName(h.Kind));
        if (h.Kind is HolderKind.Pool or HolderKind.Live) w.WriteNumber("index", h.Index!.Value);
        if (h.Kind == HolderKind.Live) w.WriteString("process", h.Process);
        else
        {
            w.WriteString("id", h.Id);
            w.WriteString("stateDir", h.StateDir);
        }
        if (h.Kind is HolderKind.Own or HolderKind.Shared)
        {
            WriteSpan(w, "uid", h.Uid);
            WriteSpan(w, "gid", h.Gid);
        }
        w.WriteEndObject();
    }

    public static string KindName(HolderKind kind) => kind.ToString().ToLowerInvariant();

    /// <summary>What create notes about a container's IDs in its state dir: kind and host ranges, no index (the pool may be resized before a rebuild reads it).</summary>
    public static void WriteNoted(Utf8JsonWriter w, string name, RangeHolder h)
    {
        w.WriteStartObject(name);
        w.WriteString("kind", KindName(h.Kind));
        WriteSpan(w, "uid", h.Uid);
        WriteSpan(w, "gid", h.Gid);
        w.WriteEndObject();
    }

    static void WriteSpan(Utf8JsonWriter w, string name, IdSpan s)
    {
        w.WriteStartObject(name);
        w.WriteNumber("start", s.Start);
        w.WriteNumber("size", s.Size);
        w.WriteEndObject();
    }

    /// <summary>What <see cref="WriteNoted"/> wrote, as a holder without index; null when it is not that.</summary>
    public static RangeHolder? ReadNoted(JsonElement e, string id, string stateDir)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        var kind = HolderKind.Pool;
        if (e.TryGetProperty("kind", out var k) && (k.ValueKind != JsonValueKind.String || !TryKind(k.GetString()!, out kind))) return null;
        var (uid, a) = ReadSpan(e, "uid");
        var (gid, b) = ReadSpan(e, "gid");
        return a is null && b is null && kind != HolderKind.Live ? new RangeHolder(kind, id, stateDir, null, uid, gid) : null;
    }

    /// <summary>Drops the holders whose container is gone (its state dir was removed without delete).</summary>
    public static void Reclaim(List<RangeHolder> holders, Func<string, bool> stateDirExists) =>
        holders.RemoveAll(h => h.Kind != HolderKind.Live && !stateDirExists(h.StateDir));

    /// <summary>The lowest pool index that no holder overlaps (in uids or gids), or null when every one is held.</summary>
    public static long? FreeIndex(IReadOnlyList<RangeHolder> holders, IdPools pools)
    {
        var used = new HashSet<long>();
        foreach (var h in holders)
        {
            if (h.Index is { } i) used.Add(i);
            else foreach (var t in pools.IndexesTouching(h.Uid, h.Gid)) used.Add(t);
        }
        for (long index = 0; index < pools.Count; index++)
            if (!used.Contains(index)) return index;
        return null;
    }

    /// <summary>
    /// Whether a spec's own mappings may be used: not inside the pool (its ranges are handed out by the
    /// runtime, whatever the table says now), and not overlapping any range held by another container.
    /// Returns the refusal, or null.
    /// </summary>
    public static string? RefuseOwn(IdSpan uid, IdSpan gid, IReadOnlyList<RangeHolder> holders, IdPools pools)
    {
        string shown = $"uids {uid}, gids {gid}";
        if (uid.Overlaps(pools.UidSpan) || gid.Overlaps(pools.GidSpan))
            return $"user namespace mapping refused: the spec's own mappings ({shown}) overlap sandbox-runc's ID pool ({pools}), " +
                   "from which sandbox-runc gives every container a range of its own; map host IDs outside the pool, " +
                   "or leave the mappings out and sandbox-runc allocates a range";
        if (holders.FirstOrDefault(h => h.Uid.Overlaps(uid) || h.Gid.Overlaps(gid)) is { } held)
            return $"user namespace mapping refused: the spec's own mappings ({shown}) overlap the range held by {held.Who} ({held}); " +
                   "ranges are exclusive between containers. Docker's userns-remap gives every container the same range, so " +
                   "only one such container can run at a time with sandbox-runc; without userns-remap sandbox-runc gives " +
                   "each container a range of its own";
        return null;
    }

    /// <summary>A container found by `ranges --rebuild`, and the namespaces of live processes it found.</summary>
    public sealed record LiveNamespace(string Process, IReadOnlyList<IdSpan> UidExtents, IReadOnlyList<IdSpan> GidExtents);

    /// <summary>
    /// The table rebuilt from the truth: the containers' state dirs (<paramref name="found"/>, what each
    /// noted at create), then the user namespaces of live processes. <paramref name="kept"/> are the holders
    /// of a still readable table whose state dir exists (a create in progress is only there). A found range
    /// that another container holds too is recorded as shared, with a note: those two are not isolated from
    /// each other. Pool ranges used by a live process that no state names are held as "live" until a later
    /// rebuild finds them unused: a range in use is never handed out. Notes say what was found.
    /// </summary>
    public static List<RangeHolder> Rebuild(IEnumerable<RangeHolder> kept, IEnumerable<RangeHolder> found,
        IEnumerable<LiveNamespace> live, IdPools pools, List<string> notes)
    {
        var result = kept.Where(h => h.Kind != HolderKind.Live).ToList();
        foreach (var f in found)
        {
            if (result.Any(h => h.StateDir == f.StateDir)) continue;
            var h = InPool(f, pools);
            if (h.Exclusive && result.FirstOrDefault(o => o.Exclusive && (o.Uid.Overlaps(h.Uid) || o.Gid.Overlaps(h.Gid))) is { } other)
            {
                notes.Add($"{h.Who} and {other.Who} both run in {h}: they are not isolated from each other; " +
                          $"delete and create one of them again to give it a range of its own");
                h = h with { Kind = HolderKind.Shared, Index = null };
            }
            result.Add(h);
        }
        foreach (var ns in live)
        {
            var touched = ns.UidExtents.SelectMany(u => pools.IndexesTouching(u, default))
                .Concat(ns.GidExtents.SelectMany(g => pools.IndexesTouching(default, g))).Distinct().Order();
            foreach (long index in touched)
            {
                IdSpan uid = pools.UidOf(index), gid = pools.GidOf(index);
                if (result.Any(h => h.Uid.Overlaps(uid) || h.Gid.Overlaps(gid))) continue;
                notes.Add($"pool range {index} ({uid}) is used by {ns.Process}, which no container state names: it stays held " +
                          "until a later rebuild finds it unused");
                result.Add(new RangeHolder(HolderKind.Live, "", "", index, uid, gid, ns.Process));
            }
        }
        result.Sort((a, b) => a.Uid.Start.CompareTo(b.Uid.Start));
        return result;
    }

    /// <summary>A pool range noted at create, as an index of the pool as it is now (or as an exclusive own range if it no longer fits).</summary>
    static RangeHolder InPool(RangeHolder f, IdPools pools)
    {
        if (f.Kind != HolderKind.Pool) return f with { Index = null };
        long index = (f.Uid.Start - pools.Uid.Start) / IdPools.RangeSize;
        bool fits = f.Uid.Start >= pools.Uid.Start && index < pools.Count && pools.UidOf(index) == f.Uid && pools.GidOf(index) == f.Gid;
        return fits ? f with { Index = index } : f with { Kind = HolderKind.Own, Index = null };
    }
}
