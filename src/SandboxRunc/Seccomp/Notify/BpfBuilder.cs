using System.Buffers.Binary;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// A minimal classic-BPF assembler for seccomp: loads of nr/arch, forward conditional jumps to
/// labels, returns. Jump offsets are resolved at <see cref="Assemble"/> (forward only, at most 255).
/// </summary>
public sealed class BpfBuilder
{
    public const ushort LdWAbs = 0x20, JeqK = 0x15, JgeK = 0x35, RetK = 0x06;
    const uint OffsetNr = 0, OffsetArch = 4; // struct seccomp_data

    readonly List<(ushort Code, string? Target, uint K)> _code = [];
    readonly Dictionary<string, int> _labels = [];

    public void LoadNr() => _code.Add((LdWAbs, null, OffsetNr));
    public void LoadArch() => _code.Add((LdWAbs, null, OffsetArch));
    public void JumpIfEqual(uint k, string label) => _code.Add((JeqK, label, k));
    public void JumpIfAtLeast(uint k, string label) => _code.Add((JgeK, label, k));
    public void Return(uint action) => _code.Add((RetK, null, action));
    public void Label(string name) => _labels.Add(name, _code.Count);

    public byte[] Assemble()
    {
        var bytes = new byte[_code.Count * 8];
        for (int i = 0; i < _code.Count; i++)
        {
            var (code, target, k) = _code[i];
            byte jt = 0;
            if (target is not null)
            {
                int offset = _labels[target] - (i + 1);
                if (offset < 0 || offset > 255) throw new InvalidOperationException($"bpf: jump to {target} out of range ({offset})");
                jt = (byte)offset;
            }
            var span = bytes.AsSpan(i * 8, 8);
            BinaryPrimitives.WriteUInt16LittleEndian(span, code);
            span[2] = jt;
            span[3] = 0; // jf: fall through
            BinaryPrimitives.WriteUInt32LittleEndian(span[4..], k);
        }
        return bytes;
    }
}
