using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Text.RegularExpressions;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Oci;

/// <summary>A config.json that cannot be run: the message names the file and the field.</summary>
public sealed class SpecException(string message) : SandboxRuncException(message);

public static class SpecLoader
{
    public static readonly string[] NamespaceTypes = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];

    /// <summary>Reads and validates bundle/config.json.</summary>
    public static Spec LoadBundle(string bundle)
    {
        if (!Directory.Exists(bundle))
            throw new SpecException($"bundle {bundle}: no such directory");
        string path = Path.Combine(bundle, "config.json");
        if (!Path.Exists(path))
            throw new SpecException($"{path}: no such file (is {bundle} an OCI bundle?)");
        var spec = Parse(Interop.UserFile.ReadAll("bundle", path), path);
        Validate(spec, path, bundle);
        CheckReachable(spec, path, bundle);
        return spec;
    }

    /// <summary>
    /// With the spec's own ID mappings, the container's root (an unprivileged host user) mounts the rootfs and
    /// the bind sources itself, by path: a directory on the way that it may not enter (a bundle under a 0700
    /// directory) failed create with "mount ROOTFS on ROOTFS: Permission denied". Refused here, naming the
    /// directory and what to do. (With a range from the pool, the host stages them where that user can reach.)
    /// </summary>
    static void CheckReachable(Spec spec, string fileName, string bundle)
    {
        var linux = spec.Linux;
        if (linux?.Namespaces?.Any(n => n.Type == "user" && string.IsNullOrEmpty(n.Path)) != true) return;
        if (HostIdOfRoot(linux.UidMappings) is not { } uid || HostIdOfRoot(linux.GidMappings) is not { } gid) return;
        bool Mapped(List<IdMapping>? maps, uint id) => maps?.Any(m => id >= m.HostId && id - m.HostId < m.Size) == true;
        bool Capable(uint owner, uint group) => Mapped(linux.UidMappings, owner) && Mapped(linux.GidMappings, group);

        var paths = new List<(string What, string Path)> { ("rootfs", RootfsPath(spec, bundle)) };
        foreach (var (m, i) in (spec.Mounts ?? []).Select((m, i) => (m, i)))
            if (m.Source is { Length: > 0 } src && src.StartsWith('/') && (m.Type == "bind" || m.Options?.Any(o => o is "bind" or "rbind") == true) && Path.Exists(src))
                paths.Add(($"mounts[{i}].source", src));
        foreach (var (what, p) in paths)
        {
            if (Interop.HostPath.FirstUnsearchable(p, uid, gid, Capable) is not { } blocked) continue;
            throw new SpecException($"{fileName}: {what} {p}: the container's root (host uid {uid}, gid {gid}, from linux.uidMappings and " +
                $"linux.gidMappings) cannot enter {blocked.Dir} (mode {Convert.ToString(blocked.Mode, 8).PadLeft(4, '0')}, owner {blocked.Uid}:{blocked.Gid}); " +
                $"let it through (chmod o+x {blocked.Dir}) or move the bundle");
        }
    }

    static uint? HostIdOfRoot(List<IdMapping>? maps) =>
        maps?.FirstOrDefault(m => m.ContainerId == 0 && m.Size > 0) is { } m ? m.HostId : null;

    public static Spec Parse(ReadOnlySpan<byte> json, string fileName)
    {
        var spec = ParseDocument(json, fileName, OciJson.Default.Spec);
        DropNullValues(spec.Annotations);
        DropNullValues(spec.Linux?.Sysctl);
        DropNullValues(spec.Linux?.Resources?.Unified);
        return spec;
    }

    /// <summary>
    /// One OCI JSON document (config.json, exec's --process file, update's --resources file): any failure is a
    /// <see cref="SpecException"/> naming the file, the line and column, the field, and what is wrong in JSON's
    /// words. A null where an object member is expected means "absent", as for runc (Go's encoder writes nil
    /// slices as null); a null inside a list means nothing and is refused.
    /// </summary>
    public static T ParseDocument<T>(ReadOnlySpan<byte> json, string fileName, JsonTypeInfo<T> type) where T : class
    {
        RefuseNullListItems(json, fileName);
        try
        {
            return JsonSerializer.Deserialize(json, type)
                ?? throw new SpecException($"{fileName}: the document is null");
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long line
                ? $" at line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}"
                : "";
            string field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" (field {e.Path})";
            throw new SpecException($"{fileName}: invalid JSON{where}{field}: {FirstSentence(e.Message)}");
        }
    }

    static void DropNullValues(Dictionary<string, string>? map)
    {
        if (map is null) return;
        foreach (var key in map.Where(kv => kv.Value is null).Select(kv => kv.Key).ToList()) map.Remove(key);
    }

    /// <summary>
    /// Finds a null list item (`"args": [null]`, `"mounts": [null]`) before the document is mapped onto the
    /// model, where it would be a null object nobody expects. Malformed JSON is left to the deserializer,
    /// which reports it with its position.
    /// </summary>
    static void RefuseNullListItems(ReadOnlySpan<byte> json, string fileName)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions
        {
            CommentHandling = JsonCommentHandling.Skip,
            AllowTrailingCommas = true,
            MaxDepth = 64,
        });
        // One frame per open object or array: the member name or the item index the reader is at.
        var frames = new List<(bool IsArray, string? Name, int Index)>();
        try
        {
            while (reader.Read())
            {
                var token = reader.TokenType;
                if (token == JsonTokenType.PropertyName)
                {
                    frames[^1] = (false, reader.GetString(), -1);
                    continue;
                }
                if (token is JsonTokenType.EndObject or JsonTokenType.EndArray)
                {
                    frames.RemoveAt(frames.Count - 1);
                    continue;
                }
                if (frames.Count > 0 && frames[^1].IsArray) frames[^1] = (true, null, frames[^1].Index + 1);
                if (token == JsonTokenType.Null && frames.Count > 0 && frames[^1].IsArray)
                {
                    int offset = (int)reader.TokenStartIndex;
                    int lineStart = json[..offset].LastIndexOf((byte)'\n') + 1;
                    int line = json[..offset].Count((byte)'\n') + 1;
                    throw new SpecException($"{fileName}: invalid JSON at line {line}, column {offset - lineStart + 1} " +
                                            $"(field {JsonPath(frames)}): a list item cannot be null");
                }
                if (token is JsonTokenType.StartObject or JsonTokenType.StartArray)
                    frames.Add((token == JsonTokenType.StartArray, null, -1));
            }
        }
        catch (JsonException) { /* reported by the deserializer, with its position */ }
    }

    static string JsonPath(List<(bool IsArray, string? Name, int Index)> frames) =>
        "$" + string.Concat(frames.Select(f => f.IsArray ? $"[{f.Index}]" : $".{f.Name}"));

    /// <summary>System.Text.Json's explanation without its position suffix, naming JSON shapes rather than .NET types.</summary>
    internal static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        string m = (cut > 0 ? message[..cut] : message).Trim();
        m = Regex.Replace(m, @"System\.Nullable`1\[([\w.]+)\]", "$1");
        m = m.Replace("System.Collections.Generic.List`1[System.String]", "an array of strings")
             .Replace("System.Collections.Generic.Dictionary`2[System.String,System.String]", "an object with string values");
        m = Regex.Replace(m, @"System\.Collections\.Generic\.List`1\[[\w.`]+\]", "an array");
        m = Regex.Replace(m, @"System\.Collections\.Generic\.Dictionary`2\[[\w.`,]+\]", "an object");
        m = Regex.Replace(m, @"SandboxRunc(\.\w+)+", "an object");
        foreach (var (type, shown) in TypeWords) m = m.Replace(type, shown);
        return m;
    }

    static readonly (string Type, string Shown)[] TypeWords =
    [
        ("System.UInt16", "an unsigned 16-bit number"), ("System.UInt32", "an unsigned 32-bit number"),
        ("System.UInt64", "an unsigned 64-bit number"), ("System.Int16", "a 16-bit number"), ("System.Int32", "a 32-bit number"),
        ("System.Int64", "a 64-bit number"), ("System.Double", "a number"), ("System.Byte", "a byte (0-255)"),
        ("System.String", "a string"), ("System.Boolean", "true or false"),
    ];

    /// <summary>Checks what the runtime needs before it creates anything. Bundle may be null for pure checks.</summary>
    public static void Validate(Spec spec, string fileName, string? bundle)
    {
        if (string.IsNullOrEmpty(spec.OciVersion))
            throw new SpecException($"{fileName}: field ociVersion is missing");
        if (!TryMajor(spec.OciVersion, out int major) || major != SpecVersion.SupportedMajor)
            throw new SpecException($"{fileName}: field ociVersion: unsupported version {spec.OciVersion} (this runtime implements {SpecVersion.SupportedMajor}.x)");
        if (spec.Root is null || string.IsNullOrEmpty(spec.Root.Path))
            throw new SpecException($"{fileName}: field root.path is missing");
        if (bundle is not null)
        {
            string rootfs = RootfsPath(spec, bundle);
            if (!Directory.Exists(rootfs))
                throw new SpecException($"{fileName}: field root.path: rootfs {rootfs} does not exist");
        }
        if (spec.Process is null)
            throw new SpecException($"{fileName}: field process is missing");
        if (spec.Process.Args is null || spec.Process.Args.Count == 0)
            throw new SpecException($"{fileName}: field process.args must name the program to run");
        if (spec.Process.Cwd is { Length: > 0 } cwd && !cwd.StartsWith('/'))
            throw new SpecException($"{fileName}: field process.cwd must be an absolute path, not \"{cwd}\"");
        var seen = new HashSet<string>();
        foreach (var (ns, i) in (spec.Linux?.Namespaces ?? []).Select((n, i) => (n, i)))
        {
            if (!NamespaceTypes.Contains(ns.Type))
                throw new SpecException($"{fileName}: field linux.namespaces[{i}].type: unknown namespace type \"{ns.Type}\" (known: {string.Join(", ", NamespaceTypes)})");
            if (!seen.Add(ns.Type))
                throw new SpecException($"{fileName}: field linux.namespaces[{i}].type: namespace \"{ns.Type}\" is listed twice");
            if (ns.Path is { Length: > 0 } p && !p.StartsWith('/'))
                throw new SpecException($"{fileName}: field linux.namespaces[{i}].path must be absolute, not \"{p}\"");
        }
        foreach (var (m, i) in (spec.Mounts ?? []).Select((m, i) => (m, i)))
        {
            if (string.IsNullOrEmpty(m.Destination) || !m.Destination.StartsWith('/'))
                throw new SpecException($"{fileName}: field mounts[{i}].destination must be an absolute path, not \"{m.Destination}\"");
        }
        foreach (var (d, i) in (spec.Linux?.Devices ?? []).Select((d, i) => (d, i)))
        {
            // As runc: an unknown type is an error (it is not silently left out), and a FIFO ("p") is one of the types.
            if (d.Type is not ("c" or "b" or "u" or "p"))
                throw new SpecException($"{fileName}: field linux.devices[{i}].type: \"{d.Type}\" is not a device type (c, b, u or p)");
            if (!d.Path.StartsWith('/'))
                throw new SpecException($"{fileName}: field linux.devices[{i}].path must be an absolute path, not \"{d.Path}\"");
        }
        bool hasUserNs = seen.Contains("user");
        if (!hasUserNs && (spec.Linux?.UidMappings?.Count > 0 || spec.Linux?.GidMappings?.Count > 0))
            throw new SpecException($"{fileName}: field linux.uidMappings is set but linux.namespaces has no user namespace");
        foreach (var (r, i) in (spec.Process.Rlimits ?? []).Select((r, i) => (r, i)))
        {
            if (!RlimitNames.TryGetResource(r.Type, out _))
                throw new SpecException($"{fileName}: field process.rlimits[{i}].type: unknown rlimit \"{r.Type}\"");
        }
        foreach (var (set, list) in CapabilityLists(spec.Process.Capabilities))
        {
            foreach (var cap in list)
                if (!CapabilityNames.TryParse(cap, out _))
                    throw new SpecException($"{fileName}: field process.capabilities.{set}: unknown capability \"{cap}\"");
        }
    }

    static IEnumerable<(string, List<string>)> CapabilityLists(Oci.Capabilities? c)
    {
        if (c is null) yield break;
        if (c.Bounding is not null) yield return ("bounding", c.Bounding);
        if (c.Effective is not null) yield return ("effective", c.Effective);
        if (c.Inheritable is not null) yield return ("inheritable", c.Inheritable);
        if (c.Permitted is not null) yield return ("permitted", c.Permitted);
        if (c.Ambient is not null) yield return ("ambient", c.Ambient);
    }

    static bool TryMajor(string version, out int major)
    {
        int dot = version.IndexOf('.');
        return int.TryParse(dot < 0 ? version : version[..dot], out major);
    }

    public static string RootfsPath(Spec spec, string bundle)
    {
        string p = spec.Root!.Path!;
        return Path.GetFullPath(Path.IsPathRooted(p) ? p : Path.Combine(bundle, p));
    }
}
