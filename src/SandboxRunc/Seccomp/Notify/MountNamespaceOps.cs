using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// The C side of a notify worker (mntns_ops.c, linked into the executable; a shared library in the test
/// host): the only code that runs while a worker thread is inside a container's mount namespace and
/// root. It never calls back into .NET, so no managed allocation (and no GC, which reads /proc/meminfo
/// by name) can happen in there. Structs mirror the C ones; a test checks their layout.
/// </summary>
internal static unsafe partial class MountNamespaceOps
{
    const string Lib = "sandbox-mntns";
    public const int PathMax = 4096;

    [StructLayout(LayoutKind.Sequential)]
    public struct Enter
    {
        public int OwnMountNs, MountNs, Root, Cwd, HostProc, CallerFds;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PathResult
    {
        public int Fd;
        public int Err;
        public ulong MountId;
        public uint MountRoot;
        public uint DevMajor, DevMinor;
        public uint Mode;
        public fixed byte Path[PathMax];

        public readonly string PathText()
        {
            fixed (byte* p = Path)
            {
                var span = new ReadOnlySpan<byte>(p, PathMax);
                int n = span.IndexOf((byte)0);
                return Encoding.UTF8.GetString(span[..(n < 0 ? PathMax : n)]);
            }
        }
    }

    public const int SetFlags = 1, Bind = 2, Move = 3, Unmount = 4, Pivot = 5;

    [StructLayout(LayoutKind.Sequential)]
    public struct Op
    {
        public int Kind;
        public int TargetFd;
        public int SourceFd;
        public int Recursive;
        public ulong AttrSet;
        public ulong AttrClr;
        public int AttrRecursive;
        public int UmountFlags;
        public ulong ExpectMountId;
        public byte* MountPoint;
        public int SbCount;
        public int Reserved;
        public byte** SbOptions;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Overlay
    {
        public int UserNsFd;
        public int TargetFd;
        public int Count;
        public int OptCount;
        public int* LayerFds;
        public byte** LayerKeys;
        public byte** Options;
        public ulong Attr;
        public int ReadOnly;
        public int TimeoutMs;
    }

    [LibraryImport(Lib, EntryPoint = "srn_overlay")]
    public static partial int MakeOverlay(Enter* e, Overlay* o);

    /// <summary>statmount(2) records of the target's mount and its parent (mntns_ops.c, struct srn_mount_facts).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MountFacts
    {
        public byte* Buf;
        public long Size;
        public int Count;
        public int Children;
        public int Err;
        public int Reserved;
    }

    [LibraryImport(Lib, EntryPoint = "srn_lookup")]
    public static partial int Lookup(Enter* e, byte* target, int targetFlags, byte* source, byte* kernelFs,
        PathResult* outTarget, PathResult* outSource, PathResult* outKernelFs, MountFacts* facts);

    [LibraryImport(Lib, EntryPoint = "srn_perform")]
    public static partial int Perform(Enter* e, Op* op);

    [LibraryImport(Lib, EntryPoint = "srn_layout")]
    public static partial long Layout(int which);

    /// <summary>A NUL-terminated UTF-8 copy in unmanaged memory (freed by the caller): prepared before entering.</summary>
    public static byte* NativeString(string? s)
    {
        if (s is null) return null;
        int n = Encoding.UTF8.GetByteCount(s);
        var p = (byte*)NativeMemory.Alloc((nuint)n + 1);
        Encoding.UTF8.GetBytes(s, new Span<byte>(p, n));
        p[n] = 0;
        return p;
    }
}
