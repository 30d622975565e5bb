using System.Text;
using static SandboxRunc.Fuse.FuseProtocol;

namespace SandboxRunc.Fuse;

/// <summary>
/// One handler per opcode. Each reads its argument struct after the header, writes its result struct
/// after the reply header in the reader's Out buffer, and returns the result's length, a negative errno,
/// or <see cref="NoReply"/> (FORGET, BATCH_FORGET, a handled INTERRUPT).
///
/// What users see: files are procfs-like (content read through the server with FOPEN_DIRECT_IO from a
/// snapshot, or for large files from the host file by offset); unlike procfs their size is the snapshot's
/// length or the host file's size (see <see cref="Sized"/>); a write is one whole value at offset 0 handed to
/// <see cref="IFuseFileSystem.Write"/> at once (so its error reaches write(2)); a write at a later
/// offset is EINVAL (no partial values are pieced together), except with O_APPEND, where every write is
/// a whole value as well ("echo 1 >> file" works as on procfs). Truncation to 0 succeeds (O_TRUNC, so that
/// "echo 1 > file" works); every other change of attributes and every namespace change (create, mkdir,
/// unlink, rename, link, symlink, xattrs) is EPERM. Other opcodes get ENOSYS, which the kernel
/// remembers and does not send again. Limits (see <see cref="FuseServerOptions"/>): open handles and their
/// snapshot bytes, nodes, prefetched contents; an OPEN or LOOKUP beyond them is ENFILE.
/// </summary>
public sealed unsafe partial class FuseServer
{
    const int NoReply = int.MinValue;
    const int O_ACCMODE = 3, O_WRONLY = 1, O_APPEND = 0x400;

    readonly ulong _startSeconds;
    uint _minor;

    int Dispatch(Worker w, InHeader* h, byte* body, int bodyLength, IFuseRequest request)
    {
        byte* result = w.Out + sizeof(OutHeader);
        var caller = new FuseCaller((int)h->Pid, h->Uid, h->Gid) { Request = request };
        switch (h->Opcode)
        {
            case Opcode.Init: return bodyLength < sizeof(InitIn) ? -EINVAL : Init((InitIn*)body, (InitOut*)result);
            case Opcode.Lookup: return Lookup(h->NodeId, body, bodyLength, caller, (EntryOut*)result);
            case Opcode.Forget:
                if (bodyLength >= sizeof(ForgetIn)) _nodes.Forget(h->NodeId, ((ForgetIn*)body)->Nlookup);
                return NoReply;
            case Opcode.BatchForget: BatchForget(body, bodyLength); return NoReply;
            case Opcode.Getattr: return Getattr(h->NodeId, caller, (AttrOut*)result);
            case Opcode.Setattr: return bodyLength < sizeof(SetattrIn) ? -EINVAL : Setattr(h->NodeId, (SetattrIn*)body, caller, (AttrOut*)result);
            case Opcode.Readlink: return Readlink(h->NodeId, caller, result);
            case Opcode.Open: return bodyLength < sizeof(OpenIn) ? -EINVAL : Open(h->NodeId, (OpenIn*)body, caller, (OpenOut*)result);
            case Opcode.Read: return bodyLength < sizeof(ReadIn) ? -EINVAL : Read((ReadIn*)body, result);
            case Opcode.Write: return bodyLength < sizeof(WriteIn) ? -EINVAL : Write((WriteIn*)body, bodyLength, caller, (WriteOut*)result);
            case Opcode.Release or Opcode.Releasedir:
                if (bodyLength >= sizeof(ReleaseIn)) _handles.Remove(((ReleaseIn*)body)->Fh);
                return 0;
            case Opcode.Opendir: return Opendir(h->NodeId, caller, (OpenOut*)result);
            case Opcode.Readdir: return bodyLength < sizeof(ReadIn) ? -EINVAL : Readdir((ReadIn*)body, result);
            case Opcode.Statfs: return Statfs((StatfsOut*)result);
            case Opcode.Flush or Opcode.Fsync or Opcode.Fsyncdir or Opcode.Access: return 0;
            case Opcode.Interrupt: return bodyLength < sizeof(InterruptIn) ? -EINVAL : Interrupt(((InterruptIn*)body)->Unique);
            case Opcode.Destroy: _stopped = true; return 0;
            case Opcode.Mknod or Opcode.Mkdir or Opcode.Unlink or Opcode.Rmdir or Opcode.Rename or Opcode.Rename2
                or Opcode.Link or Opcode.Symlink or Opcode.Create or Opcode.Tmpfile or Opcode.Setxattr
                or Opcode.Removexattr or Opcode.Fallocate or Opcode.CopyFileRange:
                return -EPERM;
            default: return -ENOSYS;
        }
    }

