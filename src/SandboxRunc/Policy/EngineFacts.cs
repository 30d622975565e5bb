using SandboxRunc.Interop;

namespace SandboxRunc.Policy;

/// <summary>What the image store knows of one image: its parent (legacy builder) and its layers (rootfs.diff_ids).</summary>
public sealed record StoredImage(string? Parent, IReadOnlyList<string> Layers);

/// <summary>dockerd's record of the container being created: the name the user typed, the image ID it runs, and its
/// labels that this runtime reads (io.sandbox-runc.*, see <see cref="ContainerSettings"/>).</summary>
public sealed record ContainerImage(string? Name, string? Id, IReadOnlyDictionary<string, string> Labels);

/// <summary>
/// Every fact about the host and the engine that the policy needs, so that <see cref="IsolationPolicy.Decide"/>
/// stays a pure function: tests build these by hand, <see cref="EngineFactsGatherer"/> reads them from the host.
/// The path and namespace questions are functions (realpath, inode identity, place), asked only about the
/// paths the policy names and the spec's bind sources.
/// </summary>
/// <param name="HostMounts">the host's mount table (ours: /proc/self/mountinfo).</param>
/// <param name="PlaceOf">the place (filesystem and path in it) a host path resolves to; null if it does not exist.</param>
/// <param name="Binds">each bind mount of the spec (by its index in spec.mounts) as what its source is on the host;
/// a bind missing here could not be opened.</param>
/// <param name="Bundle">the bundle directory the engine gave (dockerd's BuildKit steps have theirs in
/// &lt;data-root&gt;/buildkit/executor/), or null when unknown.</param>
public sealed record EngineFacts(
    string ContainerId,
    Func<string, bool> IsHostNamespace,
    Func<string, string> RealPath,
    Func<string, FileId?> Identify,
    IReadOnlyList<string> DockerSockets,
    string DockerRoot,
    string? RuntimeBinary,
    string StateRoot,
    ContainerImage? Image,
    IReadOnlyDictionary<string, string> Tags,
    Func<string, StoredImage?> LookupImage,
    IReadOnlyList<Seccomp.Notify.MountEntry> HostMounts,
    Func<string, FsPlace?> PlaceOf,
    IReadOnlyDictionary<int, BindSource> Binds,
    string? Bundle = null)
{
    /// <summary>
    /// Whether the namespace at a path (a /proc/PID/ns link or a bind-mounted nsfs file) is owned by the host's
    /// initial user namespace (ioctl NS_GET_USERNS); false when it is not or cannot be told.
    /// </summary>
    public Func<string, bool> OwnedByHostUserNamespace { get; init; } = _ => false;

    /// <summary>Whether a sysctl (linux.sysctl key) exists under the host's /proc/sys.</summary>
    public Func<string, bool> SysctlExists { get; init; } = _ => true;

    /// <summary>The spec's root.path as given, resolved on the host, and its place (null: not judged, e.g. it does not exist).</summary>
    public (string Given, string Real, FsPlace? Place)? Rootfs { get; init; }
}

/// <summary>
/// The small impure step before the policy: reads /etc/docker/daemon.json (data-root, unix sockets in
/// hosts), dockerd's container record &lt;data-root&gt;/containers/&lt;id&gt;/config.v2.json and its image store
/// (repositories.json, imagedb). Files only: an API call to dockerd while it waits for our create could
/// deadlock it. Anything unreadable is simply unknown (which denies a socket mount, never allows one).
/// </summary>
public static class EngineFactsGatherer
{
    public const string DaemonJson = "/etc/docker/daemon.json";

