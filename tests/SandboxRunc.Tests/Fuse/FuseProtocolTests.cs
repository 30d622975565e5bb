// The server's request decoding and reply encoding without root or /dev/fuse: it serves one end of a
// SOCK_SEQPACKET socketpair (which keeps message boundaries, as /dev/fuse does) and the test plays the
// kernel on the other end with hand-built fuse.h messages.
using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using Xunit;
using static SandboxRunc.Fuse.FuseProtocol;

namespace SandboxRunc.Tests.Fuse;

public sealed unsafe class FuseProtocolTests : IDisposable
{
    readonly DictionaryFileSystem _fs = new();
    readonly SafeFd _kernel;
    readonly FuseServer _server;
    ulong _unique = 2;

    public FuseProtocolTests()
    {
        _fs.AddFile("hello", "hello from fuse\n");
        _fs.AddDirectory("dir");
        foreach (var name in new[] { "a", "bb", "a-rather-long-name-for-a-file", "d" })
            _fs.AddFile("dir/" + name, name);
        _fs.AddSymlink("link", "hello");

        int* sv = stackalloc int[2];
        SysException.Check(Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, sv), "socketpair");
        _kernel = new SafeFd(sv[0]);
        _server = FuseServer.Serve(new SafeFd(sv[1]), _fs, new FuseServerOptions { Threads = 2 });
        var init = Call(Opcode.Init, 0, Bytes(new InitIn { Major = 7, Minor = 44, MaxReadahead = 65536, Flags = uint.MaxValue }));
        Assert.Equal(0, init.Error);
    }

    public void Dispose()
    {
        _kernel.Dispose(); // end of file for the server's readers
        Assert.True(_server.Wait(TimeSpan.FromSeconds(5)), "server did not stop at end of file");
    }

    static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();
    static byte[] Name(string name) => [.. Encoding.UTF8.GetBytes(name), 0];
    static T As<T>(byte[] payload) where T : unmanaged => MemoryMarshal.Read<T>(payload);

    ulong Send(Opcode opcode, ulong nodeId, byte[] body, ulong? unique = null)
    {
        var h = new InHeader
        {
            Len = (uint)(sizeof(InHeader) + body.Length), Opcode = opcode, Unique = unique ?? _unique++,
            NodeId = nodeId, Uid = 1000, Gid = 1001, Pid = 4242,
        };
        byte[] message = [.. Bytes(h), .. body];
        fixed (byte* p = message)
            Assert.Equal(message.Length, (int)Libc.write(_kernel.Fd, p, message.Length));
        return h.Unique;
    }

    (ulong Unique, int Error, byte[] Payload) Receive()
    {
        var buffer = new byte[OutBufferSize];
        var pfd = new Libc.PollFd { Fd = _kernel.Fd, Events = Libc.POLLIN };
        Assert.True(Libc.poll(&pfd, 1, 5000) == 1, "no reply within 5 s");
        long n;
        fixed (byte* p = buffer) n = Libc.read(_kernel.Fd, p, buffer.Length);
        var o = MemoryMarshal.Read<OutHeader>(buffer);
        Assert.Equal(n, (long)o.Len);
        return (o.Unique, o.Error, buffer[sizeof(OutHeader)..(int)n]);
    }

    (int Error, byte[] Payload) Call(Opcode opcode, ulong nodeId, byte[] body)
    {
        ulong unique = Send(opcode, nodeId, body);
        var (replyUnique, error, payload) = Receive();
        Assert.Equal(unique, replyUnique);
        return (error, payload);
    }

    EntryOut Lookup(ulong parent, string name)
    {
        var (error, payload) = Call(Opcode.Lookup, parent, Name(name));
        Assert.Equal(0, error);
        Assert.Equal(sizeof(EntryOut), payload.Length);
        return As<EntryOut>(payload);
    }

    [Fact]
    public void InitNegotiatesOurMinorAndOnlyFlagsTheKernelOffered()
    {
        // A second server on a fresh pair, to see the INIT reply itself.
        int* sv = stackalloc int[2];
        SysException.Check(Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, sv), "socketpair");
        using var kernel = new SafeFd(sv[0]);
        var server = FuseServer.Serve(new SafeFd(sv[1]), _fs, new FuseServerOptions { Threads = 1 });
        var h = new InHeader { Len = (uint)(sizeof(InHeader) + sizeof(InitIn)), Opcode = Opcode.Init, Unique = 1 };
        byte[] message = [.. Bytes(h), .. Bytes(new InitIn { Major = 7, Minor = 44, MaxReadahead = 131072, Flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES })];
        var reply = new byte[4096];
        long n;
        fixed (byte* p = message) Libc.write(kernel.Fd, p, message.Length);
        fixed (byte* p = reply) n = Libc.read(kernel.Fd, p, reply.Length);
        Assert.Equal(sizeof(OutHeader) + sizeof(InitOut), n);
        var init = MemoryMarshal.Read<InitOut>(reply.AsSpan(sizeof(OutHeader)));
        Assert.Equal((7u, 38u), (init.Major, init.Minor));
        Assert.Equal(FUSE_ASYNC_READ | FUSE_MAX_PAGES, init.Flags);
        Assert.Equal((uint)MaxWrite, init.MaxWrite);
        Assert.Equal(32, init.MaxPages);
        Assert.Equal(131072u, init.MaxReadahead);

        // A kernel older than 7.31 is refused, not served half-way.
        h.Unique = 3;
        message = [.. Bytes(h), .. Bytes(new InitIn { Major = 7, Minor = 26 })];
        fixed (byte* p = message) Libc.write(kernel.Fd, p, message.Length);
        fixed (byte* p = reply) n = Libc.read(kernel.Fd, p, reply.Length);
        Assert.Equal(-EPROTO, MemoryMarshal.Read<OutHeader>(reply).Error);
        kernel.Dispose();
        Assert.True(server.Wait(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public void LookupAndGetattrDescribeTheNodeAndMissingNamesAreEnoent()
    {
        var e = Lookup(RootId, "hello");
        Assert.True(e.NodeId > RootId);
        Assert.Equal(FuseNodeTable.Generation, e.Generation);
        // Files revalidate on every open (timeouts 0) and report their content's length: see FuseServer.Sized.
        Assert.Equal((0ul, 0ul), (e.EntryValid, e.AttrValid));
        Assert.Equal(S_IFREG | 0x1A4, e.Attr.Mode);
        Assert.Equal(FuseNodeTable.InodeOf("hello"), e.Attr.Ino);
        Assert.Equal((16ul, 1u), (e.Attr.Size, e.Attr.Nlink));
        Assert.Equal(e.NodeId, Lookup(RootId, "hello").NodeId); // same path, same node

        var dir = Lookup(RootId, "dir");
        Assert.Equal(S_IFDIR | 0x1ED, dir.Attr.Mode);
        Assert.Equal(FuseNodeTable.InodeOf("dir/bb"), Lookup(dir.NodeId, "bb").Attr.Ino);

        Assert.Equal(-ENOENT, Call(Opcode.Lookup, RootId, Name("nope")).Error);
        Assert.Equal(-ENOENT, Call(Opcode.Lookup, 999, Name("hello")).Error); // unknown parent

        var (error, payload) = Call(Opcode.Getattr, e.NodeId, new byte[16]);
        Assert.Equal(0, error);
        Assert.Equal(FuseNodeTable.InodeOf("hello"), As<AttrOut>(payload).Attr.Ino);
        Assert.Equal(S_IFDIR | 0x1ED, As<AttrOut>(Call(Opcode.Getattr, RootId, new byte[16]).Payload).Attr.Mode);

        var (linkError, target) = Call(Opcode.Readlink, Lookup(RootId, "link").NodeId, []);
        Assert.Equal((0, "hello"), (linkError, Encoding.UTF8.GetString(target)));
    }

    static bool Eventually(Func<bool> condition)
    {
        for (var end = DateTime.UtcNow.AddSeconds(5); DateTime.UtcNow < end; Thread.Sleep(5))
            if (condition()) return true;
        return condition();
    }

    [Fact]
    public void ForgetDropsANodeOnceTheKernelGaveBackEveryReference()
    {
        int before = _server.NodeCount;
        ulong id = Lookup(RootId, "hello").NodeId;
        Lookup(RootId, "hello");
        Assert.Equal(before + 1, _server.NodeCount);
        Send(Opcode.Forget, id, Bytes(new ForgetIn { Nlookup = 1 }));
        ulong other = Lookup(RootId, "dir").NodeId;
        // FORGET has no reply, and another reader thread may take it after later requests: wait for it.
        Assert.True(Eventually(() => _server.NodeCount == before + 2), $"nodes: {_server.NodeCount}, expected {before + 2}");
        Send(Opcode.BatchForget, 0, [.. Bytes(new BatchForgetIn { Count = 2 }),
            .. Bytes(new ForgetOne { NodeId = id, Nlookup = 1 }), .. Bytes(new ForgetOne { NodeId = other, Nlookup = 1 })]);
        Assert.Equal(0, Call(Opcode.Statfs, RootId, []).Error);
        Assert.True(Eventually(() => _server.NodeCount == before), $"nodes: {_server.NodeCount}, expected {before}");
        Assert.Equal(-ENOENT, Call(Opcode.Getattr, id, new byte[16]).Error);
    }

    [Fact]
    public void ReadServesTheSnapshotTakenAtOpenByOffset()
    {
        ulong id = Lookup(RootId, "hello").NodeId;
        var (error, payload) = Call(Opcode.Open, id, Bytes(new OpenIn { Flags = 0 }));
        Assert.Equal(0, error);
        var open = As<OpenOut>(payload);
        Assert.Equal(FOPEN_DIRECT_IO | FOPEN_NOFLUSH, open.OpenFlags);

        _fs.AddFile("hello", "changed after open\n"); // the open file keeps its snapshot
        string Read(ulong offset, uint size) =>
            Encoding.UTF8.GetString(Call(Opcode.Read, id, Bytes(new ReadIn { Fh = open.Fh, Offset = offset, Size = size })).Payload);
        Assert.Equal("hello from fuse\n", Read(0, 4096));
        Assert.Equal("from", Read(6, 4));
        Assert.Equal("", Read(16, 4096));
        Assert.Equal("", Read(1000, 4096));
        Assert.Equal(1, _server.OpenHandleCount);
        Assert.Equal(0, Call(Opcode.Release, id, Bytes(new ReleaseIn { Fh = open.Fh })).Error);
        Assert.Equal(0, _server.OpenHandleCount);
        Assert.Equal(-EBADF, Call(Opcode.Read, id, Bytes(new ReadIn { Fh = open.Fh, Size = 10 })).Error);
    }

    [Fact]
    public void ReaddirPagesThroughTheListingInWholeRecords()
    {
        ulong dir = Lookup(RootId, "dir").NodeId;
        var open = As<OpenOut>(Call(Opcode.Opendir, dir, Bytes(new OpenIn())).Payload);
        var names = new List<string>();
        ulong offset = 0;
        while (true)
        {
            // 64 bytes: room for one or two records per call, so the continuation offsets are exercised.
            var (error, page) = Call(Opcode.Readdir, dir, Bytes(new ReadIn { Fh = open.Fh, Offset = offset, Size = 64 }));
            Assert.Equal(0, error);
            if (page.Length == 0) break;
            for (int at = 0; at < page.Length;)
            {
                var d = MemoryMarshal.Read<Dirent>(page.AsSpan(at));
                string name = Encoding.UTF8.GetString(page, at + sizeof(Dirent), (int)d.NameLen);
                names.Add(name);
                Assert.Equal(name is "." or ".." ? DT_DIR : DT_REG, d.Type);
                at += DirentSize((int)d.NameLen);
                offset = d.Off;
            }
        }
        Assert.Equal([".", "..", "a", "a-rather-long-name-for-a-file", "bb", "d"], names);
        Assert.Equal(0, Call(Opcode.Releasedir, dir, Bytes(new ReleaseIn { Fh = open.Fh })).Error);
    }

    [Fact]
    public void WriteAtOffsetZeroReachesTheImplementationWithTheCaller()
    {
        ulong id = Lookup(RootId, "hello").NodeId;
        var open = As<OpenOut>(Call(Opcode.Open, id, Bytes(new OpenIn { Flags = 1 /* O_WRONLY */ })).Payload);
        byte[] data = Encoding.UTF8.GetBytes("1\n");
        var (error, payload) = Call(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = open.Fh, Size = (uint)data.Length }), .. data]);
        Assert.Equal(0, error);
        Assert.Equal(2u, As<WriteOut>(payload).Size);
        var write = Assert.Single(_fs.Writes);
        Assert.Equal(("hello", "1\n", 4242, 1000u, 1001u), (write.Path, write.Data, write.Caller.Pid, write.Caller.Uid, write.Caller.Gid));
        Assert.NotNull(write.Caller.Request);   // the request it serves comes along (for Commit and the caller's pidfd)

        Assert.Equal(-EINVAL, Call(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = open.Fh, Offset = 2, Size = 2 }), .. data]).Error);
        Assert.Equal(0, Call(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = open.Fh, Offset = 2, Size = 2, Flags = 0x401 /* O_WRONLY|O_APPEND */ }), .. data]).Error);
        Assert.Equal(2, _fs.Writes.Count);
        byte[] bad = Encoding.UTF8.GetBytes("bad");
        Assert.Equal(-EINVAL, Call(Opcode.Write, id, [.. Bytes(new WriteIn { Fh = open.Fh, Size = 3 }), .. bad]).Error);
        Assert.Equal(2, _fs.Writes.Count);
    }

    [Fact]
    public void OnlyTruncationToZeroIsAllowedAndTheTreeCannotChange()
    {
        ulong id = Lookup(RootId, "hello").NodeId;
        Assert.Equal(0, Call(Opcode.Setattr, id, Bytes(new SetattrIn { Valid = FATTR_SIZE | FATTR_FH, Size = 0 })).Error);
        Assert.Equal(-EPERM, Call(Opcode.Setattr, id, Bytes(new SetattrIn { Valid = FATTR_SIZE, Size = 3 })).Error);
        Assert.Equal(-EPERM, Call(Opcode.Setattr, id, Bytes(new SetattrIn { Valid = FATTR_MODE, Mode = 0x1FF })).Error);
        Assert.Equal(-EPERM, Call(Opcode.Mkdir, RootId, [.. new byte[8], .. Name("x")]).Error);
        Assert.Equal(-EPERM, Call(Opcode.Unlink, RootId, Name("hello")).Error);
        Assert.Equal(-ENOSYS, Call(Opcode.Getxattr, id, new byte[8]).Error);
        Assert.Equal(-ENOSYS, Call((Opcode)4000, id, []).Error);
    }

    [Fact]
    public void AnInterruptForARequestNoLongerHandledIsRequeuedWithEagain()
    {
        ulong target = Lookup(RootId, "hello").NodeId; // any finished request
        ulong interrupt = Send(Opcode.Interrupt, 0, Bytes(new InterruptIn { Unique = 1234 }), unique: 1234 | FUSE_INT_REQ_BIT);
        var (unique, error, _) = Receive();
        Assert.Equal((interrupt, -EAGAIN), (unique, error));
        Assert.NotEqual(0ul, target);
    }

    [Fact]
    public void ListingEncodingMatchesFuseDirentLayout()
    {
        byte[] listing = FuseServer.EncodeListing("x", [("ab", FuseNodeKind.Symlink)]);
        Assert.Equal(3 * 32, listing.Length); // ".", "..", "ab": 24 + name, rounded up to 8
        var third = MemoryMarshal.Read<Dirent>(listing.AsSpan(64));
        Assert.Equal((FuseNodeTable.InodeOf("x/ab"), 96ul, 2u, DT_LNK), (third.Ino, third.Off, third.NameLen, third.Type));
        Assert.Equal("ab", Encoding.UTF8.GetString(listing, 64 + 24, 2));
        Assert.Equal(FuseNodeTable.InodeOf(""), MemoryMarshal.Read<Dirent>(listing.AsSpan(32)).Ino); // ".." of "x" is the root
    }
}
