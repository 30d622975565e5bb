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

/// <summary>What a new container asks of the range table: a range of the pool, or to record the range it brings or joins.</summary>
public sealed record IdClaim(HolderKind Kind, IdSpan Uid, IdSpan Gid)
{
    public static readonly IdClaim FromPool = new(HolderKind.Pool, default, default);

    /// <summary>
    /// The claim for a spec the user-namespace policy decided on: a pool range, the spec's own mappings
    /// (the policy let through only one contiguous uid and gid mapping from container ID 0), the range of the
    /// container whose user namespace it joins, or nothing (a user namespace joined by path: not ours to record).
    /// </summary>
    public static IdClaim? Of(UserNamespaceDecision decision, Oci.Spec spec, IdRange? joined) => decision switch
    {
        UserNamespaceDecision.AllocateRange => FromPool,
        UserNamespaceDecision.KeepSpecMappings when spec.Linux is { UidMappings: [var u], GidMappings: [var g] } =>
            new IdClaim(HolderKind.Own, new IdSpan(u.HostId, u.Size), new IdSpan(g.HostId, g.Size)),
        _ when joined is not null => new IdClaim(HolderKind.Shared, new IdSpan(joined.UidBase, joined.Size), new IdSpan(joined.GidBase, joined.Size)),
        _ => null,
    };
}

/// <summary>
/// The runtime's record of which host IDs each container runs as, so that no two containers ever share
/// them: hands out 65536-ID ranges of the pool lowest-first, records the ranges specs bring (refusing those
/// in the pool or held by another container) and those joined by another container. The table
/// (<see cref="IdRangeTable"/>, default /run/sandbox-runc/id-ranges.json) is rewritten atomically under an
/// flock, so concurrent creates never share a range and it survives runtime restarts (not reboots, like
/// the containers). A holder whose state directory is gone is reclaimed. A table that cannot be trusted
/// stops every create that needs it and is never reset: `sandbox-runc ranges --rebuild` rebuilds it.
/// </summary>
public sealed class IdRangeAllocator(IdPoolConfig config)
{
    public const long RangeSize = IdPools.RangeSize;

    public const string RebuildHint =
        "run \"sandbox-runc ranges --rebuild\" to rebuild it from the state of the running containers";

    public string TablePath => config.StatePath;

    /// <summary>Records what a container being created will run as; returns its holder (null for no claim).</summary>
    public RangeHolder? Reserve(string id, string stateDir, IdClaim? claim)
    {
        if (claim is null) return null;
        return Locked((holders, problem, pools) =>
        {
            if (holders is null)
                throw new RuntimeException($"cannot create container {id}: the ID range table {config.StatePath} cannot be trusted: " +
                                           $"{problem}; no ID range is handed out until it is rebuilt: {RebuildHint}");
            holders.RemoveAll(h => h.StateDir == stateDir);
            IdRangeTable.Reclaim(holders, Directory.Exists);
            RangeHolder mine;
            if (claim.Kind == HolderKind.Pool)
            {
                long index = IdRangeTable.FreeIndex(holders, pools) ?? throw new RuntimeException(
                    $"cannot create container {id}: the ID pool is exhausted: all {pools.Count} ranges of {RangeSize} IDs " +
                    $"in {config.SubUidPath} ({pools.Uid}) are held by running containers; delete some, or enlarge the \"{config.Name}\" entry");
                mine = new RangeHolder(HolderKind.Pool, id, stateDir, index, pools.UidOf(index), pools.GidOf(index));
            }
            else
            {
                if (claim.Kind == HolderKind.Own && IdRangeTable.RefuseOwn(claim.Uid, claim.Gid, holders, pools) is { } refusal)
                    throw new RuntimeException(refusal);
                mine = new RangeHolder(claim.Kind, id, stateDir, null, claim.Uid, claim.Gid);
            }
            holders.Add(mine);
            return (mine, holders);
        });
    }

    /// <summary>What <see cref="Reserve"/> would refuse for a spec's own mappings now (for `policy check`; nothing is recorded).</summary>
    public string? Refusal(IdClaim? claim) =>
        claim is not { Kind: HolderKind.Own } ? null : Locked((holders, problem, pools) =>
            (holders is null ? $"the ID range table {config.StatePath} cannot be trusted: {problem}; {RebuildHint}"
                : IdRangeTable.RefuseOwn(claim.Uid, claim.Gid, holders, pools), (List<RangeHolder>?)null));

