// The server mounted for real: a DictionaryFileSystem behind /dev/fuse on a temp directory, looked at
// through real syscalls and real programs (cat, ls, stat, sh, setpriv) the way a container would.
using System.Diagnostics;
using System.Text;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Fuse;

[Trait("Category", "Root")]
public sealed class FuseMountRootTests : IDisposable
{
    readonly DictionaryFileSystem _fs = new();
    readonly string _dir = Directory.CreateTempSubdirectory("sandbox-runc-fuse-").FullName;
    FuseMount? _mount;
    FuseServer? _server;

    public FuseMountRootTests()
    {
        _fs.AddFile("hello", "hello from fuse\n");
        _fs.AddFile("secret", "only root\n", mode: 0x180 /* 0600 */);
        _fs.AddFile("rw", "writable\n", mode: 0x1A4);
        _fs.AddDirectory("sys");
        _fs.AddDirectory("sys/kernel");
        _fs.AddFile("sys/kernel/value", "42\n");
        _fs.AddSymlink("self", "1234");
        _fs.AddFile(DictionaryFileSystem.SlowPath, "finally\n");
    }

    void Start(FuseServerOptions? options = null)
    {
        _mount = FuseMount.Mount(_dir);
        _server = FuseServer.Serve(_mount.Device, _fs, options);
    }

    public void Dispose()
    {
        _fs.Gate.Set();
        try { _mount?.Dispose(); } catch { }
        _server?.Wait(TimeSpan.FromSeconds(5));
        try { Directory.Delete(_dir); } catch { }
    }

    string P(string relative) => Path.Combine(_dir, relative);

