// cgroup v2 has no devices controller files: access to device nodes is decided by an eBPF program of type
// BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup, called at every open(2) and mknod(2) of a device node
// by a process of the cgroup (or of a cgroup below it) with the device's type, major, minor and the access
// asked. This file turns the OCI linux.resources.devices list into that program, built from the kernel's BPF
// instructions here (no compiler at run time), and loads, attaches and replaces it with bpf(2).
//
// The meaning is the v1 controller's, which the OCI list describes: the rules apply in order, the last one
// that matches a request decides, and what no rule matches is denied (runc's default, and docker's list
// starts with "deny all" anyway). An allow rule matches a request whose every asked access it grants; a
// deny rule matches one that asks any access it denies ("deny w" on /dev/null denies a read-write open).
// The program checks the rules from the last to the first and returns at the first match.
using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Cgroups;

public static unsafe class DeviceFilter
{
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }: access_type = access << 16 | type
    public const uint TypeBlock = 1, TypeChar = 2;
    public const uint AccessMknod = 1, AccessRead = 2, AccessWrite = 4;

    /// <summary>One rule in the program's terms: type 0 = any, major/minor -1 = any, access bits (AccessRead|...).</summary>
    public readonly record struct Rule(bool Allow, uint Type, long Major, long Minor, uint Access);

    /// <summary>The OCI list as rules (in spec order); refuses what it cannot mean.</summary>
    public static List<Rule> Rules(IReadOnlyList<DeviceCgroup> devices)
    {
        var rules = new List<Rule>();
        foreach (var d in devices)
        {
            uint type = d.Type switch
            {
                null or "" or "a" => 0,
                "b" => TypeBlock,
                "c" or "u" => TypeChar,
                _ => throw new CgroupException($"linux.resources.devices: rule type \"{d.Type}\" is not one of a, b, c"),
            };
            uint access = 0;
            foreach (char c in string.IsNullOrEmpty(d.Access) ? "rwm" : d.Access)
                access |= c switch
                {
                    'r' => AccessRead,
                    'w' => AccessWrite,
                    'm' => AccessMknod,
                    _ => throw new CgroupException($"linux.resources.devices: rule access \"{d.Access}\" is not made of r, w, m"),
                };
            rules.Add(new Rule(d.Allow, type, d.Major ?? -1, d.Minor ?? -1, access));
        }
        return rules;
    }

    /// <summary>The decision a program built from these rules makes (the same logic, for tests and for reading).</summary>
    public static bool Allows(IReadOnlyList<Rule> rules, uint type, uint major, uint minor, uint access)
    {
        for (int i = rules.Count - 1; i >= 0; i--)
            if (Matches(rules[i], type, major, minor, access)) return rules[i].Allow;
        return false;
    }

    static bool Matches(Rule r, uint type, uint major, uint minor, uint access) =>
        (r.Type == 0 || r.Type == type) && (r.Major < 0 || r.Major == major) && (r.Minor < 0 || r.Minor == minor)
        && (r.Allow ? (access & ~r.Access) == 0 : (access & r.Access) != 0);

    // --- the program -------------------------------------------------------------------------------------
    // Registers: r2 = type, r3 = access, r4 = major, r5 = minor (loaded once), r1 = scratch; r0 = verdict.

    const byte BPF_LDX = 0x01, BPF_ALU = 0x04, BPF_JMP = 0x05, BPF_ALU64 = 0x07;
    const byte BPF_W = 0x00, BPF_MEM = 0x60;
    const byte BPF_K = 0x00, BPF_X = 0x08;
    const byte BPF_AND = 0x50, BPF_RSH = 0x70, BPF_MOV = 0xb0;
    const byte BPF_JEQ = 0x10, BPF_JNE = 0x50, BPF_EXIT = 0x90, BPF_JA = 0x00;

    /// <summary>struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm.</summary>
    static ulong Insn(byte code, byte dst, byte src, short off, int imm) =>
        code | ((ulong)(dst & 0xf | (src & 0xf) << 4) << 8) | ((ulong)(ushort)off << 16) | ((ulong)(uint)imm << 32);

    /// <summary>The program, as struct bpf_insn[] (8 bytes each).</summary>
    public static ulong[] Program(IReadOnlyList<Rule> rules)
    {
        var p = new List<ulong>
        {
            Insn(BPF_LDX | BPF_W | BPF_MEM, 2, 1, 0, 0),    // r2 = ctx->access_type
            Insn(BPF_ALU64 | BPF_MOV | BPF_X, 3, 2, 0, 0),  // r3 = r2
            Insn(BPF_ALU | BPF_AND | BPF_K, 2, 0, 0, 0xffff), // r2 = type (32-bit op: zero-extends)
            Insn(BPF_ALU | BPF_RSH | BPF_K, 3, 0, 0, 16),   // r3 = access
            Insn(BPF_LDX | BPF_W | BPF_MEM, 4, 1, 4, 0),    // r4 = ctx->major
            Insn(BPF_LDX | BPF_W | BPF_MEM, 5, 1, 8, 0),    // r5 = ctx->minor
        };
        bool fallsThrough = true;
        for (int i = rules.Count - 1; i >= 0 && fallsThrough; i--)
        {
            var r = rules[i];
            var block = new List<(byte Code, byte Dst, byte Src, int Imm, bool JumpsToNext)>();
            if (r.Type != 0) block.Add((BPF_JMP | BPF_JNE | BPF_K, 2, 0, (int)r.Type, true));
            if (r.Major >= 0) block.Add((BPF_JMP | BPF_JNE | BPF_K, 4, 0, (int)(uint)r.Major, true));
            if (r.Minor >= 0) block.Add((BPF_JMP | BPF_JNE | BPF_K, 5, 0, (int)(uint)r.Minor, true));
            if (r.Allow)
            {
                // every asked bit granted: (access & ~granted) == 0
                if ((r.Access & 7) != 7)
                {
                    block.Add((BPF_ALU64 | BPF_MOV | BPF_X, 1, 3, 0, false));
                    block.Add((BPF_ALU | BPF_AND | BPF_K, 1, 0, (int)(~r.Access & 7), false));
                    block.Add((BPF_JMP | BPF_JNE | BPF_K, 1, 0, 0, true));
                }
            }
            else if ((r.Access & 7) != 7)
            {
                // any asked bit denied: (access & denied) != 0
                block.Add((BPF_ALU64 | BPF_MOV | BPF_X, 1, 3, 0, false));
                block.Add((BPF_ALU | BPF_AND | BPF_K, 1, 0, (int)(r.Access & 7), false));
                block.Add((BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0, true));
            }
            // A rule that matches everything ends the program: the verifier refuses unreachable code, so the
            // (earlier) rules it hides and the final default are not emitted.
            fallsThrough = block.Count > 0;
            block.Add((BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, r.Allow ? 1 : 0, false));
            block.Add((BPF_JMP | BPF_EXIT, 0, 0, 0, false));
            for (int k = 0; k < block.Count; k++)
            {
                var (code, dst, src, imm, jumps) = block[k];
                // a jump to the next rule skips the rest of this block
                short off = jumps ? (short)(block.Count - k - 1) : (short)0;
                p.Add(Insn(code, dst, src, off, imm));
            }
        }
        if (fallsThrough)
        {
            p.Add(Insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0)); // nothing matched: deny
            p.Add(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
        }
        return p.ToArray();
    }

    // --- bpf(2) ------------------------------------------------------------------------------------------

    const int BPF_PROG_LOAD = 5, BPF_PROG_ATTACH = 8, BPF_PROG_DETACH = 9, BPF_PROG_GET_FD_BY_ID = 13, BPF_PROG_QUERY = 16;
    const uint BPF_PROG_TYPE_CGROUP_DEVICE = 15, BPF_CGROUP_DEVICE = 6, BPF_F_ALLOW_MULTI = 2;
    const long SYS_bpf = 321;

    [StructLayout(LayoutKind.Explicit, Size = 128)]
    struct Attr
    {
        // BPF_PROG_LOAD
        [FieldOffset(0)] public uint ProgType;
        [FieldOffset(4)] public uint InsnCnt;
        [FieldOffset(8)] public ulong Insns;
        [FieldOffset(16)] public ulong License;
        [FieldOffset(24)] public uint LogLevel;
        [FieldOffset(28)] public uint LogSize;
        [FieldOffset(32)] public ulong LogBuf;
        // BPF_PROG_ATTACH / DETACH: target_fd, attach_bpf_fd, attach_type, attach_flags
        [FieldOffset(0)] public uint TargetFd;
        [FieldOffset(4)] public uint AttachBpfFd;
        [FieldOffset(8)] public uint AttachType;
        [FieldOffset(12)] public uint AttachFlags;
        // BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
        [FieldOffset(4)] public uint QueryAttachType;
        [FieldOffset(8)] public uint QueryFlags;
        [FieldOffset(12)] public uint QueryAttachFlags;
        [FieldOffset(16)] public ulong ProgIds;
        [FieldOffset(24)] public uint ProgCnt;
        // BPF_PROG_GET_FD_BY_ID: prog_id
        [FieldOffset(0)] public uint ProgId;
    }

    static int Bpf(int cmd, Attr* attr) => (int)Libc.syscall(SYS_bpf, cmd, (long)attr, sizeof(Attr), 0, 0, 0);

    /// <summary>Loads the program for these rules; returns its fd.</summary>
    public static SafeFd Load(IReadOnlyList<Rule> rules)
    {
        var insns = Program(rules);
        byte* license = stackalloc byte[] { (byte)'G', (byte)'P', (byte)'L', 0 };
        const int LogSize = 16 * 1024;
        byte* log = (byte*)NativeMemory.AllocZeroed(LogSize);
        try
        {
            fixed (ulong* p = insns)
            {
                var attr = new Attr
                {
                    ProgType = BPF_PROG_TYPE_CGROUP_DEVICE, InsnCnt = (uint)insns.Length, Insns = (ulong)p, License = (ulong)license,
                    LogLevel = 1, LogSize = LogSize, LogBuf = (ulong)log,
                };
                int fd = Bpf(BPF_PROG_LOAD, &attr);
                if (fd >= 0) return new SafeFd(fd);
                int errno = Libc.Errno;
                string verifier = Marshal.PtrToStringUTF8((nint)log)?.Trim() ?? "";
                throw new CgroupException($"cgroup: load the device filter (BPF_PROG_TYPE_CGROUP_DEVICE, {insns.Length} instructions): " +
                    $"{CgroupFs.ErrText(errno)}{(verifier.Length > 0 ? $"; verifier: {verifier[..Math.Min(verifier.Length, 500)]}" : "")}", errno);
            }
        }
        finally { NativeMemory.Free(log); }
    }

    /// <summary>
    /// Makes the device rules of the cgroup at <paramref name="dir"/> exactly these: attaches the new program
    /// (alongside others: BPF_F_ALLOW_MULTI, the mode systemd and runc use), then detaches every other device
    /// program attached to that cgroup itself (a previous `create` or `update` of ours), so the new rules are
    /// in force before the old ones go and never is the cgroup without rules. Programs attached below it (an
    /// inner runtime's, in the container's own cgroups) are not touched.
    /// </summary>
    public static void Apply(string dir, IReadOnlyList<DeviceCgroup> devices)
    {
        var rules = Rules(devices);
        using var cgroup = new SafeFd(SysException.Check(Libc.open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0), "open", dir));
        var before = AttachedIds(cgroup.Fd, dir);
        using var prog = Load(rules);
        var attach = new Attr { TargetFd = (uint)cgroup.Fd, AttachBpfFd = (uint)prog.Fd, AttachType = BPF_CGROUP_DEVICE, AttachFlags = BPF_F_ALLOW_MULTI };
        if (Bpf(BPF_PROG_ATTACH, &attach) != 0)
            throw new CgroupException($"cgroup: attach the device filter to {dir}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        foreach (uint id in before)
        {
            var get = new Attr { ProgId = id };
            int old = Bpf(BPF_PROG_GET_FD_BY_ID, &get);
            if (old < 0) continue; // gone meanwhile
            using var oldFd = new SafeFd(old);
            var detach = new Attr { TargetFd = (uint)cgroup.Fd, AttachBpfFd = (uint)old, AttachType = BPF_CGROUP_DEVICE };
            if (Bpf(BPF_PROG_DETACH, &detach) != 0 && Libc.Errno != Libc.ENOENT)
                throw new CgroupException($"cgroup: detach the previous device filter (id {id}) from {dir}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        }
    }

    /// <summary>Ids of the device programs attached to this cgroup itself.</summary>
    public static List<uint> AttachedIds(int cgroupFd, string dir)
    {
        uint* ids = stackalloc uint[64];
        var q = new Attr { TargetFd = (uint)cgroupFd, QueryAttachType = BPF_CGROUP_DEVICE, ProgIds = (ulong)ids, ProgCnt = 64 };
        if (Bpf(BPF_PROG_QUERY, &q) != 0)
            throw new CgroupException($"cgroup: query the device filters of {dir}: {CgroupFs.ErrText(Libc.Errno)}", Libc.Errno);
        var list = new List<uint>();
        for (int i = 0; i < Math.Min(q.ProgCnt, 64u); i++) list.Add(ids[i]);
        return list;
    }
}
