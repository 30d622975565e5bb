using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using N = SandboxRunc.Interop.SeccompNotifyAbi;

namespace SandboxRunc.Tests.Notify;

/// <summary>Our seccomp-notify, statx and mount_attr declarations against the kernel headers and the running kernel.</summary>
public unsafe class NotifyAbiTests
{
    static long Off<T>(string f) => Marshal.OffsetOf<T>(f).ToInt64();

    [Fact]
    public void KernelReportsTheSizesWeDeclare()
    {
        var s = N.KernelSizes();
        Assert.Equal(sizeof(N.Notif), (int)s.Notif);
        Assert.Equal(sizeof(N.NotifResp), (int)s.NotifResp);
        Assert.Equal(sizeof(N.SeccompData), (int)s.Data);
    }

    /// <summary>mntns_ops.c (loaded here as libsandbox-mntns.so) and MountNamespaceOps.cs describe the same structs.</summary>
    [Fact]
    public void MountNamespaceOpsStructsMatchTheCSide()
    {
        Assert.Equal(sizeof(SandboxRunc.Seccomp.Notify.MountNamespaceOps.Enter), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(0));
        Assert.Equal(sizeof(SandboxRunc.Seccomp.Notify.MountNamespaceOps.PathResult), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(1));
        Assert.Equal(Off<SandboxRunc.Seccomp.Notify.MountNamespaceOps.PathResult>("Path"), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(2));
        Assert.Equal(sizeof(SandboxRunc.Seccomp.Notify.MountNamespaceOps.Op), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(3));
        Assert.Equal(sizeof(SandboxRunc.Seccomp.Notify.MountNamespaceOps.Overlay), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(7));
        Assert.Equal(Off<SandboxRunc.Seccomp.Notify.MountNamespaceOps.Overlay>("Attr"), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(8));
        Assert.Equal(sizeof(SandboxRunc.Seccomp.Notify.MountNamespaceOps.MountFacts), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(9));
        Assert.Equal(Off<SandboxRunc.Seccomp.Notify.MountNamespaceOps.Op>("ExpectMountId"), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(4));
        Assert.Equal(Off<SandboxRunc.Seccomp.Notify.MountNamespaceOps.Op>("MountPoint"), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(5));
        Assert.Equal(Off<SandboxRunc.Seccomp.Notify.MountNamespaceOps.Op>("SbOptions"), SandboxRunc.Seccomp.Notify.MountNamespaceOps.Layout(6));
    }

    [FactNeedsCc("/usr/include/linux/seccomp.h", "linux-libc-dev")]
    public void DeclarationsMatchTheCHeaders()
    {
        var expected = new Dictionary<string, long>
        {
            ["sizeof(struct seccomp_notif)"] = sizeof(N.Notif),
            ["offsetof(struct seccomp_notif, pid)"] = Off<N.Notif>(nameof(N.Notif.Pid)),
            ["offsetof(struct seccomp_notif, data)"] = Off<N.Notif>(nameof(N.Notif.Data)),
            ["sizeof(struct seccomp_notif_resp)"] = sizeof(N.NotifResp),
            ["offsetof(struct seccomp_notif_resp, val)"] = Off<N.NotifResp>(nameof(N.NotifResp.Val)),
            ["offsetof(struct seccomp_notif_resp, error)"] = Off<N.NotifResp>(nameof(N.NotifResp.Error)),
            ["offsetof(struct seccomp_notif_resp, flags)"] = Off<N.NotifResp>(nameof(N.NotifResp.Flags)),
            ["sizeof(struct seccomp_data)"] = sizeof(N.SeccompData),
            ["offsetof(struct seccomp_data, args)"] = 16,
            ["SECCOMP_IOCTL_NOTIF_RECV"] = (long)N.SECCOMP_IOCTL_NOTIF_RECV,
            ["SECCOMP_IOCTL_NOTIF_SEND"] = (long)N.SECCOMP_IOCTL_NOTIF_SEND,
            ["SECCOMP_IOCTL_NOTIF_ID_VALID"] = (long)N.SECCOMP_IOCTL_NOTIF_ID_VALID,
            ["SECCOMP_USER_NOTIF_FLAG_CONTINUE"] = N.SECCOMP_USER_NOTIF_FLAG_CONTINUE,
            ["SECCOMP_GET_NOTIF_SIZES"] = N.SECCOMP_GET_NOTIF_SIZES,
            ["SECCOMP_RET_USER_NOTIF"] = SandboxRunc.Seccomp.Notify.NotifyFilter.SECCOMP_RET_USER_NOTIF,
            ["AUDIT_ARCH_X86_64"] = SandboxRunc.Seccomp.Notify.NotifyFilter.AUDIT_ARCH_X86_64,
            ["AUDIT_ARCH_I386"] = SandboxRunc.Seccomp.Notify.NotifyFilter.AUDIT_ARCH_I386,
            ["sizeof(struct statx)"] = sizeof(Libc.Statx),
            ["offsetof(struct statx, stx_attributes)"] = Off<Libc.Statx>(nameof(Libc.Statx.Attributes)),
            ["offsetof(struct statx, stx_attributes_mask)"] = Off<Libc.Statx>(nameof(Libc.Statx.AttributesMask)),
            ["offsetof(struct statx, stx_dev_major)"] = Off<Libc.Statx>(nameof(Libc.Statx.DevMajor)),
            ["offsetof(struct statx, stx_dev_minor)"] = Off<Libc.Statx>(nameof(Libc.Statx.DevMinor)),
            ["offsetof(struct statx, stx_mnt_id)"] = Off<Libc.Statx>(nameof(Libc.Statx.MntId)),
            ["STATX_MNT_ID"] = Libc.STATX_MNT_ID,
            ["STATX_ATTR_MOUNT_ROOT"] = (long)Libc.STATX_ATTR_MOUNT_ROOT,
            ["sizeof(struct mount_attr)"] = sizeof(Libc.MountAttr),
            ["MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID << 8 | MOUNT_ATTR_NODEV << 16 | (long long)MOUNT_ATTR_NOEXEC << 24"] = 1 | 2 << 8 | 4 << 16 | 8L << 24,
            ["MOVE_MOUNT_T_EMPTY_PATH"] = Libc.MOVE_MOUNT_T_EMPTY_PATH,
            ["FSPICK_EMPTY_PATH"] = Libc.FSPICK_EMPTY_PATH,
            ["FSCONFIG_CMD_RECONFIGURE"] = Libc.FSCONFIG_CMD_RECONFIGURE,
            ["__NR_fspick"] = Libc.SYS_fspick,
            ["__NR_fsconfig"] = Libc.SYS_fsconfig,
            ["__NR_mount_setattr"] = Libc.SYS_mount_setattr,
            ["__NR_mount"] = Libc.SYS_mount,
            ["__NR_umount2"] = Libc.SYS_umount2,
            ["UMOUNT_NOFOLLOW"] = Libc.UMOUNT_NOFOLLOW,
            ["CLONE_FS"] = Libc.CLONE_FS,
            ["CLONE_NEWNS"] = Libc.CLONE_NEWNS,
        };
        CHeaderCheck.AssertMatches("""
            #define _GNU_SOURCE
            #include <stddef.h>
            #include <stdio.h>
            #include <sched.h>
            #include <sys/mount.h>
            #include <sys/syscall.h>
            #include <sys/stat.h>
            #include <linux/audit.h>
            #include <linux/mount.h>
            #include <linux/seccomp.h>
            """, expected);
    }
}
