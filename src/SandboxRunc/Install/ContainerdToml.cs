using System.Text;
using SandboxRunc.Container;

namespace SandboxRunc.Install;

/// <summary>
/// Edits containerd's config.toml at the text level: one block between marker comments, holding the
/// CRI plugin's runtime entry (runtime_type io.containerd.runc.v2, BinaryName this executable).
/// Install adds or refreshes the block, uninstall removes exactly its lines; nothing else is touched.
/// </summary>
public static class ContainerdToml
{
    public const string Begin = "# sandbox-runc: begin";
    public const string End = "# sandbox-runc: end";
    const string Cri = "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes";

    /// <param name="withRunc">also define containerd's own runc runtime: the CRI plugin's built-in runtimes table is
    /// replaced by the file's as soon as the file names one runtime, and without "runc" (its default_runtime_name)
    /// the plugin does not load at all ("no corresponding runtime configured in `containerd.runtimes`").</param>
    public static string Block(string name, string binary, bool withRunc = false)
    {
        var sb = new StringBuilder()
            .Append(Begin).Append(" (written by `sandbox-runc install --containerd`; `sandbox-runc uninstall --containerd` removes it)\n")
            .Append('[').Append(Cri).Append('.').Append(name).Append("]\n")
            .Append("  runtime_type = \"io.containerd.runc.v2\"\n")
            .Append('[').Append(Cri).Append('.').Append(name).Append(".options]\n")
            .Append("  BinaryName = ").Append(Quote(binary)).Append('\n');
        if (withRunc)
            sb.Append("# containerd's default runtime, which naming any runtime here would drop\n")
              .Append('[').Append(Cri).Append(".runc]\n")
              .Append("  runtime_type = \"io.containerd.runc.v2\"\n");
        return sb.Append(End).Append('\n').ToString();
    }

    public static DaemonJson.Edit Install(string? text, string file, string name, string binary)
    {
        text ??= "";
        var found = FindBlock(text, file);
        string rest = found is { } f ? text[..f.Start] + text[(f.Start + f.Length)..] : text;
        string block = Block(name, binary, withRunc: name != "runc" && !DefinesRuntimeElsewhere(rest, "runc"));
        if (found is { } b)
        {
            if (text.Substring(b.Start, b.Length) == block) return new DaemonJson.Edit(null, []);
            return new DaemonJson.Edit(text[..b.Start] + block + text[(b.Start + b.Length)..],
                [$"updated the {name} runtime block (CRI plugin, BinaryName {binary})"]);
        }
        if (DefinesRuntimeElsewhere(text, name))
            throw new RuntimeException($"{file}: already defines the {name} runtime outside the \"{Begin}\" / \"{End}\" markers; remove that table by hand first (file left unchanged)");
        string prefix = text.Length == 0 ? "version = 2\n\n" : text.EndsWith('\n') ? text : text + "\n";
        return new DaemonJson.Edit(prefix + block, [$"added the {name} runtime (CRI plugin, runtime_type io.containerd.runc.v2, BinaryName {binary})"]);
    }

    public static DaemonJson.Edit Uninstall(string? text, string file, string name)
    {
        text ??= "";
        if (FindBlock(text, file) is not { } b) return new DaemonJson.Edit(null, []);
        return new DaemonJson.Edit(text[..b.Start] + text[(b.Start + b.Length)..], [$"removed the {name} runtime block"]);
    }

    /// <summary>The marker block: from the start of the begin line through the end line's newline.</summary>
    static (int Start, int Length)? FindBlock(string text, string file)
    {
        int begin = LineStartingWith(text, Begin, 0);
        if (begin < 0)
        {
            if (LineStartingWith(text, End, 0) >= 0)
                throw new RuntimeException($"{file}: has \"{End}\" without \"{Begin}\"; fix it by hand (file left unchanged)");
            return null;
        }
        int end = LineStartingWith(text, End, begin);
        if (end < 0)
            throw new RuntimeException($"{file}: has \"{Begin}\" without \"{End}\"; fix it by hand (file left unchanged)");
        int nl = text.IndexOf('\n', end);
        int stop = nl < 0 ? text.Length : nl + 1;
        if (LineStartingWith(text, Begin, stop) >= 0)
            throw new RuntimeException($"{file}: has more than one \"{Begin}\" block; fix it by hand (file left unchanged)");
        return (begin, stop - begin);
    }

    static int LineStartingWith(string text, string marker, int from)
    {
        for (int i = from; i < text.Length;)
        {
            int nl = text.IndexOf('\n', i);
            int len = (nl < 0 ? text.Length : nl) - i;
            if (text.AsSpan(i, len).TrimStart().StartsWith(marker, StringComparison.Ordinal))
                return i;
            if (nl < 0) break;
            i = nl + 1;
        }
        return -1;
    }

    /// <summary>A table header for the runtime (bare or quoted key) outside our block would be a TOML duplicate.</summary>
    static bool DefinesRuntimeElsewhere(string text, string name)
    {
        foreach (var raw in text.Split('\n'))
        {
            string line = raw.Trim().Replace(" ", "").Replace("\t", "");
            if (!line.StartsWith('[')) continue;
            if (line.Contains($"runtimes.{name}]") || line.Contains($"runtimes.\"{name}\"]")
                || line.Contains($"runtimes.{name}.") || line.Contains($"runtimes.\"{name}\"."))
                return true;
        }
        return false;
    }

    static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case < ' ': sb.Append($"\\u{(int)c:X4}"); break;
                default: sb.Append(c); break;
            }
        }
        return sb.Append('"').ToString();
    }
}
