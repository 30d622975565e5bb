using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>How one bind mount of the spec is to be made, once the policy allowed it.</summary>
/// <param name="Idmap">ID-mapped (container root acts as host root on those files, as under runc) or a plain bind
/// (host owners stay: files of host users outside the container's range show as nobody, and the container's
/// root is an unprivileged host user there).</param>
/// <param name="EngineSocket">the source is the Docker Engine socket itself: the container gets the socket proxy's socket there.</param>
public sealed record BindVerdict(int Index, string Source, bool Idmap, string? Note, bool EngineSocket = false);

/// <summary>
/// Host bind mounts (docker -v/--mount, volumes of every driver, any engine's binds). A source is judged by
/// what it IS on the host (<see cref="BindSource"/>: the filesystem and path it resolves to, the mounts below
/// it, an overlay's layers), never by the path an engine chose for it: a local-driver volume bound from /etc
/// lives at /var/lib/docker/volumes/NAME/_data but is /etc.
///
/// Refused, with "can't mount SOURCE because it's configured as a restricted host mount":
/// <list type="bullet">
/// <item>anything that is or shows a kernel filesystem (procfs, sysfs, devtmpfs, cgroupfs, debugfs, ...):
///   a volume of type proc is the host's /proc.</item>
/// <item>the engine's own config and state: /etc/docker, docker's data root, /var/lib/containerd, /run/containerd,
///   /run/docker, this runtime's binary, state roots, /etc/sandbox-runc and /var/lib/sandbox-runc (containers' engine
///   storage) — the source inside one, or showing one.</item>
/// <item>/proc, /sys, /dev, /boot, /lib/modules and the admin's restrictedMounts: the same, except that a source
///   inside the file-sharing allow list may show them (the allow list only relaxes "above").</item>
/// <item>/ and /etc as a whole.</item>
/// </list>
/// A source that is or shows the Docker Engine socket (the socket itself by place or inode, or a directory it
/// lies in) is the socket: <see cref="SocketPolicy"/> decides.
/// Docker's own mounts are allowed though they live in the data root, when they really are docker's
/// directories there (not something bound over them): containers/ID/{hostname,hosts,resolv.conf,mounts/shm}
/// of any container, anything under containers/&lt;this id&gt;/mounts/, and named volumes' volumes/NAME/_data.
///
/// What is allowed is ID-mapped only inside the file-sharing allow list and docker's own mounts (and for a
/// container that opted out of the restrictions); elsewhere (a bind of /usr or /etc/localtime) it is a plain
/// bind, where the container's root is the unprivileged host user it really is: it reads what any host user
/// may read and writes nothing of host root's. Other mount types (tmpfs, proc, ...) are not host paths and are
/// not judged here.
/// </summary>
/// <remarks>
/// A step of dockerd's BuildKit (its bundle in &lt;data-root&gt;/buildkit/executor/) may also bind BuildKit's own places
/// there (snapshots, its resolv.conf and hosts, its temp dirs and a secret's tmpfs mounted in them), ID-mapped so
/// the step's root owns them as under runc; anything else a step binds is judged as any container's bind.
/// </remarks>
public static class MountPolicy
{
    public static bool IsBind(Mount m) =>
        m.Type == "bind" || m.Options?.Any(o => o is "bind" or "rbind") == true;

    public static bool IsRecursive(Mount m) => m.Options?.Contains("rbind") == true;

    /// <summary>Where the runtime keeps containers' engine storage (Rootfs/EngineStorage.Root).</summary>
    public const string EngineStorageRoot = "/var/lib/sandbox-runc";

    static readonly string[] SystemPaths = ["/proc", "/sys", "/dev", "/boot", "/lib/modules"];

    static List<string> EnginePaths(EngineFacts facts)
    {
        var list = new List<string> { "/etc/docker", facts.DockerRoot, "/var/lib/containerd", "/run/containerd", "/var/run/containerd",
            "/run/docker", facts.StateRoot, "/run/sandbox-runc", "/etc/sandbox-runc",
            // Every container's engine storage (Rootfs/EngineStorage): another container's, bound by path, is not this one's.
            EngineStorageRoot };
        if (facts.RuntimeBinary is { Length: > 0 } bin) list.Add(bin);
        return list;
    }

    /// <summary>Whether the source is, or shows, the Docker Engine socket.</summary>
    public static bool ShowsDockerSocket(BindSource source, EngineFacts facts)
    {
        if (source.HoldsSocketLink != false) return true; // a hard link of it below (or it could not be told)
        foreach (var socket in facts.DockerSockets)
        {
            if (facts.PlaceOf(socket) is { } place && source.AllShown().Any(s => s.Contains(place))) return true;
            if (source.Id is { } id && facts.Identify(socket) == id) return true;
        }
        return false;
    }

