// Namespaced sysctls are served from the caller's own namespaces: a dedicated OS thread enters the caller's
// net/uts/ipc namespace with setns (per-thread for these three, allowed in a multi-threaded process),
// touches the real /proc/sys file (procfs resolves /proc/sys/net, kernel.hostname and the ipc entries
// through the calling thread's nsproxy), and returns to the namespace it saved at start. If it cannot
// return, the thread is retired (it exits, so nothing else ever runs in the wrong namespace) and the next
// request starts a fresh one.
//
// Which namespace: the caller's thread is named by a handle taken while it waits for its FUSE request
// (IFuseRequest.CallerThread: a pidfd, or before Linux 6.9 for a thread that leads no process its /proc/TID
// directory), and the worker enters through that handle, never by opening /proc/PID/ns/* by id
// later: a pid whose caller has gone may have been reused by a host process, and an
// authorised write would then land in the host's namespace. A write is authorised inside the entered
// namespace, on the very namespace it lands in (the user namespace owning it, NS_GET_USERNS), and only
// while the caller still waits (IFuseRequest.Commit).
//
// The queue is bounded (MaxQueued, -EAGAIN beyond); a caller waits at most the given timeout (-EIO after),
// and a job whose caller stopped waiting (timed out here, or answered by the FUSE watchdog) is dropped
// before it runs; a job that is running is waited for (a handful of local syscalls that never wait on the
// container), so the handle it uses is still open.
using System.Collections.Concurrent;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Emulation;

/// <summary>From the user namespace owning the entered namespace: 0 when the caller may, else -errno.</summary>
public delegate int NamespaceAuthorizer(UserNamespaceChain owner);

/// <summary>Access to /proc/sys in the namespaces of a FUSE caller. Keys in slash form below /proc/sys. 0 or -errno.</summary>
public interface INamespacedSysctls : IDisposable
{
    int Stat(FuseCaller caller, NamespaceKind ns, string key, out FuseNodeKind kind, out uint mode);
    int List(FuseCaller caller, NamespaceKind ns, string key, out List<(string Name, FuseNodeKind Kind)> entries);
    /// <summary>Reads an entry; one that "other" may not read only when <paramref name="mayReadPrivate"/> says 0.</summary>
    int Read(FuseCaller caller, NamespaceKind ns, string key, NamespaceAuthorizer mayReadPrivate, out byte[] content);
    /// <summary>Writes an entry when <paramref name="authorize"/> says 0 for the namespace it lands in.</summary>
    int Write(FuseCaller caller, NamespaceKind ns, string key, ReadOnlySpan<byte> data, NamespaceAuthorizer authorize);
}

public sealed class SetnsSysctls : INamespacedSysctls
{
    /// <summary>Jobs waiting for the worker at most; a FUSE server has a few readers, so more means a stuck worker.</summary>
    public const int MaxQueued = 64;

    const int Queued = 0, Running = 1, Cancelled = 2;

    sealed class Job(ThreadHandle caller, IFuseRequest? request, NamespaceKind ns, Func<int> work)
    {
        public readonly ThreadHandle Caller = caller;
        public readonly IFuseRequest? Request = request;
        public readonly NamespaceKind Ns = ns;
        public readonly Func<int> Work = work;
        public readonly ManualResetEventSlim Done = new(false);
        public int State;
        public int Result;
    }

    readonly TimeSpan _timeout;
    readonly object _lock = new();
    BlockingCollection<Job>? _queue;
    bool _disposed;

    public SetnsSysctls(TimeSpan timeout) => _timeout = timeout;

    static (string Name, int Flag) Ns(NamespaceKind k) => k switch
    {
        NamespaceKind.Net => ("net", Libc.CLONE_NEWNET),
        NamespaceKind.Uts => ("uts", Libc.CLONE_NEWUTS),
        _ => ("ipc", Libc.CLONE_NEWIPC),
    };

    static string PathOf(string key) => key.Length == 0 ? "/proc/sys" : "/proc/sys/" + key;

    public int Stat(FuseCaller caller, NamespaceKind ns, string key, out FuseNodeKind kind, out uint mode)
    {
        FuseNodeKind k = default;
        uint m = 0;
        int r = Run(caller, ns, () => HostFiles.Stat(PathOf(key), out k, out m));
        (kind, mode) = (k, m);
        return r;
    }

    public int List(FuseCaller caller, NamespaceKind ns, string key, out List<(string Name, FuseNodeKind Kind)> entries)
    {
        List<(string, FuseNodeKind)> e = [];
        int r = Run(caller, ns, () => HostFiles.List(PathOf(key), out e));
        entries = r == 0 ? e : [];
        return r;
    }

    public int Read(FuseCaller caller, NamespaceKind ns, string key, NamespaceAuthorizer mayReadPrivate, out byte[] content)
    {
        byte[] c = [];
        int r = Run(caller, ns, () =>
        {
            int s = HostFiles.Stat(PathOf(key), out _, out uint mode);
            if (s != 0) return s;
            if ((mode & 4) == 0 && (s = Authorize(ns, mayReadPrivate)) != 0) return s;
            return HostFiles.Read(PathOf(key), out c, HostFiles.MaxMirrored);
        });
        content = r == 0 ? c : [];
        return r;
    }

