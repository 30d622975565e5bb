// Pure functions from the text of /proc/self/mountinfo and /proc/self/cgroup to the container's cgroup
// directories. Taking text instead of reading /proc keeps path resolution unit-testable without root.
//
// Resolution follows runc's cgroupfs driver:
//  * the path is cleaned so that ".." can never climb above a hierarchy's root;
//  * an empty cgroupsPath means the container id, taken as a relative path;
//  * absolute paths are joined to each hierarchy's mount point;
//  * v1 relative paths are joined to the caller's own cgroup in that hierarchy (translated through the
//    mount's root, for nested setups); v2 relative paths are joined to the *parent* of the caller's cgroup,
//    because the caller's own cgroup usually holds processes and v2 forbids enabling controllers in it;
//  * "slice:prefix:name" is the systemd driver's syntax: SystemdLayout (CgroupManager chooses).
namespace SandboxRunc.Cgroups;

internal sealed record MountEntry(string Root, string MountPoint, string FsType, string SuperOptions);

/// <summary>One v1 hierarchy: its mount point and the controllers (or "name=x") bound to it.</summary>
internal sealed record V1Hierarchy(string MountPoint, string MountRoot, IReadOnlyList<string> Controllers)
{
    public string MountName => Path.GetFileName(MountPoint);
}

internal static class CgroupLayout
{
    internal const string CgroupRoot = "/sys/fs/cgroup";

