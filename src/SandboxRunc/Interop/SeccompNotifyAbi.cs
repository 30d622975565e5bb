using System.Runtime.InteropServices;

namespace SandboxRunc.Interop;

/// <summary>
/// The seccomp user-notification ABI (linux/seccomp.h): the structs read and written through the
/// listener fd and their ioctls. Sizes are checked against the running kernel with
/// SECCOMP_GET_NOTIF_SIZES (<see cref="CheckKernelSizes"/>) and against the headers by a test.
/// </summary>
public static unsafe class SeccompNotifyAbi
{
    public const int SECCOMP_GET_NOTIF_SIZES = 3;
    public const uint SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1;

    // _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp), _IOW('!', 2, __u64)
    public const ulong SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100, SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101,
        SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102;

    /// <summary>struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (64 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct SeccompData
    {
        public int Nr;
        public uint Arch;
        public ulong InstructionPointer;
        public fixed ulong Args[6];
    }

    /// <summary>struct seccomp_notif: u64 id; u32 pid; u32 flags; struct seccomp_data data (80 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Notif
    {
        public ulong Id;
        public uint Pid;
        public uint Flags;
        public SeccompData Data;
    }

    /// <summary>struct seccomp_notif_resp: u64 id; s64 val; s32 error; u32 flags (24 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct NotifResp
    {
        public ulong Id;
        public long Val;
        public int Error;
        public uint Flags;
    }

    /// <summary>struct seccomp_notif_sizes: u16 seccomp_notif, seccomp_notif_resp, seccomp_data.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct NotifSizes
    {
        public ushort Notif;
        public ushort NotifResp;
        public ushort Data;
    }

    public static NotifSizes KernelSizes()
    {
        NotifSizes s;
        SysException.Check(Libc.syscall(Libc.SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, (long)&s, 0, 0, 0), "seccomp", "SECCOMP_GET_NOTIF_SIZES");
        return s;
    }

    /// <summary>
    /// The kernel may grow these structs; it then writes more than we reserved. Refuse to run
    /// rather than let RECV overrun our buffer (we would answer nothing and the caller would hang).
    /// </summary>
    public static void CheckKernelSizes()
    {
        var s = KernelSizes();
        if (s.Notif > sizeof(Notif) || s.NotifResp > sizeof(NotifResp) || s.Data > sizeof(SeccompData))
            throw new InvalidOperationException(
                $"seccomp notify: kernel structs are larger than ours (notif {s.Notif}/{sizeof(Notif)}, resp {s.NotifResp}/{sizeof(NotifResp)}, data {s.Data}/{sizeof(SeccompData)})");
    }

    /// <summary>Receives one notification; false when it vanished (ENOENT: the caller died or was interrupted).</summary>
    public static bool Receive(int listener, out Notif notif)
    {
        Notif n = default;
        int r;
        do r = Libc.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &n); while (r < 0 && Libc.Errno == Libc.EINTR);
        notif = n;
        if (r == 0) return true;
        if (Libc.Errno == Libc.ENOENT) return false;
        throw new SysException("ioctl", "SECCOMP_IOCTL_NOTIF_RECV", Libc.Errno);
    }

    /// <summary>True while the notification's caller is still blocked in it (guards pid reuse and TOCTOU).</summary>
    public static bool IdValid(int listener, ulong id)
    {
        int r;
        do r = Libc.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id); while (r < 0 && Libc.Errno == Libc.EINTR);
        return r == 0;
    }

    /// <summary>Answers a notification; false when it is no longer pending (ENOENT).</summary>
    public static bool Send(int listener, NotifResp resp)
    {
        int r;
        do r = Libc.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp); while (r < 0 && Libc.Errno == Libc.EINTR);
        if (r == 0) return true;
        if (Libc.Errno == Libc.ENOENT) return false;
        throw new SysException("ioctl", "SECCOMP_IOCTL_NOTIF_SEND", Libc.Errno);
    }
}
