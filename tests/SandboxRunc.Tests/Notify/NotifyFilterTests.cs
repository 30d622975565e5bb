using System.Buffers.Binary;
using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using SandboxRunc.Seccomp;
using SandboxRunc.Seccomp.Notify;
using Xunit;
using N = SandboxRunc.Interop.SeccompNotifyAbi;

namespace SandboxRunc.Tests.Notify;

/// <summary>The notify filter: decoded and run by a small BPF interpreter, then by the kernel.</summary>
public unsafe class NotifyFilterTests
{
    const uint X86_64 = NotifyFilter.AUDIT_ARCH_X86_64, I386 = NotifyFilter.AUDIT_ARCH_I386;
    const uint Allow = NotifyFilter.SECCOMP_RET_ALLOW, Notify = NotifyFilter.SECCOMP_RET_USER_NOTIF;
    static readonly uint Enosys = NotifyFilter.Errno(38), Eperm = NotifyFilter.Errno(1);

    /// <summary>Runs the program as the kernel would for (arch, nr); only the opcodes the builder emits.</summary>
    static uint Run(byte[] program, uint arch, uint nr)
    {
        uint a = 0;
        for (int pc = 0; pc < program.Length / 8;)
        {
            var ins = program.AsSpan(pc * 8, 8);
            ushort code = BinaryPrimitives.ReadUInt16LittleEndian(ins);
            byte jt = ins[2], jf = ins[3];
            uint k = BinaryPrimitives.ReadUInt32LittleEndian(ins[4..]);
            switch (code)
            {
                case BpfBuilder.LdWAbs: a = k switch { 0 => nr, 4 => arch, _ => throw new InvalidOperationException($"load {k}") }; pc++; break;
                case BpfBuilder.JeqK: pc += 1 + (a == k ? jt : jf); break;
                case BpfBuilder.JgeK: pc += 1 + (a >= k ? jt : jf); break;
                case BpfBuilder.RetK: return k;
                default: throw new InvalidOperationException($"opcode 0x{code:x}");
            }
        }
        throw new InvalidOperationException("fell off the end of the program");
    }

    [Theory]
    [InlineData(X86_64, 165u, "notify")] // mount
    [InlineData(X86_64, 166u, "notify")] // umount2
    [InlineData(X86_64, 428u, "enosys")] // open_tree
    [InlineData(X86_64, 429u, "enosys")]
    [InlineData(X86_64, 430u, "enosys")]
    [InlineData(X86_64, 431u, "enosys")]
    [InlineData(X86_64, 432u, "enosys")]
    [InlineData(X86_64, 433u, "enosys")]
    [InlineData(X86_64, 442u, "enosys")] // mount_setattr
    [InlineData(X86_64, 467u, "enosys")] // open_tree_attr
    [InlineData(X86_64, 167u, "eperm")]  // swapon
    [InlineData(X86_64, 168u, "eperm")]
    [InlineData(X86_64, 169u, "allow")]  // reboot: the kernel confines it to the pid namespace
    [InlineData(X86_64, 0u, "allow")]    // read
    [InlineData(X86_64, 188u, "allow")]  // setxattr
    [InlineData(X86_64, 437u, "allow")]  // openat2
    [InlineData(X86_64, 0x40000000u + 165u, "enosys")] // x32 mount
    [InlineData(X86_64, 0x40000000u + 0u, "enosys")]   // x32 anything
    [InlineData(I386, 21u, "enosys")]    // int 0x80 mount
    [InlineData(I386, 22u, "enosys")]    // umount
    [InlineData(I386, 52u, "enosys")]    // umount2
    [InlineData(I386, 428u, "enosys")]
    [InlineData(I386, 87u, "eperm")]
    [InlineData(I386, 165u, "allow")]    // i386 165 is getresuid
    [InlineData(0xC00000B7u, 40u, "enosys")] // aarch64: impossible here, fail closed
    public void DecidesBySyscall(uint arch, uint nr, string expected)
    {
        uint action = Run(NotifyFilter.Program(), arch, nr);
        Assert.Equal(expected switch { "notify" => Notify, "enosys" => Enosys, "eperm" => Eperm, _ => Allow }, action);
    }

    [Fact]
    public void ProgramIsSmall() => Assert.InRange(NotifyFilter.Program().Length / 8, 10, 64);

