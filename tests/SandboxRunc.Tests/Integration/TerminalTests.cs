using System.Net.Sockets;
using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxRunc.Interop;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// process.terminal with --console-socket: the test plays the engine, receives the pty master over the
/// socket (SCM_RIGHTS) and reads what the container writes to its terminal.
/// </summary>
public sealed class TerminalTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    async Task<string> RunOnTerminal(Bundle b, string id)
    {
        b.Spec.Process!.Terminal = true;
        string sockPath = Path.Combine(b.Dir, "console.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(sockPath));
        listener.Listen(1);
        var accepted = listener.AcceptAsync();

        await _rt.Create(b.Write(), id, "--console-socket", sockPath);
        using var conn = await accepted.WaitAsync(Patience.Condition);
        var (master, payload) = UnixSocket.ReceiveFd((int)conn.Handle);
        Assert.False(master.IsInvalid);
        using var stream = new FileStream(new SafeFileHandle(master.Release(), ownsHandle: true), FileAccess.ReadWrite, 1, isAsync: false);

        await _rt.Ok("start", id);
        var output = new StringBuilder();
        var reader = Task.Run(() =>
        {
            var buf = new byte[4096];
            while (true)
            {
                int n;
                // After the last slave fd closes, a read on the master fails with EIO: that is the end.
                try { n = stream.Read(buf, 0, buf.Length); } catch (IOException) { break; }
                if (n <= 0) break;
                lock (output) output.Append(Encoding.UTF8.GetString(buf, 0, n));
            }
        });
        await _rt.WaitStatus(id, "stopped");
        // The master reads EIO once the last slave fd is gone: the reader ends soon after the container.
        await reader.WaitAsync(Patience.Condition);
        lock (output) return output.ToString();
    }

    [IntegrationFact]
    public async Task TtyIsAPtyAndOutputReachesTheMaster()
    {
        using var b = new Bundle("sh", "-c", "tty; echo done");
        string output = await RunOnTerminal(b, "tty1");
        Assert.Matches(@"^/dev/pts/\d+\r?\n", output);
        Assert.Contains("done", output);
    }

    [IntegrationFact]
    public async Task ConsoleSizeSetsTheWindowSize()
    {
        using var b = new Bundle("stty", "size");
        b.Spec.Process!.ConsoleSize = new ConsoleSize { Height = 37, Width = 123 };
        string output = await RunOnTerminal(b, "tty2");
        Assert.Equal("37 123", output.Trim());
    }

    [IntegrationFact]
    public async Task TerminalWithoutConsoleSocketIsAClearError()
    {
        using var b = new Bundle("true");
        b.Spec.Process!.Terminal = true;
        var r = await _rt.Detached("create", "--bundle", b.Write(), "tty3");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("console-socket", r.Stderr);
        Assert.Empty(_rt.StateDirs());
    }

    public void Dispose() => _rt.Dispose();
}
