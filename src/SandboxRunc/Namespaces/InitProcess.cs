using System.Text;
using SandboxRunc.Hooks;
using SandboxRunc.Interop;
using SandboxRunc.Oci;
using SandboxRunc.Rootfs;

namespace SandboxRunc.Namespaces;

/// <summary>
/// The container's init, in .NET, after nsexec.c has put it in every namespace. The story:
/// config → mounts → host runs its hooks → createContainer hooks → pivot_root → terminal →
/// hostname, sysctls → masked and read-only paths → ready → wait on the exec fifo → startContainer hooks →
/// identity, capabilities, seccomp → execve. Anything that fails before "ready" goes back to
/// `create` as its error message, anything after the start byte to `start` (through the exec fifo).
/// </summary>
internal static unsafe class InitProcess
{
    public static int Run()
    {
        using var channel = new InitChannel(new SafeFd(Nsexec.SyncFd()));
        ProcessImage image;
        InitConfig config;
        int slave = -1;
        try
        {
            config = channel.Expect(InitMessage.Config, "waiting for its configuration").Config_!;
            if (config.Kind == InitConfig.KindExec)
                return RunExec(channel, config);
            var spec = config.Spec;
            var rootfs = new RootfsBuilder(config);
            bool ownMountNs = spec.Linux?.Namespaces?.Any(n => n.Type == "mount") == true;

            if (ownMountNs) rootfs.PrepareMounts();
            channel.Send(new InitMessage { Kind = InitMessage.RunHooks });
            channel.Expect(InitMessage.HooksDone, "waiting for the createRuntime hooks");
            HookRunner.Run("createContainer", spec.Hooks?.CreateContainer, config.State);

            if (ownMountNs) rootfs.EnterRoot();
            else
            {
                SysException.Check(Libc.chroot(config.Rootfs), "chroot", config.Rootfs);
                SysException.Check(Libc.chdir("/"), "chdir", "/");
            }
            if (spec.Process!.Terminal) slave = Terminal.SetUp(config);
            SetHostnames(spec);
            // Sysctls before the read-only paths: /proc/sys is one of them.
            WriteSysctls(spec);
            if (ownMountNs) rootfs.FinishRoot();
            if (!config.NoNewKeyring) JoinSessionKeyring(config.Id);

            image = ProcessImage.Resolve(spec.Process);
            ProcessFinalizer.CheckCapabilities(spec.Process.Capabilities);
            SendReady(channel, config);
        }
        catch (Exception e)
        {
            return ReportFailure(channel, e);
        }
        channel.Dispose();
        return FinishAndExec(config, image, slave, "init", () =>
        {
            WaitForStart(config.ExecFifoFd);
            HookRunner.Run("startContainer", config.Spec.Hooks?.StartContainer, config.State);
        });
    }

    /// <summary>
    /// "Ready", with the seccomp-notify listener when syscall vetting is on. The filter goes on this thread,
    /// the one that execs (filters are per thread; execve keeps the caller's), while it still holds
    /// CAP_SYS_ADMIN; only mount and umount2 are trapped, so nothing the init does until execve waits on
    /// the supervisor. The listener is closed here at once: the container must never hold it, or it
    /// could answer its own notifications.
    /// </summary>
    static void SendReady(InitChannel channel, InitConfig config)
    {
        if (config.NotifyProgram is not { } program)
        {
            channel.Send(new InitMessage { Kind = InitMessage.Ready });
            return;
        }
        using var listener = new SafeFd(Seccomp.SeccompFilter.Install(program, Seccomp.SeccompFilter.SECCOMP_FILTER_FLAG_NEW_LISTENER));
        channel.Send(new InitMessage { Kind = InitMessage.Ready }, listener.Fd);
    }

    /// <summary>Before "ready", a failure is the create's (or exec's) error message: tell the host, exit.</summary>
    static int ReportFailure(InitChannel channel, Exception e)
    {
        try { channel.Send(new InitMessage { Kind = InitMessage.Error, Text = e.Message }); } catch { }
        return 1;
    }

    /// <summary>
    /// After "ready": a failure goes to the process's stderr and, once `start` is waiting on the exec fifo,
    /// to `start` itself, which fails with it (the fifo's write end stays open until execve closes it).
    /// </summary>
    static int FinishAndExec(InitConfig config, ProcessImage image, int slave, string who, Action? beforeExec = null)
    {
        try
        {
            beforeExec?.Invoke();
            ProcessFinalizer.Exec(config, image, slave);
        }
        catch (Exception e)
        {
            // One place for the reason: whoever waits for the exec, else the process's own stderr.
            if (_tell is not null) _tell(e.Message.ReplaceLineEndings(" "));
            else WriteStderr($"sandbox-runc {who}: {e.Message}\n");
        }
        return 127; // reached only on failure: Exec replaces this process
    }