    /// <summary>Whether the source is the Docker Engine socket itself (by inode, or the same place), not a directory that shows it.</summary>
    public static bool IsDockerSocket(BindSource source, EngineFacts facts)
    {
        foreach (var socket in facts.DockerSockets)
        {
            if (source.Id is { } id && facts.Identify(socket) == id) return true;
            if (facts.PlaceOf(socket) is { } place && Same(place, source.Self)) return true;
        }
        return false;
    }

    /// <summary>Refuses a restricted source (<see cref="PolicyException"/>) or says how to mount it.</summary>
    public static BindVerdict Judge(int index, BindSource source, AdminSettings settings, EngineFacts facts)
    {
        string? host = HostPlaces.CanonicalPath(source.Self, facts.HostMounts);
        string shown = host is not null && host != source.Real ? $"{source.Given} (it is {host} on the host)"
            : (HostPlaces.KernelFileSystems.Contains(source.Self.FsType) || source.Self.FsType == "overlay")
              && !SystemPaths.Any(p => Seccomp.Notify.MountRules.IsAtOrBelow(source.Real, p))
                ? $"{source.Given} ({Article(source.Self.FsType)} {source.Self.FsType} filesystem)"
            : source.Given;
        PolicyException Restricted() => new($"can't mount {shown} because it's configured as a restricted host mount");

        var everything = source.AllShown().ToList();
        if (everything.Any(p => HostPlaces.KernelFileSystems.Contains(p.FsType)))
            throw Restricted();

        var dataRoot = facts.PlaceOf(facts.DockerRoot);
        string dataRootReal = facts.RealPath(facts.DockerRoot);
        // Docker's own directory by what it is (its data root's filesystem, not something bound over it) ...
        bool dockerOwn = dataRoot is not null && IsDockersOwn(source.Self, dataRoot, facts.ContainerId)
                         && IsAtOrBelow(source.Real, dataRootReal);
        // ... or by where it sits (a volume driver's mount at volumes/NAME/_data), what it is judged below.
        bool dockerOwnPath = IsAtOrBelow(source.Real, dataRootReal)
                             && IsDockersOwnRest(Rest(source.Real, dataRootReal), facts.ContainerId);
        // A step of dockerd's BuildKit binds BuildKit's own places in the data root (snapshots, its resolv.conf and
        // hosts, its temp dirs): by what they are (the data root's filesystem) and where they sit, as docker's own.
        bool buildKit = dataRoot is not null && IsBuildKitStep(facts, dataRoot);
        bool BuildKitsOwn(BindSource b) => buildKit && IsAtOrBelow(b.Real, dataRootReal) && IsBuildKitsOwnRest(Rest(b.Real, dataRootReal))
            && (dataRoot!.Contains(b.Self) ? IsBuildKitsOwnRest(Rest(b.Self.Path, dataRoot.Path))
                : b.Self.FsType == "overlay" ? b.Layers.Count > 0 && b.Layers.All(BuildKitsOwn)
                : IsBuildKitsTmpfs(b.Self, facts));
        bool buildKitOwn = BuildKitsOwn(source);
        // The source and its layers, not the mounts below it: those are judged where they sit.
        var buildKitPaths = new HashSet<string>(new[] { source.Real }.Concat(source.Layers.SelectMany(l => l.HostPaths())), StringComparer.Ordinal);
        var allowPlaces = settings.FileSharingAllowList.Select(facts.PlaceOf).OfType<FsPlace>().ToList();
        var allowPaths = settings.FileSharingAllowList.Select(facts.RealPath).ToList();
        bool allowListed = allowPlaces.Any(a => a.Contains(source.Self));

        var root = facts.PlaceOf("/");
        var etc = facts.PlaceOf("/etc");
        if (root is not null && Same(root, source.Self) || etc is not null && Same(etc, source.Self)) throw Restricted();

        // Where the source and what it shows sit on the host, as well as what they are: a filesystem mounted
        // inside a restricted directory (a tmpfs under /run/sandbox-runc, another container's overlay under the
        // data root, /dev/shm) is inside it though its device is another.
        var hostPaths = source.HostPaths().ToList();
        foreach (var path in EnginePaths(facts))
        {
            bool isDataRoot = path == facts.DockerRoot;
            string real = facts.RealPath(path);
            foreach (var at in hostPaths)
                if (IsAtOrBelow(at, real) && !(isDataRoot && (dockerOwnPath && at == source.Real || buildKitOwn && buildKitPaths.Contains(at)))) throw Restricted();
            if (facts.PlaceOf(path) is { } place)
            {
                if (place.Contains(source.Self) && !((dockerOwn || buildKitOwn) && isDataRoot)) throw Restricted();
                if (everything.Any(s => s.Contains(place))) throw Restricted();
                foreach (var layer in source.Layers)
                    if (layer.AllShown().Any(l => place.Contains(l)) && !(isDataRoot && buildKitOwn)) throw Restricted();
            }
            // A restricted path this host lacks: the source lying at or in it is the loop above; above it, here.
            else if (Under(real, source.Real)) throw Restricted();
        }
        foreach (var path in SystemPaths.Concat(settings.RestrictedMounts))
        {
            string real = facts.RealPath(path);
            if (hostPaths.Any(at => IsAtOrBelow(at, real))) throw Restricted();
            if (facts.PlaceOf(path) is { } place)
            {
                if (place.Contains(source.Self)) throw Restricted();
                if (!allowListed && everything.Any(s => s.Contains(place))) throw Restricted();
            }
            else if (!allowListed && Under(real, source.Real)) throw Restricted();
        }

        // ID-mapped only when all it shows is in the allow list: a mount below it that is a part of a
        // filesystem found elsewhere (/etc/ssh bound under /tmp) keeps its host owners, and so does a file
        // with other names.
        bool InAllowList(FsPlace p) => allowPlaces.Any(a => a.Contains(p))
            || HostPlaces.CanonicalPath(p, facts.HostMounts) is { } c && allowPaths.Any(a => IsAtOrBelow(c, a));
        // A BuildKit step's own binds are owned by the step's root as under runc; anything else a step binds is judged
        // like any container's bind, so a host path is never ID-mapped because of the bundle.
        bool idmap = !source.HardLinked && (dockerOwn || buildKitOwn || allowListed && source.Below.All(b => InAllowList(b.Place)));
        return new BindVerdict(index, source.Given, idmap, idmap ? null
            : source.HardLinked ? $"bind {source.Given}: not ID-mapped (a file with other names on the host): host owners stay, and the container's root is an unprivileged host user there"
            : $"bind {source.Given}: not ID-mapped (outside the file-sharing allow list): host owners stay, and the container's root is an unprivileged host user there");
    }