    /// <summary>Reserves the lowest free range of the pool.</summary>
    public IdRange Allocate(string id, string stateDir) => Reserve(id, stateDir, IdClaim.FromPool)!.AllocatedRange!;

    /// <summary>
    /// Frees what is held through this state dir (no-op if nothing). When the table cannot be read it is
    /// left as it is (delete goes on) and the returned warning says it needs rebuilding.
    /// </summary>
    public string? Release(string stateDir) =>
        Locked((holders, problem, _) => holders is null
            ? ($"the ID range table {config.StatePath} cannot be trusted ({problem}): the IDs of {stateDir} could not be released; {RebuildHint}", null)
            : ((string?)null, holders.RemoveAll(h => h.StateDir == stateDir) > 0 ? holders : null));

    /// <summary>The holders (after reclaiming those of vanished containers); throws when the table cannot be trusted.</summary>
    public IReadOnlyList<RangeHolder> Held() =>
        Locked((holders, problem, _) =>
        {
            if (holders is null)
                throw new RuntimeException($"the ID range table {config.StatePath} cannot be trusted: {problem}; {RebuildHint}");
            int before = holders.Count;
            IdRangeTable.Reclaim(holders, Directory.Exists);
            return ((IReadOnlyList<RangeHolder>)holders, holders.Count != before ? holders : null);
        });

    /// <summary>
    /// Rebuilds the table from what <paramref name="scan"/> finds (the containers' state, the live user
    /// namespaces: see RangesOperation), under the table's lock. An unreadable table is kept beside it
    /// (".corrupt-TIME"); a readable one's holders whose state dir exists are kept.
    /// </summary>
    public IReadOnlyList<RangeHolder> Rebuild(Func<(IEnumerable<RangeHolder> Found, IEnumerable<IdRangeTable.LiveNamespace> Live)> scan, List<string> notes) =>
        Locked((holders, problem, pools) =>
        {
            if (holders is null && File.Exists(config.StatePath))
            {
                string backup = $"{config.StatePath}.corrupt-{DateTime.UtcNow:yyyyMMddTHHmmssZ}";
                File.Copy(config.StatePath, backup, overwrite: true);
                notes.Add($"the old table could not be trusted ({problem}); it is kept as {backup}");
            }
            var kept = holders?.Where(h => h.Kind != HolderKind.Live && Directory.Exists(h.StateDir)).ToList() ?? [];
            var (found, live) = scan();
            var rebuilt = IdRangeTable.Rebuild(kept, found, live, pools, notes);
            // What is written must read back as a table: a rebuild never writes one that stops the next create.
            if (IdRangeTable.Parse(IdRangeTable.Serialize(rebuilt), pools, out var wrong) is null)
                throw new RuntimeException($"rebuilding {config.StatePath}: the result is inconsistent ({wrong}); nothing was written");
            return ((IReadOnlyList<RangeHolder>)rebuilt, rebuilt);
        });

    public IdPools Pools() =>
        new(SubIdFile.EnsureEntry(config.SubUidPath, config.Name, config.PoolSize),
            SubIdFile.EnsureEntry(config.SubGidPath, config.Name, config.PoolSize), config.SubUidPath, config.SubGidPath);

    /// <summary>
    /// Runs <paramref name="change"/> under the table's lock with the table as read (null and the problem
    /// when it cannot be trusted), then writes the holders it returns (null: the file stays as it is).
    /// </summary>
    T Locked<T>(Func<List<RangeHolder>?, string?, IdPools, (T Result, List<RangeHolder>? Write)> change)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(config.StatePath))!);
        string lockPath = config.StatePath + ".lock";
        using var lockFd = new SafeFd(SysException.Check(Libc.open(lockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180), "open", lockPath));
        SysException.Check(Libc.flock(lockFd.Fd, Libc.LOCK_EX), "flock", lockPath);
        // Under the lock: the first creates on a fresh host all add the pool entry otherwise.
        var pools = Pools();
        List<RangeHolder>? holders = [];
        string? problem = null;
        if (File.Exists(config.StatePath) || Directory.Exists(config.StatePath))
        {
            try { holders = IdRangeTable.Parse(File.ReadAllBytes(config.StatePath), pools, out problem); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                holders = null;
                problem = $"it cannot be read ({e.Message})";
            }
        }
        var (result, write) = change(holders, problem, pools);
        if (write is not null) AtomicFile.Write(config.StatePath, IdRangeTable.Serialize(write));
        return result;
    }
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
