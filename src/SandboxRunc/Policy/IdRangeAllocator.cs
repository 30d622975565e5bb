using System.Text.Json;
using System.Text.Json.Serialization;
using SandboxRunc.Container;
using SandboxRunc.Interop;

namespace SandboxRunc.Policy;

/// <summary>A container's exclusive slice of the pool: container IDs 0..Size-1 map to host UidBase.. / GidBase...</summary>
public sealed record IdRange(
    [property: JsonPropertyName("uidBase")] long UidBase,
    [property: JsonPropertyName("gidBase")] long GidBase,
    [property: JsonPropertyName("size")] long Size)
{
    public string UidMapLine => $"0 {UidBase} {Size}";
    public string GidMapLine => $"0 {GidBase} {Size}";
}

/// <summary>
/// Hands out 65536-ID ranges of the pool, each to one container at a time. The allocation table is one
/// JSON file (default /run/sandbox-runc/id-ranges.json), rewritten atomically under an flock, so
/// concurrent creates never share a range and the table survives runtime restarts (not reboots, like
/// the containers). A range whose holder's state directory is gone is reclaimed.
/// </summary>
public sealed class IdRangeAllocator(IdPoolConfig config)
{
    public const long RangeSize = 65536;

    public sealed class Holder
    {
        [JsonPropertyName("index")] public long Index { get; set; }
        [JsonPropertyName("id")] public string Id { get; set; } = "";
        /// <summary>The holder's state dir: while it exists, the range is held.</summary>
        [JsonPropertyName("stateDir")] public string StateDir { get; set; } = "";
    }

    public sealed class Table
    {
        [JsonPropertyName("holders")] public List<Holder> Holders { get; set; } = [];
    }

    /// <summary>Reserves the lowest free range for the container whose state dir is given.</summary>
    public IdRange Allocate(string id, string stateDir)
    {
        return WithTable(table =>
        {
            // Under the table's lock: the first creates on a fresh host all add the pool entry otherwise.
            var (uidPool, gidPool) = Pools();
            long count = Math.Min(uidPool.Count, gidPool.Count) / RangeSize;
            table.Holders.RemoveAll(h => !Directory.Exists(h.StateDir) || h.StateDir == stateDir);
            var used = table.Holders.Select(h => h.Index).ToHashSet();
            long index = 0;
            while (used.Contains(index)) index++;
            if (index >= count)
                throw new RuntimeException(
                    $"cannot create container {id}: the ID pool is exhausted: all {count} ranges of {RangeSize} IDs " +
                    $"in {config.SubUidPath} ({uidPool}) are held by running containers; delete some, or enlarge the \"{config.Name}\" entry");
            table.Holders.Add(new Holder { Index = index, Id = id, StateDir = stateDir });
            return new IdRange(uidPool.Start + index * RangeSize, gidPool.Start + index * RangeSize, RangeSize);
        });
    }

    /// <summary>Frees the range held through this state dir (no-op if none).</summary>
    public void Release(string stateDir) =>
        WithTable(table => table.Holders.RemoveAll(h => h.StateDir == stateDir));

    /// <summary>The ranges currently held (after reclaiming those of vanished containers).</summary>
    public IReadOnlyList<Holder> Held() =>
        WithTable(table =>
        {
            table.Holders.RemoveAll(h => !Directory.Exists(h.StateDir));
            return table.Holders.ToList();
        });

    public (SubIdEntry Uid, SubIdEntry Gid) Pools() =>
        (SubIdFile.EnsureEntry(config.SubUidPath, config.Name, config.PoolSize),
         SubIdFile.EnsureEntry(config.SubGidPath, config.Name, config.PoolSize));

    T WithTable<T>(Func<Table, T> change)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(config.StatePath)!);
        string lockPath = config.StatePath + ".lock";
        using var lockFd = new SafeFd(SysException.Check(Libc.open(lockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180), "open", lockPath));
        SysException.Check(Libc.flock(lockFd.Fd, Libc.LOCK_EX), "flock", lockPath);
        var table = File.Exists(config.StatePath)
            ? JsonSerializer.Deserialize(File.ReadAllBytes(config.StatePath), PolicyJson.Default.Table) ?? new Table()
            : new Table();
        var result = change(table);
        AtomicFile.Write(config.StatePath, JsonSerializer.SerializeToUtf8Bytes(table, PolicyJson.Default.Table));
        return result;
    }

    void WithTable(Action<Table> change) => WithTable(t => { change(t); return 0; });
}

/// <summary>
/// Where the pool and the allocation table live. Defaults: entry "sandbox-runc" in /etc/subuid and
/// /etc/subgid (268435456 IDs when created), table /run/sandbox-runc/id-ranges.json. The environment
/// can point them elsewhere (SANDBOX_RUNC_SUBUID, SANDBOX_RUNC_SUBGID, SANDBOX_RUNC_ID_STATE,
/// SANDBOX_RUNC_ID_POOL_SIZE), for tests and for hosts that keep the files in other places.
/// </summary>
public sealed record IdPoolConfig(string Name, string SubUidPath, string SubGidPath, string StatePath, long PoolSize)
{
    public static IdPoolConfig FromEnvironment() => new(
        "sandbox-runc",
        Env("SANDBOX_RUNC_SUBUID") ?? "/etc/subuid",
        Env("SANDBOX_RUNC_SUBGID") ?? "/etc/subgid",
        Env("SANDBOX_RUNC_ID_STATE") ?? "/run/sandbox-runc/id-ranges.json",
        long.TryParse(Env("SANDBOX_RUNC_ID_POOL_SIZE"), out long n) && n >= IdRangeAllocator.RangeSize ? n : SubIdFile.DefaultPoolSize);

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
}

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(IdRangeAllocator.Table))]
internal sealed partial class PolicyJson : JsonSerializerContext
{
}
