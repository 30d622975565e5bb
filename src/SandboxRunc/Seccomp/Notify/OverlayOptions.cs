using System.Text;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// One directory an overlay mount names, as the option the new mount API takes it by fd: lowerdir+ (each
/// layer of lowerdir, in order), datadir+ (the data-only layers after "::"), upperdir, workdir.
/// </summary>
public sealed record OverlayLayer(string Key, string Path);

/// <summary>
/// An overlayfs mount's data string read the way the kernel reads it (fs/overlayfs/params.c), so that the
/// directories judged are the ones the kernel would take: options split at commas not escaped by a
/// backslash (ovl_next_opt: the backslash stays in the option); key and value at the first '='; lowerdir
/// split at unescaped ':' ("::" starts the data-only layers) and each layer unescaped (a backslash keeps the
/// next character); upperdir and workdir unescaped; lowerdir+ and datadir+ taken as they are. The layers,
/// in order, and every other option as it was given (a flag, or key=value).
/// </summary>
public sealed record OverlayOptions(IReadOnlyList<OverlayLayer> Layers, IReadOnlyList<string> Others)
{
    /// <summary>The kernel's limit on lower layers (OVL_MAX_STACK); more is refused before anything is resolved.</summary>
    public const int MaxLayers = 500;

    public static OverlayOptions Parse(string? data)
    {
        var layers = new List<OverlayLayer>();
        var others = new List<string>();
        foreach (var option in SplitOptions(data ?? ""))
        {
            int eq = option.IndexOf('=');
            string key = eq < 0 ? option : option[..eq];
            string? value = eq < 0 ? null : option[(eq + 1)..];
            switch (key)
            {
                case "lowerdir" when value is not null:
                    // a new lowerdir replaces the earlier ones (ovl_reset_lowerdirs)
                    layers.RemoveAll(l => l.Key is "lowerdir+" or "datadir+");
                    layers.AddRange(SplitLowerDirs(value).Select(p => new OverlayLayer(p.Data ? "datadir+" : "lowerdir+", Unescape(p.Path))));
                    break;
                case "upperdir" or "workdir" when value is not null:
                    layers.RemoveAll(l => l.Key == key);
                    layers.Add(new OverlayLayer(key, Unescape(value)));
                    break;
                case "lowerdir+" or "datadir+" when value is not null:
                    layers.Add(new OverlayLayer(key, value));
                    break;
                default:
                    others.Add(option);
                    break;
            }
            if (layers.Count > MaxLayers + 2)
                throw new FormatException($"overlay: more than {MaxLayers} layers");
        }
        return new OverlayOptions(layers, others);
    }

    /// <summary>ovl_next_opt: a comma ends an option unless a backslash escapes it; the backslash stays.</summary>
    static IEnumerable<string> SplitOptions(string data)
    {
        var current = new StringBuilder();
        for (int i = 0; i < data.Length; i++)
        {
            char c = data[i];
            if (c == '\\')
            {
                current.Append(c);
                if (i + 1 < data.Length) current.Append(data[++i]);
            }
            else if (c == ',')
            {
                if (current.Length > 0) yield return current.ToString();
                current.Clear();
            }
            else current.Append(c);
        }
        if (current.Length > 0) yield return current.ToString();
    }

    /// <summary>
    /// ovl_parse_param_split_lowerdirs: an unescaped ':' separates layers, "::" starts the data-only layers
    /// (every layer after it is one); escapes are kept for <see cref="Unescape"/>.
    /// </summary>
    static IEnumerable<(string Path, bool Data)> SplitLowerDirs(string value)
    {
        var current = new StringBuilder();
        bool data = false, nextIsData = false;
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c == '\\')
            {
                current.Append(c);
                if (i + 1 < value.Length) current.Append(value[++i]);
            }
            else if (c == ':')
            {
                if (i + 1 < value.Length && value[i + 1] == ':') { nextIsData = true; i++; }
                if (current.Length > 0) yield return (current.ToString(), data);
                current.Clear();
                data |= nextIsData;
            }
            else current.Append(c);
        }
        if (current.Length > 0) yield return (current.ToString(), data);
    }

    /// <summary>ovl_unescape: a backslash is dropped and the character after it kept.</summary>
    static string Unescape(string s)
    {
        var d = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\') { if (++i >= s.Length) break; }
            d.Append(s[i]);
        }
        return d.ToString();
    }
}
