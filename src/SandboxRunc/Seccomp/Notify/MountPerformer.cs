using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using Ops = SandboxRunc.Seccomp.Notify.MountNamespaceOps;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// The caller's view of the system, read from /proc/PID before anything is decided, in two steps that the
/// server follows each with a check that the notification is still valid (a pid can die and be reused in
/// between; nothing read here counts before that check):
/// <see cref="Open"/> answers whether the caller may mount at all (<see cref="MayMount"/>): all a decision without
/// a look-up needs. In the common case (the caller's user namespace owns its mount namespace, both met before)
/// that is two stat(2)s of its namespace files and one capget(2), no descriptor opened.
/// <see cref="OpenPaths"/>, only for a call that is looked up: its mount and user namespaces, root, cwd, fds,
/// mount table and status text.
/// </summary>
public sealed class CallerHandles : IDisposable
{
    readonly int _pid;
    SafeFd? _mountNs, _userNs, _root, _cwd, _mountInfo, _fds;
    string? _status;

    CallerHandles(int pid) => _pid = pid;

    /// <summary>Whether the caller holds CAP_SYS_ADMIN over the user namespace that owns its mount namespace:
    /// what the kernel asks of mount(2) and umount2(2) (may_mount), and so what we ask before doing them as host
    /// root on its behalf. Decided in <see cref="Open"/>.</summary>
    public bool MayMount { get; private set; }

    public SafeFd MountNs => _mountNs ?? throw new InvalidOperationException("caller namespaces not opened");
    public SafeFd UserNs => _userNs ?? throw new InvalidOperationException("caller namespaces not opened");
    /// <summary>The status text, when it was read (OpenPaths with status, or the general privilege check).</summary>
    public string? Status => _status;
    public SafeFd Root => _root ?? throw new InvalidOperationException("caller paths not opened");
    public SafeFd Cwd => _cwd ?? throw new InvalidOperationException("caller paths not opened");
    public SafeFd MountInfo => _mountInfo ?? throw new InvalidOperationException("caller paths not opened");
    /// <summary>/proc/PID/fd: the caller's own fds, for a path it names as /proc/self/fd/N (see mntns_ops.c).</summary>
    public SafeFd Fds => _fds ?? throw new InvalidOperationException("caller paths not opened");

    const int PathFlags = Libc.O_PATH | Libc.O_CLOEXEC;

    static SafeFd OpenFd(string path, int flags) => new(SysException.Check(Libc.open(path, flags, 0), "open", path));

    /// <summary>Decides <see cref="MayMount"/>; check the notification after.</summary>
    public static CallerHandles Open(int pid, NamespaceCache? cache = null)
    {
        var handles = new CallerHandles(pid);
        try
        {
            // Always the general way (both user namespace chains): a stat-based shortcut for callers whose user
            // namespace owns their mount namespace was tried and taken out, its test answering wrongly in full runs.
            handles.OpenNamespaces();
            handles.MayMount = handles.Holds(cache);
            return handles;
        }
        catch
        {
            handles.Dispose();
            throw;
        }
    }

    void OpenNamespaces()
    {
        string proc = $"/proc/{_pid}";
        _mountNs ??= OpenFd($"{proc}/ns/mnt", Libc.O_RDONLY | Libc.O_CLOEXEC);
        _userNs ??= OpenFd($"{proc}/ns/user", Libc.O_RDONLY | Libc.O_CLOEXEC);
    }

    /// <summary>
    /// The namespaces, root, cwd and fd directory (for a call that is looked up), the status text if
    /// <paramref name="status"/> (a path through /proc/self), the mount table unless <paramref name="mountInfo"/> is
    /// false (an unmount, which may not need it: <see cref="OpenMountInfo"/>); check the notification after.
    /// </summary>
    public void OpenPaths(bool status = true, bool mountInfo = true)
    {
        string proc = $"/proc/{_pid}";
        try
        {
            OpenNamespaces();
            _root ??= OpenFd($"{proc}/root", PathFlags | Libc.O_DIRECTORY);
            _cwd ??= OpenFd($"{proc}/cwd", PathFlags | Libc.O_DIRECTORY);
            _fds ??= OpenFd($"{proc}/fd", PathFlags | Libc.O_DIRECTORY);
            if (status) _status ??= ReadStatus($"{proc}/status");
            if (mountInfo) OpenMountInfo();
        }
        catch
        {
            DisposePaths();
            throw;
        }
    }