    /// <param name="pinned">receives every bind source, opened once here; the container's mounts are made from these fds.</param>
    /// <param name="image">the container's image when it is known already (the socket proxy judging a create request);
    /// else it is read from dockerd's record of <paramref name="containerId"/>.</param>
    public static EngineFacts Gather(Oci.Spec spec, string containerId, string stateRoot, string bundle, PinnedSources pinned, ContainerImage? image = null)
    {
        var (dockerRoot, sockets, imageStore) = Docker();

        if (image is null && IsSafeId(containerId) && ReadJson(Path.Combine(dockerRoot, "containers", containerId, "config.v2.json")) is { } record)
            image = new ContainerImage(Str(record["Config"]?["Image"]), Str(record["Image"]), OurLabels(record["Config"]?["Labels"]));

        var table = HostPlacesReader.MountTable();
        var places = new Dictionary<string, FsPlace?>();
        FsPlace? PlaceOf(string path) =>
            places.TryGetValue(path, out var p) ? p : places[path] = HostPlacesReader.PlaceOf(path, table);
        var binds = new Dictionary<int, BindSource>();
        var mounts = spec.Mounts ?? [];
        for (int i = 0; i < mounts.Count; i++)
        {
            if (!MountPolicy.IsBind(mounts[i]) || string.IsNullOrEmpty(mounts[i].Source)) continue;
            string source = Path.IsPathRooted(mounts[i].Source) ? mounts[i].Source! : Path.Combine(bundle, mounts[i].Source!);
            var (described, fd, _) = HostPlacesReader.OpenSource(source, MountPolicy.IsRecursive(mounts[i]), table);
            if (described is null || fd is null) continue;
            binds[i] = described with { Given = mounts[i].Source!, HoldsSocketLink = HoldsSocketLink(described, fd, sockets) };
            pinned.Add(i, fd);
        }

        return new EngineFacts(
            containerId,
            HostFacts.Current.IsHostNamespace,
            HostPath.Resolve,
            FileId.Of,
            sockets,
            dockerRoot,
            Environment.ProcessPath,
            stateRoot,
            image,
            image is null ? new Dictionary<string, string>() : new LazyTags(() => ReadTags(Path.Combine(imageStore, "repositories.json"))),
            id => LookupImage(imageStore, id),
            table,
            PlaceOf,
            binds,
            bundle)
        {
            OwnedByHostUserNamespace = HostFacts.Current.OwnedByHostUserNamespace,
            SysctlExists = key => Path.Exists("/proc/sys/" + SysctlPolicy.SysPath(key)),
            Rootfs = spec.Root?.Path is { Length: > 0 } rootfs
                ? (rootfs, HostPath.Resolve(Path.Combine(bundle, rootfs)), PlaceOf(Path.Combine(bundle, rootfs))) : null,
        };
    }

    /// <summary>
    /// A socket with more than one name has hard links somewhere on its filesystem, which its place cannot show
    /// (a directory of /run holding a link made by host root is the socket): the source, the mounts below it and
    /// its layers are searched for one (<see cref="HostPlacesReader.HoldsLinkOf"/>, only where they lie on the
    /// socket's filesystem, bounded; null = could not tell). The source itself through its pinned fd.
    /// </summary>
    static bool? HoldsSocketLink(BindSource source, SafeFd fd, IReadOnlyList<string> sockets)
    {
        foreach (var socket in sockets)
        {
            if (HostPlacesReader.Links(socket) is not { Links: > 1 } s || source.Id == s.Id) continue;
            var roots = new[] { $"/proc/self/fd/{fd.Fd}" }.Concat(source.HostPaths().Skip(1));
            if (HostPlacesReader.HoldsLinkOf(roots, s.Id) is not false and var found) return found;
        }
        return false;
    }

