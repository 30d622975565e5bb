namespace SandboxRunc.Doctor;

/// <summary>An ID-mapped mount tried on a detached clone of a path (open_tree + mount_setattr, never attached).</summary>
/// <param name="Role">what the path is to containers ("docker's data root: image layers and container roots").</param>
/// <param name="Needed">without it containers cannot run (the data root), rather than getting plain binds (/tmp).</param>
/// <param name="Error">null when the mount was ID-mapped; else the failing call and errno.</param>
public sealed record IdmapProbe(string Path, string Role, string? FsType, bool Needed, string? Error);

/// <summary>The ID pool (/etc/subuid, /etc/subgid) and the range table.</summary>
public sealed record IdPoolFacts(string Pool, long Ranges, long Held);

/// <summary>What the host has, as found by <see cref="HostProbe"/> (tests: by hand). Errors are the failing call and errno.</summary>
public sealed record HostFeatureFacts(
    string KernelRelease,
    long? MaxUserNamespaces,
    string? UserNamespaceError,
    IReadOnlyList<IdmapProbe> Idmap,
    string? SeccompNotifyError,
    string? FuseError,
    string CgroupMode,
    IReadOnlyList<string> CgroupControllers,
    string? AppArmor,
    string? SELinux,
    IdPoolFacts? Pool,
    string? PoolError);

/// <summary>dockerd as its daemon.json and (when it runs) `docker info` describe it.</summary>
/// <param name="ConfigRuntimePath">runtimes."sandbox-runc".path in daemon.json, null when absent.</param>
/// <param name="LoadedRuntimes">the runtimes the running dockerd knows (docker info), null when it does not run or cannot be asked.</param>
/// <param name="RuncInPath">the first "runc" of dockerd's PATH, symlinks resolved (what --runtime=runc runs), null when none.</param>
public sealed record DockerEngineFacts(bool Installed, string ConfigFile, string? ConfigError, string? ConfigRuntimePath, string? ConfigDefault,
    IReadOnlyList<string>? LoadedRuntimes, string? LoadedDefault, string? RuncInPath);

public sealed record OtherEngineFacts(string Engine, bool Installed, string ConfigFile, bool InConfig, string? ConfigError = null);

/// <summary>The admin settings file: null <see cref="Error"/> when it parses (or is missing: defaults).</summary>
public sealed record SettingsFacts(string Path, bool Exists, string? Error, bool Enabled, bool Locked);

/// <summary>A running container as its engine lists it, with what its init process is.</summary>
/// <param name="UidMap">/proc/PID/uid_map of its init, null when unreadable.</param>
/// <param name="Supervised">a sandbox-runc supervisor (host root) runs for this container id.</param>
public sealed record RunningContainer(string Engine, string Id, string Name, string Image, string Runtime, int Pid, string? UidMap, bool Supervised);

/// <summary>
/// The pure half of `check`: verdicts from facts. Each line says what was found, what the feature enables (what
/// fails without it), and one line of advice when it is not in force.
/// </summary>
public static class CheckVerdicts
{
    public const string Host = "host", Engines = "engines";

    /// <summary>Idmapped mounts (mount_setattr): 5.12. SECCOMP_USER_NOTIF_FLAG_CONTINUE: 5.5. ID-mapped tmpfs: 6.3.</summary>
    public static readonly Version MinimumKernel = new(5, 12);

    public static Version? KernelVersion(string release)
    {
        var parts = release.Split('.', '-', '+', '_');
        return parts.Length >= 2 && int.TryParse(parts[0], out int major) && int.TryParse(parts[1], out int minor) ? new Version(major, minor) : null;
    }

