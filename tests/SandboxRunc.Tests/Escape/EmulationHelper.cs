// What the escape tests of the emulation need to see from the host: a container's emulation helper
// (`sandbox-runc emulate ID`, child of its supervisor), its memory and cgroup, and bundles shaped like a
// docker container (docker's default capabilities, no seccomp profile: as `--security-opt seccomp=unconfined`).
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;

namespace SandboxRunc.Tests.Escape;

static class EmulationHelper
{
    /// <summary>docker's default capability set.</summary>
    public static readonly List<string> DockerCaps =
    [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ];

    /// <summary>A bundle whose process has docker's default capabilities (plus <paramref name="extraCaps"/>) and may gain privileges.</summary>
    public static Bundle DockerLike(string[] args, params string[] extraCaps)
    {
        var b = new Bundle(args);
        var caps = DockerCaps.Concat(extraCaps).ToList();
        b.Spec.Process!.Capabilities = new Capabilities { Bounding = caps, Effective = caps, Permitted = caps };
        b.Spec.Process.NoNewPrivileges = false;
        return b;
    }

    /// <summary>The supervisor of a container started by <paramref name="rt"/> (from its pid file).</summary>
    public static int SupervisorPid(RuntimeCli rt, string id) =>
        int.Parse(File.ReadAllText(Path.Combine(rt.StateRoot, id, "supervisor.pid")).Trim());

    /// <summary>The emulation helper of a container: the supervisor's child running `emulate ID`.</summary>
    public static int HelperPid(RuntimeCli rt, string id)
    {
        int supervisor = SupervisorPid(rt, id);
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(dir + "/stat");
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (int.Parse(fields[1]) != supervisor) continue;
                var argv = File.ReadAllText(dir + "/cmdline").Split('\0');
                if (argv.Contains("emulate") && argv.Contains(id)) return pid;
            }
            catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { }
        }
        throw new Xunit.Sdk.XunitException($"no emulation helper of {id} below supervisor {supervisor}");
    }

    /// <summary>VmRSS of a process in KiB (0 when it is gone).</summary>
    public static long RssKb(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0]);
        }
        catch (IOException) { }
        return 0;
    }

    public static bool CgroupV2 => File.Exists("/sys/fs/cgroup/cgroup.controllers");

    /// <summary>The container's memory cgroup dir (v1: the memory hierarchy; v2: the unified one).</summary>
    public static string MemoryCgroupDir(Bundle b) => CgroupV2
        ? Path.Combine("/sys/fs/cgroup", b.Spec.Linux!.CgroupsPath!.TrimStart('/'))
        : b.CgroupDir("memory");

    /// <summary>The cgroup a process is in for memory, as /proc/PID/cgroup says (v1: the memory line; v2: the unified one).</summary>
    public static string MemoryCgroupOf(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/cgroup"))
        {
            var f = line.Split(':', 3);
            if (f.Length == 3 && (CgroupV2 ? f[0] == "0" : f[1].Split(',').Contains("memory"))) return f[2];
        }
        return "";
    }

    /// <summary>Anonymous memory charged to a memory cgroup, in bytes (v1 total_rss, v2 anon).</summary>
    public static long AnonBytes(string cgroupDir)
    {
        string key = CgroupV2 ? "anon" : "total_rss";
        foreach (var line in File.ReadLines(Path.Combine(cgroupDir, "memory.stat")))
        {
            var f = line.Split(' ');
            if (f.Length == 2 && f[0] == key) return long.Parse(f[1]);
        }
        return 0;
    }
}