    /// <summary>Who waits for the exec and gets the reason it failed: `start` (exec fifo) or `exec` (the channel).</summary>
    static Action<string>? _tell;

    /// <summary>Why the process could not be started, for `start`: one write after the start byte (atomic below PIPE_BUF).</summary>
    static void TellStart(int fd, string message)
    {
        byte[] b = Encoding.UTF8.GetBytes(message);
        fixed (byte* p = b) Libc.write(fd, p, Math.Min(b.Length, 4000));
    }

    /// <summary>
    /// `exec`: nsexec.c already joined every namespace of the container (setns into its mount namespace
    /// made the container's root our root), so only the process itself is left: terminal, program
    /// lookup, then identity, capabilities, seccomp and execve.
    /// </summary>
    static int RunExec(InitChannel channel, InitConfig config)
    {
        ProcessImage image;
        int slave = -1;
        try
        {
            ProcessFinalizer.CheckCapabilities(config.Spec.Process!.Capabilities);
            if (config.Spec.Process.Terminal) slave = Terminal.SetUp(config, bindConsole: false);
            image = ProcessImage.Resolve(config.Spec.Process);
            SendReady(channel, config);
        }
        catch (Exception e)
        {
            return ReportFailure(channel, e);
        }
        // The channel stays open until execve closes it (close_range marks it close-on-exec): `exec` waits for
        // that, and takes an Error message instead as the reason the process could not be started.
        _tell = text => { try { channel.Send(new InitMessage { Kind = InitMessage.Error, Text = text }); } catch { } };
        return FinishAndExec(config, image, slave, "exec");
    }

    /// <summary>
    /// Blocks until `start` opens the exec fifo for reading, then writes the one byte it waits for. The write
    /// end stays open (close-on-exec): `start` reads on until execve closes it, and takes any text that comes
    /// first as the reason the process could not be started (<see cref="TellStart(int, string)"/>).
    /// </summary>
    static void WaitForStart(int fifoFd)
    {
        if (fifoFd < 0) return;
        string path = $"/proc/self/fd/{fifoFd}";
        int fd;
        do fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CLOEXEC, 0); while (fd < 0 && Libc.Errno == Libc.EINTR);
        SysException.Check(fd, "open exec fifo", path);
        byte zero = (byte)'0';
        SysException.Check((int)Libc.write(fd, &zero, 1), "write", "exec fifo");
        _tell = text => TellStart(fd, text);
        Libc.close(fifoFd);
    }

    static void SetHostnames(Spec spec)
    {
        if (!string.IsNullOrEmpty(spec.Hostname))
            SysException.Check(Libc.sethostname(spec.Hostname, Encoding.UTF8.GetByteCount(spec.Hostname)), "sethostname", spec.Hostname);
        if (!string.IsNullOrEmpty(spec.Domainname))
            SysException.Check(Libc.setdomainname(spec.Domainname, Encoding.UTF8.GetByteCount(spec.Domainname)), "setdomainname", spec.Domainname);
    }

    static void WriteSysctls(Spec spec)
    {
        // net.* of a joined network namespace were written by the host (see NetworkSysctls).
        bool joinedNetns = NetworkSysctls.JoinedNetns(spec) is not null;
        foreach (var (key, value) in spec.Linux?.Sysctl ?? [])
            if (!(joinedNetns && NetworkSysctls.IsNetworkKey(key)))
                Sysctl.Write(key, value);
    }

    static void JoinSessionKeyring(string id)
    {
        const long SYS_keyctl = 250, KEYCTL_JOIN_SESSION_KEYRING = 1;
        byte[] name = Encoding.UTF8.GetBytes("_ses." + id + "\0");
        fixed (byte* p = name)
        {
            // Errors are ignored as runc does when keyrings are unavailable (ENOSYS) or not permitted.
            Libc.syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, (long)p, 0, 0, 0, 0);
        }
    }

    internal static void WriteStderr(string text)
    {
        byte[] b = Encoding.UTF8.GetBytes(text);
        fixed (byte* p = b) Libc.write(2, p, b.Length);
    }
}
