using SandboxRunc.Interop;

namespace SandboxRunc.Fuse;

/// <summary>
/// A FUSE mount made without libfuse or fusermount: open /dev/fuse, then mount(2) type
/// "fuse.sandbox-runc" with the descriptor's number in the options. The mount is alive as long as the
/// descriptor (or a copy passed to another process, e.g. the container's supervisor) is open and a
/// <see cref="FuseServer"/> answers on it; until the server has answered INIT, accesses to the mount wait.
///
/// Options: allow_other (the container's processes are not the mounter); default_permissions (the
/// kernel checks the mode bits and owners we report, so container root, whose host uid owns its files,
/// may write where the mode allows and nobody else may); user_id/group_id 0 (the mounter, root);
/// rootmode 040000 (the root is a directory). Flags: nosuid, nodev, optionally read-only.
/// </summary>
public sealed class FuseMount : IDisposable
{
    public const string Source = "sandbox-runc", FsType = "fuse.sandbox-runc";

    /// <summary>The /dev/fuse descriptor (close-on-exec) the server reads requests from.</summary>
    public SafeFd Device { get; }
    public string Target { get; }
    bool _mounted;

    FuseMount(SafeFd device, string target)
    {
        Device = device;
        Target = target;
    }

    public static FuseMount Mount(string target, bool readOnly = false)
    {
        var device = new SafeFd(SysException.Check(Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC, 0), "open", "/dev/fuse"));
        try
        {
            ulong flags = Libc.MS_NOSUID | Libc.MS_NODEV | (readOnly ? Libc.MS_RDONLY : 0);
            SysException.Check(Libc.mount(Source, target, FsType, flags, Options(device.Fd)), "mount fuse", target);
            return new FuseMount(device, target) { _mounted = true };
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>The mount(2) data string for a /dev/fuse descriptor.</summary>
    public static string Options(int deviceFd) =>
        $"fd={deviceFd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions";

    /// <summary>umount2(MNT_DETACH): the mount goes away now, the connection when its last user is gone.</summary>
    public void Unmount()
    {
        if (!_mounted) return;
        SysException.Check(Libc.umount2(Target, Libc.MNT_DETACH), "umount2", Target);
        _mounted = false;
    }

    /// <summary>Unmounts (if still mounted) and closes this process's descriptor.</summary>
    public void Dispose()
    {
        try { Unmount(); }
        finally { Device.Dispose(); }
    }
}
