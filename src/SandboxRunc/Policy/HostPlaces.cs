using SandboxRunc.Interop;
using SandboxRunc.Seccomp.Notify;

namespace SandboxRunc.Policy;

/// <summary>
/// A place on the host, as what it IS rather than how it was named: the filesystem (device major:minor
/// as the mount table shows it, and its type) and the path from that filesystem's root. Two paths are
/// the same place when they reach the same directory of the same filesystem, whatever bind mounts,
/// symlinks or volume drivers lie between: /var/lib/docker/volumes/v1/_data bound from /etc is the
/// place (8:1, "/etc").
/// </summary>
public sealed record FsPlace(uint Major, uint Minor, string Path, string FsType)
{
    /// <summary>This place is <paramref name="inner"/> or contains it (same filesystem, at or above).</summary>
    public bool Contains(FsPlace inner) =>
        inner.Major == Major && inner.Minor == Minor && MountRules.IsAtOrBelow(inner.Path, Path);

    public override string ToString() => $"{Major}:{Minor}:{Path} ({FsType})";
}

/// <summary>
/// What a bind-mount source is and everything a container would see through it.
/// <see cref="Self"/>: the place the source resolved to. <see cref="Shows"/>: every place visible through
/// it — itself, the mounts below it when the bind is recursive, and, for overlayfs, the layers it is
/// made of (judged as sources of their own in <see cref="Layers"/>).
/// </summary>
public sealed record BindSource(string Given, string Real, FsPlace Self, IReadOnlyList<FsPlace> Shows, IReadOnlyList<BindSource> Layers, FileId? Id)
{
    /// <summary>Every place visible through the source, its layers' included.</summary>
    public IEnumerable<FsPlace> AllShown() => Shows.Concat(Layers.SelectMany(l => l.AllShown()));

    /// <summary>Where on the host the mounts below the source sit (a recursive bind), paired with the place each shows.</summary>
    public IReadOnlyList<(string MountPoint, FsPlace Place)> Below { get; init; } = [];

    /// <summary>A file (not a directory) with more than one name: its place says nothing of its other names
    /// (a hard link in /tmp of /etc/shadow is /etc/shadow), so it is never ID-mapped.</summary>
    public bool HardLinked { get; init; }

    /// <summary>
    /// Whether the source holds another name (a hard link) of the Docker Engine socket: false when the socket has
    /// one name only or none was found, true when one was, null when the search could not finish (fail closed).
    /// </summary>
    public bool? HoldsSocketLink { get; init; } = false;

    /// <summary>Every host path through which the source and its layers reach the host: itself, the mounts below, the layers'.</summary>
    public IEnumerable<string> HostPaths() =>
        new[] { Real }.Concat(Below.Select(b => b.MountPoint)).Concat(Layers.SelectMany(l => l.HostPaths()));
}

/// <summary>
/// The pure part of telling places from paths: from a resolved path (realpath, or the kernel's own path
/// of a pinned fd) and the host's mount table, which filesystem and which path in it. Tests run it over
/// a hand-written mount table; <see cref="HostPlacesReader"/> runs it over the host's.
/// </summary>
public static class HostPlaces
{
    /// <summary>
    /// Kernel and pseudo filesystems: mounting any of them (or anything that shows one) into a
    /// container hands it the host's processes, devices, kernel settings or namespaces.
    /// </summary>
    public static readonly IReadOnlySet<string> KernelFileSystems = new HashSet<string>(StringComparer.Ordinal)
    {
        "proc", "sysfs", "devtmpfs", "devpts", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "bpf",
        "configfs", "pstore", "efivarfs", "fusectl", "binfmt_misc", "nsfs", "mqueue", "hugetlbfs", "autofs", "rpc_pipefs",
    };

    /// <summary>The mount a path lies on: by mount id when known (a pinned fd's), else the last mount at or above the path.</summary>
    public static MountEntry? MountOf(string real, ulong? mountId, IReadOnlyList<MountEntry> table)
    {
        if (mountId is { } id)
            foreach (var m in table)
                if ((ulong)m.Id == id) return m;
        MountEntry? best = null;
        foreach (var m in table)
            if (MountRules.IsAtOrBelow(real, m.MountPoint) && (best is null || m.MountPoint.Length >= best.MountPoint.Length))
                best = m;
        return best;
    }

    public static FsPlace? Place(string real, ulong? mountId, IReadOnlyList<MountEntry> table)
    {
        var m = MountOf(real, mountId, table);
        if (m is null) return null;
        string below = m.MountPoint == "/" ? real : real[m.MountPoint.Length..];
        string path = m.Root == "/" ? (below.Length == 0 ? "/" : below) : m.Root.TrimEnd('/') + below;
        return new FsPlace(m.Major, m.Minor, path.Length == 0 ? "/" : path, m.FsType);
    }

