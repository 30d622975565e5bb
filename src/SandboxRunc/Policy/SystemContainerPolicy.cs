using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// System containers (Docker-in-Docker, containerd, systemd as PID 1), as sysbox runs them: pure rewrites of the spec
/// of a container that has its own user namespace (every isolated container). Three parts:
/// <list type="bullet">
/// <item><see cref="WithCgroupDelegation"/>, for every such container: its own cgroup namespace and /sys/fs/cgroup
///   mounted read-write, rooted at its cgroup. The host side makes the subtree the container's (systemd's Delegate=yes:
///   its root owns the directory and cgroup.procs/tasks, v2 also cgroup.threads and cgroup.subtree_control; never the
///   limit files of its top: see CgroupManager.Delegate), so it can make children but never raise its own limits.</item>
/// <item><see cref="WithEngineStorage"/>, for every such container: a host directory owned by its root at
///   /var/lib/docker, /var/lib/containerd and /var/lib/kubelet unless the spec mounts something there (overlay cannot
///   stack on the container's own overlay; the inner engine's overlay2 needs a backing filesystem that is not one).</item>
/// <item><see cref="WithSystemContainer"/>, for a system container (<see cref="IsSystemContainer"/>): what an inner
///   engine or init needs that docker withholds without --privileged: every capability (in the container's user
///   namespace only), no seccomp profile but ours and no engine-default AppArmor profile (docker-default denies every
///   mount), i.e. what --privileged gives; for an init also /run and
///   /run/lock as tmpfs and the "container" environment variable that systemd reads. It does not give what
///   --privileged gives beyond that (host devices, a writable /sys, unmasked /proc paths).</item>
/// </list>
/// </summary>
public static class SystemContainerPolicy
{
    /// <summary>Where inner engines keep their state; bound from the container's own host directory.</summary>
    public static readonly string[] EngineStoragePaths = ["/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet"];

    /// <summary>Commands that are an init (the name, any directory): a container running one gets what systemd needs.</summary>
    static readonly string[] Inits = ["init", "systemd"];

    /// <summary>Commands that are a container engine daemon.</summary>
    static readonly string[] Engines = ["dockerd", "containerd", "dockerd-entrypoint.sh", "dind"];

    /// <summary>
    /// The AppArmor profiles engines give a container nobody chose a profile for: docker's, containerd CRI's and podman's
    /// (containers-default-VERSION). Each denies every mount, so an inner engine or systemd cannot work under it; docker
    /// leaves it out for --privileged. A profile the user named otherwise stays.
    /// </summary>
    public static bool IsEngineDefaultAppArmor(string? profile) =>
        profile is "docker-default" or "cri-containerd.apparmor.d"
        || profile?.StartsWith("containers-default-", StringComparison.Ordinal) == true;

    /// <summary>The process runs an init (its first argument, by path or bare name).</summary>
    public static bool RunsInit(Spec spec) =>
        spec.Process?.Args is { Count: > 0 } args && Inits.Contains(Path.GetFileName(args[0]));

    /// <summary>
    /// A system container: the label or annotation io.sandbox-runc.system-container says so (ContainerSettings), or,
    /// with no word either way, its command is an init or an engine daemon.
    /// </summary>
    public static bool IsSystemContainer(Spec spec, bool? asked)
    {
        if (asked is { } yes) return yes;
        if (RunsInit(spec)) return true;
        return spec.Process?.Args is { Count: > 0 } args && Engines.Contains(Path.GetFileName(args[0]));
    }

    /// <summary>Whether the container may run an engine at all: a system container, or one given CAP_SYS_ADMIN (--privileged).</summary>
    public static bool NeedsEngineStorage(Spec spec, bool systemContainer) =>
        systemContainer || spec.Process?.Capabilities?.Bounding?.Contains("CAP_SYS_ADMIN") == true;

    /// <summary>Its own cgroup namespace (unless the spec joins one) and a read-write cgroup mount.</summary>
    public static Spec WithCgroupDelegation(Spec spec)
    {
        var linux = spec.Linux ??= new Linux();
        linux.Namespaces ??= [];
        if (!linux.Namespaces.Any(n => n.Type == "cgroup"))
            linux.Namespaces.Add(new Namespace { Type = "cgroup" });
        var mounts = spec.Mounts ??= [];
        var cgroup = mounts.FirstOrDefault(m => m.Type is "cgroup" or "cgroup2");
        if (cgroup is null)
        {
            // Docker always mounts it; a hand-written spec with a /sys gets one too (systemd and inner engines look there).
            if (mounts.Any(m => m.Destination.TrimEnd('/') == "/sys"))
                mounts.Add(new Mount { Destination = "/sys/fs/cgroup", Type = "cgroup", Source = "cgroup", Options = ["nosuid", "noexec", "nodev", "relatime", "rw"] });
            return spec;
        }
        var options = (cgroup.Options ?? []).Where(o => o is not ("ro" or "rw")).ToList();
        options.Add("rw");
        cgroup.Options = options;
        return spec;
    }

