using System.Collections.Concurrent;
using SandboxRunc.Diagnostics;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using N = SandboxRunc.Interop.SeccompNotifyAbi;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// Serves the seccomp listeners of one container: one poll thread receives notifications, a few
/// dedicated worker threads (not the thread pool: each unshares CLONE_FS and setns/chroots into
/// callers' mount namespaces, state that must stay on that thread) decide with
/// <see cref="MountRules"/> and answer. Mount work of the container is serialized under one lock
/// so that nothing we vet changes the mount table between our check and our act.
///
/// Fail closed by construction: if the supervisor dies, its listener fds close; the kernel then
/// answers every trapped syscall (pending and future) with ENOSYS. Nothing is allowed by default.
/// </summary>
public sealed class NotifyServer : IDisposable
{
    readonly MountRules _rules;
    readonly RefusalLog _log;
    readonly NamespaceCache _namespaces = new();
    readonly int _workerCount;
    readonly ulong? _pidNs, _netNs;
    readonly Lock _mountLock = new(), _listenersLock = new();
    readonly List<SafeFd> _listeners = [], _added = [];
    readonly BlockingCollection<(SafeFd Listener, N.Notif Notif, long Received)> _queue = new();
    readonly List<Thread> _threads = [];
    readonly SafeFd _wakeRead, _wakeWrite;
    volatile bool _stopping;
    long _continued, _refused, _performed;

    /// <param name="rules">The container's initial mounts and protected paths.</param>
    /// <param name="refusalLogPath">JSON-lines file for refusals (null: none).</param>
    /// <param name="containerInitPid">The container's init: its pid and net namespaces decide
    /// whether a new proc/sysfs becomes a bind of the container's own (null: always).</param>
    public unsafe NotifyServer(MountRules rules, string? refusalLogPath = null, int? containerInitPid = null, int workers = 2)
    {
        N.CheckKernelSizes();
        _rules = rules;
        _log = new RefusalLog(refusalLogPath);
        _workerCount = Math.Max(1, workers);
        if (containerInitPid is int pid)
        {
            _pidNs = NamespaceInode(pid, "pid");
            _netNs = NamespaceInode(pid, "net");
        }
        int* p = stackalloc int[2];
        SysException.Check(Libc.pipe2(p, Libc.O_CLOEXEC | Libc.O_NONBLOCK), "pipe2", "notify wake-up");
        (_wakeRead, _wakeWrite) = (new SafeFd(p[0]), new SafeFd(p[1]));
    }

    /// <summary>The container's own uptime and memory for sysinfo(2); null answers with the host's values.</summary>
    public Func<ContainerSysinfo?>? Sysinfo { get; set; }

    public long Continued => Interlocked.Read(ref _continued);
    public long Refused => Interlocked.Read(ref _refused);
    public long Performed => Interlocked.Read(ref _performed);

    public void Start()
    {
        _threads.Add(new Thread(PollLoop) { IsBackground = true, Name = "notify-poll" });
        for (int i = 0; i < _workerCount; i++)
            _threads.Add(new Thread(WorkerLoop) { IsBackground = true, Name = $"notify-worker-{i}" });
        foreach (var t in _threads) t.Start();
    }

    /// <summary>Adds a listener fd (from the container's init or an exec); the server owns and closes it.</summary>
    public void AddListener(int fd)
    {
        lock (_listenersLock) _added.Add(new SafeFd(fd));
        Wake();
    }

    public int ListenerCount { get { lock (_listenersLock) return _listeners.Count + _added.Count; } }

    /// <summary>Stops the threads and closes the listeners: trapped calls then fail with ENOSYS.</summary>
    public void Stop()
    {
        if (_stopping) return;
        _stopping = true;
        Wake();
        _queue.CompleteAdding();
        foreach (var t in _threads) t.Join();
        lock (_listenersLock)
        {
            foreach (var l in _listeners.Concat(_added)) l.Dispose();
            _listeners.Clear();
            _added.Clear();
        }
    }

