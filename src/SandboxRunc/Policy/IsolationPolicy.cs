using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>Facts about the host the policy needs, gathered once per create (kept out of the pure functions).</summary>
public sealed record HostFacts(Func<string, bool> IsHostNamespace)
{
    /// <summary>See <see cref="EngineFacts.OwnedByHostUserNamespace"/>: the owner asked of the kernel, compared by inode.</summary>
    public Func<string, bool> OwnedByHostUserNamespace { get; init; } = _ => false;

    /// <summary>
    /// Compares the namespace behind a path (a /proc/PID/ns link or a bind-mounted nsfs file such as docker's
    /// /var/run/docker/netns/default) with PID 1's, by namespace inode. PID 1's links are read with readlink
    /// ("net:[4026531833]"), which works where stat(2) of them is refused (a PID 1 we may not ptrace).
    /// </summary>
    public static HostFacts Current { get; } = new(IsHost) { OwnedByHostUserNamespace = IsOwnedByHostUserNamespace };

    /// <summary>ioctl(NS_GET_USERNS) = _IO(0xb7, 0x1): an fd of the user namespace that owns a namespace.</summary>
    const ulong NS_GET_USERNS = 0xb701;

    static unsafe bool IsOwnedByHostUserNamespace(string path)
    {
        int fd = Interop.Libc.open(path, Interop.Libc.O_RDONLY | Interop.Libc.O_CLOEXEC, 0);
        if (fd < 0) return false;
        try
        {
            int owner = Interop.Libc.ioctl(fd, NS_GET_USERNS, null);
            if (owner < 0) return false; // not a namespace, or its owner is out of our sight
            try
            {
                ulong? inode = NamespaceInode($"/proc/self/fd/{owner}");
                return inode is not null && HostUserNamespace.Value is { } host && inode == host;
            }
            finally { Interop.Libc.close(owner); }
        }
        finally { Interop.Libc.close(fd); }
    }

    /// <summary>The initial user namespace: PID 1's (or kthreadd's, see <see cref="HostInodes"/>).</summary>
    static readonly Lazy<ulong?> HostUserNamespace = new(() =>
    {
        if (NamespaceInode("/proc/1/ns/user") is { } i) return i;
        bool kthreadd = false;
        try { kthreadd = File.ReadAllText("/proc/2/comm").Trim() == "kthreadd"; } catch (IOException) { }
        return kthreadd ? NamespaceInode("/proc/2/ns/user") : null;
    });

    static readonly string[] HostNamespaces = ["user", "net", "pid", "ipc", "uts", "mnt", "cgroup", "time"];

    static bool IsHost(string path)
    {
        if (Path.GetFullPath(path).StartsWith("/proc/1/ns/", StringComparison.Ordinal)) return true;
        var inode = NamespaceInode(path);
        return inode is not null && HostInodes.Value.Contains(inode.Value);
    }

    /// <summary>
    /// PID 1's namespaces; where they cannot be read (a PID 1 with capabilities we lack: ptrace access is
    /// refused), kthreadd's: kernel threads always live in the initial namespaces. In a nested setup, where
    /// PID 2 is no kernel thread, PID 1 (the outer container's init) is the host as we see it.
    /// </summary>
    static readonly Lazy<HashSet<ulong>> HostInodes = new(() =>
    {
        var set = new HashSet<ulong>();
        foreach (var t in HostNamespaces)
            if (NamespaceInode("/proc/1/ns/" + t) is { } i) set.Add(i);
        bool kthreadd = false;
        try { kthreadd = File.ReadAllText("/proc/2/comm").Trim() == "kthreadd"; } catch (IOException) { }
        if (set.Count == 0 && kthreadd)
            foreach (var t in HostNamespaces)
                if (NamespaceInode("/proc/2/ns/" + t) is { } i) set.Add(i);
        return set;
    });

