namespace SandboxRunc.Fuse;

/// <summary>
/// Who sent a FUSE request, from the request header: the caller's pid as the server sees it (the host's;
/// 0 when the caller is not visible from the server's pid namespace) and its fsuid/fsgid as host IDs.
/// </summary>
public readonly record struct FuseCaller(int Pid, uint Uid, uint Gid);

public enum FuseNodeKind { File, Directory, Symlink }

/// <summary>What LOOKUP/GETATTR report for a node: its kind, permission bits (07777) and host owner.</summary>
public readonly record struct FuseNode(FuseNodeKind Kind, uint Mode, uint Uid, uint Gid);

/// <summary>
/// The contract between the FUSE protocol server (Fuse/) and what it serves (Emulation/): a tree addressed
/// by path relative to the mount root ("" is the root, "proc/sys/kernel/panic" a file below it).
/// Implementations are thread-safe, bounded in time (no call may wait on anything the container controls
/// without a timeout) and throw nothing: they return 0 or a negative errno (-ENOENT, -EACCES, -EINVAL...).
/// Files are procfs-like: their content is produced whole when opened (<see cref="Read"/>) and served from
/// that snapshot by offset; a write is one whole value written at offset 0 (<see cref="Write"/>).
/// </summary>
public interface IFuseFileSystem
{
    int Lookup(string path, FuseCaller caller, out FuseNode node);
    int List(string path, FuseCaller caller, out IReadOnlyList<(string Name, FuseNodeKind Kind)> entries);
    int Read(string path, FuseCaller caller, out byte[] content);
    int Write(string path, FuseCaller caller, ReadOnlySpan<byte> data);
    int ReadLink(string path, FuseCaller caller, out string target);
}
