namespace SandboxRunc.Cgroups;

public enum CgroupVersion { V1, V2 }

/// <summary>
/// Where a container's cgroup lives: on cgroup v1 one directory per controller (co-mounted controllers
/// share one), on v2 the one unified directory. The one place that knows how the saved form (the state's
/// "cgroupPaths" map: controller -> dir, or "" -> dir on v2) is shaped; everything else asks this.
/// </summary>
public sealed class CgroupPaths
{
    readonly Dictionary<string, string> _map;

    CgroupPaths(CgroupVersion version, Dictionary<string, string> map)
    {
        Version = version;
        _map = map;
    }

    public CgroupVersion Version { get; }

    /// <summary>
    /// The key of a v1 map's directory in a hybrid host's cgroup2 hierarchy (CgroupLayout.HybridUnifiedMount): no
    /// controller of the container's, only where its processes are, so that its cgroup namespace is rooted at its own.
    /// </summary>
    public const string HybridUnified = "unified";
    public bool IsV2 => Version == CgroupVersion.V2;

    /// <summary>The v2 directory (null on v1).</summary>
    public string? Unified => IsV2 ? _map[""] : null;

    /// <summary>The directory of a v1 controller ("memory", "name=systemd"), or the unified one on v2; null if the container has none.</summary>
    public string? Of(string controller) => IsV2 ? _map[""] : _map.GetValueOrDefault(controller);

    /// <summary>v1 on a hybrid host: the container's directory in the cgroup2 hierarchy (<see cref="HybridUnified"/>); else null.</summary>
    public string? HybridUnifiedDir => IsV2 ? null : _map.GetValueOrDefault(HybridUnified);

    /// <summary>Every directory once, in a stable order.</summary>
    public IEnumerable<string> Dirs => _map.Values.Distinct();

    /// <summary>The saved map's entry ("" on v2).</summary>
    public string this[string key] => _map[key];

    /// <summary>v1: controller -> dir; v2: the one entry "" -> dir.</summary>
    public IReadOnlyDictionary<string, string> Map => _map;

    public static CgroupPaths V2(string dir) => new(CgroupVersion.V2, new Dictionary<string, string> { [""] = dir });

    public static CgroupPaths V1(IReadOnlyDictionary<string, string> controllers)
    {
        if (controllers.ContainsKey("")) throw new ArgumentException("a v1 controller map has no unified entry", nameof(controllers));
        return new(CgroupVersion.V1, new Dictionary<string, string>(controllers));
    }

    /// <summary>From the saved form; an empty map is a container without cgroups (no controller has a directory).</summary>
    public static CgroupPaths FromMap(IReadOnlyDictionary<string, string>? map)
    {
        if (map is null || map.Count == 0) return new(CgroupVersion.V1, []);
        return map.TryGetValue("", out var unified) && map.Count == 1 ? V2(unified) : new(CgroupVersion.V1, map.Where(kv => kv.Key.Length > 0).ToDictionary());
    }

    /// <summary>As <see cref="FromMap"/>, for a map that must not be empty.</summary>
    public static CgroupPaths Require(IReadOnlyDictionary<string, string>? map) =>
        map is { Count: > 0 } ? FromMap(map) : throw new CgroupException("cgroup: no cgroup paths saved for this container");

    public bool IsEmpty => _map.Count == 0;

    public void Deconstruct(out CgroupVersion version, out IReadOnlyDictionary<string, string> map)
    {
        version = Version;
        map = _map;
    }

    public override string ToString() => IsV2 ? Unified! : string.Join(", ", _map.Select(kv => $"{kv.Key}={kv.Value}"));
}