    /// <summary>Undoes what a reply would have handed the kernel when the watchdog answered instead.</summary>
    void Abandoned(InHeader* h, byte* result, int length)
    {
        if (length < 0) return;
        switch (h->Opcode)
        {
            case Opcode.Lookup: _nodes.Forget(((EntryOut*)result)->NodeId, 1); break;
            case Opcode.Open or Opcode.Opendir: _handles.Remove(((OpenOut*)result)->Fh); break;
        }
    }

    int Init(InitIn* i, InitOut* o)
    {
        if (i->Major != KernelMajor || i->Minor < OldestMinor) return -EPROTO;
        _minor = Math.Min(i->Minor, OurMinor);
        *o = default;
        o->Major = KernelMajor;
        o->Minor = _minor;
        o->MaxReadahead = i->MaxReadahead;
        o->Flags = i->Flags & (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES);
        o->MaxBackground = 16;
        o->CongestionThreshold = 12;
        o->MaxWrite = MaxWrite;
        o->TimeGran = 1;
        o->MaxPages = MaxRead / 4096;
        Diagnostics.PhaseTrace.Mark("FUSE INIT answered");
        return sizeof(InitOut);
    }

    int Lookup(ulong parent, byte* body, int bodyLength, FuseCaller caller, EntryOut* o)
    {
        string? parentPath = _nodes.PathOf(parent);
        if (parentPath is null) return -ENOENT;
        int nameLength = new ReadOnlySpan<byte>(body, bodyLength).IndexOf((byte)0);
        if (nameLength <= 0) return -EINVAL;
        string path = FuseNodeTable.Child(parentPath, Encoding.UTF8.GetString(body, nameLength));
        int r = _fs.Lookup(path, caller, out var node);
        if (r < 0) return r;
        ulong size = node.Kind == FuseNodeKind.File ? Sized(path, node, caller) : 0;
        *o = default;
        o->NodeId = _nodes.Remember(path);
        if (o->NodeId == 0) return -ENFILE;
        o->Generation = FuseNodeTable.Generation;
        bool file = node.Kind == FuseNodeKind.File;
        SplitTime(file ? TimeSpan.Zero : _options.EntryTimeout, out o->EntryValid, out o->EntryValidNsec);
        SplitTime(file ? TimeSpan.Zero : _options.AttrTimeout, out o->AttrValid, out o->AttrValidNsec);
        FillAttr(path, node, &o->Attr);
        o->Attr.Size = size;
        return sizeof(EntryOut);
    }

    void BatchForget(byte* body, int bodyLength)
    {
        if (bodyLength < sizeof(BatchForgetIn)) return;
        uint count = ((BatchForgetIn*)body)->Count;
        var one = (ForgetOne*)(body + sizeof(BatchForgetIn));
        for (uint k = 0; k < count && sizeof(BatchForgetIn) + (k + 1) * sizeof(ForgetOne) <= bodyLength; k++)
            _nodes.Forget(one[k].NodeId, one[k].Nlookup);
    }

