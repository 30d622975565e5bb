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
}