    /// <summary>
    /// The kernel runs it: on a thread of our own with the filter and a listener, mount traps and
    /// is answered by this thread (we read its target string from its memory), the new mount API
    /// fails with ENOSYS, a second listener is refused with EBUSY, and getpid just works.
    /// </summary>
    [Fact]
    public void KernelRunsTheFilterAndTrapsMount()
    {
        var listenerReady = new TaskCompletionSource<int>();
        (long Rc, int Errno) mountResult = default, openTree = default, swapon = default, second = default;
        long getpid = 0;
        int tid = 0;
        var thread = new Thread(() =>
        {
            try
            {
                SysException.Check(Libc.prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl");
                int fd = SeccompFilter.Install(NotifyFilter.Program(), 8 /* NEW_LISTENER */);
                tid = (int)Libc.syscall(186 /* gettid */, 0, 0, 0, 0, 0, 0);
                listenerReady.SetResult(fd);
                getpid = Libc.syscall(39, 0, 0, 0, 0, 0, 0);
                openTree = Sys(Libc.SYS_open_tree, -100, 0);
                swapon = Sys(Libc.SYS_swapon, 0, 0);
                fixed (byte* p = NotifyFilter.Program())
                {
                    var prog = new SeccompFilter.SockFprog { Len = (ushort)(NotifyFilter.Program().Length / 8), Filter = (SeccompFilter.SockFilter*)p };
                    second = Sys(Libc.SYS_seccomp, 1, 8, (long)&prog);
                }
                fixed (byte* target = "/nonexistent/target\0"u8)
                    mountResult = Sys(Libc.SYS_mount, 0, (long)target, 0, (long)(Libc.MS_REMOUNT | Libc.MS_BIND));
            }
            catch (Exception e) { listenerReady.TrySetException(e); }
        });
        thread.Start();
        int listener = listenerReady.Task.Result;
        try
        {
            Assert.True(N.Receive(listener, out var notif));
            Assert.Equal(165, notif.Data.Nr);
            Assert.Equal(X86_64, notif.Data.Arch);
            Assert.Equal((uint)tid, notif.Pid);
            Assert.Equal(Libc.MS_REMOUNT | Libc.MS_BIND, notif.Data.Args[3]);
            Assert.Equal("/nonexistent/target", CallerMemory.ReadString((int)notif.Pid, notif.Data.Args[1], CallerMemory.PathMax));
            Assert.True(N.IdValid(listener, notif.Id));
            Assert.True(N.Send(listener, new N.NotifResp { Id = notif.Id, Error = -13 }));
            thread.Join();
        }
        finally { Libc.close(listener); }

        Assert.Equal((-1L, 13), mountResult);
        Assert.Equal((-1L, 38), openTree);
        Assert.Equal((-1L, 1), swapon);
        Assert.Equal((-1L, 16), second);
        Assert.True(getpid > 0);
    }

    static (long, int) Sys(long nr, long a1, long a2, long a3 = 0, long a4 = 0)
    {
        long r = Libc.syscall(nr, a1, a2, a3, a4, 0, 0);
        return (r, r == -1 ? Marshal.GetLastPInvokeError() : 0);
    }
}

/// <summary>CallerMemory on our own memory: page boundaries, unmapped pages, bounds.</summary>
public unsafe partial class NotifyCallerMemoryTests
{
    [LibraryImport("libc", SetLastError = true)] private static partial nint mmap(nint addr, nint len, int prot, int flags, int fd, long off);
    [LibraryImport("libc", SetLastError = true)] private static partial int munmap(nint addr, nint len);

    static (nint Page, int Pid) TwoPagesSecondUnmapped()
    {
        nint p = mmap(0, 8192, 3 /* RW */, 0x22 /* PRIVATE|ANON */, -1, 0);
        Assert.NotEqual(-1, p);
        Assert.Equal(0, munmap(p + 4096, 4096));
        return (p, Libc.getpid());
    }

    [Fact]
    public void ReadsAStringEndingAtTheLastByteOfAMapping()
    {
        var (p, pid) = TwoPagesSecondUnmapped();
        "abc\0"u8.CopyTo(new Span<byte>((void*)(p + 4092), 4));
        Assert.Equal("abc", CallerMemory.ReadString(pid, (ulong)(p + 4092), CallerMemory.PathMax));
        munmap(p, 4096);
    }

    [Fact]
    public void AStringRunningIntoAnUnmappedPageIsEfault()
    {
        var (p, pid) = TwoPagesSecondUnmapped();
        "abcd"u8.CopyTo(new Span<byte>((void*)(p + 4092), 4));
        var e = Assert.Throws<SysException>(() => CallerMemory.ReadString(pid, (ulong)(p + 4092), CallerMemory.PathMax));
        Assert.Equal(Libc.EFAULT, e.Errno);
        munmap(p, 4096);
    }

    [Fact]
    public void ReadsAcrossPageBoundaries()
    {
        nint p = mmap(0, 3 * 4096, 3, 0x22, -1, 0);
        string s = new('x', 3000);
        System.Text.Encoding.ASCII.GetBytes(s + "\0").CopyTo(new Span<byte>((void*)(p + 4000), 3001));
        Assert.Equal(s, CallerMemory.ReadString(Libc.getpid(), (ulong)(p + 4000), CallerMemory.PathMax));
        munmap(p, 3 * 4096);
    }

    [Fact]
    public void TooLongIsEnametoolong()
    {
        nint p = mmap(0, 4096, 3, 0x22, -1, 0);
        new Span<byte>((void*)p, 4096).Fill((byte)'y');
        var e = Assert.Throws<SysException>(() => CallerMemory.ReadString(Libc.getpid(), (ulong)p, CallerMemory.FsTypeMax));
        Assert.Equal(36, e.Errno);
        munmap(p, 4096);
    }

    [Fact]
    public void NullIsNull() => Assert.Null(CallerMemory.ReadString(Libc.getpid(), 0, 10));
}