    /// <summary>Host directories a container's root filesystem may not be, lie in or contain: its root would own them.</summary>
    static readonly string[] RootfsForbidden = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/proc", "/sys", "/dev"];

    /// <summary>
    /// The rootfs is ID-mapped as a whole (container root owns it as host root owns it under runc): refused when
    /// it is the host's root, lies in a system directory or the runtime's own state, or contains any directory
    /// this policy protects (a rootfs of /var holds docker's data root). An engine's rootfs (docker's
    /// overlay2/ID/merged, containerd's task rootfs) lies in the engine's storage and contains nothing.
    /// </summary>
    public static void JudgeRootfs(string given, string real, FsPlace? place, AdminSettings settings, EngineFacts facts)
    {
        PolicyException Refused(string what) => new($"can't use {given} as the container's root filesystem: it {what}, and the container's root would own it as host root (ID-mapped)");
        if (real == "/" || place is not null && facts.PlaceOf("/") is { } hostRoot && Same(hostRoot, place)) throw Refused("is the host's /");
        var inside = RootfsForbidden.Concat(["/etc/docker", "/etc/sandbox-runc", "/run/sandbox-runc", facts.StateRoot]);
        if (facts.RuntimeBinary is { Length: > 0 } bin) inside = inside.Append(bin);
        foreach (var path in inside)
        {
            string r = facts.RealPath(path);
            if (IsAtOrBelow(real, r) || place is not null && facts.PlaceOf(path) is { } p && p.Contains(place))
                throw Refused(real == r ? $"is {path}" : $"is inside {path}");
        }
        foreach (var path in RootfsForbidden.Concat(EnginePaths(facts)).Concat(SystemPaths).Concat(settings.RestrictedMounts))
        {
            string r = facts.RealPath(path);
            if (Under(r, real) || place is not null && facts.PlaceOf(path) is { } p && place.Contains(p) && !Same(p, place))
                throw Refused($"contains {path}");
        }
    }

    static bool IsAtOrBelow(string path, string dir) => Seccomp.Notify.MountRules.IsAtOrBelow(path, dir);

