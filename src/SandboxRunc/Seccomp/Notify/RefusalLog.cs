using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>One refused mount/umount2, one JSON line in the refusal log.</summary>
public sealed record Refusal(
    [property: JsonPropertyName("time")] DateTimeOffset Time,
    [property: JsonPropertyName("container")] string Container,
    [property: JsonPropertyName("pid")] int Pid,
    [property: JsonPropertyName("syscall")] string Syscall,
    [property: JsonPropertyName("args")] RefusalArgs Args,
    [property: JsonPropertyName("errno")] int Errno,
    [property: JsonPropertyName("reason")] string Reason);

public sealed record RefusalArgs(
    [property: JsonPropertyName("source")] string? Source,
    [property: JsonPropertyName("target")] string Target,
    [property: JsonPropertyName("fstype")] string? FsType,
    [property: JsonPropertyName("flags")] string Flags,
    [property: JsonPropertyName("data")] string? Data);

[JsonSourceGenerationOptions(WriteIndented = false, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(Refusal))]
internal sealed partial class NotifyJson : JsonSerializerContext
{
}

/// <summary>
/// Appends refusals as JSON lines. The log lives on the host (the state dir, usually on the /run tmpfs,
/// that is host memory) and a container decides how many refusals it provokes, so it is bounded: past
/// <see cref="MaxBytes"/> the file is renamed to "NAME.1" (replacing the previous one) and started
/// again, so it never holds more than twice that. Written by workers outside any container.
/// </summary>
public sealed class RefusalLog : IDisposable
{
    public const long MaxBytes = 1 << 20;
    readonly string? _path;
    FileStream? _stream;
    readonly Lock _lock = new();

    public RefusalLog(string? path)
    {
        _path = path;
        if (path is not null) _stream = Open(path);
    }

    static FileStream Open(string path) => new(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);

    public void Write(Refusal refusal)
    {
        if (_stream is null || _path is null) return;
        byte[] line = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(refusal, NotifyJson.Default.Refusal) + "\n");
        lock (_lock)
        {
            try
            {
                if (_stream.Length + line.Length > MaxBytes)
                {
                    _stream.Dispose();
                    File.Move(_path, _path + ".1", overwrite: true);
                    _stream = Open(_path);
                }
                _stream.Write(line);
                _stream.Flush();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
            {
                // The state dir is being removed (delete): nothing is left to log for.
            }
        }
    }

    public void Dispose() => _stream?.Dispose();
}
