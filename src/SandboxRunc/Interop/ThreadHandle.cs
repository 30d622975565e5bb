namespace SandboxRunc.Interop;

/// <summary>
/// A handle on one thread that never comes to mean a later thread given the same id (a FUSE request names its
/// caller by thread id, and Go programs such as dockerd, containerd and kubelet call from any of their threads):
/// <list type="bullet">
/// <item>a pidfd for that thread (<c>PIDFD_THREAD</c>, Linux 6.9);</item>
/// <item>before 6.9, a pidfd when the thread leads its process (the only threads pidfd_open took then);</item>
/// <item>before 6.9, for any other thread, its <c>/proc/TID</c> directory: the kernel ties the open directory to
///   that thread as it ties a pidfd, so once the thread is gone nothing more opens through it, even if the id is
///   reused (Debian 12's kernel 6.1 is such a kernel).</item>
/// </list>
/// Open it while the thread is known to be the one meant (a FUSE caller waiting for its request); afterwards
/// <see cref="Exited"/> says whether it still is, and <see cref="EnterNamespace"/> joins its namespace.
/// </summary>
public sealed class ThreadHandle : IDisposable
{
    readonly SafeFd _fd;
    readonly bool _procDir;

    ThreadHandle(SafeFd fd, bool procDir) => (_fd, _procDir) = (fd, procDir);

    /// <summary>The handle, or null when the thread is not there (or not visible from this pid namespace).</summary>
    public static ThreadHandle? Open(int tid)
    {
        if (tid <= 0) return null;
        int fd = (int)Libc.syscall(Libc.SYS_pidfd_open, tid, Libc.PIDFD_THREAD, 0, 0, 0, 0);
        if (fd >= 0) return new ThreadHandle(new SafeFd(fd), procDir: false);
        if (Libc.Errno != Libc.EINVAL) return null;
        // No PIDFD_THREAD: a pidfd for a leader, the /proc directory for any other thread.
        fd = (int)Libc.syscall(Libc.SYS_pidfd_open, tid, 0, 0, 0, 0, 0);
        if (fd >= 0) return new ThreadHandle(new SafeFd(fd), procDir: false);
        if (Libc.Errno != Libc.EINVAL) return null;
        return OpenProcDirectory(tid);
    }

    /// <summary>The /proc/TID directory form, whatever the kernel (internal: tests reach it on kernels that have PIDFD_THREAD).</summary>
    internal static ThreadHandle? OpenProcDirectory(int tid)
    {
        if (tid <= 0) return null;
        int fd = Libc.open($"/proc/{tid}", Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        return fd < 0 ? null : new ThreadHandle(new SafeFd(fd), procDir: true);
    }

    /// <summary>Whether the thread has exited (a pidfd turns readable; a dead thread's /proc directory opens nothing).</summary>
    public bool Exited
    {
        get
        {
            if (!_procDir) return !PidFd.Running(_fd);
            int fd = Libc.openat(_fd.Fd, "stat", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd < 0) return true;
            Libc.close(fd);
            return false;
        }
    }

    /// <summary>
    /// setns(2) into the thread's namespace of this kind (<paramref name="name"/> as under /proc/TID/ns,
    /// <paramref name="flag"/> its CLONE_NEW* flag); 0, or -1 with errno set. Allocates nothing once the namespace's
    /// fd is open, so the caller may be a thread that must not allocate inside the namespace it enters.
    /// </summary>
    public int EnterNamespace(string name, int flag)
    {
        if (!_procDir) return Libc.setns(_fd.Fd, flag);
        int ns = Libc.openat(_fd.Fd, "ns/" + name, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (ns < 0) return -1;
        int r = Libc.setns(ns, flag);
        Libc.close(ns);
        return r;
    }

    public void Dispose() => _fd.Dispose();
}