    /// <summary>
    /// Where a place is reachable on the host by its usual path: through the mount of its filesystem whose
    /// root is closest above it (the filesystem's own mount rather than a bind of a part of it). Null if no
    /// mount shows it.
    /// </summary>
    public static string? CanonicalPath(FsPlace place, IReadOnlyList<MountEntry> table)
    {
        MountEntry? best = null;
        foreach (var m in table)
            if (m.Major == place.Major && m.Minor == place.Minor && MountRules.IsAtOrBelow(place.Path, m.Root)
                && (best is null || m.Root.Length < best.Root.Length || m.Root.Length == best.Root.Length && m.MountPoint.Length < best.MountPoint.Length))
                best = m;
        if (best is null) return null;
        string below = best.Root == "/" ? place.Path : place.Path[best.Root.TrimEnd('/').Length..];
        if (best.MountPoint == "/") return below.Length == 0 ? "/" : below;
        return below == "/" || below.Length == 0 ? best.MountPoint : best.MountPoint + below;
    }

    /// <summary>
    /// The source as a <see cref="BindSource"/>: its place, the places of the mounts below it (if recursive)
    /// and, for overlayfs, its layers (lowerdir, upperdir, workdir), resolved with <paramref name="realPath"/>.
    /// </summary>
    public static BindSource? Describe(string given, string real, ulong? mountId, bool recursive, IReadOnlyList<MountEntry> table,
        Func<string, string> realPath, FileId? id = null, int depth = 0)
    {
        var self = Place(real, mountId, table);
        if (self is null) return null;
        var shows = new List<FsPlace> { self };
        var below = new List<(string, FsPlace)>();
        var overlays = new List<MountEntry>();
        var own = MountOf(real, mountId, table);
        if (own is { FsType: "overlay" }) overlays.Add(own);
        if (recursive)
            foreach (var m in table)
                if (m.MountPoint != real && MountRules.IsAtOrBelow(m.MountPoint, real) && m != own)
                {
                    var place = new FsPlace(m.Major, m.Minor, m.Root, m.FsType);
                    shows.Add(place);
                    below.Add((m.MountPoint, place));
                    if (m.FsType == "overlay") overlays.Add(m);
                }
        var layers = new List<BindSource>();
        if (depth < 4)
            foreach (var o in overlays)
                foreach (var layer in OverlayLayers(o.SuperOptions))
                {
                    string layerReal = realPath(layer);
                    if (Describe(layer, layerReal, null, recursive: false, table, realPath, null, depth + 1) is { } l) layers.Add(l);
                }
        return new BindSource(given, real, self, shows, layers, id) { Below = below };
    }

    /// <summary>The directories an overlay mount is made of, from its super options (":" separates lower layers; "\:" escapes).</summary>
    public static IEnumerable<string> OverlayLayers(string superOptions)
    {
        foreach (var option in SplitOptions(superOptions))
        {
            int eq = option.IndexOf('=');
            if (eq < 0) continue;
            string key = option[..eq], value = option[(eq + 1)..];
            if (key is "lowerdir" or "lowerdir+" or "datadir+")
            {
                foreach (var dir in SplitLayers(value)) if (dir.StartsWith('/')) yield return dir;
            }
            else if (key is "upperdir" or "workdir" && value.StartsWith('/'))
                yield return value;
        }
    }

    static IEnumerable<string> SplitOptions(string options)
    {
        var current = new System.Text.StringBuilder();
        for (int i = 0; i < options.Length; i++)
        {
            if (options[i] == '\\' && i + 1 < options.Length) { current.Append(options[i]).Append(options[++i]); continue; }
            if (options[i] == ',') { yield return current.ToString(); current.Clear(); continue; }
            current.Append(options[i]);
        }
        if (current.Length > 0) yield return current.ToString();
    }

    static IEnumerable<string> SplitLayers(string value)
    {
        var current = new System.Text.StringBuilder();
        for (int i = 0; i < value.Length; i++)
        {
            if (value[i] == '\\' && i + 1 < value.Length) { current.Append(value[++i]); continue; }
            if (value[i] == ':') { if (current.Length > 0) yield return current.ToString(); current.Clear(); continue; }
            current.Append(value[i]);
        }
        if (current.Length > 0) yield return current.ToString();
    }
}

/// <summary>
/// A bind source opened once, before the policy looks at it, and kept open until the container's mounts
/// are staged from this very fd: what was judged is what gets mounted, whatever happens to the path
/// in between (a container that can write the source's parent could swap a directory for a symlink).
/// </summary>
public sealed class PinnedSources : IDisposable
{
    readonly Dictionary<int, SafeFd> _fds = [];

    public void Add(int mountIndex, SafeFd fd) => _fds[mountIndex] = fd;
    public SafeFd? Get(int mountIndex) => _fds.GetValueOrDefault(mountIndex);
    public IEnumerable<int> Indexes => _fds.Keys;

    public void Dispose()
    {
        foreach (var fd in _fds.Values) fd.Dispose();
        _fds.Clear();
    }
}

/// <summary>The impure edge: the host's mount table, places of host paths, and bind sources opened and pinned.</summary>
public static unsafe class HostPlacesReader
{
    public static List<MountEntry> MountTable() =>
        Seccomp.Notify.MountInfo.Parse(File.ReadAllText("/proc/self/mountinfo"));

