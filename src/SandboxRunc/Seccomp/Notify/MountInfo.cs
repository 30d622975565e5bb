using System.Globalization;
using System.Text;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>The per-mount flags the rules care about (bit values of MS_* and MOUNT_ATTR_* alike).</summary>
[Flags]
public enum MountFlags : uint
{
    None = 0,
    ReadOnly = 1,
    NoSuid = 2,
    NoDev = 4,
    NoExec = 8,
    All = ReadOnly | NoSuid | NoDev | NoExec,
}

/// <summary>One line of /proc/PID/mountinfo (proc(5)).</summary>
public sealed record MountEntry(
    int Id, int ParentId, uint Major, uint Minor, string Root, string MountPoint,
    MountFlags Flags, string FsType, string Source, string SuperOptions)
{
    public bool ReadOnly => Flags.HasFlag(MountFlags.ReadOnly);
}

/// <summary>Parses /proc/PID/mountinfo text.</summary>
public static class MountInfo
{
    public static List<MountEntry> Parse(string text)
    {
        var list = new List<MountEntry>();
        foreach (var line in text.Split('\n'))
            if (line.Length > 0)
                list.Add(ParseLine(line));
        return list;
    }

    /// <summary>
    /// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue":
    /// id, parent, major:minor, root, mount point, per-mount options, optional fields up to "-",
    /// fstype, source, super options. Paths escape space, tab, newline and backslash as \ooo.
    /// </summary>
    public static MountEntry ParseLine(string line)
    {
        var f = line.Split(' ');
        int dash = f.Length < 10 ? -1 : Array.IndexOf(f, "-", 6);
        if (dash < 0 || f.Length < dash + 3)
            throw new FormatException($"mountinfo: malformed line: {line}");
        var dev = f[2].Split(':');
        return new MountEntry(
            int.Parse(f[0], CultureInfo.InvariantCulture), int.Parse(f[1], CultureInfo.InvariantCulture),
            uint.Parse(dev[0], CultureInfo.InvariantCulture), uint.Parse(dev[1], CultureInfo.InvariantCulture),
            Unescape(f[3]), Unescape(f[4]), ParseFlags(f[5]),
            Unescape(f[dash + 1]), Unescape(f[dash + 2]), dash + 3 < f.Length ? Unescape(f[dash + 3]) : "");
    }

    public static MountFlags ParseFlags(string options)
    {
        var flags = MountFlags.None;
        foreach (var o in options.Split(','))
            flags |= o switch
            {
                "ro" => MountFlags.ReadOnly,
                "nosuid" => MountFlags.NoSuid,
                "nodev" => MountFlags.NoDev,
                "noexec" => MountFlags.NoExec,
                _ => MountFlags.None,
            };
        return flags;
    }

    static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var bytes = new List<byte>(s.Length);
        var raw = Encoding.UTF8.GetBytes(s);
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] == '\\' && i + 3 < raw.Length && IsOctal(raw[i + 1]) && IsOctal(raw[i + 2]) && IsOctal(raw[i + 3]))
            {
                bytes.Add((byte)(((raw[i + 1] - '0') << 6) | ((raw[i + 2] - '0') << 3) | (raw[i + 3] - '0')));
                i += 3;
            }
            else bytes.Add(raw[i]);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    static bool IsOctal(byte b) => b >= '0' && b <= '7';
}
