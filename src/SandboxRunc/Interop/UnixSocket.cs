using System.Text;

namespace SandboxRunc.Interop;

/// <summary>Unix-socket primitives: packets on a SOCK_SEQPACKET pair, and fd passing with SCM_RIGHTS.</summary>
public static unsafe class UnixSocket
{
    /// <summary>A connected SOCK_SEQPACKET pair; both ends close-on-exec (the child's end is dup'ed to a plain fd when spawned).</summary>
    public static (SafeFd Parent, SafeFd Child) SeqPacketPair()
    {
        int* sv = stackalloc int[2];
        SysException.Check(Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, sv), "socketpair");
        return (new SafeFd(sv[0]), new SafeFd(sv[1]));
    }

    public static void Send(SafeFd fd, ReadOnlySpan<byte> packet)
    {
        fixed (byte* p = packet)
        {
            nint n;
            do n = Libc.write(fd.Fd, p, packet.Length); while (n < 0 && Libc.Errno == Libc.EINTR);
            if (n < 0) throw new SysException("send", "sync socket", Libc.Errno);
        }
    }

    /// <summary>Receives one packet; returns 0 at end of stream (the peer closed, or died and reset the connection).</summary>
    public static int Receive(SafeFd fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            nint n;
            do n = Libc.read(fd.Fd, p, buffer.Length); while (n < 0 && Libc.Errno == Libc.EINTR);
            // As in PeekSize: a peer that died with our message unread resets the connection (the 1-byte memory limit
            // again, when the init dies between a peek and this read).
            if (n < 0 && Libc.Errno == Libc.ECONNRESET) return 0;
            if (n < 0) throw new SysException("receive", "sync socket", Libc.Errno);
            return (int)n;
        }
    }

    /// <summary>The size of the next packet on a SOCK_SEQPACKET socket, without taking it (0 at end of stream, or when the peer reset it).</summary>
    public static int PeekSize(SafeFd fd)
    {
        const int MSG_PEEK = 2, MSG_TRUNC = 0x20;
        byte b;
        var iov = new Libc.IoVec { Base = &b, Len = 1 };
        var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1 };
        nint n;
        do n = Libc.recvmsg(fd.Fd, &msg, MSG_PEEK | MSG_TRUNC); while (n < 0 && Libc.Errno == Libc.EINTR);
        // A peer that died with our message unread resets the connection rather than closing it (seen when a
        // 1-byte memory limit kills the init): gone either way, as EOF says.
        if (n < 0 && Libc.Errno == Libc.ECONNRESET) return 0;
        if (n < 0) throw new SysException("receive", "sync socket", Libc.Errno);
        return (int)n;
    }

    /// <summary>Waits until the fd is readable or hung up; false on timeout.</summary>
    public static bool WaitReadable(int fd, int timeoutMs)
    {
        var pfd = new Libc.PollFd { Fd = fd, Events = Libc.POLLIN };
        while (true)
        {
            int r = Libc.poll(&pfd, 1, timeoutMs);
            if (r < 0 && Libc.Errno == Libc.EINTR) continue;
            SysException.Check(r, "poll");
            return r > 0;
        }
    }

    /// <summary>
    /// Connects to a unix socket by path (SOCK_STREAM: e.g. the engine's --console-socket). A path longer than
    /// sockaddr_un holds is reached through its directory, opened here: /proc/self/fd/N/NAME.
    /// </summary>
    public static SafeFd Connect(string path, int type = Libc.SOCK_STREAM)
    {
        var fd = new SafeFd(SysException.Check(Libc.socket(Libc.AF_UNIX, type | Libc.SOCK_CLOEXEC, 0), "socket", path));
        try
        {
            byte* addr = stackalloc byte[110];
            SafeFd? dir = null;
            string name = path;
            if (Encoding.UTF8.GetByteCount(path) > MaxPath && Path.GetFileName(path) is { Length: > 0 } file)
            {
                string parent = Path.GetDirectoryName(path) is { Length: > 0 } d ? d : "/";
                dir = new SafeFd(SysException.Check(Libc.open(parent, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0), "open", parent));
                name = $"/proc/self/fd/{dir.Fd}/{file}";
            }
            using (dir)
            {
                int len = Address(name, path, addr);
                SysException.Check(Libc.connect(fd.Fd, addr, len), "connect", path);
            }
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>A listening SOCK_SEQPACKET socket at <paramref name="path"/> (replacing a stale one), mode 0600.</summary>
    public static SafeFd ListenSeqPacket(string path)
    {
        var fd = new SafeFd(SysException.Check(Libc.socket(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0), "socket", path));
        byte* addr = stackalloc byte[110];
        int len = Address(path, path, addr);
        File.Delete(path);
        SysException.Check(Libc.bind(fd.Fd, addr, len), "bind", path);
        SysException.Check(Libc.chmod(path, 0x180 /* 0600 */), "chmod", path);
        SysException.Check(Libc.listen(fd.Fd, 16), "listen", path);
        return fd;
    }

    /// <summary>
    /// A listening SOCK_STREAM socket at <paramref name="path"/> (which must not exist), owned by
    /// <paramref name="uid"/>:<paramref name="gid"/> with <paramref name="mode"/>: the docker socket proxy's, in a
    /// container's staging dir.
    /// </summary>
    public static SafeFd ListenStream(string path, uint uid, uint gid, uint mode, int backlog)
    {
        var fd = new SafeFd(SysException.Check(Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0), "socket", path));
        byte* addr = stackalloc byte[110];
        int len = Address(path, path, addr);
        SysException.Check(Libc.bind(fd.Fd, addr, len), "bind", path);
        SysException.Check(Libc.chown(path, uid, gid), "chown", path);
        SysException.Check(Libc.chmod(path, mode), "chmod", path);
        SysException.Check(Libc.listen(fd.Fd, backlog), "listen", path);
        return fd;
    }

    /// <summary>The next connection on a listening socket (close-on-exec).</summary>
    public static SafeFd Accept(int listening)
    {
        int fd;
        do fd = Libc.accept4(listening, null, null, Libc.SOCK_CLOEXEC); while (fd < 0 && Libc.Errno == Libc.EINTR);
        return new SafeFd(SysException.Check(fd, "accept4"));
    }

    /// <summary>The longest path sun_path holds with its terminating NUL.</summary>
    const int MaxPath = 107;

    /// <summary>struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } in a 110-byte buffer; returns its length.</summary>
    static int Address(string path, string shown, byte* addr)
    {
        new Span<byte>(addr, 110).Clear();
        *(ushort*)addr = (ushort)Libc.AF_UNIX;
        int len = Encoding.UTF8.GetByteCount(path);
        if (len > MaxPath)
            throw new RuntimeException($"unix socket {shown}: the path is too long ({len} bytes; a socket path has at most {MaxPath})");
        if (len == 0) throw new RuntimeException("unix socket: the path is empty");
        Encoding.UTF8.GetBytes(path, new Span<byte>(addr + 2, 107));
        return 2 + len + 1;
    }

    /// <summary>One packet with an optional fd (SCM_RIGHTS); returns the payload length (0: the peer closed).</summary>
    public static int ReceiveMessage(int socket, Span<byte> buffer, out SafeFd? fd)
    {
        int n = ReceiveMessageFds(socket, buffer, out SafeFd[] fds);
        fd = fds.Length > 0 ? fds[0] : null;
        for (int i = 1; i < fds.Length; i++) fds[i].Dispose();
        return n;
    }

    /// <summary>At most this many fds come with one packet.</summary>
    public const int MaxFds = 4;

    /// <summary>One packet with up to <see cref="MaxFds"/> fds (SCM_RIGHTS, close-on-exec); returns the payload length (0: the peer closed).</summary>
    public static int ReceiveMessageFds(int socket, Span<byte> buffer, out SafeFd[] fds)
    {
        fds = [];
        int cmsgSpace = sizeof(Libc.CmsgHdr) + MaxFds * sizeof(int); // CMSG_SPACE(4 ints) on 64-bit
        byte* control = stackalloc byte[cmsgSpace];
        fixed (byte* data = buffer)
        {
            var iov = new Libc.IoVec { Base = data, Len = (nuint)buffer.Length };
            var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)cmsgSpace };
            nint n;
            do n = Libc.recvmsg(socket, &msg, Libc.MSG_CMSG_CLOEXEC); while (n < 0 && Libc.Errno == Libc.EINTR);
            if (n < 0) throw new SysException("recvmsg", "unix socket", Libc.Errno);
            var cmsg = (Libc.CmsgHdr*)control;
            if (msg.ControlLen >= (nuint)sizeof(Libc.CmsgHdr) && cmsg->Level == Libc.SOL_SOCKET && cmsg->Type == Libc.SCM_RIGHTS)
            {
                int count = (int)((cmsg->Len - (nuint)sizeof(Libc.CmsgHdr)) / sizeof(int));
                fds = new SafeFd[Math.Clamp(count, 0, MaxFds)];
                for (int i = 0; i < fds.Length; i++) fds[i] = new SafeFd(((int*)(control + sizeof(Libc.CmsgHdr)))[i]);
            }
            if ((msg.Flags & Libc.MSG_CTRUNC) != 0)
            {
                foreach (var fd in fds) fd.Dispose();
                throw new InvalidOperationException("recvmsg: control message truncated");
            }
            return (int)n;
        }
    }

    /// <summary>Sends one fd with SCM_RIGHTS, with a short text payload (the receiver may ignore it).</summary>
    public static void SendFd(int socket, int fdToSend, string payload) => SendFd(socket, fdToSend, Encoding.UTF8.GetBytes(payload));

    /// <summary>Sends one packet, with one fd (SCM_RIGHTS) unless <paramref name="fdToSend"/> is negative.</summary>
    public static void SendFd(int socket, int fdToSend, byte[] data) => SendFds(socket, fdToSend >= 0 ? [fdToSend] : [], data);

    /// <summary>Sends one packet with up to <see cref="MaxFds"/> fds (SCM_RIGHTS).</summary>
    public static void SendFds(int socket, ReadOnlySpan<int> fds, byte[] data)
    {
        if (fds.Length > MaxFds) throw new ArgumentException($"at most {MaxFds} fds per message", nameof(fds));
        int cmsgSpace = sizeof(Libc.CmsgHdr) + ((fds.Length * sizeof(int) + 7) & ~7); // CMSG_SPACE on 64-bit
        byte* control = stackalloc byte[sizeof(Libc.CmsgHdr) + MaxFds * sizeof(int)];
        new Span<byte>(control, cmsgSpace).Clear();
        var cmsg = (Libc.CmsgHdr*)control;
        cmsg->Len = (nuint)(sizeof(Libc.CmsgHdr) + fds.Length * sizeof(int));
        cmsg->Level = Libc.SOL_SOCKET;
        cmsg->Type = Libc.SCM_RIGHTS;
        for (int i = 0; i < fds.Length; i++) ((int*)(control + sizeof(Libc.CmsgHdr)))[i] = fds[i];
        fixed (byte* d = data)
        {
            var iov = new Libc.IoVec { Base = d, Len = (nuint)data.Length };
            var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1, Control = fds.Length > 0 ? control : null, ControlLen = fds.Length > 0 ? (nuint)cmsgSpace : 0 };
            nint n;
            do n = Libc.sendmsg(socket, &msg, Libc.MSG_NOSIGNAL); while (n < 0 && Libc.Errno == Libc.EINTR);
            if (n < 0) throw new SysException("sendmsg", "unix socket", Libc.Errno);
        }
    }

    /// <summary>Receives one fd sent with SCM_RIGHTS (close-on-exec), and its text payload.</summary>
    public static (SafeFd Fd, string Payload) ReceiveFd(int socket)
    {
        int cmsgSpace = sizeof(Libc.CmsgHdr) + 8;
        byte* control = stackalloc byte[cmsgSpace];
        byte* data = stackalloc byte[4096];
        var iov = new Libc.IoVec { Base = data, Len = 4096 };
        var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)cmsgSpace };
        nint n;
        do n = Libc.recvmsg(socket, &msg, Libc.MSG_CMSG_CLOEXEC); while (n < 0 && Libc.Errno == Libc.EINTR);
        if (n < 0) throw new SysException("recvmsg", "console socket", Libc.Errno);
        if ((msg.Flags & Libc.MSG_CTRUNC) != 0) throw new InvalidOperationException("recvmsg: control message truncated");
        var cmsg = (Libc.CmsgHdr*)control;
        if (msg.ControlLen < (nuint)sizeof(Libc.CmsgHdr) || cmsg->Level != Libc.SOL_SOCKET || cmsg->Type != Libc.SCM_RIGHTS)
            throw new InvalidOperationException("recvmsg: no file descriptor was sent");
        int fd = *(int*)(control + sizeof(Libc.CmsgHdr));
        return (new SafeFd(fd), Encoding.UTF8.GetString(data, (int)n));
    }
}
