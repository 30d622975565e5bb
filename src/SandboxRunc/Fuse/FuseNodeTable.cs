namespace SandboxRunc.Fuse;

/// <summary>
/// The kernel addresses files by node id; <see cref="IFuseFileSystem"/> by path. This table maps between
/// them. Every successful LOOKUP reply hands the kernel one reference to a node id (the lookup count);
/// FORGET gives references back, and a node whose count reaches zero is dropped. Node ids are never
/// reused (a 64-bit counter), so the (node id, generation) pair the kernel requires to be unique over the
/// mount's lifetime is unique with a constant generation. Inode numbers are a hash of the path, so a file
/// keeps its st_ino across FORGET and a new LOOKUP. The root (id 1, path "") is never dropped.
///
/// Bounded: at most <see cref="MaxNodes"/> nodes the kernel holds at once (a node is ~200 bytes). Files are
/// looked up with an entry timeout of 0, so the kernel forgets them as soon as their dentry is unused; only
/// directories stay cached. A container that makes the kernel hold more gets ENFILE on new lookups.
/// </summary>
sealed class FuseNodeTable
{
    public const ulong Generation = 1;
    public const int DefaultMaxNodes = 32768;

    sealed class Node(ulong id, string path)
    {
        public readonly ulong Id = id;
        public readonly string Path = path;
        public ulong Lookups;
    }

    readonly Lock _lock = new();
    readonly Dictionary<ulong, Node> _byId = [];
    readonly Dictionary<string, Node> _byPath = new(StringComparer.Ordinal);
    ulong _nextId = FuseProtocol.RootId + 1;

    public int MaxNodes { get; }

    public FuseNodeTable(int maxNodes = DefaultMaxNodes)
    {
        MaxNodes = maxNodes;
        var root = new Node(FuseProtocol.RootId, "");
        _byId[root.Id] = root;
        _byPath[root.Path] = root;
    }

    public int Count { get { lock (_lock) return _byId.Count; } }

    /// <summary>The path of a node id the kernel holds, or null for an id we never gave out (or forgot).</summary>
    public string? PathOf(ulong id)
    {
        lock (_lock) return _byId.TryGetValue(id, out var node) ? node.Path : null;
    }

    /// <summary>Gives the kernel one more reference to the node of <paramref name="path"/>; returns its id, or 0 when
    /// the path has no node yet and the table is full.</summary>
    public ulong Remember(string path)
    {
        lock (_lock)
        {
            if (!_byPath.TryGetValue(path, out var node))
            {
                if (_byId.Count >= MaxNodes) return 0;
                node = new Node(_nextId++, path);
                _byId[node.Id] = node;
                _byPath[path] = node;
            }
            node.Lookups++;
            return node.Id;
        }
    }

    /// <summary>FORGET: the kernel gives back <paramref name="count"/> references.</summary>
    public void Forget(ulong id, ulong count)
    {
        if (id == FuseProtocol.RootId) return;
        lock (_lock)
        {
            if (!_byId.TryGetValue(id, out var node)) return;
            node.Lookups = count >= node.Lookups ? 0 : node.Lookups - count;
            if (node.Lookups > 0) return;
            _byId.Remove(id);
            _byPath.Remove(node.Path);
        }
    }

    /// <summary>A child's path: "" + "a" is "a", "a" + "b" is "a/b".</summary>
    public static string Child(string parent, string name) => parent.Length == 0 ? name : parent + "/" + name;

    /// <summary>"a/b" → "a", "a" → "", "" → "".</summary>
    public static string Parent(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash < 0 ? "" : path[..slash];
    }

    /// <summary>A stable inode number for a path: 1 for the root, else FNV-1a over the UTF-16 chars, never 0 or 1.</summary>
    public static ulong InodeOf(string path)
    {
        if (path.Length == 0) return FuseProtocol.RootId;
        ulong hash = 14695981039346656037UL;
        foreach (char c in path)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        return hash <= 1 ? hash + 2 : hash;
    }
}