    /// <summary>The mount table (by pid: check the notification after).</summary>
    public void OpenMountInfo() => _mountInfo ??= OpenFd($"/proc/{_pid}/mountinfo", Libc.O_RDONLY | Libc.O_CLOEXEC);

    /// <summary>/proc/PID/status in one read (its text is a few KiB; procfs produces it whole at the first read).</summary>
    static unsafe string ReadStatus(string path)
    {
        int fd = SysException.Check(Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", path);
        try
        {
            const int Size = 16384;
            byte* buffer = stackalloc byte[Size];
            int have = 0;
            while (have < Size)
            {
                nint n = Libc.read(fd, buffer + have, Size - have);
                if (n < 0 && Libc.Errno == Libc.EINTR) continue;
                SysException.Check((int)Math.Min(n, 0), "read", path);
                if (n == 0) break;
                have += (int)n;
            }
            return Encoding.UTF8.GetString(buffer, have);
        }
        finally { Libc.close(fd); }
    }

    /// <summary>The general case, from the status text and both namespaces' chains (the kernel's cap_capable).</summary>
    bool Holds(NamespaceCache? cache)
    {
        _status ??= ReadStatus($"/proc/{_pid}/status");
        if (NamespaceCapability.FromStatus(_status) is not { } ids) return false;
        var own = cache is null ? UserNamespaceChain.Of(UserNs.Fd) : cache.Users.Of(UserNs.Fd);
        var target = cache is null ? UserNamespaceChain.OwnerOf(MountNs.Fd) : cache.Users.OwnerOf(MountNs.Fd);
        if (own is null || target is null) return false;
        return NamespaceCapability.Holds(new CallerCredentials(own, ids.Euid, ids.CapEff), target, NamespaceCapability.CAP_SYS_ADMIN);
    }

    void DisposePaths()
    {
        _root?.Dispose();
        _cwd?.Dispose();
        _mountInfo?.Dispose();
        _fds?.Dispose();
        (_root, _cwd, _mountInfo, _fds) = (null, null, null, null);
    }

    public void Dispose()
    {
        DisposePaths();
        _mountNs?.Dispose();
        _userNs?.Dispose();
    }
}

/// <summary>A path the caller named, resolved as the caller would (O_PATH, pinned by the fd).</summary>
public sealed class ResolvedPath(SafeFd fd, ulong mountId, bool isMountRoot, uint major, uint minor, string path) : IDisposable
{
    public SafeFd Fd { get; } = fd;
    public ulong MountId { get; } = mountId;
    public bool IsMountRoot { get; } = isMountRoot;
    public uint Major { get; } = major;
    public uint Minor { get; } = minor;
    /// <summary>The kernel's path of the fd relative to the caller's root.</summary>
    public string Path { get; } = path;
    /// <summary>st_mode (0 when unknown).</summary>
    public uint Mode { get; init; }
    public bool IsDirectory => (Mode & Libc.S_IFMT) == Libc.S_IFDIR;
    public void Dispose() => Fd.Dispose();
}

/// <summary>What <see cref="MountPerformer.Lookup"/> found: each path, or the errno its resolution gave.</summary>
public sealed class Lookup : IDisposable
{
    public ResolvedPath? Target, Source, KernelFs;
    public int TargetErrno, SourceErrno;
    /// <summary>When asked for and the kernel can say (statmount, >= 6.8): the target's mount and its parent, and
    /// no mount lies below the target; all an unmount's decision reads of the mount table (null: read the table).</summary>
    public List<MountEntry>? TargetMounts;
    public void Dispose()
    {
        Target?.Dispose();
        Source?.Dispose();
        KernelFs?.Dispose();
    }
}

/// <summary>
/// A notify worker's way into callers' mount namespaces. Thread-confined: the constructor unshares
/// CLONE_FS so that setns(CLONE_NEWNS) and chroot change this thread only; create it on the thread that
/// uses it and never share it. The entering itself happens in C (<see cref="MountNamespaceOps"/>): a
/// thread inside a container must not allocate managed memory (the GC would open /proc/meminfo there,
/// by name). Everything acts on fds opened and checked under the container's mount lock, so a thread
/// of the caller rewriting its path buffers after we read them changes nothing.
/// </summary>
public sealed unsafe class MountPerformer : IDisposable
{
    readonly SafeFd _ownMountNs, _hostProc;
    readonly Ops.PathResult* _results;

