using System.Collections.Concurrent;
using System.Text;
using SandboxRunc.Fuse;

namespace SandboxRunc.Tests.Fuse;

/// <summary>
/// A small <see cref="IFuseFileSystem"/> for the server's tests: a dictionary of paths. Writes are
/// recorded; reading <see cref="SlowPath"/> blocks until <see cref="Gate"/> opens (after signalling
/// <see cref="SlowEntered"/>), to play a stuck implementation. A write to <see cref="SlowWritePath"/> waits
/// for the gate too and is recorded only if its request can still be committed (with
/// <see cref="CommitBeforeWaiting"/>, it commits first, then waits), and records whether it can still take a handle on
/// its caller's thread (<see cref="CallerThreads"/>). Files added with
/// <see cref="AddStreamed"/> are served by offset from a host file.
/// </summary>
sealed class DictionaryFileSystem : IFuseFileSystem
{
    public const string SlowPath = "slow", SlowWritePath = "slow-write";
    const int ENOENT = 2, ENOTDIR = 20, EINVAL = 22;

    public readonly ConcurrentDictionary<string, (FuseNode Node, byte[] Content, string? Link)> Nodes = new();
    public readonly ConcurrentQueue<(string Path, FuseCaller Caller, string Data)> Writes = new();
    public readonly ManualResetEventSlim Gate = new(false);
    public readonly SemaphoreSlim SlowEntered = new(0);
    public readonly ConcurrentDictionary<string, string> Streamed = new();
    public readonly ConcurrentQueue<bool> Commits = new();
    /// <summary>Whether a write to <see cref="SlowWritePath"/> got a handle on its caller's thread once the gate opened.</summary>
    public readonly ConcurrentQueue<bool> CallerThreads = new();
    public bool CommitBeforeWaiting;
    public int Reads;

    public DictionaryFileSystem()
    {
        AddDirectory("");
    }

    public void AddDirectory(string path, uint mode = 0x1ED /* 0755 */, uint uid = 0) =>
        Nodes[path] = (new FuseNode(FuseNodeKind.Directory, mode, uid, uid), [], null);

    public void AddFile(string path, string content, uint mode = 0x1A4 /* 0644 */, uint uid = 0) =>
        Nodes[path] = (new FuseNode(FuseNodeKind.File, mode, uid, uid), Encoding.UTF8.GetBytes(content), null);

    /// <summary>A file served by offset from <paramref name="hostFile"/> (its size reported at lookup, never read whole).</summary>
    public void AddStreamed(string path, string hostFile)
    {
        Nodes[path] = (new FuseNode(FuseNodeKind.File, 0x124, 0, 0, new FileInfo(hostFile).Length), [], null);
        Streamed[path] = hostFile;
    }

    public int Open(string path, FuseCaller caller, out FuseContent? content)
    {
        content = null;
        if (!Streamed.TryGetValue(path, out var host))
        {
            int r = Read(path, caller, out var bytes);
            if (r == 0) content = FuseContent.Of(bytes);
            return r;
        }
        int fd = SandboxRunc.Interop.Libc.open(host, SandboxRunc.Interop.Libc.O_RDONLY | SandboxRunc.Interop.Libc.O_CLOEXEC, 0);
        if (fd < 0) return -SandboxRunc.Interop.Libc.Errno;
        content = FuseContent.Streamed(new SandboxRunc.Interop.SafeFd(fd), new FileInfo(host).Length);
        return 0;
    }

    public void AddSymlink(string path, string target) =>
        Nodes[path] = (new FuseNode(FuseNodeKind.Symlink, 0x1FF, 0, 0), [], target);

    public int Lookup(string path, FuseCaller caller, out FuseNode node)
    {
        bool found = Nodes.TryGetValue(path, out var entry);
        node = entry.Node;
        return found ? 0 : -ENOENT;
    }

    public int List(string path, FuseCaller caller, out IReadOnlyList<(string Name, FuseNodeKind Kind)> entries)
    {
        entries = [];
        if (!Nodes.TryGetValue(path, out var dir)) return -ENOENT;
        if (dir.Node.Kind != FuseNodeKind.Directory) return -ENOTDIR;
        string prefix = path.Length == 0 ? "" : path + "/";
        entries = Nodes.Where(kv => kv.Key.Length > prefix.Length && kv.Key.StartsWith(prefix, StringComparison.Ordinal)
                                    && kv.Key.IndexOf('/', prefix.Length) < 0)
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => (kv.Key[prefix.Length..], kv.Value.Node.Kind)).ToList();
        return 0;
    }

    public int Read(string path, FuseCaller caller, out byte[] content)
    {
        content = [];
        Interlocked.Increment(ref Reads);
        if (path == SlowPath)
        {
            SlowEntered.Release();
            Gate.Wait();
        }
        if (!Nodes.TryGetValue(path, out var entry)) return -ENOENT;
        content = entry.Content;
        return 0;
    }

    public int Write(string path, FuseCaller caller, ReadOnlySpan<byte> data)
    {
        string text = Encoding.UTF8.GetString(data);
        if (text.StartsWith("bad", StringComparison.Ordinal)) return -EINVAL;
        if (path == SlowWritePath)
        {
            bool committed = CommitBeforeWaiting && caller.Request!.Commit();
            SlowEntered.Release();
            Gate.Wait();
            CallerThreads.Enqueue(caller.Request!.CallerThread() is not null);
            if (!CommitBeforeWaiting) committed = caller.Request!.Commit();
            Commits.Enqueue(committed);
            if (!committed) return -4; // EINTR: the caller no longer waits, nothing is done
        }
        Writes.Enqueue((path, caller, text));
        return 0;
    }

    public int ReadLink(string path, FuseCaller caller, out string target)
    {
        target = "";
        if (!Nodes.TryGetValue(path, out var entry)) return -ENOENT;
        if (entry.Link is null) return -EINVAL;
        target = entry.Link;
        return 0;
    }
}
