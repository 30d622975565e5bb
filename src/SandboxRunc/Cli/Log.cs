using System.Text;
using System.Text.Json;

namespace SandboxRunc.Cli;

/// <summary>
/// --log FILE / --log-format text|json / --debug. containerd's shim reads the JSON form
/// ({"level","msg","time"} per line) to show our error after "OCI runtime create failed:".
/// </summary>
public static class Log
{
    static string? _file;
    static bool _json, _debug;

    public static void Configure(string? file, string format, bool debug)
    {
        _file = string.IsNullOrEmpty(file) ? null : file;
        _json = format == "json";
        _debug = debug;
    }

    /// <summary>The --log file, if any, and its format ("text" or "json"): for services that log on their own (the supervisor).</summary>
    public static string? FilePath => _file;
    public static string FormatName => _json ? "json" : "text";

    public static void Error(string message) => Write("error", message, alsoStderr: true);
    public static void Warn(string message) => Write("warning", message, alsoStderr: _file is null);
    public static void Debug(string message) { if (_debug) Write("debug", message, alsoStderr: _file is null); }

    static void Write(string level, string message, bool alsoStderr)
    {
        message = message.ReplaceLineEndings(" ");
        if (alsoStderr)
            Console.Error.WriteLine(level == "error" ? message : $"{level}: {message}");
        if (_file is null) return;
        string time = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ");
        string line;
        if (_json)
        {
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms))
            {
                w.WriteStartObject();
                w.WriteString("level", level);
                w.WriteString("msg", message);
                w.WriteString("time", time);
                w.WriteEndObject();
            }
            line = Encoding.UTF8.GetString(ms.ToArray());
        }
        else
        {
            line = $"time=\"{time}\" level={level} msg=\"{message.Replace("\"", "\\\"")}\"";
        }
        try { File.AppendAllText(_file, line + "\n"); }
        catch (IOException) { }
    }
}