    int Getattr(ulong id, FuseCaller caller, AttrOut* o)
    {
        string? path = _nodes.PathOf(id);
        if (path is null) return -ENOENT;
        int r = _fs.Lookup(path, caller, out var node);
        if (r < 0) return r;
        *o = default;
        bool file = node.Kind == FuseNodeKind.File;
        SplitTime(file ? TimeSpan.Zero : _options.AttrTimeout, out o->AttrValid, out o->AttrValidNsec);
        FillAttr(path, node, &o->Attr);
        if (file) o->Attr.Size = Sized(path, node, caller);
        return sizeof(AttrOut);
    }

    /// <summary>
    /// A file's size is the length of its content now, and that content is kept for the caller's next
    /// OPEN of the same path (<see cref="TakePrefetched"/>). Why not size 0 as procfs: the kernel serves
    /// splice and sendfile (busybox cat) from the page cache, bounded by the inode size even with
    /// FOPEN_DIRECT_IO, so a size-0 file reads as empty there. Files therefore get entry and attribute
    /// timeouts of 0: every open revalidates by LOOKUP, which sets the inode size to the snapshot the
    /// OPEN then serves, and no open reuses the page cache (no FOPEN_KEEP_CACHE).
    /// A large file served by offset (node.Size set) reports its host size and is not read here at all.
    /// The prefetched contents are bounded (count, bytes) and live 200 ms: when they are full, nothing is
    /// kept, and the OPEN reads the content again (its length may then differ from the size reported).
    /// </summary>
    ulong Sized(string path, FuseNode node, FuseCaller caller)
    {
        if (node.Size >= 0) return (ulong)node.Size;
        if (_fs.Read(path, caller, out var content) < 0) return 0; // write-only, or refused: the OPEN will say why
        Prefetch(path, caller.Pid, content);
        return (ulong)content.Length;
    }

    const long PrefetchMs = 200;
    readonly Lock _prefetchLock = new();
    readonly Dictionary<(string, int), (byte[] Content, long At)> _prefetched = [];
    long _prefetchedBytes;

    void Prefetch(string path, int pid, byte[] content)
    {
        long now = Environment.TickCount64;
        lock (_prefetchLock)
        {
            var key = (path, pid);
            if (_prefetched.Remove(key, out var old)) _prefetchedBytes -= old.Content.Length;
            if (_prefetched.Count >= _options.MaxPrefetched || _prefetchedBytes + content.Length > _options.MaxPrefetchedBytes)
            {
                foreach (var (k, v) in _prefetched)
                    if (now - v.At >= PrefetchMs && _prefetched.Remove(k)) _prefetchedBytes -= v.Content.Length;
                if (_prefetched.Count >= _options.MaxPrefetched || _prefetchedBytes + content.Length > _options.MaxPrefetchedBytes) return;
            }
            _prefetched[key] = (content, now);
            _prefetchedBytes += content.Length;
        }
    }

    byte[]? TakePrefetched(string path, FuseCaller caller)
    {
        lock (_prefetchLock)
        {
            if (!_prefetched.Remove((path, caller.Pid), out var p)) return null;
            _prefetchedBytes -= p.Content.Length;
            return Environment.TickCount64 - p.At < PrefetchMs ? p.Content : null;
        }
    }

    int Setattr(ulong id, SetattrIn* i, FuseCaller caller, AttrOut* o)
    {
        const uint changes = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_ATIME | FATTR_MTIME | FATTR_CTIME
            | FATTR_ATIME_NOW | FATTR_MTIME_NOW;
        if ((i->Valid & changes) != 0) return -EPERM;
        string? path = _nodes.PathOf(id);
        if (path is null) return -ENOENT;
        int r = _fs.Lookup(path, caller, out var node);
        if (r < 0) return r;
        if ((i->Valid & FATTR_SIZE) != 0)
        {
            if (node.Kind == FuseNodeKind.Directory) return -EISDIR;
            if (i->Size != 0) return -EPERM;
        }
        *o = default;
        SplitTime(_options.AttrTimeout, out o->AttrValid, out o->AttrValidNsec);
        FillAttr(path, node, &o->Attr);
        return sizeof(AttrOut);
    }