    static string Article(string word) => word.Length > 0 && "aeiou".Contains(word[0]) ? "an" : "a";

    static bool Same(FsPlace a, FsPlace b) => a.Major == b.Major && a.Minor == b.Minor && a.Path == b.Path;

    /// <summary>Docker's own directories in its data root (see the class summary), by place.</summary>
    static bool IsDockersOwn(FsPlace self, FsPlace dataRoot, string containerId)
    {
        if (!dataRoot.Contains(self)) return false;
        return IsDockersOwnRest(Rest(self.Path, dataRoot.Path), containerId);
    }

    /// <summary>
    /// A step of dockerd's embedded BuildKit: dockerd runs `runc run --bundle &lt;data-root&gt;/buildkit/executor/ID`
    /// itself (the binary "runc" of its PATH), a bundle no CLI user can name. A Dockerfile picks snapshots for its
    /// binds (RUN --mount=type=cache, bind from a stage or the context, secrets), never host paths.
    /// </summary>
    static bool IsBuildKitStep(EngineFacts facts, FsPlace dataRoot) =>
        facts.Bundle is { Length: > 0 } bundle && facts.PlaceOf(bundle) is { } place && dataRoot.Contains(place)
        && Rest(place.Path, dataRoot.Path).Split('/') is ["buildkit", "executor", var id] && id.Length > 0;

    /// <summary>
    /// What BuildKit binds into a step from the data root, by path below it: its resolv.conf and hosts files
    /// (buildkit/executor/), snapshots (overlay2/ID/diff, a stage's overlay2/ID/merged and, as that overlay's layers,
    /// overlay2/ID/work) and its temp dirs (tmp/buildkit-*: secrets, ssh sockets, mounted snapshots). Not overlay2/l
    /// (the links to every layer) and nothing else of docker's state.
    /// </summary>
    static bool IsBuildKitsOwnRest(string rest) => rest.Split('/') switch
    {
        ["buildkit", "executor", var file] => file == "resolv.conf" || file.StartsWith("hosts.", StringComparison.Ordinal),
        ["overlay2", var id, "diff" or "work" or "merged", ..] => id.Length > 0 && id != "l",
        ["tmp", var dir, ..] => dir.StartsWith("buildkit-", StringComparison.Ordinal),
        _ => false,
    };

    /// <summary>
    /// A tmpfs that dockerd mounted in its own temp dir for a step (&lt;data-root&gt;/tmp/buildkit-secrets*: a secret's
    /// file): judged by the filesystem the source is on and where the host's mount table has it mounted. No host user
    /// can mount anything in the data root, which is root's.
    /// </summary>
    static bool IsBuildKitsTmpfs(FsPlace self, EngineFacts facts)
    {
        if (self.FsType != "tmpfs") return false;
        string tmp = facts.RealPath(facts.DockerRoot).TrimEnd('/') + "/tmp/";
        var mounts = facts.HostMounts.Where(m => m.Major == self.Major && m.Minor == self.Minor).ToList();
        return mounts.Count > 0 && mounts.All(m => m.MountPoint.StartsWith(tmp, StringComparison.Ordinal)
            && m.MountPoint[tmp.Length..] is var dir && dir.StartsWith("buildkit-", StringComparison.Ordinal) && !dir.Contains('/'));
    }

    /// <summary>The part of <paramref name="path"/> below <paramref name="dir"/> (path at or below dir), without a leading '/'.</summary>
    static string Rest(string path, string dir) => (dir == "/" ? path : path[dir.TrimEnd('/').Length..]).TrimStart('/');

    /// <summary>Docker's own directories, by their path relative to the data root.</summary>
    static bool IsDockersOwnRest(string rest, string containerId)
    {
        var parts = rest.Split('/');
        if (parts is ["containers", var id, ..] && id.Length > 0)
        {
            // --network=container:x binds x's hostname, hosts and resolv.conf; --ipc=container:x binds x's shm.
            if (parts is [_, _, "hostname" or "hosts" or "resolv.conf"] || parts is [_, _, "mounts", "shm"]) return true;
            return id == containerId && parts.Length >= 4 && parts[2] == "mounts";
        }
        return parts is ["volumes", var name, "_data", ..] && name.Length > 0;
    }

    static string Trim(string p) => p.Length > 1 ? p.TrimEnd('/') : p;

    /// <summary>a is strictly below b.</summary>
    static bool Under(string a, string b)
    {
        a = Trim(a); b = Trim(b);
        return b == "/" ? a != "/" : a.StartsWith(b + "/", StringComparison.Ordinal);
    }
}
