// Who a FUSE caller is, for a capability decision: its user namespace, effective uid and effective
// capabilities, read from /proc/TID (the request header carries the calling thread's id). A thread id
// names the caller only while the caller waits for its request: once the server's watchdog has answered
// it, the thread may exit and its id be reused. So the facts are read while the request is open, with a
// pidfd of the caller taken first (IFuseRequest.CallerPidFd), and believed only if, after reading, that
// thread still lives and the request is still open: then the id named it all along.
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Emulation;

public static unsafe class CallerIdentity
{
    public static CallerCredentials? Credentials(FuseCaller caller)
    {
        if (caller.Pid <= 0) return null;
        var request = caller.Request;
        // In a server: the pidfd taken while the caller waited. Outside one (tests calling the file system
        // directly with a live pid): a pidfd taken now.
        SafeFd? own = null;
        SafeFd? pidfd = request is not null ? request.CallerPidFd() : own = Open(caller.Pid);
        try
        {
            if (pidfd is null) return null;
            UserNamespaceChain? userNs;
            int fd = Libc.open($"/proc/{caller.Pid}/ns/user", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd < 0) return null;
            try { userNs = UserNamespaceChain.Of(fd); }
            finally { Libc.close(fd); }
            string? status = HostFiles.ReadText($"/proc/{caller.Pid}/status");
            if (userNs is null || status is null || Sysctls.EffectiveCaps(status) is not { } capEff || EffectiveUid(status) is not { } euid)
                return null;
            if (Exited(pidfd) || request?.Abandoned == true) return null;
            return new CallerCredentials(userNs, euid, capEff);
        }
        finally { own?.Dispose(); }
    }

    static SafeFd? Open(int pid)
    {
        int fd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, Libc.PIDFD_THREAD, 0, 0, 0, 0);
        if (fd < 0 && Libc.Errno == Libc.EINVAL) fd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0, 0, 0, 0);
        return fd < 0 ? null : new SafeFd(fd);
    }

    /// <summary>A pidfd is readable once its thread (or process) has exited.</summary>
    internal static bool Exited(SafeFd pidfd)
    {
        var pfd = new Libc.PollFd { Fd = pidfd.Fd, Events = Libc.POLLIN };
        int r;
        do r = Libc.poll(&pfd, 1, 0); while (r < 0 && Libc.Errno == Libc.EINTR);
        return r != 0;
    }

    /// <summary>The effective uid (second field of "Uid:") from the text of /proc/PID/status, as the reader's namespace sees it.</summary>
    public static uint? EffectiveUid(string status)
    {
        int i = status.IndexOf("\nUid:", StringComparison.Ordinal);
        if (i < 0) return null;
        int end = status.IndexOf('\n', i + 5);
        var fields = status[(i + 5)..(end < 0 ? status.Length : end)].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
        return fields.Length >= 2 && uint.TryParse(fields[1], out uint euid) ? euid : null;
    }
}
