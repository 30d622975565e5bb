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
/// Appends refusals as JSON lines. The file is opened once, by path, in the supervisor's own mount
/// namespace when the server starts: workers spend part of their time chrooted into a container
/// and must never open a path there.
/// </summary>
public sealed class RefusalLog : IDisposable
{
    readonly FileStream? _stream;
    readonly Lock _lock = new();

    public RefusalLog(string? path)
    {
        if (path is not null)
            _stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
    }

    public void Write(Refusal refusal)
    {
        if (_stream is null) return;
        byte[] line = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(refusal, NotifyJson.Default.Refusal) + "\n");
        lock (_lock)
        {
            _stream.Write(line);
            _stream.Flush();
        }
    }

    public void Dispose() => _stream?.Dispose();
}
