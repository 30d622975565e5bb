using System.Net.Sockets;
using SandboxRunc.Interop;

namespace SandboxRunc.Cli;

/// <summary>
/// `run` in the foreground of a spec with process.terminal and no --console-socket (runc's default
/// spec): sandbox-runc plays the engine's part itself. It listens on a private console socket, takes
/// the pty master the init sends, puts the caller's terminal in raw mode and copies bytes both ways
/// until the container exits.
/// </summary>
internal sealed unsafe class ForegroundTerminal : IDisposable
{
    readonly string _dir;
    readonly Socket _listener;
    Thread? _pump;
    byte[]? _savedTermios;

    public string SocketPath { get; }

    public ForegroundTerminal()
    {
        _dir = Directory.CreateTempSubdirectory("sandbox-runc-console").FullName;
        SocketPath = Path.Combine(_dir, "console.sock");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        _listener.Listen(1);
    }

    /// <summary>Receives the master (sent during create) and starts copying; call after create.</summary>
    public void Attach()
    {
        using var conn = _listener.Accept();
        var (master, _) = UnixSocket.ReceiveFd((int)conn.Handle);
        int m = master.Release();
        MakeRaw(0);
        var output = new Thread(() => Copy(m, 1)) { IsBackground = true };
        _pump = new Thread(() => Copy(0, m)) { IsBackground = true };
        output.Start();
        _pump.Start();
    }

    static void Copy(int from, int to)
    {
        byte* buf = stackalloc byte[4096];
        while (true)
        {
            nint n = Libc.read(from, buf, 4096);
            if (n < 0 && Libc.Errno == Libc.EINTR) continue;
            if (n <= 0) return;
            for (nint off = 0; off < n;)
            {
                nint w = Libc.write(to, buf + off, n - off);
                if (w < 0 && Libc.Errno == Libc.EINTR) continue;
                if (w <= 0) return;
                off += w;
            }
        }
    }

    void MakeRaw(int fd)
    {
        if (Libc.isatty(fd) != 1) return;
        var termios = new byte[64]; // struct termios is 60 bytes on x86_64 glibc
        fixed (byte* t = termios)
        {
            if (Libc.tcgetattr(fd, t) != 0) return;
            _savedTermios = (byte[])termios.Clone();
            Libc.cfmakeraw(t);
            Libc.tcsetattr(fd, 0 /* TCSANOW */, t);
        }
    }

    public void Dispose()
    {
        if (_savedTermios is { } saved)
            fixed (byte* t = saved) Libc.tcsetattr(0, 0, t);
        _listener.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
