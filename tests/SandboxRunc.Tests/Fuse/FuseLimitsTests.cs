// What a container can make the server hold is bounded (open handles, snapshot bytes, nodes, prefetched
// contents), large files are served by offset from a host file, and a request the watchdog answered has
// no side effect afterwards. Without root: the server serves one end of a SOCK_SEQPACKET pair and the test
// plays the kernel, as in FuseProtocolTests.
using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using Xunit;
using static SandboxRunc.Fuse.FuseProtocol;

namespace SandboxRunc.Tests.Fuse;

public sealed unsafe class FuseLimitsTests : IDisposable
{
    readonly DictionaryFileSystem _fs = new();
    SafeFd? _kernel;
    FuseServer? _server;
    ulong _unique = 2;
    readonly string _hostFile = Path.GetTempFileName();

    public FuseLimitsTests()
    {
        _fs.AddFile("hello", "hello from fuse\n");   // 16 bytes
        for (int i = 0; i < 10; i++) _fs.AddFile("f" + i, new string('x', 100));
        _fs.AddFile(DictionaryFileSystem.SlowWritePath, "slow\n", mode: 0x1B6);
    }

    void Start(FuseServerOptions options)
    {
        int* sv = stackalloc int[2];
        SysException.Check(Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, sv), "socketpair");
        _kernel = new SafeFd(sv[0]);
        _server = FuseServer.Serve(new SafeFd(sv[1]), _fs, options);
        Assert.Equal(0, Call(Opcode.Init, 0, Bytes(new InitIn { Major = 7, Minor = 38, MaxReadahead = 65536, Flags = uint.MaxValue })).Error);
    }

    public void Dispose()
    {
        _fs.Gate.Set();
        _kernel?.Dispose();
        if (_server is not null) Assert.True(_server.Wait(TimeSpan.FromSeconds(5)), "server did not stop at end of file");
        File.Delete(_hostFile);
    }

    static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();
    static byte[] Name(string name) => [.. Encoding.UTF8.GetBytes(name), 0];
    static T As<T>(byte[] payload) where T : unmanaged => MemoryMarshal.Read<T>(payload);

    ulong Send(Opcode opcode, ulong nodeId, byte[] body, uint pid = 4242)
    {
        var h = new InHeader
        {
            Len = (uint)(sizeof(InHeader) + body.Length), Opcode = opcode, Unique = _unique += 2,
            NodeId = nodeId, Uid = 1000, Gid = 1001, Pid = pid,
        };
        byte[] message = [.. Bytes(h), .. body];
        fixed (byte* p = message)
            Assert.Equal(message.Length, (int)Libc.write(_kernel!.Fd, p, message.Length));
        return h.Unique;
    }

    (ulong Unique, int Error, byte[] Payload)? Receive(int timeoutMs = 5000)
    {
        var buffer = new byte[OutBufferSize];
        var pfd = new Libc.PollFd { Fd = _kernel!.Fd, Events = Libc.POLLIN };
        if (Libc.poll(&pfd, 1, timeoutMs) != 1) return null;
        long n;
        fixed (byte* p = buffer) n = Libc.read(_kernel.Fd, p, buffer.Length);
        var o = MemoryMarshal.Read<OutHeader>(buffer);
        return (o.Unique, o.Error, buffer[sizeof(OutHeader)..(int)n]);
    }

    (int Error, byte[] Payload) Call(Opcode opcode, ulong nodeId, byte[] body, uint pid = 4242)
    {
        ulong unique = Send(opcode, nodeId, body, pid);
        var reply = Receive() ?? throw new Xunit.Sdk.XunitException($"no reply to {opcode} within 5 s");
        Assert.Equal(unique, reply.Unique);
        return (reply.Error, reply.Payload);
    }

    ulong Lookup(string name, uint pid = 4242)
    {
        var (error, payload) = Call(Opcode.Lookup, RootId, Name(name), pid);
        Assert.Equal(0, error);
        return As<EntryOut>(payload).NodeId;
    }

    (int Error, ulong Fh) Open(ulong id, uint flags = 0)
    {
        var (error, payload) = Call(Opcode.Open, id, Bytes(new OpenIn { Flags = flags }));
        return (error, error == 0 ? As<OpenOut>(payload).Fh : 0);
    }

    [Fact]
    public void OpenHandlesAreBounded_ReleaseMakesRoom()
    {
        Start(new FuseServerOptions { Threads = 1, MaxOpen = 3 });
        ulong id = Lookup("hello");
        var fhs = Enumerable.Range(0, 3).Select(_ => Open(id)).ToList();
        Assert.All(fhs, o => Assert.Equal(0, o.Error));
        Assert.Equal(-ENFILE, Open(id).Error);
        Assert.Equal(-ENFILE, Call(Opcode.Opendir, RootId, Bytes(new OpenIn())).Error);
        Assert.Equal(3, _server!.OpenHandleCount);
        Assert.Equal(0, Call(Opcode.Release, id, Bytes(new ReleaseIn { Fh = fhs[0].Fh })).Error);
        Assert.Equal(0, Open(id).Error);
    }

    [Fact]
    public void SnapshotBytesAreBounded()
    {
        Start(new FuseServerOptions { Threads = 1, MaxSnapshotBytes = 40 });
        ulong id = Lookup("hello");
        Assert.Equal(0, Open(id).Error);
        Assert.Equal(0, Open(id).Error);            // 32 bytes held
        Assert.Equal(-ENFILE, Open(id).Error);      // 48 > 40
        Assert.Equal(32, _server!.SnapshotBytes);
        Assert.Equal(0, Open(id, flags: 1 /* O_WRONLY: no snapshot */).Error);
    }

    [Fact]
    public void NodesAreBounded_ForgetMakesRoom()
    {
        Start(new FuseServerOptions { Threads = 1, MaxNodes = 3 });   // the root and two more
        ulong a = Lookup("f0");
        Lookup("f1");
        Assert.Equal(-ENFILE, Call(Opcode.Lookup, RootId, Name("f2")).Error);
        Assert.Equal(a, Lookup("f0"));                // known paths still resolve
        Send(Opcode.Forget, a, Bytes(new ForgetIn { Nlookup = 2 }));
        for (var end = DateTime.UtcNow.AddSeconds(5); _server!.NodeCount > 2 && DateTime.UtcNow < end;) Thread.Sleep(5);
        Lookup("f2");
    }

    [Fact]
    public void PrefetchedContentsAreBoundedInCountAndBytes()
    {
        Start(new FuseServerOptions { Threads = 1, MaxPrefetched = 4, MaxPrefetchedBytes = 250 });
        // Every LOOKUP of a file reads its content (its length is the size) and keeps it for the caller's OPEN.
        for (int i = 0; i < 10; i++)
            for (uint pid = 1; pid <= 20; pid++) Lookup("f" + i, pid);
        Assert.InRange(_server!.PrefetchedCount, 1, 2);   // 100 bytes each: the byte bound (250) bites first
        Assert.Equal(200, _fs.Reads);
    }

    [Fact]
    public void AStreamedFileIsServedByOffsetFromTheHostFile_NeverReadWhole()
    {
        var data = new byte[300_000];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(_hostFile, data);
        _fs.AddStreamed("big", _hostFile);
        Start(new FuseServerOptions { Threads = 1, MaxSnapshotBytes = 1000 });
        var (error, payload) = Call(Opcode.Lookup, RootId, Name("big"));
        Assert.Equal(0, error);
        var entry = As<EntryOut>(payload);
        Assert.Equal((ulong)data.Length, entry.Attr.Size);
        // Many opens at once: no snapshot is taken, so the byte bound does not bite.
        var opens = Enumerable.Range(0, 20).Select(_ => Open(entry.NodeId)).ToList();
        Assert.All(opens, o => Assert.Equal(0, o.Error));
        Assert.Equal(0, _server!.SnapshotBytes);
        var read = Call(Opcode.Read, entry.NodeId, Bytes(new ReadIn { Fh = opens[5].Fh, Offset = 200_000, Size = 4096 }));
        Assert.Equal(0, read.Error);
        Assert.Equal(data.AsSpan(200_000, 4096).ToArray(), read.Payload);
        Assert.Empty(Call(Opcode.Read, entry.NodeId, Bytes(new ReadIn { Fh = opens[5].Fh, Offset = 300_000, Size = 4096 })).Payload);
        Assert.Equal(0, _fs.Reads);
        foreach (var o in opens) Assert.Equal(0, Call(Opcode.Release, entry.NodeId, Bytes(new ReleaseIn { Fh = o.Fh })).Error);
        Assert.Equal(0, _server.OpenHandleCount);
    }

    [Fact]
    public void AWriteTheWatchdogAnsweredHasNoSideEffect()
    {
        Start(new FuseServerOptions { Threads = 1, SlowCallAfter = TimeSpan.FromMilliseconds(20), CallTimeout = TimeSpan.FromMilliseconds(150) });
        ulong id = Lookup(DictionaryFileSystem.SlowWritePath);
        var (error, fh) = Open(id, flags: 1);
        Assert.Equal(0, error);
        byte[] data = Encoding.UTF8.GetBytes("1\n");
        ulong unique = Send(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = fh, Size = (uint)data.Length }), .. data]);
        Assert.True(_fs.SlowEntered.Wait(5000));
        var reply = Receive() ?? throw new Xunit.Sdk.XunitException("the watchdog did not answer");
        Assert.Equal((unique, -ETIMEDOUT), (reply.Unique, reply.Error));
        _fs.Gate.Set();   // the handler goes on: its commit fails, so it does nothing
        for (var end = DateTime.UtcNow.AddSeconds(5); _fs.Commits.IsEmpty && DateTime.UtcNow < end;) Thread.Sleep(5);
        Assert.Equal([false], _fs.Commits);
        Assert.Empty(_fs.Writes);
        Assert.Null(Receive(200));   // and its late answer is dropped
    }

    [Fact]
    public void ACommittedWriteIsAnsweredByItsHandlerOnly()
    {
        _fs.CommitBeforeWaiting = true;
        Start(new FuseServerOptions { Threads = 1, SlowCallAfter = TimeSpan.FromMilliseconds(20), CallTimeout = TimeSpan.FromMilliseconds(150) });
        ulong id = Lookup(DictionaryFileSystem.SlowWritePath);
        var (error, fh) = Open(id, flags: 1);
        Assert.Equal(0, error);
        byte[] data = Encoding.UTF8.GetBytes("1\n");
        ulong unique = Send(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = fh, Size = (uint)data.Length }), .. data]);
        Assert.True(_fs.SlowEntered.Wait(5000));
        Assert.Null(Receive(600));   // well past the call timeout: the watchdog leaves a committed request alone
        _fs.Gate.Set();
        var reply = Receive() ?? throw new Xunit.Sdk.XunitException("no answer after the gate opened");
        Assert.Equal((unique, 0), (reply.Unique, reply.Error));
        Assert.Equal([true], _fs.Commits);
        Assert.Single(_fs.Writes);
    }
}