    public int Write(FuseCaller caller, NamespaceKind ns, string key, ReadOnlySpan<byte> data, NamespaceAuthorizer authorize)
    {
        byte[] bytes = data.ToArray();
        return Run(caller, ns, () =>
        {
            int a = Authorize(ns, authorize);
            if (a != 0) return a;
            // The last moment the caller may have gone: from here on the write and its answer go together.
            if (caller.Request is { } request && !request.Commit()) return -Libc.EINTR;
            return HostFiles.Write(PathOf(key), bytes);
        });
    }

    /// <summary>On the worker, inside the entered namespace: asks <paramref name="decide"/> about the user namespace owning it.</summary>
    static int Authorize(NamespaceKind ns, NamespaceAuthorizer decide)
    {
        int fd = Libc.open("/proc/thread-self/ns/" + Ns(ns).Name, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return -Libc.EACCES;
        try { return UserNamespaceChain.OwnerOf(fd) is { } owner ? decide(owner) : -Libc.EACCES; }
        finally { Libc.close(fd); }
    }

    int Run(FuseCaller caller, NamespaceKind ns, Func<int> work)
    {
        if (caller.Pid <= 0) return -Libc.EACCES;
        // The caller's thread: the request's handle (taken while it waits), or, outside a FUSE server, one taken now.
        ThreadHandle? own = null;
        ThreadHandle? thread = caller.Request is { } request ? request.CallerThread() : own = ThreadHandle.Open(caller.Pid);
        // A caller that is gone (or hidden) cannot be identified: never fall back to the host's value.
        if (thread is null) return -Libc.EACCES;
        try
        {
            var job = new Job(thread, caller.Request, ns, work);
            lock (_lock)
            {
                if (_disposed) return -Libc.EIO;
                // A retired worker completes its queue on its own thread: start a fresh one.
                if (_queue is null || _queue.IsAddingCompleted) _queue = StartWorker();
                if (!_queue.TryAddSafe(job)) return -Libc.EAGAIN;   // full: a stuck worker, or a flood
            }
            if (!job.Done.Wait(_timeout))
            {
                // Not run yet: it never will be. Running: its work is short, wait for it (it uses our handle).
                if (Interlocked.CompareExchange(ref job.State, Cancelled, Queued) == Queued) return -Libc.EIO;
                job.Done.Wait();
            }
            return job.Result;
        }
        finally { own?.Dispose(); }
    }

    BlockingCollection<Job> StartWorker()
    {
        var queue = new BlockingCollection<Job>(MaxQueued);
        var thread = new Thread(() => Worker(queue)) { IsBackground = true, Name = "emulation-setns" };
        thread.Start();
        return queue;
    }

    void Worker(BlockingCollection<Job> queue)
    {
        // The namespaces to come back to, opened before ever leaving them.
        var own = new Dictionary<NamespaceKind, SafeFd>();
        foreach (var k in new[] { NamespaceKind.Net, NamespaceKind.Uts, NamespaceKind.Ipc })
        {
            int fd = Libc.open("/proc/thread-self/ns/" + Ns(k).Name, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd >= 0) own[k] = new SafeFd(fd);
        }
        try
        {
            foreach (var job in queue.GetConsumingEnumerable())
            {
                // Dropped unrun: its caller timed out here, or the FUSE watchdog answered it already.
                if (Interlocked.CompareExchange(ref job.State, Running, Queued) != Queued) continue;
                bool stranded = false;
                try { job.Result = job.Request?.Abandoned == true ? -Libc.EINTR : Enter(job, own, out stranded); }
                catch (Exception) { job.Result = -Libc.EIO; }
                job.Done.Set();
                if (stranded)
                {
                    // Never serve another request from a thread left in a container's namespace.
                    queue.CompleteAdding();
                    foreach (var rest in queue.GetConsumingEnumerable())
                        if (Interlocked.CompareExchange(ref rest.State, Running, Queued) == Queued)
                        {
                            rest.Result = -Libc.EIO;
                            rest.Done.Set();
                        }
                    return;
                }
            }
        }
        finally { foreach (var fd in own.Values) fd.Dispose(); }
    }

    static int Enter(Job job, Dictionary<NamespaceKind, SafeFd> own, out bool stranded)
    {
        stranded = false;
        var (name, flag) = Ns(job.Ns);
        if (!own.TryGetValue(job.Ns, out var back)) return -Libc.EIO;
        // The caller's namespace through its handle: the thread that waited for this request, whatever its id is now.
        if (job.Caller.EnterNamespace(name, flag) != 0) return -Libc.EACCES;
        int result;
        try { result = job.Work(); }
        finally
        {
            if (Libc.setns(back.Fd, flag) != 0) stranded = true;
        }
        return result;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _queue?.CompleteAdding();
        }
    }
}

static class BlockingCollectionExtensions
{
    internal static bool TryAddSafe<T>(this BlockingCollection<T> queue, T item)
    {
        try { return queue.TryAdd(item); }
        catch (InvalidOperationException) { return false; }   // CompleteAdding was called
    }
}