    public MountPerformer()
    {
        SysException.Check(Libc.unshare(Libc.CLONE_FS), "unshare", "CLONE_FS");
        int own = SysException.Check(Libc.open("/proc/thread-self/ns/mnt", Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", "/proc/thread-self/ns/mnt");
        // Kept at a high number: the way back must not be an fd that a stray close elsewhere in the
        // process (a bug, a test) frees and the next open reuses. The C side also checks it is still a
        // mount namespace before entering.
        int high = Libc.fcntl(own, F_DUPFD_CLOEXEC, 900);
        if (high >= 0) { Libc.close(own); own = high; }
        _ownMountNs = new SafeFd(own);
        _hostProc = new SafeFd(SysException.Check(Libc.open("/proc", Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0), "open", "/proc"));
        _results = (Ops.PathResult*)NativeMemory.AllocZeroed((nuint)(3 * sizeof(Ops.PathResult)));
        _facts = (byte*)NativeMemory.AllocZeroed(FactsSize);
    }

    readonly byte* _facts;

    const int F_DUPFD_CLOEXEC = 1030;

    Ops.Enter EnterOf(CallerHandles caller) => new()
    {
        OwnMountNs = _ownMountNs.Fd,
        MountNs = caller.MountNs.Fd,
        Root = caller.Root.Fd,
        Cwd = caller.Cwd.Fd,
        HostProc = _hostProc.Fd,
        CallerFds = caller.Fds.Fd,
    };

    /// <summary>
    /// Resolves, inside the caller's mount namespace and root, the target (following the last symlink or
    /// not), the source if given, and the namespace root's /proc or /sys if asked (for a new proc/sysfs).
    /// </summary>
    public Lookup Lookup(CallerHandles caller, string target, bool followTarget, string? source, string? kernelFs, bool targetMounts = false)
    {
        byte* t = Ops.NativeString(target), s = Ops.NativeString(source), k = Ops.NativeString(kernelFs);
        try
        {
            var enter = EnterOf(caller);
            var facts = new Ops.MountFacts { Buf = _facts, Size = FactsSize };
            int r = Ops.Lookup(&enter, t, followTarget ? 0 : Libc.O_NOFOLLOW, s, k, &_results[0], &_results[1], &_results[2],
                targetMounts && s_statmount ? &facts : null);
            if (r != 0) throw new SysException("enter", "caller mount namespace", r);
            var result = new Lookup();
            (result.Target, result.TargetErrno) = Take(ref _results[0]);
            if (targetMounts && s_statmount && result.Target is not null)
            {
                if (facts.Err == Libc.ENOSYS) s_statmount = false; // this kernel has no statmount: the mount table from now on
                else if (facts.Err == 0 && facts.Children == 0) result.TargetMounts = ParseStatmount(facts.Buf, facts.Count, result.Target.MountId);
            }
            if (source is not null) (result.Source, result.SourceErrno) = Take(ref _results[1]);
            if (kernelFs is not null) (result.KernelFs, _) = Take(ref _results[2]);
            return result;
        }
        finally
        {
            NativeMemory.Free(t);
            NativeMemory.Free(s);
            NativeMemory.Free(k);
        }
    }

    const int FactsSize = 3 * 16384;
    static volatile bool s_statmount = true;
    const ulong StatmountAsked = 0x1 | 0x2 | 0x8 | 0x10 | 0x20; // SB_BASIC, MNT_BASIC, MNT_ROOT, MNT_POINT, FS_TYPE
    const int StatmountStrings = 512; // struct statmount: char str[] after the fixed part

    /// <summary>
    /// Mount entries from statmount records (offsets of struct statmount, kernel >= 6.8), as the mount table would show
    /// them (Source and SuperOptions left empty: an unmount's decision reads neither); null when a record is not as
    /// expected or the first is not the target's mount, so that the caller reads the mount table instead.
    /// </summary>
    static List<MountEntry>? ParseStatmount(byte* buf, int count, ulong targetMountId)
    {
        var list = new List<MountEntry>(count);
        long at = 0;
        for (int i = 0; i < count; i++)
        {
            byte* r = buf + at;
            uint size = *(uint*)r;
            if (size < StatmountStrings || at + size > FactsSize || (*(ulong*)(r + 8) & StatmountAsked) != StatmountAsked) return null;
            string Str(int offsetField)
            {
                uint o = *(uint*)(r + offsetField);
                if (StatmountStrings + o >= size) return "";
                var span = new ReadOnlySpan<byte>(r + StatmountStrings + o, (int)(size - StatmountStrings - o));
                int nul = span.IndexOf((byte)0);
                return nul < 0 ? "" : Encoding.UTF8.GetString(span[..nul]);
            }
            var entry = new MountEntry((int)*(uint*)(r + 56), (int)*(uint*)(r + 60), *(uint*)(r + 16), *(uint*)(r + 20),
                Str(104), Str(108), (MountFlags)(*(ulong*)(r + 64) & (ulong)MountFlags.All), Str(36), "", "");
            at += (size + 7) & ~7u;
            if (i == 0 && ((ulong)entry.Id != targetMountId || entry.MountPoint.Length == 0)) return null;
            // Left out where the mount table leaves it out: outside the caller's root (no mount point to show).
            if (entry.MountPoint.Length > 0 && entry.Root.Length > 0) list.Add(entry);
        }
        return list.Count > 0 ? list : null;
    }

    static (ResolvedPath?, int) Take(ref Ops.PathResult r)
    {
        if (r.Fd < 0) return (null, r.Err == 0 ? Libc.ENOENT : r.Err);
        return (new ResolvedPath(new SafeFd(r.Fd), r.MountId, r.MountRoot != 0, r.DevMajor, r.DevMinor, r.PathText()) { Mode = r.Mode }, 0);
    }

    /// <summary>The caller's mount table, read from the fd opened before anything (a fresh read each time).</summary>
    public static List<MountEntry> ReadMountInfo(SafeFd mountInfo) => Notify.MountInfo.Parse(ReadText(mountInfo));

    static string ReadText(SafeFd mountInfo)
    {
        Libc.lseek(mountInfo.Fd, 0, 0);
        var text = new StringBuilder();
        byte[] buffer = new byte[65536];
        fixed (byte* b = buffer)
            while (true)
            {
                nint n = Libc.read(mountInfo.Fd, b, buffer.Length);
                if (n < 0 && Libc.Errno == Libc.EINTR) continue;
                SysException.Check((int)Math.Min(n, 0), "read", "caller mountinfo");
                if (n == 0) break;
                text.Append(Encoding.UTF8.GetString(buffer, 0, (int)n));
            }
        return text.ToString();
    }

    // A trapped call reads the caller's whole mount table (a fresh read each time), which differs from the last
    // one by a line or two: lines already parsed are taken from this worker's cache of line text -> entry (an
    // entry is a pure function of its line), so a read allocates only for new lines. Bounded: emptied beyond
    // MaxCachedLines. The read buffers are this worker's too (it is thread-confined).
    const int MaxCachedLines = 1024;
    readonly Dictionary<string, MountEntry> _lines = new(StringComparer.Ordinal);
    byte[] _mountInfoBytes = new byte[65536];
    char[] _mountInfoChars = new char[65536];

    /// <summary>As <see cref="ReadMountInfo(SafeFd)"/>, with this worker's buffers and line cache.</summary>
    public List<MountEntry> ReadMountTable(SafeFd mountInfo)
    {
        Libc.lseek(mountInfo.Fd, 0, 0);
        int have = 0;
        while (true)
        {
            if (have == _mountInfoBytes.Length)
            {
                // Bounded by what the kernel shows: a mount namespace holds at most fs.mount-max (100 000) mounts.
                if (have >= 64 << 20) throw new SysException("read", "caller mountinfo", 27 /* EFBIG */);
                Array.Resize(ref _mountInfoBytes, have * 2);
            }
            nint n;
            fixed (byte* b = &_mountInfoBytes[have]) n = Libc.read(mountInfo.Fd, b, _mountInfoBytes.Length - have);
            if (n < 0 && Libc.Errno == Libc.EINTR) continue;
            SysException.Check((int)Math.Min(n, 0), "read", "caller mountinfo");
            if (n == 0) break;
            have += (int)n;
        }
        var bytes = new ReadOnlySpan<byte>(_mountInfoBytes, 0, have);
        int chars = Encoding.UTF8.GetMaxCharCount(have);
        if (_mountInfoChars.Length < chars) _mountInfoChars = new char[chars];
        var text = new ReadOnlySpan<char>(_mountInfoChars, 0, Encoding.UTF8.GetChars(bytes, _mountInfoChars));
        var lookup = _lines.GetAlternateLookup<ReadOnlySpan<char>>();
        var table = new List<MountEntry>();
        while (text.Length > 0)
        {
            int nl = text.IndexOf('\n');
            var line = nl < 0 ? text : text[..nl];
            text = nl < 0 ? default : text[(nl + 1)..];
            if (line.Length == 0) continue;
            if (!lookup.TryGetValue(line, out var entry))
            {
                string s = line.ToString();
                entry = Notify.MountInfo.ParseLine(s);
                if (_lines.Count >= MaxCachedLines) _lines.Clear();
                _lines[s] = entry;
            }
            table.Add(entry);
        }
        return table;
    }

    /// <summary>How long the overlay child may take before it is killed (ETIMEDOUT).</summary>
    const int OverlayTimeoutMs = 20_000;

    /// <summary>
    /// A new overlayfs from the layers resolved by <see cref="Lookup"/> (one fd each, in the order of
    /// <paramref name="decision"/>'s layers), made by a child of ours as the root of the caller's user
    /// namespace and attached at the target (see mntns_ops.c, srn_overlay). 0 or the kernel's errno.
    /// </summary>
    public int Overlay(CallerHandles caller, MountDecision.Overlay decision, IReadOnlyList<ResolvedPath> layers, ResolvedPath target)
    {
        if (layers.Count != decision.Layers.Count) return Libc.EINVAL;
        var natives = new List<nint>();
        byte* Native(string s)
        {
            byte* p = Ops.NativeString(s);
            natives.Add((nint)p);
            return p;
        }
        int* fds = (int*)NativeMemory.Alloc((nuint)(layers.Count * sizeof(int)));
        byte** keys = (byte**)NativeMemory.Alloc((nuint)(layers.Count * sizeof(byte*)));
        byte** options = (byte**)NativeMemory.Alloc((nuint)(Math.Max(1, decision.Options.Count) * sizeof(byte*)));
        try
        {
            for (int i = 0; i < layers.Count; i++)
            {
                fds[i] = layers[i].Fd.Fd;
                keys[i] = Native(decision.Layers[i].Key);
            }
            for (int i = 0; i < decision.Options.Count; i++) options[i] = Native(decision.Options[i]);
            var o = new Ops.Overlay
            {
                UserNsFd = caller.UserNs.Fd, TargetFd = target.Fd.Fd, Count = layers.Count, OptCount = decision.Options.Count,
                LayerFds = fds, LayerKeys = keys, Options = options,
                Attr = (ulong)decision.Set, ReadOnly = decision.Set.HasFlag(MountFlags.ReadOnly) ? 1 : 0, TimeoutMs = OverlayTimeoutMs,
            };
            var enter = EnterOf(caller);
            return Ops.MakeOverlay(&enter, &o);
        }
        finally
        {
            foreach (var p in natives) NativeMemory.Free((void*)p);
            NativeMemory.Free(fds);
            NativeMemory.Free(keys);
            NativeMemory.Free(options);
        }
    }

    /// <summary>Performs a decision other than Continue/Refuse; returns 0 or the errno the kernel gave.</summary>
    public int Perform(CallerHandles caller, MountDecision decision, Lookup lookup, MountEntry? unmount)
    {
        var op = new Ops.Op { TargetFd = lookup.Target?.Fd.Fd ?? -1, SourceFd = lookup.Source?.Fd.Fd ?? -1 };
        var natives = new List<nint>();
        byte* Native(string s)
        {
            byte* p = Ops.NativeString(s);
            natives.Add((nint)p);
            return p;
        }
        try
        {
            switch (decision)
            {
                case MountDecision.SetFlags f:
                    op.Kind = Ops.SetFlags;
                    op.AttrSet = (ulong)f.Set;
                    op.AttrClr = (ulong)f.Clear;
                    if (f.SuperblockOptions.Count > 0)
                    {
                        var array = (byte**)NativeMemory.Alloc((nuint)(f.SuperblockOptions.Count * sizeof(byte*)));
                        natives.Add((nint)array);
                        for (int i = 0; i < f.SuperblockOptions.Count; i++) array[i] = Native(f.SuperblockOptions[i]);
                        op.SbOptions = array;
                        op.SbCount = f.SuperblockOptions.Count;
                    }
                    break;
                case MountDecision.Bind b:
                    op.Kind = Ops.Bind;
                    op.Recursive = b.Recursive ? 1 : 0;
                    op.AttrSet = b.MakeReadOnly ? (ulong)MountFlags.ReadOnly : 0;
                    op.AttrRecursive = 0; // read-only on the top of the copy; what lies below keeps its own flags
                    break;
                case MountDecision.Move:
                    op.Kind = Ops.Move;
                    break;
                case MountDecision.Unmount u:
                    if (unmount is null) return Libc.EINVAL;
                    op.Kind = Ops.Unmount;
                    op.UmountFlags = u.Flags;
                    op.ExpectMountId = (ulong)unmount.Id;
                    op.MountPoint = Native(unmount.MountPoint);
                    // Our O_PATH fd on the mount would make the kernel call it busy.
                    lookup.Target?.Dispose();
                    lookup.Target = null;
                    op.TargetFd = -1;
                    break;
                case MountDecision.BindKernelFs k:
                    if (lookup.KernelFs is null) return Libc.ENOENT;
                    op.Kind = Ops.Bind;
                    op.SourceFd = lookup.KernelFs.Fd.Fd;
                    op.Recursive = 1;
                    op.AttrSet = (ulong)k.Set;
                    op.AttrRecursive = k.Set != MountFlags.ReadOnly && k.Set != MountFlags.None ? 1 : 0;
                    break;
                case MountDecision.PivotRoot:
                    op.Kind = Ops.Pivot;
                    break;
                default:
                    throw new ArgumentException($"not an operation: {decision}");
            }
            var enter = EnterOf(caller);
            return Ops.Perform(&enter, &op);
        }
        finally
        {
            foreach (var p in natives) NativeMemory.Free((void*)p);
        }
    }

    public void Dispose()
    {
        _ownMountNs.Dispose();
        _hostProc.Dispose();
        NativeMemory.Free(_results);
        NativeMemory.Free(_facts);
    }
}