    /// <summary>The inode of the namespace a path names, or null when it names none (or cannot be read).</summary>
    static ulong? NamespaceInode(string path)
    {
        try
        {
            if (new FileInfo(path).LinkTarget is { } target)
            {
                int open = target.IndexOf(":[", StringComparison.Ordinal);
                if (open > 0 && target.EndsWith(']') && ulong.TryParse(target[(open + 2)..^1], out ulong ino)) return ino;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        // A bind-mounted namespace file: only an nsfs inode is a namespace (same device as our own ns links).
        var id = Interop.FileId.Of(path);
        var nsfs = Interop.FileId.Of("/proc/self/ns/net");
        return id is not null && (nsfs is null || id.Value.Device == nsfs.Value.Device) ? id.Value.Inode : null;
    }
}

/// <summary>What the policy decided for a spec it allows.</summary>
/// <param name="RestrictionsOff">the container opted out (io.sandbox-runc.isolation=off, allowed by the settings):
/// host namespaces, restricted mounts and the socket rule were not applied. The user namespace never is off.</param>
/// <param name="Binds">how each bind mount (by index in spec.mounts) is to be made.</param>
/// <param name="Settings">what the container asked for (annotations, docker labels), for every component.</param>
public sealed record PolicyDecision(UserNamespaceDecision UserNamespace, bool RestrictionsOff, IReadOnlyList<string> Notes,
    IReadOnlyDictionary<int, BindVerdict> Binds, ContainerSettings Settings)
{
    /// <summary>Whether the bind mount at this index is to be ID-mapped (true for anything the policy did not judge).</summary>
    public bool Idmap(int index) => !Binds.TryGetValue(index, out var v) || v.Idmap;

    /// <summary>Whether the bind mount at this index is the engine socket, served to the container by the socket proxy.</summary>
    public bool EngineSocket(int index) => Binds.TryGetValue(index, out var v) && v.EngineSocket;
}

/// <summary>
/// The isolation policy step of `create`, before anything is made: <see cref="Decide"/> is one pure function
/// from (spec, admin settings, engine facts) to a refusal (<see cref="PolicyException"/>) or a decision, and
/// <see cref="Rewrite"/> returns the spec to run. The facts are read by <see cref="EngineFactsGatherer"/>.
/// Order of the checks: the opt-out, the user namespace, host namespaces, sysctls, then each bind mount in spec
/// order (the engine socket, else the restricted paths).
/// </summary>
public static class IsolationPolicy
{
    /// <summary>The annotation (OCI spec) or, for docker, the container label (config.v2.json) that asks to opt out.</summary>
    public const string OptOutKey = ContainerSettings.IsolationKey;

    public static PolicyDecision Decide(Spec spec, AdminSettings settings, EngineFacts facts)
    {
        var notes = new List<string>();
        var asked = ContainerSettings.From(spec.Annotations, facts.Image?.Labels);
        // The admin decides who may be a system container: by label and command (auto), by label only, or nobody.
        asked = settings.SystemContainers switch
        {
            AdminSettings.SystemContainersOff => asked with { SystemContainer = false },
            AdminSettings.SystemContainersLabel => asked with { SystemContainer = asked.SystemContainer ?? false },
            _ => asked,
        };
        bool off = OptedOut(asked, settings, notes);
        var userNs = UserNamespacePolicy.Decide(spec, facts.IsHostNamespace);
        var binds = new Dictionary<int, BindVerdict>();
        if (off)
        {
            // Not an isolation rule but runc's own: a sysctl is set in a namespace of the container, or not at all.
            SysctlPolicy.Check(spec, facts.IsHostNamespace, facts.SysctlExists);
            return new PolicyDecision(userNs, true, notes, binds, asked);
        }

        NamespacePolicy.Check(spec, facts.IsHostNamespace, facts.OwnedByHostUserNamespace);
        if (facts.Rootfs is var (given, real, place)) MountPolicy.JudgeRootfs(given, real, place, settings, facts);
        SysctlPolicy.Check(spec, facts.IsHostNamespace, facts.SysctlExists);
        bool socketChecked = false;
        var mounts = spec.Mounts ?? [];
        for (int i = 0; i < mounts.Count; i++)
        {
            var m = mounts[i];
            if (!MountPolicy.IsBind(m) || string.IsNullOrEmpty(m.Source)) continue;
            if (!facts.Binds.TryGetValue(i, out var source))
                throw new PolicyException($"bind mount source {m.Source} (for {m.Destination}) does not exist or cannot be opened");
            // A source that is the socket, or shows it (a directory it lies in, /run), is the socket: it needs
            // an allowed image. Then, allowed or not, the restricted paths (/run stays refused for an image
            // allowed the socket: it also shows /run/containerd).
            if (source.HoldsSocketLink is null)
                throw new PolicyException($"can't mount {m.Source}: the docker socket has other names (hard links) on the filesystem it lies on, " +
                                          $"and the search of {m.Source} for them did not finish (over {HostPlacesReader.LinkSearchEntries} entries, " +
                                          $"{HostPlacesReader.LinkSearchTime.TotalSeconds:0} s, or an unreadable directory): bind a smaller directory");
            bool socket = MountPolicy.ShowsDockerSocket(source, facts);
            if (socket && !socketChecked) SocketPolicy.Check(settings, facts);
            socketChecked |= socket;
            var verdict = MountPolicy.Judge(i, source, settings, facts);
            if (socket)
            {
                // The container gets the runtime's filtering proxy in place of the socket (see SocketProxy/): what it
                // sends is checked against the commandList and the isolation policy. The proxy can stand in for the
                // socket itself only, not for one somewhere inside a directory tree, so such a directory is refused.
                if (!MountPolicy.IsDockerSocket(source, facts))
                    throw new PolicyException($"docker socket mount {m.Source} refused: it is a directory that holds the docker socket" +
                                              (source.HoldsSocketLink == true ? " (a hard link of it)" : "") + "; " +
                                              "bind-mount the socket itself (e.g. -v /var/run/docker.sock:/var/run/docker.sock), where sandbox-runc puts its filtering proxy");
                notes.Add($"docker socket mount {m.Source} allowed for image \"{ImageReference.Shown(facts.Image?.Name)}\": the container gets sandbox-runc's socket proxy there" +
                          (settings.CommandList is { } cl ? $" (commandList {cl.Type} [{string.Join(' ', cl.Commands)}])" : " (no commandList)"));
                binds[i] = verdict with { Idmap = false, Note = null, EngineSocket = true };
                continue;
            }
            binds[i] = verdict;
            if (verdict.Note is { } note) notes.Add(note);
        }
        return new PolicyDecision(userNs, false, notes, binds, asked);
    }

    /// <summary>
    /// A container asks to opt out with the annotation io.sandbox-runc.isolation=off or, since docker 20.10 has
    /// no --annotation, the label of that name (docker copies labels into config.v2.json, not the spec); the
    /// annotation wins. Honoured only when the settings say value false and locked false; otherwise the create
    /// fails (a request to be less isolated is never silently ignored, nor silently granted).
    /// </summary>
    static bool OptedOut(ContainerSettings asked, AdminSettings settings, List<string> notes)
    {
        if (asked.Isolation is null or "on") return false;
        if (settings.Locked)
            throw new PolicyException($"{OptOutKey}=off refused: enhanced container isolation is locked by the admin settings " +
                                      $"(enhancedContainerIsolation.locked is true in {settings.Source})");
        if (settings.Value)
            throw new PolicyException($"{OptOutKey}=off refused: enhanced container isolation is on for every container " +
                                      $"(enhancedContainerIsolation.value is true in {settings.Source}); an admin allows opt-outs with value false and locked false");
        notes.Add($"{OptOutKey}=off: host namespaces, restricted mounts and the docker socket are not checked; the user namespace stays");
        return true;
    }

    /// <param name="range">The range allocated for <see cref="UserNamespaceDecision.AllocateRange"/>, else null.</param>
    public static Spec Rewrite(Spec spec, IdRange? range)
    {
        if (range is not null) UserNamespacePolicy.WithSysctlsInRange(UserNamespacePolicy.WithRange(spec, range), range.Size);
        return UserNamespacePolicy.WithSafeDevices(spec);
    }
}

/// <summary>The impure edge of the policy: read the admin settings and the engine facts, then decide.</summary>
public static class PolicyStep
{
    /// <param name="pinned">receives the bind sources, opened once: create mounts them from these fds.</param>
    public static PolicyDecision Decide(Spec spec, string containerId, string stateRoot, string bundle, PinnedSources pinned) =>
        IsolationPolicy.Decide(spec, AdminSettings.Load(AdminSettings.PathFromEnvironment()),
            EngineFactsGatherer.Gather(spec, containerId, Path.GetFullPath(stateRoot), bundle, pinned));
}
