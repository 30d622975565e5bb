using System.Runtime.InteropServices;

namespace SandboxRunc.Namespaces;

/// <summary>The C side (nsexec.c), statically linked into the executable.</summary>
internal static partial class Nsexec
{
    /// <summary>1 when this process is a container's init that nsexec.c handed over to .NET.</summary>
    [LibraryImport("nsexec", EntryPoint = "nsexec_role")]
    [SuppressGCTransition]
    public static partial int Role();

    /// <summary>The init's end of the sync socket.</summary>
    [LibraryImport("nsexec", EntryPoint = "nsexec_sync")]
    [SuppressGCTransition]
    public static partial int SyncFd();

    [LibraryImport("nsexec", EntryPoint = "nsexec_layout")]
    public static partial int Layout(int which);

    /// <summary>
    /// Installs the seccomp filter (a struct sock_filter[] of <paramref name="length"/> instructions, or none)
    /// and execs, in C: nothing runs between the two. Returns only on failure: -errno, and in
    /// <paramref name="stage"/> 1 if seccomp(2) failed, 2 if execve failed.
    /// </summary>
    [LibraryImport("nsexec", EntryPoint = "nsexec_seccomp_exec")]
    public static unsafe partial int SeccompExec(byte* filter, uint length, uint flags, byte* path, byte** argv, byte** envp, int* stage);
}