    /// <summary>
    /// Binds a host directory (hostDirFor(path), made by the caller: see EngineStorage) at each of
    /// <see cref="EngineStoragePaths"/>, except where the spec mounts something at that path or below it (the user's
    /// volume wins); returns the paths bound.
    /// </summary>
    public static IReadOnlyList<string> WithEngineStorage(Spec spec, Func<string, string> hostDirFor)
    {
        var mounts = spec.Mounts ??= [];
        var bound = new List<string>();
        foreach (var path in EngineStoragePaths)
        {
            if (mounts.Any(m => IsAtOrBelow(Normalize(m.Destination), path))) continue;
            mounts.Add(new Mount { Destination = path, Type = "bind", Source = hostDirFor(path), Options = ["rbind", "rw", "nosuid", "nodev"] });
            bound.Add(path);
        }
        return bound;
    }

    /// <summary>
    /// What a system container gets: every capability the runtime holds (heldMask, capget's permitted set), no seccomp
    /// profile but the runtime's own vetting; for an init, /run and /run/lock as tmpfs unless mounted, and container=...
    /// </summary>
    public static Spec WithSystemContainer(Spec spec, ulong heldMask)
    {
        var process = spec.Process ??= new Process();
        // All of them, CAP_SYS_RAWIO too (it means nothing outside the host's user namespace, but an inner runc given
        // `docker run --privileged` sets every capability in the bounding set it starts with and fails on a missing one).
        var all = Namespaces.CapabilityNames.All.Where((_, i) => (heldMask & (1UL << i)) != 0).ToList();
        process.Capabilities = new Capabilities
        {
            Bounding = [.. all], Effective = [.. all], Permitted = [.. all],
            // Inheritable and ambient as docker sets them: a non-root process gains nothing at execve.
            Inheritable = process.Capabilities?.Inheritable, Ambient = process.Capabilities?.Ambient,
        };
        if (spec.Linux is { } linux) linux.Seccomp = null;
        // Our vetting of mount and umount2 stands where the engine's AppArmor profile would (see the README's threat model).
        if (IsEngineDefaultAppArmor(process.ApparmorProfile)) process.ApparmorProfile = null;
        // The saved spec says so: `exec` gives its processes the same (see ForExec).
        (spec.Annotations ??= [])[ContainerSettings.SystemContainerKey] = "true";
        // sysfs read-write, as --privileged has it: a new sysfs (an inner container's, in a network namespace of its
        // own) may be no less restricted than the one the container sees (mnt_too_revealing), so under a read-only
        // /sys an inner `docker run --privileged` fails mounting its read-write one. Nothing of the host's becomes
        // writable: its sysfs files belong to host root, an "other" to the container's root (none is world-writable),
        // and DAC override does not reach an owner the user namespace does not map; what the container owns, its own
        // network devices' attributes, it may write, as it could through its own network namespace anyway.
        foreach (var sysfs in (spec.Mounts ?? []).Where(m => m.Type == "sysfs" && Normalize(m.Destination) == "/sys"))
            sysfs.Options = [.. (sysfs.Options ?? []).Where(o => o is not ("ro" or "rw")), "rw"];
        if (!RunsInit(spec)) return spec;
        // Not over mounts the spec has below them (a tmpfs mounted after them would hide them); mounts keep their
        // order and indexes (the policy's verdicts are by index).
        var mounts = spec.Mounts ??= [];
        foreach (var (path, options) in new[]
        {
            ("/run", new List<string> { "nosuid", "nodev", "mode=755", "size=65536k" }),
            ("/run/lock", new List<string> { "nosuid", "nodev", "noexec", "mode=1777", "size=4096k" }),
        })
            if (!mounts.Any(m => IsAtOrBelow(Normalize(m.Destination), path)))
                mounts.Add(new Mount { Destination = path, Type = "tmpfs", Source = "tmpfs", Options = options });
        var env = process.Env ??= [];
        if (!env.Any(e => e.StartsWith("container=", StringComparison.Ordinal))) env.Add("container=sandbox-runc");
        return spec;
    }

    /// <summary>
    /// A process `exec` starts in a system container gets the capability sets of its init (every capability: an engine
    /// or systemctl run by `docker exec` needs them as the init does) and, like it, no engine-default AppArmor profile
    /// (docker exec names docker-default again); inheritable and ambient stay as asked.
    /// </summary>
    public static Process ForExec(Process process, Spec containerSpec)
    {
        if (containerSpec.Annotations?.GetValueOrDefault(ContainerSettings.SystemContainerKey) != "true"
            || containerSpec.Process?.Capabilities is not { } caps) return process;
        process.Capabilities = new Capabilities
        {
            Bounding = caps.Bounding, Effective = caps.Effective, Permitted = caps.Permitted,
            Inheritable = process.Capabilities?.Inheritable, Ambient = process.Capabilities?.Ambient,
        };
        if (IsEngineDefaultAppArmor(process.ApparmorProfile)) process.ApparmorProfile = null;
        return process;
    }

    static string Normalize(string path) => "/" + string.Join('/', path.Split('/', StringSplitOptions.RemoveEmptyEntries));

    static bool IsAtOrBelow(string path, string dir) => path == dir || path.StartsWith(dir + "/", StringComparison.Ordinal);
}
