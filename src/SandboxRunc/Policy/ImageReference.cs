using System.Text.RegularExpressions;

namespace SandboxRunc.Policy;

/// <summary>
/// Docker image names, normalised the way dockerd does: "docker:cli" is docker.io/library/docker:cli,
/// "localstack/localstack" is docker.io/localstack/localstack:latest, "ghcr.io/x/y@sha256:..." keeps its
/// registry and digest. An image ID ("sha256:..." or its hex) is not a name and is kept as given.
/// </summary>
public sealed partial record ImageReference(string Repository, string? Tag, string? Digest)
{
    public override string ToString() => Repository + (Tag is null ? "" : ":" + Tag) + (Digest is null ? "" : "@" + Digest);

    [GeneratedRegex("^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")]
    private static partial Regex PathComponent();
    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex TagText();
    [GeneratedRegex("^sha256:[a-f0-9]{64}$")]
    private static partial Regex DigestText();
    [GeneratedRegex("^(sha256:)?[a-f0-9]{12,64}$")]
    private static partial Regex IdText();

    public static bool IsImageId(string s) => IdText().IsMatch(s) && (s.StartsWith("sha256:") || s.Length == 64 || !s.Contains('/'));

    /// <summary>Parses a name as docker accepts it; null when it is not one. No tag and no digest means ":latest"
    /// unless <paramref name="defaultTag"/> is false.</summary>
    public static ImageReference? Parse(string name, bool defaultTag = true)
    {
        if (name.Length == 0 || name.Length > 512) return null;
        string? digest = null;
        int at = name.IndexOf('@');
        if (at >= 0)
        {
            digest = name[(at + 1)..];
            if (!DigestText().IsMatch(digest)) return null;
            name = name[..at];
        }
        string? tag = null;
        int colon = name.LastIndexOf(':');
        if (colon > name.LastIndexOf('/'))
        {
            tag = name[(colon + 1)..];
            name = name[..colon];
            if (!TagText().IsMatch(tag)) return null;
        }
        var parts = name.Split('/').ToList();
        string domain = "docker.io";
        if (parts.Count > 1 && (parts[0].Contains('.') || parts[0].Contains(':') || parts[0] == "localhost"))
        {
            domain = parts[0] == "index.docker.io" ? "docker.io" : parts[0];
            parts.RemoveAt(0);
        }
        if (parts.Count == 0 || parts.Any(p => !PathComponent().IsMatch(p))) return null;
        if (domain == "docker.io" && parts.Count == 1) parts.Insert(0, "library");
        if (tag is null && digest is null && defaultTag) tag = "latest";
        return new ImageReference(domain + "/" + string.Join('/', parts), tag, digest);
    }

    /// <summary>An allow-list entry: "*", name[:tag] (no tag = latest), name:* (any tag), name@sha256:... (that digest).</summary>
    public static ImagePattern? ParsePattern(string entry)
    {
        if (entry == "*") return new ImagePattern(ImagePatternKind.All, null);
        if (entry.EndsWith(":*") && !entry.Contains('@'))
            return Parse(entry[..^2], defaultTag: false) is { Tag: null } r ? new ImagePattern(ImagePatternKind.AnyTag, r) : null;
        if (Parse(entry) is not { } reference) return null;
        return new ImagePattern(reference.Digest is not null ? ImagePatternKind.Digest : ImagePatternKind.Tag,
            reference.Digest is not null ? reference with { Tag = null } : reference);
    }

    /// <summary>The name a message shows for a container's image: the normalised repository, or the ID as given.</summary>
    public static string Shown(string? typed) =>
        typed is null ? "<unknown>" : Parse(typed) is { } r && !IsImageId(typed) ? r.Repository : typed;
}

public enum ImagePatternKind { All, Tag, AnyTag, Digest }

public sealed record ImagePattern(ImagePatternKind Kind, ImageReference? Reference);
