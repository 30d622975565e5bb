// What runc and crun take as a systemd cgroupsPath, "slice:prefix:name", and where systemd puts it.
// Pure functions (no D-Bus, no files): the unit's name and slice, and the cgroup directory systemd makes
// for it, which the runtime must know before the unit exists (the state records it at create).
//
//   "system.slice:docker:ID"   -> unit docker-ID.scope in system.slice: /sys/fs/cgroup/system.slice/docker-ID.scope
//   ":docker:ID"               -> the same (an empty slice is system.slice)
//   "a-b.slice:cri:ID"         -> slices nest by their dashes: /a.slice/a-b.slice/cri-ID.scope
//   "system.slice::name"       -> name.scope (no prefix)
//   "machine.slice:x:y.slice"  -> the container is a slice of its own, y.slice, in machine.slice
//   empty (no cgroupsPath)     -> system.slice:sandbox-runc:ID
namespace SandboxRunc.Cgroups;

/// <summary>A systemd unit that holds a container: its slice and its name (a .scope, or a .slice).</summary>
public sealed record SystemdUnit(string Slice, string Name)
{
    public bool IsSlice => Name.EndsWith(".slice", StringComparison.Ordinal);

    /// <summary>"slice:name": how the state records it.</summary>
    public override string ToString() => $"{Slice}:{Name}";
}

public static class SystemdLayout
{
    public const string DefaultSlice = "system.slice", DefaultPrefix = "sandbox-runc";

    /// <summary>The "slice:prefix:name" form (absolute paths and plain relative ones are cgroupfs paths).</summary>
    public static bool IsSystemdPath(string? cgroupsPath) =>
        cgroupsPath is { Length: > 0 } p && !p.StartsWith('/') && p.Split(':').Length == 3;

    public static SystemdUnit Parse(string? cgroupsPath, string containerId)
    {
        if (string.IsNullOrEmpty(cgroupsPath)) return new SystemdUnit(DefaultSlice, $"{DefaultPrefix}-{containerId}.scope");
        var parts = cgroupsPath.Split(':');
        if (parts.Length != 3)
            throw new CgroupException($"cgroup: cgroupsPath \"{cgroupsPath}\": the systemd cgroup driver expects \"slice:prefix:name\"");
        string slice = parts[0].Length == 0 ? DefaultSlice : parts[0];
        CheckName(cgroupsPath, slice, ".slice");
        string name = parts[2].EndsWith(".slice", StringComparison.Ordinal) ? parts[2]
            : parts[1].Length == 0 ? parts[2] + ".scope" : $"{parts[1]}-{parts[2]}.scope";
        if (parts[2].Length == 0) throw new CgroupException($"cgroup: cgroupsPath \"{cgroupsPath}\" has no name");
        CheckName(cgroupsPath, name, null);
        return new SystemdUnit(slice, name);
    }

    /// <summary>Back from the recorded "slice:name".</summary>
    public static SystemdUnit Parse(string recorded)
    {
        int colon = recorded.IndexOf(':');
        if (colon <= 0) throw new CgroupException($"cgroup: recorded systemd unit \"{recorded}\" is not \"slice:name\"");
        return new SystemdUnit(recorded[..colon], recorded[(colon + 1)..]);
    }

    static void CheckName(string cgroupsPath, string name, string? suffix)
    {
        if (name.Contains('/') || name is "." or ".." || suffix is not null && !name.EndsWith(suffix, StringComparison.Ordinal))
            throw new CgroupException($"cgroup: cgroupsPath \"{cgroupsPath}\": \"{name}\" is not a valid systemd unit name{(suffix is null ? "" : $" (a slice ends in {suffix})")}");
    }

    /// <summary>A slice's directory below the cgroup root: dashes nest ("a-b.slice" is /a.slice/a-b.slice); "-.slice" is the root.</summary>
    public static string ExpandSlice(string slice)
    {
        if (slice == "-.slice") return "";
        string stem = slice[..^".slice".Length];
        if (stem.Length == 0 || stem.StartsWith('-') || stem.EndsWith('-') || stem.Contains("--"))
            throw new CgroupException($"cgroup: \"{slice}\" is not a valid slice name");
        var path = new System.Text.StringBuilder();
        var prefix = new System.Text.StringBuilder();
        foreach (var part in stem.Split('-'))
        {
            if (prefix.Length > 0) prefix.Append('-');
            prefix.Append(part);
            path.Append('/').Append(prefix).Append(".slice");
        }
        return path.ToString();
    }

    /// <summary>Where systemd puts the unit on the unified hierarchy.</summary>
    public static string UnifiedDir(SystemdUnit unit) => CgroupLayout.CgroupRoot + ExpandSlice(unit.Slice) + "/" + unit.Name;

    /// <summary>systemd's layout on v1 hierarchies: each controller's mount point, the slice's path, the unit.</summary>
    internal static Dictionary<string, string> V1Dirs(SystemdUnit unit, IEnumerable<V1Hierarchy> hierarchies, string? hybridUnifiedMount = null)
    {
        var dirs = new Dictionary<string, string>();
        foreach (var h in hierarchies)
            foreach (var c in h.Controllers)
                dirs[c] = h.MountPoint + ExpandSlice(unit.Slice) + "/" + unit.Name;
        if (dirs.Count == 0) throw new CgroupException("cgroup: no cgroup v1 hierarchy is mounted at " + CgroupLayout.CgroupRoot);
        // A hybrid host's cgroup2 hierarchy: the same place there (see CgroupLayout.HybridUnifiedMount).
        if (hybridUnifiedMount is not null) dirs[CgroupPaths.HybridUnified] = hybridUnifiedMount + ExpandSlice(unit.Slice) + "/" + unit.Name;
        return dirs;
    }
}