    public static List<CheckLine> HostLines(HostFeatureFacts f)
    {
        var lines = new List<CheckLine>();
        var kernel = KernelVersion(f.KernelRelease);
        lines.Add(kernel is not null && kernel >= MinimumKernel
            ? new(Host, "kernel", Mark.Ok, $"{f.KernelRelease} (>= {MinimumKernel})", "ID-mapped mounts (5.12), seccomp notify CONTINUE (5.5)")
            : new(Host, "kernel", Mark.Missing, $"{f.KernelRelease} (< {MinimumKernel})", "ID-mapped mounts (5.12), seccomp notify CONTINUE (5.5)",
                $"upgrade to Linux {MinimumKernel} or later: without mount_setattr no container's files can be ID-mapped"));

        string usernsEnables = "each container's own user namespace with an exclusive 64K ID range";
        if (f.MaxUserNamespaces is 0)
            lines.Add(new(Host, "user namespaces", Mark.Missing, "user.max_user_namespaces = 0", usernsEnables,
                "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d): every create fails without user namespaces"));
        else if (f.UserNamespaceError is { } e)
            lines.Add(new(Host, "user namespaces", Mark.Missing, $"cannot create one: {e}", usernsEnables,
                "enable CONFIG_USER_NS (and check that no LSM or seccomp policy denies CLONE_NEWUSER to root): every create fails"));
        else
            lines.Add(new(Host, "user namespaces", Mark.Ok, $"created one (user.max_user_namespaces = {f.MaxUserNamespaces?.ToString() ?? "unknown"})", usernsEnables));

        foreach (var p in f.Idmap)
        {
            string name = $"ID-mapped mounts {p.Path}";
            string found = $"{p.FsType ?? "?"}: " + (p.Error is null ? "mount_setattr(MOUNT_ATTR_IDMAP) works" : p.Error);
            lines.Add(p.Error is null ? new(Host, name, Mark.Ok, found, p.Role)
                : new(Host, name, p.Needed ? Mark.Missing : Mark.Advice, found, p.Role,
                    p.Needed ? $"move {p.Path} to a filesystem that supports ID-mapped mounts (ext4, xfs, btrfs; tmpfs needs Linux 6.3): containers cannot start"
                             : $"binds from {p.Path} stay plain binds (host owners, files of other users show as nobody); use a filesystem with ID-mapped mounts"));
        }

        lines.Add(f.SeccompNotifyError is null
            ? new(Host, "seccomp user notify", Mark.Ok, "SECCOMP_RET_USER_NOTIF available" + (kernel is not null && kernel >= new Version(5, 5) ? ", FLAG_CONTINUE (>= 5.5)" : ""),
                "vetting of mount/umount2 inside containers by the supervisor")
            : new(Host, "seccomp user notify", Mark.Missing, f.SeccompNotifyError, "vetting of mount/umount2 inside containers by the supervisor",
                "enable CONFIG_SECCOMP_FILTER on Linux >= 5.5: without it mounts inside containers cannot be vetted and create fails"));
        if (f.SeccompNotifyError is null && kernel is not null && kernel < new Version(5, 5))
            lines.Add(new(Host, "seccomp notify continue", Mark.Missing, $"{f.KernelRelease} lacks SECCOMP_USER_NOTIF_FLAG_CONTINUE", "letting vetted mounts run as the caller",
                "upgrade to Linux 5.5 or later"));

        lines.Add(f.FuseError is null
            ? new(Host, "/dev/fuse", Mark.Ok, "opened", "emulated /proc and /sys files (meminfo, cpuinfo, uptime, ...) per container")
            : new(Host, "/dev/fuse", Mark.Missing, f.FuseError, "emulated /proc and /sys files (meminfo, cpuinfo, uptime, ...) per container",
                "modprobe fuse (and make /dev/fuse a character device 10:229): containers cannot start without their emulated files"));

        lines.Add(f.CgroupMode == "none"
            ? new(Host, "cgroups", Mark.Missing, "no cgroup filesystem mounted", "resource limits, pause, stats",
                "mount cgroup2 at /sys/fs/cgroup: containers with resource limits cannot start")
            : new(Host, "cgroups", Mark.Info, $"{f.CgroupMode}: {(f.CgroupControllers.Count == 0 ? "no controllers" : string.Join(" ", f.CgroupControllers))}",
                "resource limits, pause, stats (the same as under runc)"));

        lines.Add(new(Host, "AppArmor", Mark.Info, f.AppArmor ?? "not enabled", "profiles the engine asks for (applied as under runc)"));
        lines.Add(new(Host, "SELinux", Mark.Info, f.SELinux ?? "not enabled", "labels the engine asks for (applied as under runc)"));

        string poolEnables = "an exclusive 64K host ID range per container";
        if (f.Pool is { } pool)
        {
            long free = pool.Ranges - pool.Held;
            lines.Add(free > 0
                ? new(Host, "ID ranges", Mark.Ok, $"{free} of {pool.Ranges} free ({pool.Pool})", poolEnables)
                : new(Host, "ID ranges", Mark.Missing, $"none of {pool.Ranges} free ({pool.Pool})", poolEnables,
                    "grow the pool (SANDBOX_RUNC_ID_POOL_SIZE, /etc/subuid and /etc/subgid) or delete stopped containers: the next create fails"));
        }
        else
            lines.Add(new(Host, "ID ranges", Mark.Missing, f.PoolError ?? "unknown", poolEnables,
                "run `sandbox-runc ranges --rebuild` (or fix /etc/subuid, /etc/subgid): creates fail until the table can be read"));
        return lines;
    }

