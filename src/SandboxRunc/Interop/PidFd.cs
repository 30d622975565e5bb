namespace SandboxRunc.Interop;

/// <summary>
/// A handle on one process (pidfd_open, Linux 5.3): unlike a pid, it never comes to mean a later process
/// that got the same number. Checking a process by /proc/PID after opening its pidfd, then signalling
/// through the pidfd, acts on the process that was checked: if that one had exited (and the pid been
/// reused) in between, the signal fails with ESRCH instead of reaching the newcomer.
/// </summary>
public static class PidFd
{
    public static SafeFd? Open(int pid)
    {
        if (pid <= 0) return null;
        int fd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0, 0, 0, 0);
        return fd < 0 ? null : new SafeFd(fd);
    }

    /// <summary>Sends a signal to exactly that process; false when it has exited (or the signal was refused).</summary>
    public static bool Signal(SafeFd pidfd, int signal) =>
        Libc.syscall(Libc.SYS_pidfd_send_signal, pidfd.Fd, signal, 0, 0, 0, 0) == 0;

    /// <summary>Whether the process is still running (a pidfd turns readable when it exits).</summary>
    public static bool Running(SafeFd pidfd) => !UnixSocket.WaitReadable(pidfd.Fd, 0);

    /// <summary>Waits until the process has exited; false on timeout.</summary>
    public static bool WaitExited(SafeFd pidfd, int timeoutMs) => UnixSocket.WaitReadable(pidfd.Fd, timeoutMs);
}
