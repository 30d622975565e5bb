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

/// <summary>
/// Writes one linux.sysctl entry under /proc/sys (of the calling thread's namespaces), with an error that says
/// which key, which namespace, the kernel's reason and what it means.
/// </summary>
public static unsafe class Sysctl
{
    public static void Write(string key, string value)
    {
        if (key.Length == 0 || key.Contains("..") || key[0] is '.' or '/')
            throw new RuntimeException($"sysctl \"{key}\": invalid name");
        string path = "/proc/sys/" + Policy.SysctlPolicy.SysPath(key);
        int fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        if (fd < 0) Fail(key, value, Libc.Errno);
        try
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(value);
            nint n;
            fixed (byte* p = bytes)
                do n = Libc.write(fd, p, bytes.Length); while (n < 0 && Libc.Errno == Libc.EINTR);
            if (n < 0) Fail(key, value, Libc.Errno);
        }
        finally { Libc.close(fd); }
    }

    static void Fail(string key, string value, int errno)
    {
        string? type = Policy.SysctlPolicy.NamespaceOf(key.Replace('/', '.'));
        string where = type is null ? "the container" : $"the container's {type} namespace";
        string meaning = errno switch
        {
            Libc.ENOENT => "; there is no such key there (per-interface keys need the interface to exist first)",
            // A network namespace shows the host-wide net.* keys read-only.
            Libc.EACCES or Libc.EPERM when type == "network" => "; it is read-only there: the key is global to the host, not one of " +
                                          "the namespace's own. Remove it from the spec (docker: --sysctl)",
            Libc.EINVAL => "; the kernel refused the value",
            _ => "",
        };
        throw new RuntimeException($"sysctl {key}={value}: cannot be set in {where}: " +
                                   $"{System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}{meaning}");
    }
}
