using System.Text.RegularExpressions;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// `--pid=container:x`, `--ipc=container:x`, pods: a spec that joins another container's namespaces by
/// /proc/PID/ns/... and brings no user namespace of its own joins the user namespace of that process
/// when it is not the host's. Those namespaces are owned by it: in a fresh user namespace of its own the
/// container could not mount its procfs or configure its network. Both containers then share that
/// container's ID range (as the processes of a pod share one user namespace).
/// </summary>
public static partial class SharedUserNamespace
{
    public sealed record Owner(int Pid, IdRange Range, IdMappingsState Mappings);

    [GeneratedRegex(@"^/proc/(\d+)/ns/[a-z_]+$")]
    private static partial Regex ProcNsPath();

    /// <summary>Adds the user namespace to join to the spec and returns whose it is; null when there is none to share.</summary>
    public static Owner? JoinOwner(Spec spec)
    {
        var namespaces = spec.Linux?.Namespaces;
        if (namespaces is null || namespaces.Any(n => n.Type == "user")) return null;
        var self = FileId.Of("/proc/self/ns/user");
        foreach (var ns in namespaces)
        {
            if (string.IsNullOrEmpty(ns.Path) || ProcNsPath().Match(ns.Path) is not { Success: true } m) continue;
            int pid = int.Parse(m.Groups[1].Value);
            string userns = $"/proc/{pid}/ns/user";
            if (FileId.Of(userns) is not { } id || id == self) continue;
            if (ReadRange(pid) is not { } owner) continue;
            namespaces.Insert(0, new Namespace { Type = "user", Path = userns });
            return owner;
        }
        return null;
    }

    /// <summary>The "0 BASE SIZE" maps of a process in another user namespace.</summary>
    static Owner? ReadRange(int pid)
    {
        try
        {
            var uid = File.ReadAllText($"/proc/{pid}/uid_map").Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            var gid = File.ReadAllText($"/proc/{pid}/gid_map").Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            if (uid.Length != 3 || gid.Length != 3 || uid[0] != "0" || gid[0] != "0") return null;
            var range = new IdRange(long.Parse(uid[1]), long.Parse(gid[1]), long.Parse(uid[2]));
            return new Owner(pid, range, new IdMappingsState { UidMap = $"0 {uid[1]} {uid[2]}", GidMap = $"0 {gid[1]} {gid[2]}" });
        }
        catch (Exception e) when (e is IOException or FormatException) { return null; }
    }
}