    int Readlink(ulong id, FuseCaller caller, byte* o)
    {
        string? path = _nodes.PathOf(id);
        if (path is null) return -ENOENT;
        int r = _fs.ReadLink(path, caller, out string target);
        if (r < 0) return r;
        if (Encoding.UTF8.GetByteCount(target) > MaxRead) return -EIO;
        return Encoding.UTF8.GetBytes(target, new Span<byte>(o, MaxRead));
    }

    int Open(ulong id, OpenIn* i, FuseCaller caller, OpenOut* o)
    {
        string? path = _nodes.PathOf(id);
        if (path is null) return -ENOENT;
        ulong fh;
        // A write-only open (echo 1 > file) needs no content, and write-only files may refuse Read.
        if ((i->Flags & O_ACCMODE) == O_WRONLY)
            fh = _handles.Add(path, Array.Empty<byte>());
        else if (TakePrefetched(path, caller) is { } prefetched)
            fh = _handles.Add(path, prefetched);
        else
        {
            int r = _fs.Open(path, caller, out var content);
            if (r < 0) return r;
            if (content is null) return -EIO;
            if (content.File is { } file) fh = _handles.Add(path, file);
            else fh = _handles.Add(path, content.Snapshot ?? []);
            if (fh == 0) content.Dispose();
        }
        if (fh == 0) return -ENFILE;
        *o = default;
        o->Fh = fh;
        o->OpenFlags = FOPEN_DIRECT_IO | (_minor >= 35 ? FOPEN_NOFLUSH : 0);
        return sizeof(OpenOut);
    }

    int Read(ReadIn* i, byte* o)
    {
        if (!_handles.TryGet(i->Fh, out var handle)) return -EBADF;
        int room = (int)Math.Min(i->Size, (uint)MaxRead);
        if (handle.File is { } file) return ReadAt(file, i->Offset, o, room);
        byte[] content = handle.Data!;
        if (i->Offset >= (ulong)content.Length) return 0;
        int n = (int)Math.Min((ulong)content.Length - i->Offset, (ulong)room);
        content.AsSpan((int)i->Offset, n).CopyTo(new Span<byte>(o, n));
        return n;
    }