    public void Dispose()
    {
        Stop();
        _log.Dispose();
        _namespaces.Dispose();
        _wakeRead.Dispose();
        _wakeWrite.Dispose();
    }

    unsafe void Wake()
    {
        byte b = 1;
        Libc.write(_wakeWrite.Fd, &b, 1);
    }

    unsafe void PollLoop()
    {
        var fds = new Libc.PollFd[1];
        byte* drain = stackalloc byte[64];
        while (!_stopping)
        {
            List<SafeFd> current;
            lock (_listenersLock)
            {
                _listeners.AddRange(_added);
                _added.Clear();
                current = [.. _listeners];
            }
            if (fds.Length != current.Count + 1) fds = new Libc.PollFd[current.Count + 1];
            fds[0] = new Libc.PollFd { Fd = _wakeRead.Fd, Events = Libc.POLLIN };
            for (int i = 0; i < current.Count; i++) fds[i + 1] = new Libc.PollFd { Fd = current[i].Fd, Events = Libc.POLLIN };

            int r;
            fixed (Libc.PollFd* p = fds) r = Libc.poll(p, (ulong)fds.Length, -1);
            if (r < 0) { if (Libc.Errno == Libc.EINTR) continue; throw new SysException("poll", "seccomp listeners", Libc.Errno); }
            if ((fds[0].REvents & Libc.POLLIN) != 0) while (Libc.read(_wakeRead.Fd, drain, 64) > 0) { }

            for (int i = 0; i < current.Count; i++)
            {
                short ev = fds[i + 1].REvents;
                if ((ev & Libc.POLLIN) != 0 && N.Receive(current[i].Fd, out var notif))
                    _queue.Add((current[i], notif, StepProfile.Now()));
                else if ((ev & (Libc.POLLHUP | PollErr | PollNval)) != 0)
                {
                    // Every process of that filter is gone: nothing more will come from it.
                    lock (_listenersLock) _listeners.Remove(current[i]);
                    current[i].Dispose();
                }
            }
        }
    }

    const short PollErr = 8, PollNval = 0x20;

    // SANDBOX_RUNC_STEP_PROFILE: where a vetted call's time goes (Diagnostics/StepProfile.cs); one branch per step when off.
    static class Step { public const int Queue = 0, Read = 1, Handles = 2, Cap = 3, Lookup = 4, MountInfo = 5, Decide = 6, Perform = 7, Answer = 8; }
    static readonly string[] s_steps = ["queue", "read", "handles", "cap", "lookup", "mountinfo", "decide", "perform", "answer"];
    static readonly StepProfile s_mountProfile = new("mount", s_steps), s_umountProfile = new("umount2", s_steps);
    [ThreadStatic] static StepProfile? t_profile;
    [ThreadStatic] static long t_step;
    static void Mark(int step) { if (StepProfile.Enabled && t_profile is { } p) t_step = p.Add(step, t_step); }
    const int UnmountAttempts = 3;

    void WorkerLoop()
    {
        using var performer = new MountPerformer();
        foreach (var (listener, notif, received) in _queue.GetConsumingEnumerable())
        {
            bool added = false;
            try
            {
                listener.DangerousAddRef(ref added);
                t_profile = notif.Data.Nr == Libc.SYS_umount2 ? s_umountProfile : s_mountProfile;
                t_step = t_profile.Add(Step.Queue, received);
                Handle(performer, listener.Fd, notif);
                t_profile.Add(Step.Answer, t_step);
                t_profile.Done();
            }
            catch (ObjectDisposedException) { }
            catch (Exception e)
            {
                Console.Error.WriteLine($"seccomp notify: pid {notif.Pid}: {e.Message}");
                if (added) Answer(listener.Fd, notif.Id, Libc.EPERM);
            }
            finally
            {
                if (added) listener.DangerousRelease();
            }
        }
    }

