using SandboxRunc.Interop;
using SandboxRunc.Rootfs;

namespace SandboxRunc.Namespaces;

/// <summary>
/// process.terminal: a pty made inside the container's devpts; the master goes to the engine over
/// its --console-socket (SCM_RIGHTS), the slave becomes the process's stdio and /dev/console.
/// </summary>
internal static unsafe class Terminal
{
    /// <param name="bindConsole">the container's init also makes the pty its /dev/console; an exec'd process does not.</param>
    public static int SetUp(InitConfig config, bool bindConsole = true)
    {
        if (config.ConsoleSocketFd < 0)
            throw new InvalidOperationException("process.terminal is true but no --console-socket was given");
        int master = SysException.Check(Libc.open("/dev/ptmx", Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC, 0), "open", "/dev/ptmx");
        try
        {
            int unlock = 0, number = 0;
            SysException.Check(Libc.ioctl(master, Libc.TIOCSPTLCK, &unlock), "ioctl(TIOCSPTLCK)", "/dev/ptmx");
            SysException.Check(Libc.ioctl(master, Libc.TIOCGPTN, &number), "ioctl(TIOCGPTN)", "/dev/ptmx");
            string slavePath = $"/dev/pts/{number}";
            if (config.Spec.Process!.ConsoleSize is { } size)
            {
                ushort* ws = stackalloc ushort[4];
                ws[0] = (ushort)size.Height; ws[1] = (ushort)size.Width; ws[2] = 0; ws[3] = 0;
                SysException.Check(Libc.ioctl(master, Libc.TIOCSWINSZ, ws), "ioctl(TIOCSWINSZ)", slavePath);
            }
            int slave = SysException.Check(Libc.open(slavePath, Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC, 0), "open", slavePath);
            if (bindConsole)
            {
                if (!File.Exists("/dev/console")) File.WriteAllBytes("/dev/console", []);
                RootfsBuilder.Mount(slavePath, "/dev/console", null, Libc.MS_BIND, null);
            }
            UnixSocket.SendFd(config.ConsoleSocketFd, master, "/dev/ptmx");
            Libc.close(config.ConsoleSocketFd);
            return slave;
        }
        finally
        {
            Libc.close(master);
        }
    }

    /// <summary>Just before exec: the slave becomes the controlling terminal and stdio of a new session.</summary>
    public static void Attach(int slave)
    {
        SysException.Check(Libc.setsid(), "setsid");
        SysException.Check(Libc.ioctl(slave, Libc.TIOCSCTTY, null), "ioctl(TIOCSCTTY)", "pty");
        for (int fd = 0; fd <= 2; fd++)
            SysException.Check(Libc.dup2(slave, fd), "dup2", $"pty -> fd {fd}");
        if (slave > 2) Libc.close(slave);
    }
}
