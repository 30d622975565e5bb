namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// A path the caller names through its own /proc entry ("/proc/self/task/TID/ns/net", as dockerd's libnetwork binds a
/// network namespace): the caller's procfs resolves "self" and "thread-self" to the caller, but our worker, which
/// resolves the path inside the caller's mount namespace and root, is no process of that pid namespace. So "self" is
/// replaced by the caller's pid as its own (innermost) pid namespace numbers it, "thread-self" by that pid's
/// task/TID: the entry its own /proc shows for it. Should the caller's /proc be another pid namespace's, the path then
/// names another process of that /proc, one the caller could have named by number: nothing it could not reach, and
/// it is judged as any path. "/proc/self/fd/N" and "/proc/thread-self/fd/N" are resolved apart, to the caller's very
/// fd (mntns_ops.c): runc mounts through those from a new pid namespace whose /proc is not mounted yet.
/// </summary>
public static class ProcSelf
{
    /// <summary>Whether <see cref="Translate"/> reads the status for this path (else it may be passed null).</summary>
    public static bool NeedsStatus(string? path) =>
        path is not null && (path == "/proc/self" || path.StartsWith("/proc/self/", StringComparison.Ordinal)
            || path == "/proc/thread-self" || path.StartsWith("/proc/thread-self/", StringComparison.Ordinal));

    /// <param name="status">the caller's /proc/PID/status (NStgid, NSpid: host first, innermost last).</param>
    public static string Translate(string path, string? status)
    {
        string rest;
        bool thread;
        if (path == "/proc/self" || path.StartsWith("/proc/self/", StringComparison.Ordinal)) { thread = false; rest = path["/proc/self".Length..]; }
        else if (path == "/proc/thread-self" || path.StartsWith("/proc/thread-self/", StringComparison.Ordinal)) { thread = true; rest = path["/proc/thread-self".Length..]; }
        else return path;
        if (IsFdNumber(rest) || status is null) return path; // the caller's own fd: mntns_ops.c
        string? tgid = Innermost(status, "NStgid:"), tid = Innermost(status, "NSpid:");
        if (tgid is null || tid is null) return path;
        return thread ? $"/proc/{tgid}/task/{tid}{rest}" : $"/proc/{tgid}{rest}";
    }

    static bool IsFdNumber(string rest) =>
        rest.StartsWith("/fd/", StringComparison.Ordinal) && rest.Length > 4 && rest[4..].All(char.IsAsciiDigit);

    static string? Innermost(string status, string key)
    {
        foreach (var line in status.Split('\n'))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return line[key.Length..].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries).LastOrDefault();
        return null;
    }
}
