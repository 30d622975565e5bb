namespace SandboxRunc.Interop;

/// <summary>The calling thread's capability sets, as 64-bit masks, through capget/capset (version 3).</summary>
public readonly record struct CapabilitySets(ulong Effective, ulong Permitted, ulong Inheritable)
{
    const uint Version3 = 0x20080522; // _LINUX_CAPABILITY_VERSION_3

    // struct __user_cap_header_struct { u32 version; int pid; } + two __user_cap_data_struct { u32 eff, perm, inh; }
    public static unsafe CapabilitySets Get()
    {
        uint* header = stackalloc uint[2] { Version3, 0 };
        uint* data = stackalloc uint[6];
        SysException.Check(Libc.syscall(Libc.SYS_capget, (long)header, (long)data, 0, 0, 0, 0), "capget");
        return new(data[0] | ((ulong)data[3] << 32), data[1] | ((ulong)data[4] << 32), data[2] | ((ulong)data[5] << 32));
    }

    public unsafe void Set()
    {
        uint* header = stackalloc uint[2] { Version3, 0 };
        uint* data = stackalloc uint[6]
        {
            (uint)Effective, (uint)Permitted, (uint)Inheritable,
            (uint)(Effective >> 32), (uint)(Permitted >> 32), (uint)(Inheritable >> 32),
        };
        SysException.Check(Libc.syscall(Libc.SYS_capset, (long)header, (long)data, 0, 0, 0, 0), "capset");
    }
}
