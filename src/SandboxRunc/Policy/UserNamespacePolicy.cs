using SandboxRunc.Cgroups;
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

    /// <summary>
    /// The character devices every container may open, listed or not: null, zero, full, random, urandom,
    /// tty (5:0, the caller's own terminal), ptmx (5:2) and pts (136:*). ptmx and pts reach only a devpts
    /// instance (the kernel finds a pty by the devpts superblock of the node opened, or the devpts beside a
    /// ptmx node): a node of these numbers elsewhere reaches no host terminal, and the container's
    /// /dev/console is a bind of one of its own pts. And net/tun (10:200), runc's default: an interface it
    /// makes lands in the container's own network namespace.
    /// </summary>
    static readonly (long Major, long Minor)[] DefaultCharDevices =
        [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, -1), (10, 200)];

    public static Spec WithSafeDevices(Spec spec)
    {
        // A FIFO ("p") is no device at all: it reaches nothing of the host's and is kept.
        if (spec.Linux?.Devices is { } devices)
            devices.RemoveAll(d => d.Type != "p" && !SafeDevices.Any(s => (s.Type == d.Type || d.Type == "u" && s.Type == "c")
                && s.Major == d.Major && (s.Minor == -1 || s.Minor == d.Minor)));
        if (spec.Linux is { } linux)
        {
            linux.Resources ??= new Resources();
            linux.Resources.Devices = ConfineDeviceRules(linux.Resources.Devices ?? [], linux.Devices ?? []);
        }
        return spec;
    }

    /// <summary>
    /// The device rules a container gets: only what it lists in linux.devices (after <see cref="SafeDevices"/>)
    /// and <see cref="DefaultCharDevices"/> can ever be opened, each with no more access than the spec's own
    /// rules grant it; every other device is denied, whatever the rules say. The spec's rules alone cannot be
    /// trusted to mean that: docker's default list allows 5:1 (the host's console), --privileged allows
    /// "a *:* rwm", and a node of any number made by host root in a directory bound into the container would
    /// open (c 1:11 /dev/kmsg, c 4:N a host tty, c 10:N misc devices, block disks). So the rules become "deny
    /// all" followed by one allow per such device: the same on the v1 controller (where "deny a" resets the
    /// list) and in the v2 program (where the last matching rule decides). `--device-cgroup-rule` can thus
    /// narrow what a listed or default device may do, never open one that is neither. The cgroup code still
    /// appends runc's default allowed devices (all of them in this set) and its mknod wildcards (mknod of a
    /// device node needs CAP_MKNOD over the initial user namespace, which no container has).
    /// </summary>
    public static List<DeviceCgroup> ConfineDeviceRules(IReadOnlyList<DeviceCgroup> rules, IReadOnlyList<Device> listed)
    {
        var parsed = DeviceFilter.Rules(rules);
        var confined = new List<DeviceCgroup> { new() { Allow = false, Type = "a", Access = "rwm" } };
        var candidates = DefaultCharDevices
            .Concat(listed.Where(d => d.Type is "c" or "u").Select(d => (d.Major, d.Minor)))
            .Distinct();
        foreach (var (major, minor) in candidates)
        {
            string access = new([.. "rwm".Where(a => Grants(parsed, major, minor, a))]);
            if (access.Length > 0)
                confined.Add(new DeviceCgroup { Allow = true, Type = "c", Major = major, Minor = minor < 0 ? null : minor, Access = access });
        }
        return confined;
    }

    /// <summary>
    /// Whether the rules (last match decides, nothing matched = denied) grant one access to a character
    /// device; minor -1 asks for every minor, which only a rule for every minor answers.
    /// </summary>
    static bool Grants(List<DeviceFilter.Rule> rules, long major, long minor, char access)
    {
        uint bit = access switch { 'r' => DeviceFilter.AccessRead, 'w' => DeviceFilter.AccessWrite, _ => DeviceFilter.AccessMknod };
        for (int i = rules.Count - 1; i >= 0; i--)
        {
            var r = rules[i];
            bool matches = (r.Type == 0 || r.Type == DeviceFilter.TypeChar) && (r.Major < 0 || r.Major == major)
                && (r.Minor < 0 || (minor >= 0 && r.Minor == minor)) && (r.Access & bit) != 0;
            if (matches) return r.Allow;
        }
        return false;
    }
}

/// <summary>A refusal by the isolation policy: the message says what was refused and why.</summary>
public sealed class PolicyException(string message) : SandboxRuncException(message);