    internal static List<MountEntry> ParseMountInfo(string text)
    {
        var list = new List<MountEntry>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            var f = line.Split(' ');
            if (f.Length < 7) continue;
            int dash = Array.IndexOf(f, "-", 6);
            if (dash < 0 || dash + 1 >= f.Length) continue;
            string fsType = f[dash + 1];
            string super = dash + 3 < f.Length ? f[dash + 3] : "";
            list.Add(new MountEntry(Unescape(f[3]), Unescape(f[4]), fsType, super));
        }
        return list;
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo octal.</summary>
    static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && IsOct(s[i + 1]) && IsOct(s[i + 2]) && IsOct(s[i + 3]))
            {
                sb.Append((char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
                i += 3;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
        static bool IsOct(char c) => c >= '0' && c <= '7';
    }

    /// <summary>Parses /proc/self/cgroup into controller -> path ("" is the v2 entry, "name=systemd" a named one).</summary>
    internal static Dictionary<string, string> ParseProcCgroup(string text)
    {
        var map = new Dictionary<string, string>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            if (parts[1].Length == 0) { map[""] = parts[2]; continue; }
            foreach (var c in parts[1].Split(',')) map[c] = parts[2];
        }
        return map;
    }

    static readonly HashSet<string> NonControllerOptions =
        ["rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"];

    /// <summary>True when cgroup2 is mounted at /sys/fs/cgroup itself (a pure v2 host).</summary>
    internal static bool IsUnified(IEnumerable<MountEntry> mounts) =>
        mounts.Any(m => m.FsType == "cgroup2" && m.MountPoint == CgroupRoot);

    /// <summary>
    /// A hybrid host's cgroup2 mount (v1 controllers at /sys/fs/cgroup, cgroup2 below it, e.g. /sys/fs/cgroup/unified), or
    /// null (a pure v1 or v2 host). A process the runtime leaves in the v2 hierarchy's root has that root as its cgroup
    /// namespace's: a container that mounts cgroup2 sees the host's whole tree (see CgroupV1Manager).
    /// </summary>
    internal static MountEntry? HybridUnifiedMount(IEnumerable<MountEntry> mounts) =>
        IsUnified(mounts) ? null
            : mounts.FirstOrDefault(m => m.FsType == "cgroup2" && m.MountPoint.StartsWith(CgroupRoot + "/", StringComparison.Ordinal));

    internal static List<V1Hierarchy> V1Hierarchies(IEnumerable<MountEntry> mounts)
    {
        var seen = new HashSet<string>();
        var result = new List<V1Hierarchy>();
        foreach (var m in mounts)
        {
            if (m.FsType != "cgroup") continue;
            var controllers = m.SuperOptions.Split(',')
                .Where(o => o.Length > 0 && !NonControllerOptions.Contains(o) && (!o.Contains('=') || o.StartsWith("name=")))
                .ToList();
            // The same hierarchy may be mounted twice (bind mounts); the first mount wins.
            if (controllers.Count == 0 || controllers.Any(c => !seen.Add(c))) continue;
            result.Add(new V1Hierarchy(m.MountPoint, m.Root, controllers));
        }
        return result;
    }

    /// <summary>Normalises a cgroup path; ".." cannot climb above "/" (or above the start of a relative path).</summary>
    internal static string CleanPath(string path)
    {
        var stack = new List<string>();
        foreach (var part in path.Split('/'))
        {
            if (part.Length == 0 || part == ".") continue;
            if (part == "..") { if (stack.Count > 0) stack.RemoveAt(stack.Count - 1); continue; }
            stack.Add(part);
        }
        string joined = string.Join('/', stack);
        return path.StartsWith('/') ? "/" + joined : joined;
    }

    static string Join(string a, string b) => b.Length == 0 ? a : a.TrimEnd('/') + "/" + b.TrimStart('/');

    /// <summary>The caller's own cgroup as seen through a mount whose root is mountRoot.</summary>
    static string OwnDir(string mountPoint, string mountRoot, string own)
    {
        string rel = own;
        if (mountRoot != "/" && (own == mountRoot || own.StartsWith(mountRoot + "/")))
            rel = own[mountRoot.Length..];
        return Join(mountPoint, CleanPath("/" + rel));
    }

    /// <summary>
    /// The v2 directory a /proc/PID/cgroup text names (its "0::" line), seen through the cgroup2 mount at
    /// <paramref name="mountPoint"/> whose root is <paramref name="mountRoot"/>; null without one, and null for any path this
    /// mount cannot name as the kernel meant it: one with "." or ".." or empty names (the kernel writes ".." for a cgroup
    /// outside the reader's cgroup namespace, and cleaning it would name another cgroup), one marked " (deleted)", or one
    /// outside the mount's root. Callers then check the result is inside the directory they expect (<see cref="NamesBelow"/>).
    /// </summary>
    internal static string? UnifiedDirOf(string procCgroupText, string mountPoint = CgroupRoot, string mountRoot = "/")
    {
        if (ParseProcCgroup(procCgroupText).GetValueOrDefault("") is not { } path || !path.StartsWith('/')) return null;
        if (path.EndsWith(" (deleted)", StringComparison.Ordinal)) return null;
        if (!IsPlain(path) || !IsPlain(mountRoot)) return null;
        if (mountRoot != "/")
        {
            if (path != mountRoot && !path.StartsWith(mountRoot + "/", StringComparison.Ordinal)) return null;
            path = path[mountRoot.Length..];
        }
        return path is "" or "/" ? mountPoint : Join(mountPoint, path);
    }

    /// <summary>The cgroup2 mount that holds dir (the longest such mount point), or null.</summary>
    internal static MountEntry? UnifiedMountOf(string dir, IEnumerable<MountEntry> mounts) =>
        mounts.Where(m => m.FsType == "cgroup2" && (dir == m.MountPoint || dir.StartsWith(m.MountPoint.TrimEnd('/') + "/", StringComparison.Ordinal)))
              .OrderByDescending(m => m.MountPoint.Length).FirstOrDefault();

    /// <summary>An absolute path of plain names: no ".", "..", nor empty name (but "/" itself).</summary>
    static bool IsPlain(string path) =>
        path == "/" || (path.StartsWith('/') && path[1..].Split('/').All(n => n.Length > 0 && n != "." && n != ".."));

    /// <summary>
    /// The names that lead from <paramref name="top"/> down to <paramref name="dir"/> (none when they are the same), when dir
    /// is top or below it by plain names; else null. The answer is what a write then follows name by name from an fd of top
    /// (CgroupFs.WriteBelow), so a name the check accepted cannot lead anywhere else.
    /// </summary>
    internal static string[]? NamesBelow(string top, string dir)
    {
        if (!IsPlain(top) || !IsPlain(dir)) return null;
        if (dir == top) return [];
        string prefix = top == "/" ? "/" : top + "/";
        return dir.StartsWith(prefix, StringComparison.Ordinal) ? dir[prefix.Length..].Split('/') : null;
    }

    /// <summary>Resolves the container's directories: controller -> absolute dir (v2: "" -> dir).</summary>
    internal static CgroupPaths Resolve(
        string containerId, string? cgroupsPath, string mountInfoText, string procSelfCgroupText)
    {
        string raw = cgroupsPath ?? "";
        if (SystemdLayout.IsSystemdPath(raw))
            throw new CgroupException($"cgroup: cgroupsPath \"{raw}\" is in systemd \"slice:prefix:name\" form: use the systemd cgroup driver (--systemd-cgroup)");
        string inner = CleanPath(raw.Length == 0 ? containerId : raw);
        if (inner.Length == 0 || inner == "/")
            throw new CgroupException($"cgroup: cgroupsPath \"{raw}\" resolves to the root cgroup");

        var mounts = ParseMountInfo(mountInfoText);
        var own = ParseProcCgroup(procSelfCgroupText);
        var paths = new Dictionary<string, string>();

        if (IsUnified(mounts))
        {
            var m = mounts.First(x => x.FsType == "cgroup2" && x.MountPoint == CgroupRoot);
            string dir;
            if (inner.StartsWith('/')) dir = Join(CgroupRoot, inner);
            else
            {
                string self = own.GetValueOrDefault("", "/");
                string parent = CleanPath("/" + self + "/..");
                dir = Join(OwnDir(CgroupRoot, m.Root, parent), inner);
            }
            return CgroupPaths.V2(dir);
        }

        var hierarchies = V1Hierarchies(mounts);
        if (hierarchies.Count == 0)
            throw new CgroupException("cgroup: no cgroup v1 hierarchy or cgroup2 filesystem is mounted at " + CgroupRoot);
        foreach (var h in hierarchies)
        {
            string dir = inner.StartsWith('/')
                ? Join(h.MountPoint, inner)
                : Join(OwnDir(h.MountPoint, h.MountRoot, own.GetValueOrDefault(h.Controllers[0], "/")), inner);
            foreach (var c in h.Controllers) paths[c] = dir;
        }
        // Hybrid: a directory in the v2 hierarchy too, as runc makes one, resolved as a v1 hierarchy's (under the caller's own
        // cgroup for a relative path), so that the cgroup namespace the init unshares is rooted there, not at the host's root.
        if (HybridUnifiedMount(mounts) is { } u)
            paths[CgroupPaths.HybridUnified] = inner.StartsWith('/')
                ? Join(u.MountPoint, inner)
                : Join(OwnDir(u.MountPoint, u.Root, own.GetValueOrDefault("", "/")), inner);
        return CgroupPaths.V1(paths);
    }

    /// <summary>The v1 hierarchy whose mount point holds dir (longest prefix), or null.</summary>
    internal static V1Hierarchy? HierarchyOf(string dir, IEnumerable<V1Hierarchy> hierarchies) =>
        hierarchies.Where(h => dir == h.MountPoint || dir.StartsWith(h.MountPoint + "/"))
                   .OrderByDescending(h => h.MountPoint.Length).FirstOrDefault();
}
