namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// The host's cgroup layout as the tests see it, so that an assertion about a container's cgroup means
/// the same on cgroup v1 (a hierarchy per controller) and v2 (one unified tree): on v2 every controller's
/// directory is the one unified directory, so "the memory cgroup is gone" is checked there too instead of
/// passing because /sys/fs/cgroup/memory never existed.
/// </summary>
public static class HostCgroups
{
    public const string Root = "/sys/fs/cgroup";

    /// <summary>cgroup v2 mounted alone at /sys/fs/cgroup (a "unified" host).</summary>
    public static bool V2 { get; } = File.Exists(Path.Combine(Root, "cgroup.controllers"));

    /// <summary>The directory of cgroup PATH (as in cgroupsPath or /proc/PID/cgroup) for a v1 controller name.</summary>
    public static string Dir(string controller, string path) =>
        V2 ? Path.Combine(Root, path.TrimStart('/')) : Path.Combine(Root, controller, path.TrimStart('/'));

    /// <summary>
    /// A process's cgroup directory for a v1 controller (its unified directory on v2), read from
    /// /proc/PID/cgroup: whatever driver placed it (cgroupfs "docker/ID", systemd "system.slice/docker-ID.scope").
    /// </summary>
    public static string OfProcess(int pid, string controller)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            bool match = V2 ? parts[0] == "0" && parts[1] == "" : parts[1].Split(',').Contains(controller);
            if (match) return Dir(controller, parts[2]);
        }
        throw new Xunit.Sdk.XunitException($"process {pid} has no {(V2 ? "unified" : controller)} cgroup in /proc/{pid}/cgroup");
    }

    /// <summary>The host's cgroup2 mount: <see cref="Root"/> on v2, the cgroup2 mount below it on a hybrid host
    /// (/sys/fs/cgroup/unified); null on a pure v1 host.</summary>
    public static string? UnifiedMount()
    {
        if (V2) return Root;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash > 4 && dash + 1 < f.Length && f[dash + 1] == "cgroup2" && f[4].StartsWith(Root + "/", StringComparison.Ordinal))
                return f[4];
        }
        return null;
    }

    /// <summary>Reads one cgroup file, trimmed.</summary>
    public static string Read(string dir, string file) => File.ReadAllText(Path.Combine(dir, file)).Trim();
}

/// <summary>An integration test about cgroup v2 itself: skipped, with the reason, on a v1 or hybrid host.</summary>
public sealed class CgroupV2FactAttribute : Xunit.FactAttribute
{
    public CgroupV2FactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs containers with the real sandbox-runc binary";
        else if (!HostCgroups.V2)
            Skip = "needs a cgroup v2 (unified) host: this one mounts cgroup v1 hierarchies (the v2 VM of ./build.sh test-v2 runs it)";
    }
}

/// <summary>An integration test that needs systemd as the host's init (its D-Bus API, transient units).</summary>
public sealed class SystemdFactAttribute : Xunit.FactAttribute
{
    public SystemdFactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs containers with the real sandbox-runc binary";
        else if (!Directory.Exists("/run/systemd/system"))
            Skip = "needs systemd as the host's init (no /run/systemd/system here; the v2 VM of ./build.sh test-v2 has it)";
    }
}
