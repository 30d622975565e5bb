using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Namespaces;

/// <summary>
/// net.* sysctls of a network namespace the container joins (dockerd creates the container's netns
/// itself, owned by the host's user namespace). Inside its own user namespace the container's init has
/// no capability over that netns, so the host writes them, from a thread that enters the netns
/// (setns(CLONE_NEWNET) is per-thread and allowed in a multi-threaded process; /proc/sys/net shows the
/// calling thread's namespace).
/// </summary>
public static class NetworkSysctls
{
    const int CLONE_NEWNET = 0x40000000;

    public static bool IsNetworkKey(string key) => key.StartsWith("net.", StringComparison.Ordinal);

    public static string? JoinedNetns(Spec spec) =>
        spec.Linux?.Namespaces?.FirstOrDefault(n => n.Type == "network" && !string.IsNullOrEmpty(n.Path))?.Path;

    public static void WriteForJoinedNetns(Spec spec)
    {
        var keys = spec.Linux?.Sysctl?.Where(kv => IsNetworkKey(kv.Key)).ToList();
        if (keys is not { Count: > 0 } || JoinedNetns(spec) is not { } netns) return;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var fd = new SafeFd(SysException.Check(Libc.open(netns, Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", netns));
                SysException.Check((int)Libc.syscall(Libc.SYS_setns, fd.Fd, CLONE_NEWNET, 0, 0, 0, 0), "setns", netns);
                foreach (var (key, value) in keys) Sysctl.Write(key, value);
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) throw failure;
    }
}

/// <summary>Writes one linux.sysctl entry under /proc/sys, with an error naming the key, value and file.</summary>
public static class Sysctl
{
    public static void Write(string key, string value)
    {
        if (key.Length == 0 || key.Contains("..") || key.StartsWith('.') || key.StartsWith('/'))
            throw new InvalidOperationException($"sysctl \"{key}\": invalid name");
        string path = "/proc/sys/" + key.Replace('.', '/');
        try { File.WriteAllText(path, value); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"sysctl \"{key}\" = \"{value}\": write {path}: {e.Message}");
        }
    }
}
