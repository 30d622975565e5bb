// Namespaced sysctls are served from the caller's own namespaces: a dedicated OS thread enters the caller's
// net/uts/ipc namespace with setns (per-thread for these three, allowed in a multi-threaded process),
// touches the real /proc/sys file (procfs resolves /proc/sys/net, kernel.hostname and the ipc entries
// through the calling thread's nsproxy), and returns to the namespace it saved at start. If it cannot
// return, the thread is retired (it exits, so nothing else ever runs in the wrong namespace) and the next
// request starts a fresh one. Requests queue on that one thread; a caller waits at most the given timeout
// (-EIO after), and the work itself is a handful of local syscalls that never wait on the container.
using System.Collections.Concurrent;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;

namespace SandboxRunc.Emulation;

/// <summary>Access to /proc/sys in the namespaces of a host pid. Keys in slash form below /proc/sys. 0 or -errno.</summary>
public interface INamespacedSysctls : IDisposable
{
    int Stat(int pid, NamespaceKind ns, string key, out FuseNodeKind kind, out uint mode);
    int List(int pid, NamespaceKind ns, string key, out List<(string Name, FuseNodeKind Kind)> entries);
    int Read(int pid, NamespaceKind ns, string key, out byte[] content);
    int Write(int pid, NamespaceKind ns, string key, byte[] data);
}

public sealed class SetnsSysctls : INamespacedSysctls
{
    const int CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000, CLONE_NEWNET = 0x40000000;

    sealed class Job(int pid, NamespaceKind ns, Func<int> work)
    {
        public readonly int Pid = pid;
        public readonly NamespaceKind Ns = ns;
        public readonly Func<int> Work = work;
        public readonly ManualResetEventSlim Done = new(false);
        public int Result;
    }

    readonly TimeSpan _timeout;
    readonly object _lock = new();
    BlockingCollection<Job>? _queue;
    bool _disposed;

    public SetnsSysctls(TimeSpan timeout) => _timeout = timeout;

    static (string Name, int Flag) Ns(NamespaceKind k) => k switch
    {
        NamespaceKind.Net => ("net", CLONE_NEWNET),
        NamespaceKind.Uts => ("uts", CLONE_NEWUTS),
        _ => ("ipc", CLONE_NEWIPC),
    };

    static string PathOf(string key) => key.Length == 0 ? "/proc/sys" : "/proc/sys/" + key;

    public int Stat(int pid, NamespaceKind ns, string key, out FuseNodeKind kind, out uint mode)
    {
        FuseNodeKind k = default;
        uint m = 0;
        int r = Run(pid, ns, () => HostFiles.Stat(PathOf(key), out k, out m));
        (kind, mode) = (k, m);
        return r;
    }

    public int List(int pid, NamespaceKind ns, string key, out List<(string Name, FuseNodeKind Kind)> entries)
    {
        List<(string, FuseNodeKind)> e = [];
        int r = Run(pid, ns, () => HostFiles.List(PathOf(key), out e));
        entries = r == 0 ? e : [];
        return r;
    }

    public int Read(int pid, NamespaceKind ns, string key, out byte[] content)
    {
        byte[] c = [];
        int r = Run(pid, ns, () => HostFiles.Read(PathOf(key), out c));
        content = r == 0 ? c : [];
        return r;
    }

    public int Write(int pid, NamespaceKind ns, string key, byte[] data) =>
        Run(pid, ns, () => HostFiles.Write(PathOf(key), data));

    int Run(int pid, NamespaceKind ns, Func<int> work)
    {
        if (pid <= 0) return -Libc.EACCES;
        var job = new Job(pid, ns, work);
        lock (_lock)
        {
            if (_disposed) return -Libc.EIO;
            // A retired worker completes its queue on its own thread: start a fresh one and retry once.
            if (_queue is null || !_queue.TryAddSafe(job)) { _queue = StartWorker(); _queue.Add(job); }
        }
        if (!job.Done.Wait(_timeout)) return -Libc.EIO;
        return job.Result;
    }

    BlockingCollection<Job> StartWorker()
    {
        var queue = new BlockingCollection<Job>();
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
                bool stranded = false;
                try { job.Result = Enter(job, own, out stranded); }
                catch (Exception) { job.Result = -Libc.EIO; }
                job.Done.Set();
                if (stranded)
                {
                    // Never serve another request from a thread left in a container's namespace.
                    queue.CompleteAdding();
                    foreach (var rest in queue.GetConsumingEnumerable()) { rest.Result = -Libc.EIO; rest.Done.Set(); }
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
        int fd = Libc.open($"/proc/{job.Pid}/ns/{name}", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        // A caller that is gone (or hidden) cannot be identified: never fall back to the host's value.
        if (fd < 0) return -Libc.EACCES;
        try
        {
            if (Libc.syscall(Libc.SYS_setns, fd, flag, 0, 0, 0, 0) != 0) return -Libc.EACCES;
        }
        finally { Libc.close(fd); }
        int result;
        try { result = job.Work(); }
        finally
        {
            if (Libc.syscall(Libc.SYS_setns, back.Fd, flag, 0, 0, 0, 0) != 0) stranded = true;
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
