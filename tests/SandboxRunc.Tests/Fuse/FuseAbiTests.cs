using System.Runtime.InteropServices;
using SandboxRunc.Fuse;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using static SandboxRunc.Fuse.FuseProtocol;

namespace SandboxRunc.Tests.Fuse;

/// <summary>
/// The wire structs against include/uapi/linux/fuse.h. Two checks: the sizes and offsets the header
/// documents (written out here, so this runs without a compiler), and, when cc and
/// /usr/include/linux/fuse.h exist, a C program that prints sizeof/offsetof/constants from the real header.
/// </summary>
public class FuseAbiTests
{
    static long Off<T>(string field) => Marshal.OffsetOf<T>(field).ToInt64();

    [Fact]
    public unsafe void StructSizesAreThoseOfFuseH()
    {
        // fuse.h 7.38: fuse_in_header 40, fuse_out_header 16, fuse_attr 88, fuse_entry_out 128
        // (FUSE_COMPAT_ENTRY_OUT_SIZE is 120: the 7.9 attr grew by 8), fuse_attr_out 104
        // (FUSE_COMPAT_ATTR_OUT_SIZE 96), fuse_init_out 64, fuse_write_in 40 (FUSE_COMPAT_WRITE_IN_SIZE 24),
        // fuse_kstatfs 80, fuse_dirent 24 + name (FUSE_NAME_OFFSET).
        Assert.Equal(40, sizeof(InHeader));
        Assert.Equal(16, sizeof(OutHeader));
        Assert.Equal(88, sizeof(Attr));
        Assert.Equal(128, sizeof(EntryOut));
        Assert.Equal(104, sizeof(AttrOut));
        Assert.Equal(64, sizeof(InitOut));
        Assert.Equal(40, sizeof(ReadIn));
        Assert.Equal(40, sizeof(WriteIn));
        Assert.Equal(8, sizeof(WriteOut));
        Assert.Equal(16, sizeof(OpenOut));
        Assert.Equal(24, sizeof(ReleaseIn));
        Assert.Equal(88, sizeof(SetattrIn));
        Assert.Equal(80, sizeof(StatfsOut));
        Assert.Equal(24, sizeof(Dirent));
        Assert.Equal(16, sizeof(ForgetOne));
        Assert.Equal(32, Off<InHeader>(nameof(InHeader.Pid)));
        Assert.Equal(40, Off<EntryOut>(nameof(EntryOut.Attr)));
        Assert.Equal(16, Off<AttrOut>(nameof(AttrOut.Attr)));
        Assert.Equal(60, Off<Attr>(nameof(Attr.Mode)));
        Assert.Equal(68, Off<SetattrIn>(nameof(SetattrIn.Mode)));
        Assert.Equal(32, DirentSize(1));   // 24 + 1 rounded up to 8
        Assert.Equal(32, DirentSize(8));
        Assert.Equal(40, DirentSize(9));
    }

