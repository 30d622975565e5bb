using System.Buffers.Binary;
using System.Text;

namespace SandboxRunc.Namespaces;

/// <summary>
/// The fixed-layout messages of nsexec.c (see the table at its top). Encoded by hand, little-endian,
/// with the offsets of the C structs; <c>NsexecLayoutTests</c> compares them with the compiled C.
/// </summary>
internal static class NsexecProtocol
{
    public const int Version = 1;
    public const int MaxJoin = 8;
    public const int PathMax = 512;
    public const int TextMax = 1024;

    public const int BootstrapSize = 20 + MaxJoin * (4 + PathMax);
    public const int PayloadOffset = 8;
    public const int MessageSize = PayloadOffset + BootstrapSize; // the union's larger member

    public const uint Bootstrap = 1, MapRequest = 2, MapDone = 3, InitPid = 4, Error = 5;

    public const uint CLONE_NEWTIME = 0x80, CLONE_NEWNS = 0x20000, CLONE_NEWCGROUP = 0x02000000,
        CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000, CLONE_NEWUSER = 0x10000000,
        CLONE_NEWPID = 0x20000000, CLONE_NEWNET = 0x40000000;

    public static uint CloneFlag(string type) => type switch
    {
        "pid" => CLONE_NEWPID,
        "network" => CLONE_NEWNET,
        "mount" => CLONE_NEWNS,
        "ipc" => CLONE_NEWIPC,
        "uts" => CLONE_NEWUTS,
        "user" => CLONE_NEWUSER,
        "cgroup" => CLONE_NEWCGROUP,
        "time" => CLONE_NEWTIME,
        _ => throw new RuntimeException($"unknown namespace type \"{type}\""),
    };

    public static byte[] EncodeBootstrap(uint cloneFlags, IReadOnlyList<(uint Type, string Path)> joins, int? oomScoreAdj)
    {
        if (joins.Count > MaxJoin) throw new RuntimeException($"at most {MaxJoin} namespaces can be joined");
        var msg = new byte[MessageSize];
        var span = msg.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(span, Bootstrap);
        var b = span[PayloadOffset..];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Version);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], cloneFlags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], (uint)joins.Count);
        BinaryPrimitives.WriteInt32LittleEndian(b[12..], oomScoreAdj ?? 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b[16..], oomScoreAdj.HasValue ? 1u : 0u);
        for (int i = 0; i < joins.Count; i++)
        {
            var j = b[(20 + i * (4 + PathMax))..];
            BinaryPrimitives.WriteUInt32LittleEndian(j, joins[i].Type);
            if (Encoding.UTF8.GetByteCount(joins[i].Path) > PathMax - 1)
                throw new RuntimeException($"namespace path too long (at most {PathMax - 1} bytes): {joins[i].Path[..Math.Min(joins[i].Path.Length, 64)]}...");
            Encoding.UTF8.GetBytes(joins[i].Path, j.Slice(4, PathMax - 1));
        }
        return msg;
    }

    public static byte[] Encode(uint type, int value = 0)
    {
        var msg = new byte[MessageSize];
        BinaryPrimitives.WriteUInt32LittleEndian(msg, type);
        BinaryPrimitives.WriteInt32LittleEndian(msg.AsSpan(4), value);
        return msg;
    }

    public static (uint Type, int Value, string Text) Decode(ReadOnlySpan<byte> msg)
    {
        uint type = BinaryPrimitives.ReadUInt32LittleEndian(msg);
        int value = BinaryPrimitives.ReadInt32LittleEndian(msg[4..]);
        var text = msg.Slice(PayloadOffset, Math.Min(TextMax, msg.Length - PayloadOffset));
        int nul = text.IndexOf((byte)0);
        return (type, value, Encoding.UTF8.GetString(nul < 0 ? text : text[..nul]));
    }
}
