using System.Text.Json;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Oci;

/// <summary>A config.json that cannot be run: the message names the file and the field.</summary>
public sealed class SpecException(string message) : Exception(message);

public static class SpecLoader
{
    public static readonly string[] NamespaceTypes = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];

    /// <summary>Reads and validates bundle/config.json.</summary>
    public static Spec LoadBundle(string bundle)
    {
        if (!Directory.Exists(bundle))
            throw new SpecException($"bundle {bundle}: no such directory");
        string path = Path.Combine(bundle, "config.json");
        if (!File.Exists(path))
            throw new SpecException($"{path}: no such file (is {bundle} an OCI bundle?)");
        var spec = Parse(File.ReadAllBytes(path), path);
        Validate(spec, path, bundle);
        return spec;
    }

    public static Spec Parse(ReadOnlySpan<byte> json, string fileName)
    {
        try
        {
            return JsonSerializer.Deserialize(json, OciJson.Default.Spec)
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

    static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return Readable((cut > 0 ? message[..cut] : message).Trim());
    }

    // The native executable is built with UseSystemResourceKeys: System.Text.Json's messages arrive as
    // their resource key and arguments ("ZeroDepthAtEnd,", "FoundInvalidCharacter, x"). Say the common ones in words.
    static readonly Dictionary<string, string> JsonErrors = new()
    {
        ["ZeroDepthAtEnd"] = "the document ends before every object and array is closed",
        ["InvalidEndOfJsonNonPrimitive"] = "the document ends before every object and array is closed",
        ["ExpectedJsonTokens"] = "the document is empty",
        ["FoundInvalidCharacter"] = "unexpected character",
        ["ExpectedStartOfValueNotFound"] = "expected a value, found",
        ["ExpectedStartOfPropertyNotFound"] = "expected a property name, found",
        ["ExpectedStartOfPropertyOrValueNotFound"] = "expected a property name or value",
        ["ExpectedSeparatorAfterPropertyNameNotFound"] = "expected ':' after a property name, found",
        ["ExpectedValueAfterPropertyNameNotFound"] = "expected a value after the property name",
        ["ExpectedEndAfterSingleJson"] = "more data after the end of the document, found",
        ["ExpectedEndOfDigitNotFound"] = "invalid number, found",
        ["ExpectedNextDigitEValueNotFound"] = "invalid number, found",
        ["ExpectedFalse"] = "expected false, found",
        ["ExpectedTrue"] = "expected true, found",
        ["ExpectedNull"] = "expected null, found",
        ["EndOfStringNotFound"] = "a string is not closed",
        ["InvalidCharacterWithinString"] = "invalid character in a string:",
        ["MismatchedObjectArray"] = "mismatched closing bracket",
        ["TrailingCommaNotAllowedBeforeArrayEnd"] = "trailing comma before ']'",
        ["TrailingCommaNotAllowedBeforeObjectEnd"] = "trailing comma before '}'",
        ["EndOfCommentNotFound"] = "a comment is not closed",
        ["DeserializeUnableToConvertValue"] = "the value has the wrong type; expected",
    };

    static string Readable(string message)
    {
        int comma = message.IndexOf(',');
        string key = comma >= 0 ? message[..comma] : message;
        if (!JsonErrors.TryGetValue(key, out var words)) return message;
        string args = comma >= 0 ? message[(comma + 1)..].Trim() : "";
        return args.Length > 0 ? $"{words} {args}" : words;
    }

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