    static unsafe Dictionary<string, long> Expectations()
    {
        var e = new Dictionary<string, long>
        {
            ["FUSE_KERNEL_VERSION"] = KernelMajor,
            ["FUSE_ROOT_ID"] = (long)RootId,
            ["sizeof(struct fuse_in_header)"] = sizeof(InHeader),
            ["sizeof(struct fuse_out_header)"] = sizeof(OutHeader),
            ["sizeof(struct fuse_attr)"] = sizeof(Attr),
            ["sizeof(struct fuse_entry_out)"] = sizeof(EntryOut),
            ["sizeof(struct fuse_attr_out)"] = sizeof(AttrOut),
            ["sizeof(struct fuse_init_out)"] = sizeof(InitOut),
            ["sizeof(struct fuse_forget_in)"] = sizeof(ForgetIn),
            ["sizeof(struct fuse_batch_forget_in)"] = sizeof(BatchForgetIn),
            ["sizeof(struct fuse_forget_one)"] = sizeof(ForgetOne),
            ["sizeof(struct fuse_setattr_in)"] = sizeof(SetattrIn),
            ["sizeof(struct fuse_open_in)"] = sizeof(OpenIn),
            ["sizeof(struct fuse_open_out)"] = sizeof(OpenOut),
            ["sizeof(struct fuse_release_in)"] = sizeof(ReleaseIn),
            ["sizeof(struct fuse_read_in)"] = sizeof(ReadIn),
            ["sizeof(struct fuse_write_in)"] = sizeof(WriteIn),
            ["sizeof(struct fuse_write_out)"] = sizeof(WriteOut),
            ["sizeof(struct fuse_statfs_out)"] = sizeof(StatfsOut),
            ["sizeof(struct fuse_interrupt_in)"] = sizeof(InterruptIn),
            ["sizeof(struct fuse_dirent)"] = sizeof(Dirent),
            ["offsetof(struct fuse_init_in, flags)"] = Off<InitIn>(nameof(InitIn.Flags)),
            ["offsetof(struct fuse_init_in, flags2)"] = Off<InitIn>(nameof(InitIn.Flags2)),
            ["offsetof(struct fuse_init_out, max_write)"] = Off<InitOut>(nameof(InitOut.MaxWrite)),
            ["offsetof(struct fuse_init_out, max_pages)"] = Off<InitOut>(nameof(InitOut.MaxPages)),
            ["offsetof(struct fuse_init_out, flags2)"] = Off<InitOut>(nameof(InitOut.Flags2)),
            ["offsetof(struct fuse_in_header, nodeid)"] = Off<InHeader>(nameof(InHeader.NodeId)),
            ["offsetof(struct fuse_in_header, pid)"] = Off<InHeader>(nameof(InHeader.Pid)),
            ["offsetof(struct fuse_in_header, total_extlen)"] = Off<InHeader>(nameof(InHeader.TotalExtLen)),
            ["offsetof(struct fuse_attr, mode)"] = Off<Attr>(nameof(Attr.Mode)),
            ["offsetof(struct fuse_attr, blksize)"] = Off<Attr>(nameof(Attr.Blksize)),
            ["offsetof(struct fuse_entry_out, attr)"] = Off<EntryOut>(nameof(EntryOut.Attr)),
            ["offsetof(struct fuse_attr_out, attr)"] = Off<AttrOut>(nameof(AttrOut.Attr)),
            ["offsetof(struct fuse_setattr_in, size)"] = Off<SetattrIn>(nameof(SetattrIn.Size)),
            ["offsetof(struct fuse_setattr_in, mode)"] = Off<SetattrIn>(nameof(SetattrIn.Mode)),
            ["offsetof(struct fuse_read_in, size)"] = Off<ReadIn>(nameof(ReadIn.Size)),
            ["offsetof(struct fuse_write_in, size)"] = Off<WriteIn>(nameof(WriteIn.Size)),
            ["offsetof(struct fuse_kstatfs, bsize)"] = Off<StatfsOut>(nameof(StatfsOut.Bsize)),
            ["FUSE_NAME_OFFSET"] = sizeof(Dirent),
            ["FUSE_LOOKUP"] = (long)Opcode.Lookup, ["FUSE_FORGET"] = (long)Opcode.Forget,
            ["FUSE_GETATTR"] = (long)Opcode.Getattr, ["FUSE_SETATTR"] = (long)Opcode.Setattr,
            ["FUSE_READLINK"] = (long)Opcode.Readlink, ["FUSE_OPEN"] = (long)Opcode.Open,
            ["FUSE_READ"] = (long)Opcode.Read, ["FUSE_WRITE"] = (long)Opcode.Write,
            ["FUSE_STATFS"] = (long)Opcode.Statfs, ["FUSE_RELEASE"] = (long)Opcode.Release,
            ["FUSE_FLUSH"] = (long)Opcode.Flush, ["FUSE_INIT"] = (long)Opcode.Init,
            ["FUSE_OPENDIR"] = (long)Opcode.Opendir, ["FUSE_READDIR"] = (long)Opcode.Readdir,
            ["FUSE_RELEASEDIR"] = (long)Opcode.Releasedir, ["FUSE_ACCESS"] = (long)Opcode.Access,
            ["FUSE_CREATE"] = (long)Opcode.Create, ["FUSE_INTERRUPT"] = (long)Opcode.Interrupt,
            ["FUSE_DESTROY"] = (long)Opcode.Destroy, ["FUSE_BATCH_FORGET"] = (long)Opcode.BatchForget,
            ["FUSE_READDIRPLUS"] = (long)Opcode.Readdirplus, ["FUSE_RENAME2"] = (long)Opcode.Rename2,
            ["FUSE_TMPFILE"] = (long)Opcode.Tmpfile,
            ["FUSE_ASYNC_READ"] = FUSE_ASYNC_READ, ["FUSE_ATOMIC_O_TRUNC"] = FUSE_ATOMIC_O_TRUNC,
            ["FUSE_BIG_WRITES"] = FUSE_BIG_WRITES, ["FUSE_PARALLEL_DIROPS"] = FUSE_PARALLEL_DIROPS,
            ["FUSE_MAX_PAGES"] = FUSE_MAX_PAGES,
            ["FOPEN_DIRECT_IO"] = FOPEN_DIRECT_IO, ["FOPEN_NOFLUSH"] = FOPEN_NOFLUSH,
            ["FATTR_MODE"] = FATTR_MODE, ["FATTR_UID"] = FATTR_UID, ["FATTR_GID"] = FATTR_GID,
            ["FATTR_SIZE"] = FATTR_SIZE, ["FATTR_ATIME"] = FATTR_ATIME, ["FATTR_MTIME"] = FATTR_MTIME,
            ["FATTR_CTIME"] = FATTR_CTIME, ["FATTR_ATIME_NOW"] = FATTR_ATIME_NOW, ["FATTR_MTIME_NOW"] = FATTR_MTIME_NOW,
            ["BUFFER_FITS"] = 1,
        };
        return e;
    }

    [FactNeedsCc("/usr/include/linux/fuse.h", "linux-libc-dev")]
    public void DeclarationsMatchTheInstalledFuseH()
    {
        CHeaderCheck.AssertMatches($$"""
            #include <stddef.h>
            #include <stdio.h>
            #include <linux/fuse.h>
            /* the kernel refuses a read buffer smaller than FUSE_MIN_READ_BUFFER or than headers + max_write */
            #define BUFFER_FITS ({{InBufferSize}} >= FUSE_MIN_READ_BUFFER && {{InBufferSize}} - sizeof(struct fuse_in_header) - sizeof(struct fuse_write_in) >= {{MaxWrite}})
            """, Expectations());
    }
}