    /// <summary>The place of a host path (following symlinks), or null if it does not exist.</summary>
    public static FsPlace? PlaceOf(string path, IReadOnlyList<MountEntry> table)
    {
        int fd = Libc.open(path, Libc.O_PATH | Libc.O_CLOEXEC, 0);
        if (fd < 0) return null;
        using var pinned = new SafeFd(fd);
        var (real, mountId) = Describe(fd);
        return real is null ? null : HostPlaces.Place(real, mountId, table);
    }

    /// <summary>Opens a bind source as the kernel's mount would resolve it (following symlinks) and describes it; null if it cannot be opened.</summary>
    public static (BindSource? Source, SafeFd? Fd, int Errno) OpenSource(string path, bool recursive, IReadOnlyList<MountEntry> table)
    {
        int fd = Libc.open(path, Libc.O_PATH | Libc.O_CLOEXEC, 0);
        if (fd < 0) return (null, null, Libc.Errno);
        var pinned = new SafeFd(fd);
        var (real, mountId) = Describe(fd);
        byte* st = stackalloc byte[Libc.StatSize];
        bool stated = Libc.fstat(fd, st) == 0;
        FileId? id = stated ? new FileId(*(ulong*)st, *(ulong*)(st + 8)) : null;
        // x86_64 struct stat: st_nlink at 16 (8 bytes), st_mode at 24.
        bool hardLinked = stated && (*(uint*)(st + 24) & Libc.S_IFMT) != Libc.S_IFDIR && *(ulong*)(st + 16) > 1;
        var source = real is null ? null : HostPlaces.Describe(path, real, mountId, recursive, table, HostPath.Resolve, id) is { } d
            ? d with { HardLinked = hardLinked } : null;
        if (source is null) { pinned.Dispose(); return (null, null, Libc.ENOENT); }
        return (source, pinned, 0);
    }

    /// <summary>A file's identity and how many names (hard links) it has; null if it cannot be stat'ed.</summary>
    public static (FileId Id, ulong Links)? Links(string path)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        if (Libc.stat(path, st) != 0) return null;
        return (new FileId(*(ulong*)st, *(ulong*)(st + 8)), *(ulong*)(st + 16));
    }

    /// <summary>Walks of one bind source together: at most this many entries and this long (the rest is "unknown").</summary>
    public const int LinkSearchEntries = 200_000;
    public static readonly TimeSpan LinkSearchTime = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Whether any of <paramref name="roots"/> holds another name of the file <paramref name="target"/>. A hard
    /// link lives on its file's filesystem, so only roots on that filesystem are walked, and the walk never
    /// leaves it (nor follows a symlink); other mounts below a root are roots of their own when they are on it.
    /// Bounded (<see cref="LinkSearchEntries"/>, <see cref="LinkSearchTime"/>): null when it could not finish,
    /// or a directory could not be read.
    /// </summary>
    public static bool? HoldsLinkOf(IEnumerable<string> roots, FileId target, int maxEntries = LinkSearchEntries)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int seen = 0;
        byte* st = stackalloc byte[Libc.StatSize];
        var pending = new Stack<string>();
        foreach (var root in roots)
            if (Libc.stat(root, st) == 0 && *(ulong*)st == target.Device && (*(uint*)(st + 24) & Libc.S_IFMT) == Libc.S_IFDIR)
                pending.Push(root);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            IEnumerable<string> entries;
            try { entries = Directory.EnumerateFileSystemEntries(dir); }
            catch (DirectoryNotFoundException) { continue; } // gone meanwhile
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
            try
            {
                foreach (var entry in entries)
                {
                    if (++seen > maxEntries || clock.Elapsed > LinkSearchTime) return null;
                    if (Libc.lstat(entry, st) != 0 || *(ulong*)st != target.Device) continue;
                    if (*(ulong*)(st + 8) == target.Inode) return true;
                    if ((*(uint*)(st + 24) & Libc.S_IFMT) == Libc.S_IFDIR) pending.Push(entry);
                }
            }
            catch (DirectoryNotFoundException) { }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        }
        return false;
    }

    /// <summary>The kernel's path of an open fd (in our mount namespace) and the id of the mount it lies on.</summary>
    static (string? Real, ulong? MountId) Describe(int fd)
    {
        byte* buf = stackalloc byte[4096];
        nint n = Libc.readlink($"/proc/self/fd/{fd}", buf, 4095);
        if (n <= 0) return (null, null);
        string real = System.Text.Encoding.UTF8.GetString(buf, (int)n);
        if (real.EndsWith(" (deleted)", StringComparison.Ordinal) || !real.StartsWith('/')) return (null, null);
        Libc.Statx stx;
        ulong? mountId = Libc.statx(fd, "", (int)Libc.AT_EMPTY_PATH_FLAG, Libc.STATX_MNT_ID, &stx) == 0 && (stx.Mask & Libc.STATX_MNT_ID) != 0
            ? stx.MntId : null;
        return (real, mountId);
    }
}
