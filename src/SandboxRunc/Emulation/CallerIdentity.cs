// Who a FUSE caller is, for a capability decision: its user namespace, effective uid and effective
// capabilities, read from /proc/TID (the request header carries the calling thread's id). A thread id
// names the caller only while the caller waits for its request: once the server's watchdog has answered
// it, the thread may exit and its id be reused. So the facts are read while the request is open, with a
// handle on the caller's thread taken first (IFuseRequest.CallerThread), and believed only if, after reading, that
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
        // In a server: the handle taken while the caller waited. Outside one (tests calling the file system
        // directly with a live pid): a handle taken now.
        ThreadHandle? own = null;
        ThreadHandle? thread = request is not null ? request.CallerThread() : own = ThreadHandle.Open(caller.Pid);
        try
        {
            if (thread is null) return null;
            UserNamespaceChain? userNs;
            int fd = Libc.open($"/proc/{caller.Pid}/ns/user", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd < 0) return null;
            try { userNs = UserNamespaceChain.Of(fd); }
            finally { Libc.close(fd); }
            string? status = HostFiles.ReadText($"/proc/{caller.Pid}/status");
            if (userNs is null || status is null || Sysctls.EffectiveCaps(status) is not { } capEff || EffectiveUid(status) is not { } euid)
                return null;
            if (thread.Exited || request?.Abandoned == true) return null;
            return new CallerCredentials(userNs, euid, capEff);
        }
        finally { own?.Dispose(); }
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
