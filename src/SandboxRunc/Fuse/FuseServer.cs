using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using static SandboxRunc.Fuse.FuseProtocol;

namespace SandboxRunc.Fuse;

/// <summary>Tuning of a <see cref="FuseServer"/>; the defaults suit a per-container supervisor.</summary>
public sealed record FuseServerOptions
{
    /// <summary>Reader threads started up front, and the number kept once extra ones have been started.</summary>
    public int Threads { get; init; } = 4;
    /// <summary>The most reader threads there may be while calls are slow or stuck.</summary>
    public int MaxThreads { get; init; } = 32;
    /// <summary>A call running this long is slow: if no reader is free another thread starts, and if its
    /// caller was interrupted (a signal, SIGKILL included) the caller gets EINTR now.</summary>
    public TimeSpan SlowCallAfter { get; init; } = TimeSpan.FromMilliseconds(100);
    /// <summary>A call running this long is answered ETIMEDOUT (the thread stays busy until it returns).</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long the kernel may cache a name → node (LOOKUP) and a node's attributes.</summary>
    public TimeSpan EntryTimeout { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan AttrTimeout { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Files and directories open at once, and the bytes of their snapshots (beyond: ENFILE).</summary>
    public int MaxOpen { get; init; } = FuseHandleTable.DefaultMaxOpen;
    public long MaxSnapshotBytes { get; init; } = FuseHandleTable.DefaultMaxSnapshotBytes;
    /// <summary>Node ids the kernel may hold at once (beyond: ENFILE on new lookups).</summary>
    public int MaxNodes { get; init; } = FuseNodeTable.DefaultMaxNodes;
    /// <summary>Contents read at LOOKUP/GETATTR and kept for the next OPEN (see FuseServer.Sized): at most this many, this many bytes.</summary>
    public int MaxPrefetched { get; init; } = 256;
    public long MaxPrefetchedBytes { get; init; } = 1L << 20;
}

/// <summary>
/// Serves an <see cref="IFuseFileSystem"/> on an open /dev/fuse descriptor (see <see cref="FuseMount"/>),
/// speaking the kernel protocol directly.
///
/// Threads. Each reader thread blocks in read(2) on the descriptor with its own preallocated request and
/// reply buffers; the kernel hands every request to exactly one reader, which decodes it, calls the file
/// system, and writes the reply with one write(2). A watchdog thread looks at the readers every
/// SlowCallAfter/2: when every reader is busy and one has been in a call for longer than SlowCallAfter,
/// it starts another reader (up to MaxThreads), so a slow or stuck file-system call never holds up the
/// others. Readers beyond <see cref="FuseServerOptions.Threads"/> exit again once that many are idle.
///
/// Interrupts. A caller that gets a signal while its request is with us makes the kernel send INTERRUPT;
/// a SIGKILLed caller even waits for our reply before it can die. A fast call is simply answered as usual.
/// A slow one (running longer than SlowCallAfter) is answered EINTR by the watchdog at once, which frees
/// the caller; the reader's own late reply is then dropped. Each reader's Claim word (the unique it may
/// still answer) decides with one compare-exchange who answers a request: the reader or the watchdog.
/// A handler about to do something irreversible first commits its request (IFuseRequest.Commit: the
/// Claim word is marked, so that only the reader may answer from then on); a handler whose request the
/// watchdog answered already finds it abandoned and does nothing. The caller's identity is pinned the
/// same way: a pidfd taken while the Claim word shows the request unanswered names the waiting thread.
///
/// Stop. The server ends when read(2) says ENODEV (the mount is gone or the connection aborted) or the
/// descriptor reaches end of file; each reader exits on its own and <see cref="Wait"/> returns when all
/// have. A reader still stuck in a file-system call exits when that call returns.
/// </summary>
public sealed unsafe partial class FuseServer
{
    sealed class Worker(int slot)
    {
        public readonly int Slot = slot;
        public byte* In, Out;
        /// <summary>Unique of the request being handled; 0 while waiting in read(2).</summary>
        public long Current;
        /// <summary>The unique that may still be answered; whoever swaps it to 0 answers.</summary>
        public long Claim;
        /// <summary>Unique the kernel sent an INTERRUPT for.</summary>
        public long Interrupted;
        /// <summary>Environment.TickCount64 when Current was taken.</summary>
        public long BusySince;
    }

    /// <summary>Set in a Claim word by <see cref="Request.Commit"/>: only the reader may answer (uniques stay far below).</summary>
    const long Committed = 1L << 62;

    /// <summary>The request a reader is handling, as the file system sees it (<see cref="IFuseRequest"/>).</summary>
    sealed class Request(Worker worker, long unique, int pid, int device) : IFuseRequest
    {
        ThreadHandle? _caller;
        bool _callerTried;

        public bool Abandoned
        {
            get
            {
                long claim = Volatile.Read(ref worker.Claim);
                return claim != unique && claim != (unique | Committed);
            }
        }

        public bool Commit()
        {
            long claim = Interlocked.CompareExchange(ref worker.Claim, unique | Committed, unique);
            return claim == unique || claim == (unique | Committed);
        }

        public ThreadHandle? CallerThread()
        {
            if (_callerTried) return _caller;
            _callerTried = true;
            var handle = ThreadHandle.Open(pid);
            if (handle is null) return null;
            // Taken while the request was still unanswered, its caller still waiting: the id was that caller's.
            // Unanswered by us is not enough once the connection is aborted (the kernel ends every request and frees
            // its caller, and the id may be reused while we still work): the abort marks the device first.
            if (Abandoned || !Connected(device))
            {
                handle.Dispose();
                return null;
            }
            return _caller = handle;
        }

        public void End() => _caller?.Dispose();
    }

    /// <summary>
    /// False once the connection is aborted (the kernel's fuse_abort_conn marks the device, so that poll says
    /// POLLERR, before it ends the requests being served and frees their callers).
    /// </summary>
    static bool Connected(int device)
    {
        var p = new Libc.PollFd { Fd = device, Events = Libc.POLLIN };
        return Libc.poll(&p, 1, 0) >= 0 && (p.REvents & (Libc.POLLERR | Libc.POLLHUP | Libc.POLLNVAL)) == 0;
    }

    readonly SafeFd _device;
    readonly int _fd;
    readonly IFuseFileSystem _fs;
    readonly FuseServerOptions _options;
    readonly FuseNodeTable _nodes;
    readonly FuseHandleTable _handles;
    readonly Worker?[] _workers;
    readonly Lock _poolLock = new();
    readonly ManualResetEventSlim _done = new(false);
    readonly ManualResetEventSlim _stopWatchdog = new(false);
    int _live, _idle, _started;
    volatile bool _stopped;

    public FuseServer(SafeFd device, IFuseFileSystem fileSystem, FuseServerOptions? options = null)
    {
        _device = device;
        _fd = device.Fd;
        _fs = fileSystem;
        _options = options ?? new FuseServerOptions();
        if (_options.Threads < 1 || _options.MaxThreads < _options.Threads)
            throw new ArgumentException("FuseServerOptions: need 1 <= Threads <= MaxThreads", nameof(options));
        _workers = new Worker?[_options.MaxThreads];
        _nodes = new FuseNodeTable(_options.MaxNodes);
        _handles = new FuseHandleTable(_options.MaxOpen, _options.MaxSnapshotBytes);
        _startSeconds = (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    /// <summary>Starts a server on <paramref name="device"/> and returns it.</summary>
    public static FuseServer Serve(SafeFd device, IFuseFileSystem fileSystem, FuseServerOptions? options = null)
    {
        var server = new FuseServer(device, fileSystem, options);
        server.Start();
        return server;
    }

    /// <summary>Reader threads alive right now.</summary>
    public int ThreadCount => Volatile.Read(ref _live);
    public bool IsStopped => _stopped && ThreadCount == 0;
    /// <summary>Node ids the kernel holds and files/directories open: for tests and diagnostics.</summary>
    public int NodeCount => _nodes.Count;
    public int OpenHandleCount => _handles.OpenCount;
    public long SnapshotBytes => _handles.SnapshotBytes;
    public int PrefetchedCount { get { lock (_prefetchLock) return _prefetched.Count; } }

    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) throw new InvalidOperationException("FuseServer already started");
        bool added = false;
        _device.DangerousAddRef(ref added); // the descriptor stays open until the last reader is gone
        lock (_poolLock)
            for (int i = 0; i < _options.Threads; i++) StartWorker();
        new Thread(Watchdog) { IsBackground = true, Name = "fuse-watchdog" }.Start();
    }

    /// <summary>Waits until every reader has exited (the mount is gone); false on timeout.</summary>
    public bool Wait(TimeSpan timeout) => _done.Wait(timeout);

    // Caller holds _poolLock.
    void StartWorker()
    {
        int slot = Array.IndexOf(_workers, null);
        if (slot < 0 || _stopped) return;
        var w = new Worker(slot);
        _workers[slot] = w;
        _live++;
        new Thread(() => Run(w)) { IsBackground = true, Name = $"fuse-{slot}" }.Start();
    }

    void Run(Worker w)
    {
        w.In = (byte*)NativeMemory.Alloc(InBufferSize);
        w.Out = (byte*)NativeMemory.Alloc(OutBufferSize);
        try
        {
            while (!_stopped)
            {
                Interlocked.Increment(ref _idle);
                nint n = Libc.read(_fd, w.In, InBufferSize);
                int errno = n < 0 ? Libc.Errno : 0;
                Interlocked.Decrement(ref _idle);
                if (n < 0)
                {
                    // EINTR: a signal; ENOENT: the request was aborted while being copied to us.
                    if (errno is EINTR or EAGAIN or ENOENT) continue;
                    break; // ENODEV: unmounted or aborted
                }
                if (n == 0) break; // end of file: only when serving a socket (the unit tests)
                if (n < sizeof(InHeader)) continue;

                var h = (InHeader*)w.In;
                Volatile.Write(ref w.BusySince, Environment.TickCount64);
                Volatile.Write(ref w.Current, (long)h->Unique);
                Volatile.Write(ref w.Claim, (long)h->Unique);
                Handle(w, h, (int)n);
                Volatile.Write(ref w.Claim, 0);
                Volatile.Write(ref w.Current, 0);

                if (Volatile.Read(ref _live) > _options.Threads && Volatile.Read(ref _idle) >= _options.Threads && Retire(w))
                    return; // a surplus reader, no longer needed
            }
            _stopped = true;
        }
        finally
        {
            NativeMemory.Free(w.In);
            NativeMemory.Free(w.Out);
        }
        bool last;
        lock (_poolLock)
            last = Retire(w, force: true) && _live == 0 && _stopped;
        if (last)
        {
            _stopWatchdog.Set();
            _device.DangerousRelease();
            _done.Set();
        }
    }

    /// <summary>Takes the reader out of the pool: only while there are more than Threads, unless forced.</summary>
    bool Retire(Worker w, bool force = false)
    {
        lock (_poolLock)
        {
            if (_workers[w.Slot] != w || (!force && _live <= _options.Threads)) return false;
            _workers[w.Slot] = null;
            _live--;
            return true;
        }
    }

    /// <summary>Decodes one request, runs it and replies (unless the watchdog already did).</summary>
    void Handle(Worker w, InHeader* h, int length)
    {
        int result;
        var request = new Request(w, (long)h->Unique, (int)h->Pid, _fd);
        try
        {
            result = Dispatch(w, h, w.In + sizeof(InHeader), length - sizeof(InHeader), request);
        }
        catch (Exception)
        {
            result = -EIO; // the contract says implementations do not throw; a bug must not kill the reader
        }
        finally
        {
            request.End();
        }
        if (result == NoReply) return;
        if (!Reply(w, h->Unique, result))
            Abandoned(h, w.Out + sizeof(OutHeader), result); // already answered EINTR/ETIMEDOUT
    }

    /// <summary>
    /// Writes header + payload (already in w.Out after the header) for a result that is the payload length
    /// or a negative errno; false when the watchdog answered this request first.
    /// </summary>
    bool Reply(Worker w, ulong unique, int result)
    {
        if (Interlocked.CompareExchange(ref w.Claim, 0, (long)unique) != (long)unique
            && Interlocked.CompareExchange(ref w.Claim, 0, (long)unique | Committed) != ((long)unique | Committed)) return false;
        Send(w.Out, unique, result);
        return true;
    }

    /// <summary>
    /// One write(2) of a reply. Errors are ignored: ENOENT means the kernel no longer waits for this
    /// request (its caller died or the connection is aborting); ENODEV is seen by the readers too.
    /// </summary>
    void Send(byte* buffer, ulong unique, int result)
    {
        if (result < -511) result = -EIO; // the kernel rejects errors outside (-512, 0]
        var o = (OutHeader*)buffer;
        o->Len = (uint)(sizeof(OutHeader) + Math.Max(result, 0));
        o->Error = Math.Min(result, 0);
        o->Unique = unique;
        Libc.write(_fd, buffer, (nint)o->Len);
    }

    /// <summary>Starts readers while calls are slow and answers slow interrupted or timed-out calls.</summary>
    void Watchdog()
    {
        long slowMs = (long)_options.SlowCallAfter.TotalMilliseconds;
        long timeoutMs = (long)_options.CallTimeout.TotalMilliseconds;
        var tick = TimeSpan.FromMilliseconds(Math.Max(1, slowMs / 2));
        byte* buffer = stackalloc byte[sizeof(OutHeader)];
        while (!_stopWatchdog.Wait(tick))
        {
            long now = Environment.TickCount64;
            bool anySlow = false;
            foreach (var w in _workers)
            {
                if (w is null) continue;
                long unique = Volatile.Read(ref w.Current);
                long busy = now - Volatile.Read(ref w.BusySince);
                if (unique == 0 || busy < slowMs) continue;
                anySlow = true;
                int answer = Volatile.Read(ref w.Interrupted) == unique ? -EINTR : busy >= timeoutMs ? -ETIMEDOUT : 0;
                // A committed request (its side effect under way) is the reader's to answer.
                if (answer != 0 && Interlocked.CompareExchange(ref w.Claim, 0, unique) == unique)
                    Send(buffer, (ulong)unique, answer);
            }
            if (anySlow && Volatile.Read(ref _idle) == 0)
                lock (_poolLock)
                    if (_live < _options.MaxThreads) StartWorker();
        }
    }

    /// <summary>INTERRUPT: marks the request so the watchdog answers it if it is slow.</summary>
    int Interrupt(ulong target)
    {
        foreach (var w in _workers)
            if (w is not null && Volatile.Read(ref w.Current) == (long)target)
            {
                Volatile.Write(ref w.Interrupted, (long)target);
                return NoReply;
            }
        // Not (yet) being handled: either answered already, or read by another reader that has not
        // published it yet. EAGAIN makes the kernel queue the interrupt again; for an answered
        // request the kernel finds nothing and drops it.
        return -EAGAIN;
    }
}
