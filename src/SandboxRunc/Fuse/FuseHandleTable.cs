namespace SandboxRunc.Fuse;

/// <summary>
/// Open files and directories, keyed by the fh the kernel echoes back in READ/WRITE/READDIR/RELEASE.
/// A handle is the path it was opened at and a snapshot taken at OPEN (a file's content) or OPENDIR (the
/// encoded listing), so every read of one open sees one consistent value, like procfs's seq_file.
/// Slots are recycled through a free list: opening and releasing allocates nothing beyond the snapshot.
/// fh is slot index + 1 (0 is never a valid fh).
/// </summary>
sealed class FuseHandleTable
{
    public readonly record struct Handle(string Path, byte[] Data);

    readonly Lock _lock = new();
    Handle[] _slots = new Handle[64];
    int[] _free = new int[64];
    int _freeCount, _used, _open;

    public int OpenCount { get { lock (_lock) return _open; } }

    public ulong Add(string path, byte[] data)
    {
        lock (_lock)
        {
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
            _slots[slot] = new Handle(path, data);
            _open++;
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

    public void Remove(ulong fh)
    {
        lock (_lock)
        {
            if (fh - 1 >= (ulong)_used || _slots[fh - 1].Path is null) return;
            _slots[fh - 1] = default;
            _free[_freeCount++] = (int)(fh - 1);
            _open--;
        }
    }
}