    unsafe void Handle(MountPerformer performer, int listener, N.Notif n)
    {
        int pid = (int)n.Pid;
        if (n.Data.Arch != NotifyFilter.AUDIT_ARCH_X86_64) { Answer(listener, n.Id, Libc.ENOSYS); return; }
        if (n.Data.Nr == SysinfoAnswer.Nr)
        {
            ulong id = n.Id;
            var view = Sysinfo?.Invoke();
            // An emulation that cannot answer fails the call rather than show the host's values.
            int r = Sysinfo is not null && view is null ? Libc.EIO
                : SysinfoAnswer.Write(pid, n.Data.Args[0], view, () => N.IdValid(listener, id));
            if (N.IdValid(listener, id)) Answer(listener, id, r);
            return;
        }

        // Everything read by pid below (the call's strings, the /proc/PID handles and status) is the
        // caller's only if the notification is still valid after the reads: checked before any use.
        MountCall call;
        try { call = ReadCall(pid, n.Data); }
        catch (SysException e) { Answer(listener, n.Id, e.Errno); return; }
        Mark(Step.Read);

        CallerHandles handles;
        try { handles = CallerHandles.Open(pid, _namespaces); }
        catch (Exception) when (!N.IdValid(listener, n.Id)) { return; } // the caller is gone
        using var _ = handles;
        if (!N.IdValid(listener, n.Id)) return;
        Mark(Step.Handles);

        bool cap = handles.MayMount;
        Mark(Step.Cap);
        if (_rules.DecideWithoutLookup(call, cap) is { } early)
        {
            if (N.IdValid(listener, n.Id)) Conclude(listener, n.Id, pid, call, early, 0);
            return;
        }

        // A call to look up needs the caller's root, cwd, fds and mount table too: opened by pid, so again checked after.
        try
        {
            handles.OpenPaths(status: ProcSelf.NeedsStatus(call.Target) || ProcSelf.NeedsStatus(call.Source),
                mountInfo: call.Syscall != MountSyscall.Umount2);
        }
        catch (Exception) when (!N.IdValid(listener, n.Id)) { return; }
        if (!N.IdValid(listener, n.Id)) return;

        // Only a new proc/sysfs asks which namespaces the caller is in.
        bool kernelFs = IsNewMount(call) && call.FsType is ("proc" or "sysfs");
        bool samePid = true, sameNet = true;
        if (kernelFs)
        {
            try
            {
                samePid = _pidNs is null || NamespaceInode(pid, "pid") == _pidNs;
                sameNet = _netNs is null || NamespaceInode(pid, "net") == _netNs;
            }
            catch (Exception) when (!N.IdValid(listener, n.Id)) { return; }
            if (!N.IdValid(listener, n.Id)) return;
        }

        MountDecision decision;
        int errno;
        lock (_mountLock)
        {
            (decision, errno) = DecideAndPerform(performer, listener, n.Id, call, handles, samePid, sameNet);
            // An unmount whose name no longer showed the mount decided on (ESTALE from the C side): looked up and
            // decided again, a few times, then the kernel's answer for a mount it will not take off (EBUSY).
            for (int again = 0; decision is MountDecision.Unmount && errno == Libc.ESTALE && again < UnmountAttempts; again++)
                (decision, errno) = DecideAndPerform(performer, listener, n.Id, call, handles, samePid, sameNet);
            if (decision is MountDecision.Unmount && errno == Libc.ESTALE) errno = Libc.EBUSY;
        }
        Conclude(listener, n.Id, pid, call, decision, errno);
    }

    void Conclude(int listener, ulong id, int pid, MountCall call, MountDecision decision, int errno)
    {
        switch (decision)
        {
            case MountDecision.Continue:
                Interlocked.Increment(ref _continued);
                if (N.IdValid(listener, id))
                    N.Send(listener, new N.NotifResp { Id = id, Flags = N.SECCOMP_USER_NOTIF_FLAG_CONTINUE });
                return;
            case MountDecision.Refuse r:
                Interlocked.Increment(ref _refused);
                if (r.Policy) LogRefusal(pid, call, r);
                Answer(listener, id, r.Errno);
                return;
            default:
                Interlocked.Increment(ref _performed);
                Answer(listener, id, errno);
                return;
        }
    }