    /// <summary>dockerd's data root, its unix sockets (daemon.json hosts, else /var/run/docker.sock) and its image store.</summary>
    static (string DataRoot, List<string> Sockets, string ImageStore) Docker()
    {
        var daemon = ReadJson(DaemonJson);
        string dockerRoot = HostPath.Resolve(daemon?["data-root"]?.GetValueKind() == System.Text.Json.JsonValueKind.String
            ? daemon["data-root"]!.GetValue<string>() : "/var/lib/docker");
        var sockets = new List<string>();
        if (daemon?["hosts"] is System.Text.Json.Nodes.JsonArray hosts)
            foreach (var h in hosts)
                if (h?.GetValueKind() == System.Text.Json.JsonValueKind.String && h.GetValue<string>() is { } s && s.StartsWith("unix://"))
                    sockets.Add(HostPath.Resolve(s["unix://".Length..]));
        if (sockets.Count == 0) sockets.Add(HostPath.Resolve("/var/run/docker.sock"));

        string imageStore = Directory.Exists(Path.Combine(dockerRoot, "image"))
            ? Directory.GetDirectories(Path.Combine(dockerRoot, "image")).FirstOrDefault(d => File.Exists(Path.Combine(d, "repositories.json")))
              ?? Path.Combine(dockerRoot, "image", "overlay2")
            : Path.Combine(dockerRoot, "image", "overlay2");
        return (dockerRoot, sockets, imageStore);
    }

    /// <summary>
    /// The image a create request names, as dockerd will resolve it: a name through the tag store, an image ID (or
    /// its prefix) through the image store. An image that resolves to nothing has no ID (which no allow list passes).
    /// </summary>
    public static ContainerImage ImageNamed(string? name, IReadOnlyDictionary<string, string> labels)
    {
        string? id = null;
        if (name is not null)
        {
            var (_, _, store) = Docker();
            if (ImageReference.IsImageId(name))
            {
                string hex = name.StartsWith("sha256:") ? name[7..] : name;
                string dir = Path.Combine(store, "imagedb", "content", "sha256");
                var found = Directory.Exists(dir) ? Directory.GetFiles(dir, hex + "*").Select(Path.GetFileName).ToList() : [];
                if (found.Count == 1) id = "sha256:" + found[0];
            }
            else if (ImageReference.Parse(name) is { } reference && ReadTags(Path.Combine(store, "repositories.json")).TryGetValue(reference.ToString(), out var tagged))
                id = tagged;
        }
        return new ContainerImage(name, id, labels);
    }

    /// <summary>
    /// The names dockerd knows this runtime by: daemon.json runtimes whose path is this executable, and "runc" where
    /// `install --lock` made dockerd's runc this executable (a containers's HostConfig.Runtime is one of these when it
    /// runs isolated). The first is the one containers created through a mounted socket get; "sandbox-runc" when
    /// dockerd names us otherwise (containerd, podman: no daemon.json entry).
    /// </summary>
    public static List<string> OurRuntimeNames()
    {
        var names = new List<string>();
        string self = Environment.ProcessPath is { } p ? HostPath.Resolve(p) : "";
        if (ReadJson(DaemonJson)?["runtimes"] is System.Text.Json.Nodes.JsonObject runtimes)
            foreach (var (name, entry) in runtimes)
                if (Str(entry?["path"]) is { } path && self.Length > 0 && HostPath.Resolve(path.StartsWith('/') ? path : "/usr/local/bin/" + path) == self)
                    names.Add(name);
        if (names.Count == 0) names.Add("sandbox-runc");
        string dockerdPath = Install.RuncTakeover.DockerdPath("/var/run/docker.pid");
        foreach (var dir in dockerdPath.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string runc = Path.Combine(dir, "runc");
            if (!File.Exists(runc)) continue;
            if (HostPath.Resolve(runc) == self) names.Add("runc");
            break;
        }
        return names;
    }

    /// <summary>The spec's bind sources described over a given mount table and realpath (tests: a fake host).</summary>
    public static Dictionary<int, BindSource> DescribeBinds(Oci.Spec spec, Func<string, string> realPath, Func<string, FileId?> identify,
        IReadOnlyList<Seccomp.Notify.MountEntry> table)
    {
        var binds = new Dictionary<int, BindSource>();
        var mounts = spec.Mounts ?? [];
        for (int i = 0; i < mounts.Count; i++)
        {
            if (!MountPolicy.IsBind(mounts[i]) || string.IsNullOrEmpty(mounts[i].Source)) continue;
            string real = realPath(mounts[i].Source!);
            if (HostPlaces.Describe(mounts[i].Source!, real, null, MountPolicy.IsRecursive(mounts[i]), table, realPath, identify(real)) is { } b)
                binds[i] = b;
        }
        return binds;
    }

