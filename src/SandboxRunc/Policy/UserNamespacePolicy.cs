using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>What the user-namespace rule decided for a spec.</summary>
public enum UserNamespaceDecision
{
    /// <summary>No usable mappings: the container gets a new user namespace over a range from the pool.</summary>
    AllocateRange,
    /// <summary>The spec's own mappings (userns-remap, Kubernetes hostUsers: false) pass the rules and are kept.</summary>
    KeepSpecMappings,
    /// <summary>The spec joins an existing, non-host user namespace (another container's, a pod's).</summary>
    JoinExisting,
}

/// <summary>
/// Every container runs in its own user namespace. Pure functions over the spec: <see cref="Decide"/>
/// refuses what cannot be isolated, <see cref="WithRange"/> rewrites the spec for an allocated range.
/// </summary>
public static class UserNamespacePolicy
{
    public const long MinimumSize = 65536;

    /// <param name="isHostNamespace">true when a namespace path is the host's own (same inode as /proc/1/ns/...).</param>
    public static UserNamespaceDecision Decide(Spec spec, Func<string, bool> isHostNamespace)
    {
        var linux = spec.Linux;
        var userNs = linux?.Namespaces?.FirstOrDefault(n => n.Type == "user");
        if (userNs is null)
            return UserNamespaceDecision.AllocateRange; // Docker's case, and --userns=host: a namespace is added
        if (!string.IsNullOrEmpty(userNs.Path))
        {
            if (isHostNamespace(userNs.Path))
                throw new PolicyException($"can't join the host's user namespace ({userNs.Path}): sandbox-runc containers always run in their own user namespace");
            return UserNamespaceDecision.JoinExisting;
        }
        bool hasUid = linux!.UidMappings is { Count: > 0 }, hasGid = linux.GidMappings is { Count: > 0 };
        if (!hasUid && !hasGid) return UserNamespaceDecision.AllocateRange;
        CheckMapping("uidMappings", linux.UidMappings);
        CheckMapping("gidMappings", linux.GidMappings);
        return UserNamespaceDecision.KeepSpecMappings;
    }

    static void CheckMapping(string field, List<IdMapping>? maps)
    {
        string shown = maps is null ? "none" : string.Join(", ", maps.Select(m => $"{m.ContainerId} {m.HostId} {m.Size}"));
        string why =
            maps is not { Count: 1 } ? "it must be exactly one contiguous range" :
            maps[0].ContainerId != 0 ? "it must start at container ID 0" :
            maps[0].Size < MinimumSize ? $"it must cover at least {MinimumSize} IDs" :
            maps[0].HostId == 0 ? "it must not contain host ID 0 (container root would be host root)" :
            (long)maps[0].HostId + maps[0].Size > uint.MaxValue ? "it runs past the last host ID (4294967294)" :
            "";
        if (why.Length > 0)
            throw new PolicyException($"user namespace mapping refused: linux.{field} is \"{shown}\": {why}");
    }

    /// <summary>The spec with a new user namespace mapping container IDs 0..65535 onto the range.</summary>
    public static Spec WithRange(Spec spec, IdRange range)
    {
        var linux = spec.Linux ??= new Linux();
        linux.Namespaces ??= [];
        if (!linux.Namespaces.Any(n => n.Type == "user"))
            linux.Namespaces.Insert(0, new Namespace { Type = "user" });
        linux.UidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)range.UidBase, Size = (uint)range.Size }];
        linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)range.GidBase, Size = (uint)range.Size }];
        return spec;
    }

    /// <summary>
    /// net.ipv4.ping_group_range names gids of the writer's user namespace: Docker asks for "0 2147483647"
    /// (every gid), which a user namespace of 65536 IDs cannot express (EINVAL). Every gid the container
    /// has is 0..size-1, so the range is clamped to that: the same groups may ping.
    /// </summary>
    public static Spec WithSysctlsInRange(Spec spec, long size)
    {
        const string key = "net.ipv4.ping_group_range";
        if (spec.Linux?.Sysctl is { } sysctl && sysctl.TryGetValue(key, out var value))
        {
            var parts = value.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && long.TryParse(parts[0], out long lo) && long.TryParse(parts[1], out long hi) && lo <= hi)
                sysctl[key] = $"{Math.Min(lo, size - 1)} {Math.Min(hi, size - 1)}";
        }
        return spec;
    }

    /// <summary>
    /// Devices that mean nothing dangerous inside a user namespace (Docker's --privileged lists every host
    /// device: block devices, /dev/mem, ... are dropped). Keyed by (type, major, minor); minor -1 = any.
    /// </summary>
    static readonly (string Type, long Major, long Minor)[] SafeDevices =
    [
        ("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), // null zero full random urandom
        ("c", 5, 0),                                                      // tty (the caller's own terminal)
        ("c", 10, 200), ("c", 10, 229),                                   // net/tun, fuse
        // Not /dev/console (5:1) nor host /dev/pts/* (136:*): those are the host's terminals.
        // /dev/ptmx is always the container's own devpts's (a symlink to pts/ptmx).
    ];

    public static Spec WithSafeDevices(Spec spec)
    {
        // No block device may be opened, whatever the rules say (--privileged allows "a *:* rwm"): the container
        // cannot make a node, so the only block nodes it could open are host nodes bound in, i.e. host disks.
        // The last matching rule decides (v1's controller and the v2 program alike), so this one goes last.
        if (spec.Linux is { } linux)
        {
            linux.Resources ??= new Resources();
            (linux.Resources.Devices ??= []).Add(new DeviceCgroup { Allow = false, Type = "b", Access = "rwm" });
        }
        // A FIFO ("p") is no device at all: it reaches nothing of the host's and is kept.
        if (spec.Linux?.Devices is { } devices)
            devices.RemoveAll(d => d.Type != "p" && !SafeDevices.Any(s => (s.Type == d.Type || d.Type == "u" && s.Type == "c")
                && s.Major == d.Major && (s.Minor == -1 || s.Minor == d.Minor)));
        return spec;
    }
}

/// <summary>A refusal by the isolation policy: the message says what was refused and why.</summary>
public sealed class PolicyException(string message) : SandboxRuncException(message);