    (MountDecision, int) DecideAndPerform(MountPerformer performer, int listener, ulong id, MountCall call, CallerHandles handles, bool samePid, bool sameNet)
    {
        string? kernelFsPath = IsNewMount(call) ? call.FsType switch { "proc" => "/proc", "sysfs" => "/sys", _ => null } : null;
        ulong flags = call.EffectiveFlags;
        bool followTarget = call.Syscall != MountSyscall.Umount2 || (flags & Libc.UMOUNT_NOFOLLOW) == 0;
        string? source = call.Syscall switch
        {
            MountSyscall.PivotRoot => call.Source,
            MountSyscall.Mount when (flags & Libc.MS_REMOUNT) == 0 && (flags & (Libc.MS_BIND | Libc.MS_MOVE)) != 0 => call.Source,
            _ => null,
        };
        using var lookup = performer.Lookup(handles, ProcSelf.Translate(call.Target, handles.Status), followTarget,
            source is null ? null : ProcSelf.Translate(source, handles.Status), kernelFsPath, targetMounts: call.Syscall == MountSyscall.Umount2);
        var layerPaths = new List<ResolvedPath>();
        try
        {
            Mark(Step.Lookup);
            return DecideAndPerform(performer, listener, id, call, handles, samePid, sameNet, lookup, layerPaths);
        }
        finally
        {
            foreach (var l in layerPaths) l.Dispose();
        }
    }