    static Dictionary<string, string> OurLabels(System.Text.Json.Nodes.JsonNode? labels)
    {
        var ours = new Dictionary<string, string>();
        if (labels is System.Text.Json.Nodes.JsonObject o)
            foreach (var (key, value) in o)
                if (key.StartsWith(ContainerSettings.Prefix, StringComparison.Ordinal) && Str(value) is { } v) ours[key] = v;
        return ours;
    }

    static bool IsSafeId(string id) => id.Length > 0 && !id.Contains('/') && id is not ("." or "..");

    static string? Str(System.Text.Json.Nodes.JsonNode? n) =>
        n?.GetValueKind() == System.Text.Json.JsonValueKind.String ? n.GetValue<string>() : null;

    static System.Text.Json.Nodes.JsonObject? ReadJson(string path)
    {
        try { return File.Exists(path) ? System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) as System.Text.Json.Nodes.JsonObject : null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException) { return null; }
    }

    /// <summary>repositories.json: {"Repositories": {"docker": {"docker:cli": "sha256:...", "docker@sha256:...": "sha256:..."}}}, keys normalised.</summary>
    public static Dictionary<string, string> ParseTags(System.Text.Json.Nodes.JsonObject? doc)
    {
        var tags = new Dictionary<string, string>();
        if (doc?["Repositories"] is not System.Text.Json.Nodes.JsonObject repos) return tags;
        foreach (var (_, refs) in repos)
            if (refs is System.Text.Json.Nodes.JsonObject o)
                foreach (var (name, id) in o)
                    if (ImageReference.Parse(name) is { } r && Str(id) is { } imageId)
                        tags[r.ToString()] = imageId;
        return tags;
    }

    static Dictionary<string, string> ReadTags(string path) => ParseTags(ReadJson(path));

    static StoredImage? LookupImage(string store, string id)
    {
        string hex = id.StartsWith("sha256:") ? id[7..] : id;
        if (!IsSafeId(hex)) return null;
        var config = ReadJson(Path.Combine(store, "imagedb", "content", "sha256", hex));
        if (config is null) return null;
        string parentFile = Path.Combine(store, "imagedb", "metadata", "sha256", hex, "parent");
        string? parent = null;
        try { if (File.Exists(parentFile)) parent = File.ReadAllText(parentFile).Trim(); } catch (IOException) { }
        var layers = config["rootfs"]?["diff_ids"] is System.Text.Json.Nodes.JsonArray a
            ? a.Select(Str).Where(s => s is not null).Select(s => s!).ToList() : [];
        return new StoredImage(string.IsNullOrEmpty(parent) ? null : parent, layers);
    }
}

/// <summary>
/// dockerd's tag store, read only if a rule asks (a Docker-socket mount): most creates never need it,
/// and on a host with many images repositories.json is large.
/// </summary>
internal sealed class LazyTags(Func<Dictionary<string, string>> load) : IReadOnlyDictionary<string, string>
{
    readonly Lazy<Dictionary<string, string>> _tags = new(load);
    public string this[string key] => _tags.Value[key];
    public IEnumerable<string> Keys => _tags.Value.Keys;
    public IEnumerable<string> Values => _tags.Value.Values;
    public int Count => _tags.Value.Count;
    public bool ContainsKey(string key) => _tags.Value.ContainsKey(key);
    public bool TryGetValue(string key, out string value) => _tags.Value.TryGetValue(key, out value!);
    public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => _tags.Value.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
