using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxRunc.Container;

namespace SandboxRunc.Install;

/// <summary>
/// Edits dockerd's daemon.json: adds or removes <c>runtimes."sandbox-runc"</c> (and, with --default,
/// <c>default-runtime</c>). Pure text in, text out: everything else in the document is kept as
/// written (order, unknown keys, number spellings), through System.Text.Json.Nodes (no reflection).
/// </summary>
public static class DaemonJson
{
    public sealed record Edit(string? NewText, IReadOnlyList<string> Changes)
    {
        public bool Changed => NewText is not null;
    }

    /// <summary>Registers the runtime. <paramref name="text"/> is the file's content, null or empty when it does not exist.</summary>
    public static Edit Install(string? text, string file, string name, string binary, bool setDefault)
    {
        var root = Parse(text, file);
        var changes = new List<string>();
        var runtimes = root["runtimes"];
        if (runtimes is null)
        {
            runtimes = new JsonObject();
            root["runtimes"] = runtimes;
        }
        else if (runtimes is not JsonObject)
        {
            throw new RuntimeException($"{file}: \"runtimes\" is not a JSON object; fix it by hand (file left unchanged)");
        }
        var rt = (JsonObject)runtimes;
        switch (rt[name])
        {
            case null:
                rt[name] = new JsonObject { ["path"] = binary };
                changes.Add($"added runtimes.{name} (path {binary})");
                break;
            case JsonObject entry:
                string? old = entry["path"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
                if (old != binary)
                {
                    entry["path"] = binary;
                    changes.Add($"changed runtimes.{name}.path from {(old is null ? "(none)" : old)} to {binary}");
                }
                break;
            default:
                throw new RuntimeException($"{file}: runtimes.{name} is not a JSON object; fix it by hand (file left unchanged)");
        }
        if (setDefault)
        {
            string? current = DefaultRuntime(root, file);
            if (current != name)
            {
                root["default-runtime"] = name;
                changes.Add(current is null ? $"set default-runtime to {name}" : $"changed default-runtime from {current} to {name}");
            }
        }
        return new Edit(changes.Count == 0 ? null : Serialize(root, file), changes);
    }

    /// <summary>Unregisters the runtime, and default-runtime when (only when) it names this runtime.</summary>
    public static Edit Uninstall(string? text, string file, string name)
    {
        var root = Parse(text, file);
        var changes = new List<string>();
        if (DefaultRuntime(root, file) == name)
        {
            root.Remove("default-runtime");
            changes.Add($"removed default-runtime ({name})");
        }
        if (root["runtimes"] is JsonObject rt && rt.ContainsKey(name))
        {
            rt.Remove(name);
            changes.Add($"removed runtimes.{name}");
            // install made "runtimes" when it was missing: leave no empty object behind.
            if (rt.Count == 0)
                root.Remove("runtimes");
        }
        return new Edit(changes.Count == 0 ? null : Serialize(root, file), changes);
    }

    static string? DefaultRuntime(JsonObject root, string file) => root["default-runtime"] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new RuntimeException($"{file}: \"default-runtime\" is not a string; fix it by hand (file left unchanged)"),
    };

    static JsonObject Parse(string? text, string file)
    {
        if (string.IsNullOrWhiteSpace(text)) return new JsonObject();
        JsonNode? node;
        try
        {
            // dockerd's parser (Go encoding/json) takes no comments and no trailing commas: neither do we.
            node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is { } line ? $"line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}: "
                : DuplicateKeyLine(text) is { } dup ? $"line {dup}: " : "";
            throw new RuntimeException($"{file}: {where}not valid JSON ({FirstSentence(e.Message)}); file left unchanged");
        }
        if (node is not JsonObject o)
            throw new RuntimeException($"{file}: the top level is not a JSON object; file left unchanged");
        return o;
    }

    /// <summary>System.Text.Json names no position for a duplicate key: find its line (1-based) ourselves.</summary>
    static int? DuplicateKeyLine(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var reader = new Utf8JsonReader(utf8);
        var keys = new Stack<HashSet<string>>();
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject: keys.Push(new HashSet<string>(StringComparer.Ordinal)); break;
                    case JsonTokenType.EndObject: keys.Pop(); break;
                    case JsonTokenType.PropertyName when !keys.Peek().Add(reader.GetString()!):
                        return 1 + utf8.AsSpan(0, (int)reader.TokenStartIndex).Count((byte)'\n');
                }
            }
        }
        catch (JsonException) { }
        return null;
    }

    static string FirstSentence(string message)
    {
        int i = message.IndexOf(" Path:", StringComparison.Ordinal);
        return (i > 0 ? message[..i] : message).TrimEnd('.', ' ');
    }

    static string Serialize(JsonObject root, string file)
    {
        using var ms = new MemoryStream();
        try
        {
            using var w = new Utf8JsonWriter(ms, new JsonWriterOptions
            {
                Indented = true,
                IndentSize = 2,
                // Keep '+', '<', non-ASCII... as the admin wrote them instead of \u escapes.
                Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            });
            root.WriteTo(w);
        }
        catch (ArgumentException e)
        {
            throw new RuntimeException($"{file}: {e.Message}; file left unchanged");
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }
}
