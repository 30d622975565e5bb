using SandboxRunc.Interop;

namespace SandboxRunc.Rootfs;

/// <summary>A mount's options split the way mount(2) wants them: flags, propagation changes, and the fs data string.</summary>
public sealed record ParsedMountOptions(ulong Flags, ulong ClearedFlags, List<ulong> Propagation, string Data, bool Bind, bool Recursive)
{
    public bool ReadOnly => (Flags & Libc.MS_RDONLY) != 0;
}

public static class MountOptions
{
    // name -> (flag, clears): "rw" clears MS_RDONLY, "nosuid" sets MS_NOSUID, ...
    static readonly Dictionary<string, (ulong Flag, bool Clear)> FlagTable = new(StringComparer.Ordinal)
    {
        ["defaults"] = (0, false),
        ["ro"] = (Libc.MS_RDONLY, false), ["rw"] = (Libc.MS_RDONLY, true),
        ["nosuid"] = (Libc.MS_NOSUID, false), ["suid"] = (Libc.MS_NOSUID, true),
        ["nodev"] = (Libc.MS_NODEV, false), ["dev"] = (Libc.MS_NODEV, true),
        ["noexec"] = (Libc.MS_NOEXEC, false), ["exec"] = (Libc.MS_NOEXEC, true),
        ["sync"] = (Libc.MS_SYNCHRONOUS, false), ["async"] = (Libc.MS_SYNCHRONOUS, true),
        ["dirsync"] = (Libc.MS_DIRSYNC, false),
        ["remount"] = (Libc.MS_REMOUNT, false),
        ["mand"] = (Libc.MS_MANDLOCK, false), ["nomand"] = (Libc.MS_MANDLOCK, true),
        ["noatime"] = (Libc.MS_NOATIME, false), ["atime"] = (Libc.MS_NOATIME, true),
        ["nodiratime"] = (Libc.MS_NODIRATIME, false), ["diratime"] = (Libc.MS_NODIRATIME, true),
        ["relatime"] = (Libc.MS_RELATIME, false), ["norelatime"] = (Libc.MS_RELATIME, true),
        ["strictatime"] = (Libc.MS_STRICTATIME, false), ["nostrictatime"] = (Libc.MS_STRICTATIME, true),
        ["nosymfollow"] = (Libc.MS_NOSYMFOLLOW, false),
        ["silent"] = (Libc.MS_SILENT, false), ["loud"] = (Libc.MS_SILENT, true),
    };

    static readonly Dictionary<string, ulong> PropagationTable = new(StringComparer.Ordinal)
    {
        ["private"] = Libc.MS_PRIVATE, ["rprivate"] = Libc.MS_PRIVATE | Libc.MS_REC,
        ["shared"] = Libc.MS_SHARED, ["rshared"] = Libc.MS_SHARED | Libc.MS_REC,
        ["slave"] = Libc.MS_SLAVE, ["rslave"] = Libc.MS_SLAVE | Libc.MS_REC,
        ["unbindable"] = Libc.MS_UNBINDABLE, ["runbindable"] = Libc.MS_UNBINDABLE | Libc.MS_REC,
    };

    public static ParsedMountOptions Parse(IEnumerable<string>? options, string? type = null)
    {
        ulong flags = 0, cleared = 0;
        var propagation = new List<ulong>();
        var data = new List<string>();
        bool bind = type == "bind", recursive = false;
        foreach (var o in options ?? [])
        {
            if (o == "bind") { bind = true; continue; }
            if (o == "rbind") { bind = true; recursive = true; continue; }
            if (FlagTable.TryGetValue(o, out var f))
            {
                if (f.Clear) { flags &= ~f.Flag; cleared |= f.Flag; }
                else { flags |= f.Flag; cleared &= ~f.Flag; }
                continue;
            }
            if (PropagationTable.TryGetValue(o, out var p)) { propagation.Add(p); continue; }
            data.Add(o);
        }
        return new ParsedMountOptions(flags, cleared, propagation, string.Join(',', data), bind, recursive);
    }

    public static ulong? RootfsPropagation(string? name) =>
        string.IsNullOrEmpty(name) ? null : PropagationTable.TryGetValue(name, out var p) ? p : throw new RuntimeException($"unknown rootfsPropagation \"{name}\"");

    public static IEnumerable<string> KnownOptions => FlagTable.Keys.Concat(PropagationTable.Keys).Concat(["bind", "rbind"]);
}