    (MountDecision, int) DecideAndPerform(MountPerformer performer, int listener, ulong id, MountCall call, CallerHandles handles,
        bool samePid, bool sameNet, Lookup lookup, List<ResolvedPath> layerPaths)
    {
        ulong flags = call.EffectiveFlags;
        // An unmount reads of the table only the target's mount, its parent and what is stacked on the target: with
        // statmount (kernel >= 6.8) those come from the look-up, and the whole table (the kernel writes every line) is
        // read only when a mount lies below the target or the kernel cannot say.
        List<MountEntry> mounts;
        if (lookup.TargetMounts is { } targetMounts) mounts = targetMounts;
        else
        {
            // Opened by pid only now: counts only if the notification is still valid after.
            handles.OpenMountInfo();
            if (!N.IdValid(listener, id)) return (new MountDecision.Refuse(Libc.ENOENT, "caller gone", Policy: false), 0);
            mounts = performer.ReadMountTable(handles.MountInfo);
        }
        Mark(Step.MountInfo);

        // An overlay's layers, each resolved as the kernel would (relative ones from the caller's cwd) and pinned.
        List<LayerFacts>? layers = null;
        if (IsNewMount(call) && call.FsType == "overlay")
        {
            OverlayOptions options;
            try { options = OverlayOptions.Parse(call.Data); }
            catch (FormatException e) { return (new MountDecision.Refuse(Libc.EINVAL, e.Message), 0); }
            layers = [];
            foreach (var layer in options.Layers)
            {
                using var found = performer.Lookup(handles, layer.Path, followTarget: true, null, null);
                if (found.Target is not { } resolved)
                {
                    layers.Add(new LayerFacts(layer, null, null, found.TargetErrno));
                    continue;
                }
                found.Target = null; // ours now: kept open until the overlay is made
                layerPaths.Add(resolved);
                var facts = Facts(resolved, mounts);
                layers.Add(new LayerFacts(layer, facts, resolved.Path.StartsWith('/') ? resolved.Path : null, facts is null ? Libc.EINVAL : 0));
            }
        }

        var targetFacts = Facts(lookup.Target, mounts);
        MountEntry? unmount = null;
        if (call.Syscall == MountSyscall.Umount2 && lookup.Target is { } t && targetFacts is not null)
        {
            // umount2 takes off the topmost mount stacked at the path (the kernel's LOOKUP_MOUNTPOINT:
            // runc's pivot_root(".", ".") + umount2(".") unmounts the old root stacked on the new one).
            unmount = Topmost(targetFacts.Mount, t.IsMountRoot ? targetFacts.Mount.MountPoint : t.Path, mounts);
            if (unmount != targetFacts.Mount) targetFacts = new PathFacts(unmount, true);
            else if (!t.IsMountRoot) unmount = null;
        }
        var sourceFacts = Facts(lookup.Source, mounts);
        int targetErrno = lookup.Target is null ? lookup.TargetErrno : targetFacts is null ? Libc.EINVAL : 0;

        var decision = _rules.Decide(call, new CallerFacts(true, targetFacts, sourceFacts, mounts, samePid, sameNet, layers));
        // A namespace file (nsfs) has no mount in the table: bound when its namespace is the caller's own (NamespaceFile).
        if (decision is MountDecision.Refuse { Policy: false } && sourceFacts is null && lookup.Source is { } nsSource && targetFacts is not null
            && call.Syscall == MountSyscall.Mount && (flags & (Libc.MS_BIND | Libc.MS_REMOUNT | Libc.MS_MOVE)) == Libc.MS_BIND)
            decision = NamespaceFile.OwnedWithin(nsSource.Fd, handles.UserNs) switch
            {
                true => new MountDecision.Bind(false, false),
                false => new MountDecision.Refuse(Libc.EPERM, "the namespace file's namespace is not the container's"),
                null => decision,
            };
        // mount(2) answers a bind of a file onto a directory (or the reverse) with ENOTDIR (graft_tree), which runc's
        // maskPath relies on to fall back to a tmpfs; move_mount, which performs it, would say EINVAL.
        if (decision is MountDecision.Bind && lookup.Source is { Mode: not 0 } bs && lookup.Target is { Mode: not 0 } bt
            && bs.IsDirectory != bt.IsDirectory)
            decision = new MountDecision.Refuse(Libc.ENOTDIR, "bind of a file onto a directory or the reverse", Policy: false);
        if (decision is MountDecision.Refuse { Policy: false } && targetFacts is null && targetErrno != 0)
            decision = new MountDecision.Refuse(targetErrno, "target not resolved", Policy: false);
        if (decision is MountDecision.BindKernelFs k && !IsInitialKernelFs(lookup.KernelFs, k.MountPoint))
            decision = new MountDecision.Continue($"no initial {k.MountPoint} at the namespace root: the kernel decides");
        Mark(Step.Decide);
        if (decision is MountDecision.Continue or MountDecision.Refuse) return (decision, 0);
        if (!N.IdValid(listener, id)) return (new MountDecision.Refuse(Libc.ENOENT, "caller gone", Policy: false), 0);
        if (decision is MountDecision.Overlay o)
        {
            if (lookup.Target is not { } target) return (decision, Libc.ENOENT);
            int made = performer.Overlay(handles, o, layerPaths, target);
            // ENOSYS: the kernel takes no overlay layer by fd (before 6.13: EOPNOTSUPP before 6.5, as on Debian 12 and
            // Ubuntu 22.04, EINVAL from 6.5; see overlay_child in mntns_ops.c): the layers were
            // judged, the kernel mounts them from the caller's strings (README: the residual race on new mounts).
            return made == Libc.ENOSYS
                ? (new MountDecision.Continue("overlay layers judged; this kernel takes no layer by fd: the kernel mounts it"), 0)
                : (decision, made);
        }
        int performed = performer.Perform(handles, decision, lookup, unmount);
        Mark(Step.Perform);
        return (decision, performed);
    }

    static PathFacts? Facts(ResolvedPath? p, List<MountEntry> mounts)
    {
        if (p is null) return null;
        var entry = mounts.FirstOrDefault(m => (ulong)m.Id == p.MountId);
        return entry is null ? null : new PathFacts(entry, p.IsMountRoot);
    }