    /// <summary>
    /// pread(2) of the host file straight into the reply (no copy of the file is ever kept), until the
    /// request is filled or the file ends: FUSE takes a short read for the end of the file (the kernel then
    /// shrinks the inode size), and sysfs binary attributes return at most a page per read.
    /// </summary>
    static int ReadAt(Interop.SafeFd file, ulong offset, byte* o, int room)
    {
        if (offset > long.MaxValue) return 0;
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added); // a RELEASE racing an abandoned READ must not close it under us
            int done = 0;
            while (done < room)
            {
                nint n = Interop.Libc.pread(file.Fd, o + done, room - done, (long)offset + done);
                if (n < 0 && Interop.Libc.Errno == EINTR) continue;
                if (n < 0) return done > 0 ? done : -Interop.Libc.Errno;
                if (n == 0) break;
                done += (int)n;
            }
            return done;
        }
        catch (ObjectDisposedException) { return -EBADF; }
        finally { if (added) file.DangerousRelease(); }
    }

    int Write(WriteIn* i, int bodyLength, FuseCaller caller, WriteOut* o)
    {
        if (i->Size > bodyLength - sizeof(WriteIn)) return -EINVAL;
        // One whole value per write, at the start (see the class summary). O_APPEND writes count as at the
        // start: after a write the kernel takes the written length as the file size until it asks us again.
        if (i->Offset != 0 && (i->Flags & O_APPEND) == 0) return -EINVAL;
        if (!_handles.TryGet(i->Fh, out var handle)) return -EBADF;
        int r = _fs.Write(handle.Path, caller, new ReadOnlySpan<byte>((byte*)(i + 1), (int)i->Size));
        if (r < 0) return r;
        *o = default;
        o->Size = i->Size;
        return sizeof(WriteOut);
    }

    int Opendir(ulong id, FuseCaller caller, OpenOut* o)
    {
        string? path = _nodes.PathOf(id);
        if (path is null) return -ENOENT;
        int r = _fs.List(path, caller, out var entries);
        if (r < 0) return r;
        ulong fh = _handles.Add(path, EncodeListing(path, entries));
        if (fh == 0) return -ENFILE;
        *o = default;
        o->Fh = fh;
        return sizeof(OpenOut);
    }

    /// <summary>
    /// READDIR: the listing snapshot holds whole fuse_dirent records; each record's off is the byte
    /// position of the next one, so the kernel's offset is where to continue. Copies whole records only.
    /// </summary>
    int Readdir(ReadIn* i, byte* o)
    {
        if (!_handles.TryGet(i->Fh, out var handle)) return -EBADF;
        byte[] listing = handle.Data ?? [];
        int start = (int)Math.Min(i->Offset, (ulong)listing.Length), end = start;
        int room = (int)Math.Min(i->Size, (uint)MaxRead);
        while (end < listing.Length)
        {
            int size = DirentSize((int)BitConverter.ToUInt32(listing, end + 16));
            if (end + size - start > room) break;
            end += size;
        }
        listing.AsSpan(start, end - start).CopyTo(new Span<byte>(o, end - start));
        return end - start;
    }

    static int Statfs(StatfsOut* o)
    {
        *o = default;
        o->Bsize = 4096;
        o->Frsize = 4096;
        o->Namelen = 255;
        return sizeof(StatfsOut);
    }

    /// <summary>The listing of a directory as fuse_dirent records: ".", "..", then the entries.</summary>
    internal static byte[] EncodeListing(string dir, IReadOnlyList<(string Name, FuseNodeKind Kind)> entries)
    {
        int total = DirentSize(1) + DirentSize(2);
        foreach (var (name, _) in entries) total += DirentSize(Encoding.UTF8.GetByteCount(name));
        var listing = new byte[total];
        int at = 0;
        fixed (byte* p = listing)
        {
            Append(p, ref at, ".", FuseNodeTable.InodeOf(dir), DT_DIR);
            Append(p, ref at, "..", FuseNodeTable.InodeOf(FuseNodeTable.Parent(dir)), DT_DIR);
            foreach (var (name, kind) in entries)
                Append(p, ref at, name, FuseNodeTable.InodeOf(FuseNodeTable.Child(dir, name)), DirentType(kind));
        }
        return listing;
    }

    static void Append(byte* listing, ref int at, string name, ulong ino, uint type)
    {
        var d = (Dirent*)(listing + at);
        int nameLength = Encoding.UTF8.GetBytes(name, new Span<byte>(d + 1, Encoding.UTF8.GetByteCount(name)));
        int size = DirentSize(nameLength);
        d->Ino = ino;
        d->Off = (ulong)(at + size);
        d->NameLen = (uint)nameLength;
        d->Type = type;
        at += size;
    }

    static uint DirentType(FuseNodeKind kind) => kind switch
    {
        FuseNodeKind.Directory => DT_DIR,
        FuseNodeKind.Symlink => DT_LNK,
        _ => DT_REG,
    };

    void FillAttr(string path, FuseNode node, Attr* a)
    {
        a->Ino = FuseNodeTable.InodeOf(path);
        a->Mode = (node.Mode & 0xFFF) | node.Kind switch
        {
            FuseNodeKind.Directory => S_IFDIR,
            FuseNodeKind.Symlink => S_IFLNK,
            _ => S_IFREG,
        };
        a->Nlink = node.Kind == FuseNodeKind.Directory ? 2u : 1u;
        a->Uid = node.Uid;
        a->Gid = node.Gid;
        a->Blksize = 4096;
        a->Atime = a->Mtime = a->Ctime = _startSeconds;
    }

    static void SplitTime(TimeSpan t, out ulong seconds, out uint nanoseconds)
    {
        long ticks = Math.Max(0, t.Ticks);
        seconds = (ulong)(ticks / TimeSpan.TicksPerSecond);
        nanoseconds = (uint)(ticks % TimeSpan.TicksPerSecond * 100);
    }
}