    public static List<CheckLine> EngineLines(DockerEngineFacts d, IEnumerable<OtherEngineFacts> others, SettingsFacts s, string self)
    {
        var lines = new List<CheckLine>();
        const string knowsEnables = "--runtime=sandbox-runc";
        if (!d.Installed)
            lines.Add(new(Engines, "dockerd", Mark.Info, "not installed", knowsEnables));
        else
        {
            if (d.ConfigError is { } err)
                lines.Add(new(Engines, "dockerd config", Mark.Missing, err, "dockerd's runtimes", $"fix {d.ConfigFile}: dockerd will not start with it"));
            if (d.ConfigRuntimePath is null)
                lines.Add(new(Engines, "dockerd knows it", Mark.Missing, $"no runtimes.sandbox-runc in {d.ConfigFile}", knowsEnables,
                    "sandbox-runc install (adds it to daemon.json and reloads dockerd)"));
            else if (!File.Exists(d.ConfigRuntimePath))
                lines.Add(new(Engines, "dockerd knows it", Mark.Missing, $"runtimes.sandbox-runc.path {d.ConfigRuntimePath} does not exist", knowsEnables,
                    "sandbox-runc install --path BINARY (containers with this runtime fail to start)"));
            else if (d.LoadedRuntimes is { } loaded && !loaded.Contains(Install.EngineConfig.RuntimeName))
                lines.Add(new(Engines, "dockerd knows it", Mark.Missing, $"in {d.ConfigFile} but not in the running dockerd (runtimes: {string.Join(", ", loaded)})", knowsEnables,
                    "reload dockerd (kill -HUP $(cat /var/run/docker.pid)) to load daemon.json"));
            else
                lines.Add(new(Engines, "dockerd knows it", Mark.Ok, $"runtimes.sandbox-runc = {d.ConfigRuntimePath}" + (d.LoadedRuntimes is null ? " (dockerd not running)" : ""), knowsEnables));

            string? def = d.LoadedDefault ?? d.ConfigDefault;
            lines.Add(def == Install.EngineConfig.RuntimeName
                ? new(Engines, "dockerd default", Mark.Ok, "default-runtime sandbox-runc", "isolation for `docker run` without --runtime")
                : new(Engines, "dockerd default", Mark.Advice, $"default-runtime {def ?? "runc"}", "isolation for `docker run` without --runtime",
                    "sandbox-runc install --default"));
            bool locked = d.RuncInPath is { } runc && runc == self;
            lines.Add(locked
                ? new(Engines, "dockerd lock", Mark.Ok, $"runc in dockerd's PATH is sandbox-runc", "isolation for --runtime=runc and BuildKit's RUN steps")
                : new(Engines, "dockerd lock", Mark.Advice, d.RuncInPath is null ? "no runc in dockerd's PATH" : $"runc in dockerd's PATH is {d.RuncInPath}",
                    "isolation for --runtime=runc and BuildKit's RUN steps", "sandbox-runc install --lock"));
        }

        foreach (var o in others)
        {
            string name = $"{o.Engine} knows it";
            lines.Add(!o.Installed ? new(Engines, name, Mark.Info, "not installed", $"{o.Engine} containers under sandbox-runc")
                : o.ConfigError is { } err ? new(Engines, name, Mark.Advice, err, $"{o.Engine} containers under sandbox-runc", $"fix {o.ConfigFile}")
                : o.InConfig ? new(Engines, name, Mark.Ok, $"runtime sandbox-runc in {o.ConfigFile}", $"{o.Engine} containers under sandbox-runc")
                : new(Engines, name, Mark.Advice, $"no sandbox-runc runtime in {o.ConfigFile}", $"{o.Engine} containers under sandbox-runc",
                    o.Engine == "containerd" ? "sandbox-runc install --containerd (then restart containerd): a RuntimeClass handler for Kubernetes"
                        : "add sandbox-runc to [engine.runtimes] in containers.conf (podman run --runtime sandbox-runc)"));
        }

        const string settingsEnables = "admin settings (socket images, allow lists, restricted mounts)";
        if (s.Error is { } e)
            lines.Add(new(Engines, "admin settings", Mark.Missing, e, settingsEnables, $"fix {s.Path}: every create is refused while it does not parse"));
        else if (!s.Enabled)
            lines.Add(new(Engines, "admin settings", Mark.Missing, $"{s.Path}: isolation is turned off (enhancedContainerIsolation.value false)", settingsEnables,
                $"set enhancedContainerIsolation.value to true in {s.Path}"));
        else
        {
            lines.Add(new(Engines, "admin settings", Mark.Ok, s.Exists ? $"{s.Path} parses" : $"{s.Path} missing: defaults", settingsEnables));
            lines.Add(s.Locked ? new(Engines, "settings locked", Mark.Ok, "locked: true", "users cannot turn isolation off per container")
                : new(Engines, "settings locked", Mark.Advice, "not locked", "users cannot turn isolation off per container",
                    $"set enhancedContainerIsolation.locked to true in {s.Path}"));
        }
        return lines;
    }