    /// <summary>The mount the kernel would take off at a place: the last one stacked there, if any.</summary>
    static MountEntry Topmost(MountEntry under, string place, List<MountEntry> mounts)
    {
        var top = under;
        for (int depth = 0; depth < mounts.Count; depth++)
        {
            var above = mounts.LastOrDefault(m => m.ParentId == top.Id && m.Id != top.Id && m.MountPoint == place);
            if (above is null) break;
            top = above;
        }
        return top;
    }

    bool IsInitialKernelFs(ResolvedPath? fs, string mountPoint) =>
        fs is not null && fs.IsMountRoot && _rules.Initial.Any(i => i.MountPoint == mountPoint && i.Major == fs.Major && i.Minor == fs.Minor);

    static bool IsNewMount(MountCall call) =>
        call.Syscall == MountSyscall.Mount &&
        (call.EffectiveFlags & (Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_MOVE | Libc.MS_SHARED | Libc.MS_PRIVATE | Libc.MS_SLAVE | Libc.MS_UNBINDABLE)) == 0;

    static unsafe MountCall ReadCall(int pid, N.SeccompData d)
    {
        if (d.Nr == Libc.SYS_umount2)
            return new MountCall(MountSyscall.Umount2, d.Args[1] & 0xffffffff, null,
                CallerMemory.ReadString(pid, d.Args[0], CallerMemory.PathMax) ?? throw new SysException("umount2", "target", Libc.EFAULT));
        if (d.Nr == NotifyFilter.PivotRoot64)
            return new MountCall(MountSyscall.PivotRoot, 0,
                CallerMemory.ReadString(pid, d.Args[1], CallerMemory.PathMax) ?? throw new SysException("pivot_root", "put_old", Libc.EFAULT),
                CallerMemory.ReadString(pid, d.Args[0], CallerMemory.PathMax) ?? throw new SysException("pivot_root", "new_root", Libc.EFAULT));
        if (d.Nr != Libc.SYS_mount) throw new SysException("seccomp notify", $"syscall {d.Nr}", Libc.ENOSYS);
        ulong flags = d.Args[3];
        var call = new MountCall(MountSyscall.Mount, flags,
            CallerMemory.ReadString(pid, d.Args[0], CallerMemory.PathMax),
            CallerMemory.ReadString(pid, d.Args[1], CallerMemory.PathMax) ?? throw new SysException("mount", "target", Libc.EFAULT),
            CallerMemory.ReadString(pid, d.Args[2], CallerMemory.FsTypeMax));
        ulong f = call.EffectiveFlags;
        if (((f & Libc.MS_REMOUNT) != 0 && (f & Libc.MS_BIND) == 0) || (IsNewMount(call) && call.FsType == "overlay"))
            call = call with { Data = CallerMemory.ReadString(pid, d.Args[4], CallerMemory.DataMax) };
        return call;
    }

    static unsafe ulong NamespaceInode(int pid, string ns)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        string path = $"/proc/{pid}/ns/{ns}";
        SysException.Check(Libc.stat(path, st), "stat", path);
        return *(ulong*)(st + 8);
    }

    static void Answer(int listener, ulong id, int errno)
    {
        if (!N.IdValid(listener, id)) return;
        N.Send(listener, new N.NotifResp { Id = id, Error = errno == 0 ? 0 : -errno });
    }

    void LogRefusal(int pid, MountCall call, MountDecision.Refuse r) =>
        _log.Write(new Refusal(DateTimeOffset.UtcNow, _rules.ContainerId, pid,
            call.Syscall switch { MountSyscall.Mount => "mount", MountSyscall.Umount2 => "umount2", _ => "pivot_root" },
            new RefusalArgs(call.Source, call.Target, call.FsType, $"0x{call.Flags:x}", call.Data), r.Errno, r.Reason));
}
