using SandboxRunc.Interop;

namespace SandboxRunc.Fuse;

/// <summary>
/// Who sent a FUSE request, from the request header: the calling thread's id as the server sees it (the
/// host's; 0 when the caller is not visible from the server's pid namespace) and its fsuid/fsgid as host
/// IDs. <see cref="Request"/> is the request being served (null outside a server, e.g. in unit tests).
/// </summary>
public readonly record struct FuseCaller(int Pid, uint Uid, uint Gid)
{
    public IFuseRequest? Request { get; init; }
}

/// <summary>
/// The request a file-system call serves. A caller waits for its request's answer and cannot exit before
/// (a request in the server's hands is waited for even by a SIGKILLed caller) — unless the server's
/// watchdog answered it already (EINTR for an interrupted caller, ETIMEDOUT for a stuck call), after which
/// the caller may be gone and its pid reused. Hence: identify the caller while the request is open
/// (<see cref="CallerThread"/>), and make every side effect conditional on it (<see cref="Commit"/>).
/// </summary>
public interface IFuseRequest
{
    /// <summary>True once the request was answered without its handler: the caller no longer waits, and nothing may be done on its behalf.</summary>
    bool Abandoned { get; }

    /// <summary>
    /// To call right before a side effect that cannot be undone (a value stored, a host file written): from
    /// then on only the handler answers the request (the watchdog no longer may), so the side effect and the
    /// answer go together. False when the request was abandoned already: do nothing.
    /// </summary>
    bool Commit();

    /// <summary>
    /// A handle on the calling thread (<see cref="ThreadHandle"/>), taken while it still waits for this request, so
    /// it names that thread even if its id is reused later; null when it cannot be had (caller not visible, gone,
    /// or the request abandoned). Owned by the request: closed when the request ends.
    /// </summary>
    ThreadHandle? CallerThread();
}

public enum FuseNodeKind { File, Directory, Symlink }

/// <summary>
/// What LOOKUP/GETATTR report for a node: its kind, permission bits (07777) and host owner. <paramref name="Size"/>:
/// for a file served by offset from a host file (<see cref="FuseContent.Streamed"/>), its size, known without
/// reading it; -1 for the others, whose size is their content's length (a snapshot taken when asked).
/// </summary>
public readonly record struct FuseNode(FuseNodeKind Kind, uint Mode, uint Uid, uint Gid, long Size = -1);

/// <summary>
/// What an OPEN serves: a snapshot taken now (procfs-like: every read of one open sees one value), or an open
/// host file read by offset at each READ (large files, never copied whole). Disposing closes the host file.
/// </summary>
public sealed class FuseContent : IDisposable
{
    public byte[]? Snapshot { get; }
    public SafeFd? File { get; }
    /// <summary>The snapshot's length, or the host file's size when opened.</summary>
    public long Length { get; }

    FuseContent(byte[]? snapshot, SafeFd? file, long length) => (Snapshot, File, Length) = (snapshot, file, length);

    public static FuseContent Of(byte[] snapshot) => new(snapshot, null, snapshot.Length);
    public static FuseContent Streamed(SafeFd file, long length) => new(null, file, length);

    public void Dispose() => File?.Dispose();
}

/// <summary>
/// The contract between the FUSE protocol server (Fuse/) and what it serves (Emulation/): a tree addressed
/// by path relative to the mount root ("" is the root, "proc/sys/kernel/panic" a file below it).
/// Implementations are thread-safe, bounded in time (no call may wait on anything the container controls
/// without a timeout) and throw nothing: they return 0 or a negative errno (-ENOENT, -EACCES, -EINVAL...).
/// Files are procfs-like: their content is produced whole when opened (<see cref="Read"/>) and served from
/// that snapshot by offset, or, for large ones, served from a host file by offset (<see cref="Open"/>); a
/// write is one whole value written at offset 0 (<see cref="Write"/>).
/// </summary>
public interface IFuseFileSystem
{
    int Lookup(string path, FuseCaller caller, out FuseNode node);
    int List(string path, FuseCaller caller, out IReadOnlyList<(string Name, FuseNodeKind Kind)> entries);
    /// <summary>The whole content of a (small) file now.</summary>
    int Read(string path, FuseCaller caller, out byte[] content);
    int Write(string path, FuseCaller caller, ReadOnlySpan<byte> data);
    int ReadLink(string path, FuseCaller caller, out string target);

    /// <summary>What an OPEN for reading serves; by default a snapshot from <see cref="Read"/>.</summary>
    int Open(string path, FuseCaller caller, out FuseContent? content)
    {
        content = null;
        int r = Read(path, caller, out var bytes);
        if (r == 0) content = FuseContent.Of(bytes);
        return r;
    }
}