    /// <summary>Whether a uid_map is the host's own (the initial user namespace: 0 0 4294967295).</summary>
    public static bool IsHostUidMap(string uidMap)
    {
        var rows = uidMap.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return rows.Length == 1 && rows[0].Split(' ', StringSplitOptions.RemoveEmptyEntries) is ["0", "0", "4294967295"];
    }

    /// <summary>
    /// A container is under isolation when a sandbox-runc supervisor serves it and its init runs in a user
    /// namespace of its own: the runtime name alone proves nothing (under the lock "runc" is sandbox-runc, and a
    /// container started before the lock still runs under the real runc).
    /// </summary>
    public static ContainerLine Judge(RunningContainer c)
    {
        bool hostUserns = c.UidMap is null || IsHostUidMap(c.UidMap);
        string map = c.UidMap is null ? "its init's uid_map cannot be read" : hostUserns ? "in the host's user namespace (uid_map 0 0 4294967295)"
            : "own user namespace (uid_map " + string.Join(", ", c.UidMap.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(r => string.Join(' ', r.Split(' ', StringSplitOptions.RemoveEmptyEntries)))) + ")";
        bool isolated = c.Supervised && !hostUserns;
        string found = isolated ? $"sandbox-runc, {map}"
            : c.Supervised ? $"sandbox-runc supervisor, but {map}"
            : $"no sandbox-runc supervisor, {map}";
        return new ContainerLine(c.Engine, c.Id, c.Name, c.Image, c.Runtime, c.Pid, isolated, found);
    }
}
