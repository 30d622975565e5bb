using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// Host bind mounts. A bind source is judged by what it is on the host: its realpath (symlinks, "." and
/// ".." resolved; a missing tail kept as written), never by its spelling.
///
/// Refused, with "can't mount SOURCE because it's configured as a restricted host mount":
/// <list type="bullet">
/// <item>the engine's own config and state: /etc/docker, docker's data root, /var/lib/containerd,
///   /run/containerd, /run/docker, the runtime's binary, state root and /etc/sandbox-runc — the path, anything
///   under it, and anything above it (mounting /var exposes /var/lib/docker). Nothing lets these through.</item>
/// <item>the kernel's and the boot's: /proc, /sys, /dev, /boot, /lib/modules, and the admin's restrictedMounts —
///   the path, anything under it, and anything above it unless the source lies in the file-sharing allow list
///   (the allow list only relaxes "above": /home may be shared though an admin restricted /home/secrets).</item>
/// <item>/ and /etc as a whole (their children are judged by the rules above).</item>
/// </list>
/// Docker's own mounts for the container are allowed though they live under the data root:
/// &lt;data-root&gt;/containers/ID/hostname, hosts, resolv.conf and mounts/shm of any container (its own, and
/// another's for --network=container:x and --ipc=container:x: docker binds x's files), anything under
/// &lt;data-root&gt;/containers/&lt;this create's id&gt;/mounts/ (secrets, configs), and named volumes,
/// &lt;data-root&gt;/volumes/&lt;name&gt;/_data and below. Their realpath must stay inside, so a symlink in a
/// volume pointing at /etc/docker is still refused. dockerd's records (config.v2.json, hostconfig.json, logs) are not.
/// Other mount types (proc, tmpfs, sysfs, cgroup, overlay...) are not host paths and are not judged here.
/// </summary>
public static class MountPolicy
{
    public static bool IsBind(Mount m) =>
        m.Type == "bind" || m.Options?.Any(o => o is "bind" or "rbind") == true;

    public static bool IsDockerSocket(string source, EngineFacts facts)
    {
        string real = facts.RealPath(source);
        if (facts.DockerSockets.Contains(real)) return true;
        var id = facts.Identify(source);
        return id is not null && facts.DockerSockets.Any(s => facts.Identify(s) == id);
    }

    public static void CheckRestricted(string source, AdminSettings settings, EngineFacts facts)
    {
        string real = facts.RealPath(source);
        if (IsDockersOwnMount(real, facts)) return;

        var engine = new List<string> { "/etc/docker", facts.DockerRoot, "/var/lib/containerd", "/run/containerd", "/var/run/containerd",
            "/run/docker", facts.StateRoot, "/etc/sandbox-runc" };
        if (facts.RuntimeBinary is { Length: > 0 } bin) engine.Add(bin);
        var system = new List<string> { "/proc", "/sys", "/dev", "/boot", "/lib/modules" };
        system.AddRange(settings.RestrictedMounts);

        bool allowListed = settings.FileSharingAllowList.Select(facts.RealPath).Any(a => Same(real, a) || Under(real, a));
        bool refused =
            new[] { "/", "/etc" }.Select(facts.RealPath).Any(p => Same(real, p)) ||
            engine.Select(facts.RealPath).Any(p => Same(real, p) || Under(real, p) || Under(p, real)) ||
            system.Select(facts.RealPath).Any(p => Same(real, p) || Under(real, p) || Under(p, real) && !allowListed);
        if (refused)
            throw new PolicyException($"can't mount {source} because it's configured as a restricted host mount");
    }

    static bool IsDockersOwnMount(string real, EngineFacts facts)
    {
        string containers = facts.DockerRoot.TrimEnd('/') + "/containers/";
        if (real.StartsWith(containers, StringComparison.Ordinal))
        {
            var rest = real[containers.Length..].Split('/');
            if (rest.Length < 2 || rest[0].Length == 0) return false;
            // --network=container:x binds x's hostname, hosts and resolv.conf; --ipc=container:x binds x's shm.
            if (rest is [_, "hostname" or "hosts" or "resolv.conf"] || rest is [_, "mounts", "shm"]) return true;
            return rest[0] == facts.ContainerId && rest.Length >= 3 && rest[1] == "mounts";
        }
        string volumes = facts.DockerRoot.TrimEnd('/') + "/volumes/";
        if (real.StartsWith(volumes, StringComparison.Ordinal))
        {
            var rest = real[volumes.Length..].Split('/');
            return rest.Length >= 2 && rest[0].Length > 0 && rest[1] == "_data";
        }
        return false;
    }

    static string Trim(string p) => p.Length > 1 ? p.TrimEnd('/') : p;
    static bool Same(string a, string b) => Trim(a) == Trim(b);
    /// <summary>a is strictly below b.</summary>
    static bool Under(string a, string b)
    {
        a = Trim(a); b = Trim(b);
        return b == "/" ? a != "/" : a.StartsWith(b + "/", StringComparison.Ordinal);
    }
}
