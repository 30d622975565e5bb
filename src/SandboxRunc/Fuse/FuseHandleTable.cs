using SandboxRunc.Interop;

namespace SandboxRunc.Fuse;

/// <summary>
/// Open files and directories, keyed by the fh the kernel echoes back in READ/WRITE/READDIR/RELEASE.
/// A handle is the path it was opened at and what it serves: a snapshot taken at OPEN (a file's content)
/// or OPENDIR (the encoded listing), so every read of one open sees one consistent value, like procfs's
/// seq_file; or an open host file read by offset (large files, see <see cref="FuseContent"/>).
///
/// Bounded: a container holds at most <see cref="MaxOpen"/> handles, <see cref="MaxSnapshotBytes"/> of
/// snapshots and <see cref="MaxFiles"/> open host files (each an fd of this process) at once; beyond,
/// <see cref="Add"/> refuses (the OPEN fails with ENFILE, "too many open files
/// in system", the system here being the container's emulated files). Slots are recycled through a free
/// list: opening and releasing allocates nothing beyond the snapshot. fh is slot index + 1 (0 is never valid).
/// </summary>
sealed class FuseHandleTable(int maxOpen = FuseHandleTable.DefaultMaxOpen, long maxSnapshotBytes = FuseHandleTable.DefaultMaxSnapshotBytes,
    int maxFiles = FuseHandleTable.DefaultMaxFiles)
{
    /// <summary>
    /// Handles are cheap (a slot) and real workloads hold many (every process of a big container with
    /// /proc/stat open): what costs memory is bounded by <see cref="DefaultMaxSnapshotBytes"/>, what costs
    /// descriptors by <see cref="DefaultMaxFiles"/> (well under the process's RLIMIT_NOFILE).
    /// </summary>
    public const int DefaultMaxOpen = 16384, DefaultMaxFiles = 512;
    public const long DefaultMaxSnapshotBytes = 16L << 20;

    public readonly record struct Handle(string Path, byte[]? Data, SafeFd? File);

    readonly Lock _lock = new();
    Handle[] _slots = new Handle[64];
    int[] _free = new int[64];
    int _freeCount, _used, _open, _files;
    long _bytes;

    public int MaxOpen => maxOpen;
    public long MaxSnapshotBytes => maxSnapshotBytes;
    public int OpenCount { get { lock (_lock) return _open; } }
    public long SnapshotBytes { get { lock (_lock) return _bytes; } }

    /// <summary>A handle serving a snapshot; 0 when the table is full (count or bytes).</summary>
    public ulong Add(string path, byte[] data) => Add(new Handle(path, data, null));

    /// <summary>A handle serving a host file by offset (the table owns the descriptor from now on); 0 when full.</summary>
    public ulong Add(string path, SafeFd file) => Add(new Handle(path, null, file));

    ulong Add(Handle handle)
    {
        long size = handle.Data?.Length ?? 0;
        lock (_lock)
        {
            if (_open >= maxOpen || _bytes + size > maxSnapshotBytes || handle.File is not null && _files >= maxFiles) return 0;
            int slot;
            if (_freeCount > 0)
                slot = _free[--_freeCount];
            else
            {
                if (_used == _slots.Length)
                {
                    Array.Resize(ref _slots, _slots.Length * 2);
                    Array.Resize(ref _free, _slots.Length);
                }
                slot = _used++;
            }
            _slots[slot] = handle;
            _open++;
            _bytes += size;
            if (handle.File is not null) _files++;
            return (ulong)slot + 1;
        }
    }

    public bool TryGet(ulong fh, out Handle handle)
    {
        lock (_lock)
        {
            handle = fh - 1 < (ulong)_used ? _slots[fh - 1] : default;
            return handle.Path is not null;
        }
    }

    /// <summary>
    /// Drops a handle (RELEASE). A host file is closed once no READ uses it any more: READs take a
    /// reference (SafeHandle.DangerousAddRef) while they use the descriptor.
    /// </summary>
    public void Remove(ulong fh)
    {
        Handle gone;
        lock (_lock)
        {
            if (fh - 1 >= (ulong)_used || _slots[fh - 1].Path is null) return;
            gone = _slots[fh - 1];
            _slots[fh - 1] = default;
            _free[_freeCount++] = (int)(fh - 1);
            _open--;
            _bytes -= gone.Data?.Length ?? 0;
            if (gone.File is not null) _files--;
        }
        gone.File?.Dispose();
    }
}