    static (int Exit, string Out, string Err) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(Patience.Command))
        {
            p.Kill();
            Assert.Fail($"{file} {string.Join(' ', args)} hung");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    static unsafe string ReadWithSyscalls(string path, byte* buffer, int size)
    {
        int fd = SysException.Check(Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", path);
        try
        {
            long n = SysException.Check((long)Libc.read(fd, buffer, size), "read", path);
            return Encoding.UTF8.GetString(buffer, (int)n);
        }
        finally { Libc.close(fd); }
    }

    [RootFact]
    public void CatShowsTheContentAndStatShowsTheContentsLength()
    {
        Start();
        Assert.Equal((0, "hello from fuse\n", ""), Run("cat", P("hello")));
        Assert.Equal("42\n", Run("cat", P("sys/kernel/value")).Out);

        var (exit, output, _) = Run("stat", "-c", "%s %a %u %g %F %i", P("hello"));
        Assert.Equal(0, exit);
        var fields = output.Trim().Split(' ');
        Assert.Equal(["16", "644", "0", "0", "regular"], fields[..5]); // "hello from fuse\n": see FuseServer.Sized
        Assert.Equal(FuseNodeTable.InodeOf("hello").ToString(), fields[^1]);
        Assert.Equal("directory", Run("stat", "-c", "%F", P("sys")).Out.Trim());
        Assert.Equal("1234", Run("readlink", P("self")).Out.Trim());
    }

    [RootFact]
    public void LsListsTheDirectoryAndMissingNamesAreEnoent()
    {
        Start();
        Assert.Equal(".\n..\nhello\nrw\nsecret\nself\nslow\nsys\n", Run("ls", "-1a", _dir).Out);
        Assert.Equal(".\n..\nvalue\n", Run("ls", "-1a", P("sys/kernel")).Out);

        var (exit, _, err) = Run("cat", P("nope"));
        Assert.Equal(1, exit);
        Assert.Contains("No such file or directory", err);
        Assert.False(File.Exists(P("sys/nope")));
    }

    [RootFact]
    public void EchoIntoAFileReachesTheImplementationAndItsErrorReachesTheWriter()
    {
        Start();
        Assert.Equal(0, Run("sh", "-c", $"echo 1 > {P("rw")}").Exit);
        Assert.Equal(0, Run("sh", "-c", $"printf 'x y' >> {P("rw")}").Exit);
        Assert.Equal(0, Run("truncate", "-s", "0", P("rw")).Exit);
        Assert.Equal(
            [("rw", "1\n"), ("rw", "x y")],
            _fs.Writes.Select(w => (w.Path, w.Data)).ToArray());
        Assert.Equal(0u, _fs.Writes.First().Caller.Uid);
        Assert.True(_fs.Writes.First().Caller.Pid > 0);

        // The implementation's errno reaches write(2) (dash's echo would print its own "I/O error").
        var (exit, _, err) = Run("sh", "-c", $"/bin/echo bad > {P("rw")}");
        Assert.NotEqual(0, exit);
        Assert.Contains("Invalid argument", err);
        Assert.NotEqual(0, Run("touch", P("rw")).Exit);           // times are not ours to change
        Assert.NotEqual(0, Run("mkdir", P("newdir")).Exit);       // nor the tree
        Assert.NotEqual(0, Run("sh", "-c", $"echo 1 > {P("newfile")}").Exit);
    }

    [RootFact]
    public void DefaultPermissionsDenyANonOwnerWhatTheModeDenies()
    {
        Start();
        string[] asUser = ["--reuid", "1234", "--regid", "1234", "--clear-groups"];
        Assert.Equal("hello from fuse\n", Run("setpriv", [.. asUser, "cat", P("hello")]).Out); // allow_other

        var (exit, _, err) = Run("setpriv", [.. asUser, "cat", P("secret")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("Permission denied", err);

        (exit, _, err) = Run("setpriv", [.. asUser, "sh", "-c", $"echo 1 > {P("rw")}"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("Permission denied", err);
        Assert.Empty(_fs.Writes);
        Assert.Equal("only root\n", Run("cat", P("secret")).Out);
    }

    [RootFact]
    public unsafe void ManyParallelReadersAllGetTheContent()
    {
        Start();
        string path = P("sys/kernel/value");
        int errors = 0;
        var threads = Enumerable.Range(0, 8).Select(_ => new Thread(() =>
        {
            byte* buffer = stackalloc byte[256];
            for (int i = 0; i < 2_000; i++)   // enough to overlap; throughput is bench.sh's
                try { if (ReadWithSyscalls(path, buffer, 256) != "42\n") Interlocked.Increment(ref errors); }
                catch (SysException) { Interlocked.Increment(ref errors); }
        })).ToList();
        threads.ForEach(t => t.Start());
        foreach (var t in threads) Assert.True(t.Join(Patience.Command), "a reader hung");
        Assert.Equal(0, errors);
        Assert.Equal(0, WaitFor(() => _server!.OpenHandleCount == 0) ? 0 : _server!.OpenHandleCount);
    }

    [RootFact]
    public async Task AReaderKilledWhileTheImplementationIsStuckGoesAwayAndOthersStillRead()
    {
        Start(new FuseServerOptions { Threads = 2, SlowCallAfter = TimeSpan.FromMilliseconds(100) });
        var stuck = Enumerable.Range(0, 3).Select(_ => Process.Start("cat", P(DictionaryFileSystem.SlowPath))).ToList();
        // The content is produced at LOOKUP (a file's size is its content's length), and the kernel lets
        // one LOOKUP of a name run at a time: one reader is in the implementation, the others wait behind it.
        Assert.True(await _fs.SlowEntered.WaitAsync(Patience.Condition), "the slow read never reached the implementation");

        // A reader holds a call; the other reader thread (or a fresh one) must serve everybody else.
        Assert.Equal("hello from fuse\n", Run("cat", P("hello")).Out);

        foreach (var p in stuck) Libc.kill(p.Id, 9);
        foreach (var p in stuck) Assert.True(await Procs.WaitGone(p.Id, 5000), "a SIGKILLed reader hangs in the FUSE request");
        Assert.Equal("hello from fuse\n", Run("cat", P("hello")).Out);

        _fs.Gate.Set(); // the stuck calls return; their late replies are dropped
        Assert.Equal("finally\n", Run("cat", P(DictionaryFileSystem.SlowPath)).Out);
        Assert.True(WaitFor(() => _server.OpenHandleCount == 0), $"{_server.OpenHandleCount} handles leaked");
        stuck.ForEach(p => p.Dispose());
    }

    [RootFact]
    public async Task ACallThatTakesTooLongIsAnsweredWithATimeout()
    {
        Start(new FuseServerOptions { SlowCallAfter = TimeSpan.FromMilliseconds(50), CallTimeout = TimeSpan.FromMilliseconds(300) });
        var (exit, _, err) = Run("cat", P(DictionaryFileSystem.SlowPath));
        Assert.NotEqual(0, exit);
        Assert.Contains("timed out", err);
        Assert.True(await _fs.SlowEntered.WaitAsync(Patience.Condition)); // on a loaded machine the watchdog can answer before the handler runs
        Assert.Equal("hello from fuse\n", Run("cat", P("hello")).Out);
    }

    /// <summary>A write whose caller waits: the handler gets a handle on the caller's thread (the control of the next test).</summary>
    [RootFact]
    public async Task AWaitingCallersThreadIsTaken()
    {
        _fs.AddFile(DictionaryFileSystem.SlowWritePath, "slow\n", mode: 0x1B6);
        Start();
        using var writer = Process.Start("sh", ["-c", $"echo 1 > {P(DictionaryFileSystem.SlowWritePath)}"])!;
        Assert.True(await _fs.SlowEntered.WaitAsync(Patience.Condition), "the slow write never reached the implementation");
        _fs.Gate.Set();
        Assert.True(WaitFor(() => !_fs.CallerThreads.IsEmpty), "the slow write never went on");
        Assert.True(_fs.CallerThreads.TryDequeue(out bool taken) && taken, "no handle on a caller that waits");
        Assert.True(writer.WaitForExit(Patience.Command));
        Assert.Equal(0, writer.ExitCode);
    }

    /// <summary>
    /// An aborted connection (umount -f, fusectl's abort) ends every request and frees its caller while a reader still
    /// serves it, unanswered as far as the server knows: the caller's thread id then names a thread that no longer waits
    /// (here the same shell, alive and gone on; in an attack a reused id), and must not be taken for the caller.
    /// </summary>
    [RootFact]
    public async Task OnceTheConnectionIsAbortedTheCallersThreadIsNotTaken()
    {
        _fs.AddFile(DictionaryFileSystem.SlowWritePath, "slow\n", mode: 0x1B6);
        Start();
        using var writer = Process.Start("sh", ["-c", $"echo 1 > {P(DictionaryFileSystem.SlowWritePath)}; sleep 60"])!;
        try
        {
            Assert.True(await _fs.SlowEntered.WaitAsync(Patience.Condition), "the slow write never reached the implementation");
            Libc.umount2(_dir, Libc.MNT_FORCE); // umount_begin aborts the connection; the unmount itself may be busy
            _fs.Gate.Set();
            Assert.True(WaitFor(() => !_fs.CallerThreads.IsEmpty), "the slow write never went on");
            Assert.False(writer.HasExited, "the writer is gone: its id would name no thread, and the test could not fail");
            Assert.True(_fs.CallerThreads.TryDequeue(out bool taken) && !taken, "a thread id taken for its caller after the connection was aborted");
        }
        finally { Libc.kill(writer.Id, 9); }
    }

    [RootFact]
    public void UnmountStopsTheServerThreads()
    {
        Start(new FuseServerOptions { Threads = 3 });
        Assert.Equal("hello from fuse\n", Run("cat", P("hello")).Out);
        Assert.Equal(3, _server!.ThreadCount);
        _mount!.Unmount();
        Assert.True(_server.Wait(Patience.Condition), "server threads still running after unmount");
        Assert.Equal(0, _server.ThreadCount);
        Assert.True(_server.IsStopped);
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(_dir));
    }

    static bool WaitFor(Func<bool> condition, int timeoutMs = 60000)
    {
        for (var end = DateTime.UtcNow.AddMilliseconds(timeoutMs); DateTime.UtcNow < end; Thread.Sleep(10))
            if (condition()) return true;
        return condition();
    }
}
