using System.Buffers;
using System.Net.Sockets;
using System.Text;

namespace SandboxRunc.SocketProxy;

/// <summary>A request the proxy cannot read: answered with this status and message, then the connection is closed.</summary>
public sealed class ClientProtocolException(int status, string message) : Exception(message)
{
    public int Status { get; } = status;
}

/// <summary>How a request's body is delimited.</summary>
public enum BodyFraming { None, Length, Chunked }

/// <summary>
/// The head of one HTTP/1.x request from a container (request line and header fields), parsed strictly: this is
/// the hostile side of the proxy, so anything two parsers could read differently is refused rather than guessed
/// (bare LF line ends, folded lines, a Content-Length with Transfer-Encoding, two Content-Lengths, a transfer
/// coding other than chunked, a target that is not origin-form, control characters). What reaches the engine is
/// never these bytes: the engine-side client (SocketsHttpHandler) writes a request of its own from the parsed
/// fields, with its own framing, so no request can be smuggled past the checks inside another one.
/// </summary>
public sealed record HttpRequestHead(string Method, string Target, bool Http11, IReadOnlyList<KeyValuePair<string, string>> Headers,
    BodyFraming Framing, long ContentLength, bool KeepAlive, string? Upgrade, bool ExpectContinue)
{
    public const int MaxHeaders = 100;

    public string? Header(string name) => Headers.FirstOrDefault(h => h.Key.Equals(name, StringComparison.OrdinalIgnoreCase)).Value;

    /// <summary>The path part of the target (before '?'), still percent-encoded.</summary>
    public string RawPath => Target.IndexOf('?') is var q and >= 0 ? Target[..q] : Target;

    public string Query => Target.IndexOf('?') is var q and >= 0 ? Target[(q + 1)..] : "";

    /// <summary>Parses the bytes of a head, CRLF CRLF included.</summary>
    public static HttpRequestHead Parse(ReadOnlySpan<byte> head)
    {
        // Latin-1: one char per byte, so what is checked is exactly what was sent.
        string text = Encoding.Latin1.GetString(head);
        if (!text.EndsWith("\r\n\r\n", StringComparison.Ordinal)) throw Bad("the request head does not end with an empty line");
        var lines = text[..^4].Split("\r\n");
        foreach (var line in lines)
            if (line.Contains('\n') || line.Contains('\r')) throw Bad("a line of the request head ends with a bare CR or LF");

        var parts = lines[0].Split(' ');
        if (parts.Length != 3) throw Bad($"malformed request line \"{Clip(lines[0])}\"");
        string method = parts[0], target = parts[1], version = parts[2];
        if (method.Length == 0 || method.Length > 16 || !method.All(char.IsAsciiLetterUpper)) throw Bad($"malformed method \"{Clip(method)}\"");
        if (version is not ("HTTP/1.1" or "HTTP/1.0")) throw new ClientProtocolException(505, $"HTTP version \"{Clip(version)}\" is not supported");
        if (!target.StartsWith('/') || !target.All(c => c > ' ' && c < 0x7f)) throw Bad($"malformed request target \"{Clip(target)}\"");
        bool http11 = version == "HTTP/1.1";

        if (lines.Length - 1 > MaxHeaders) throw new ClientProtocolException(431, $"more than {MaxHeaders} header fields");
        var headers = new List<KeyValuePair<string, string>>(lines.Length - 1);
        for (int i = 1; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.Length == 0 || line[0] is ' ' or '\t') throw Bad("folded header lines are not accepted");
            int colon = line.IndexOf(':');
            if (colon <= 0) throw Bad($"malformed header line \"{Clip(line)}\"");
            string name = line[..colon];
            if (!name.All(IsTokenChar)) throw Bad($"malformed header name \"{Clip(name)}\"");
            string value = line[(colon + 1)..].Trim(' ', '\t');
            if (value.Any(c => c < ' ' && c != '\t' || c == 0x7f)) throw Bad($"header {name} holds a control character");
            headers.Add(new(name, value));
        }

        string? Single(string name)
        {
            var all = headers.Where(h => h.Key.Equals(name, StringComparison.OrdinalIgnoreCase)).ToList();
            if (all.Count > 1) throw Bad($"more than one {name} header");
            return all.Count == 1 ? all[0].Value : null;
        }

        var framing = BodyFraming.None;
        long length = 0;
        string? te = Single("Transfer-Encoding"), cl = Single("Content-Length");
        if (te is not null)
        {
            if (cl is not null) throw Bad("both Transfer-Encoding and Content-Length");
            if (!http11 || !te.Equals("chunked", StringComparison.OrdinalIgnoreCase))
                throw new ClientProtocolException(501, $"transfer coding \"{Clip(te)}\" is not supported (only chunked)");
            framing = BodyFraming.Chunked;
        }
        else if (cl is not null)
        {
            if (cl.Length == 0 || cl.Length > 18 || !cl.All(char.IsAsciiDigit)) throw Bad($"malformed Content-Length \"{Clip(cl)}\"");
            length = long.Parse(cl);
            framing = length > 0 ? BodyFraming.Length : BodyFraming.None;
        }

        var connection = headers.Where(h => h.Key.Equals("Connection", StringComparison.OrdinalIgnoreCase))
            .SelectMany(h => h.Value.Split(',')).Select(t => t.Trim().ToLowerInvariant()).ToHashSet();
        bool keepAlive = http11 ? !connection.Contains("close") : connection.Contains("keep-alive");
        string? upgrade = connection.Contains("upgrade") ? Single("Upgrade") : null;
        bool expect = Single("Expect") is { } e && e.Equals("100-continue", StringComparison.OrdinalIgnoreCase);
        return new HttpRequestHead(method, target, http11, headers, framing, length, keepAlive, upgrade, expect);
    }

    static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c);

    static string Clip(string s) => s.Length > 80 ? s[..80] + "..." : s;

    static ClientProtocolException Bad(string why) => new(400, why);
}

/// <summary>
/// The read side of a container's connection to the proxy: a buffer over the socket, from which the request
/// heads and bodies are taken. Every read is bounded in size and time: a head longer than
/// <see cref="ProxyLimits.MaxHeadBytes"/> is refused, and a client that sends nothing for a timeout is dropped.
/// </summary>
public sealed class ClientReader(Socket socket, ProxyLimits limits)
{
    byte[] _buffer = new byte[8192];
    int _start, _end;

    public Socket Socket => socket;

    /// <summary>Bytes received and not consumed yet (after an upgrade: the first bytes of the raw stream).</summary>
    public ReadOnlyMemory<byte> Buffered => _buffer.AsMemory(_start, _end - _start);

    public void Consume(int n) => _start += n;

    /// <summary>The next request head, or null when the client closed the connection between requests.</summary>
    public async Task<HttpRequestHead?> ReadHeadAsync(CancellationToken stop)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
        deadline.CancelAfter(limits.HeadTimeout);
        int scanned = 0;
        while (true)
        {
            var window = _buffer.AsSpan(_start, _end - _start);
            int at = window[Math.Max(0, scanned - 3)..].IndexOf("\r\n\r\n"u8);
            if (at >= 0)
            {
                int length = Math.Max(0, scanned - 3) + at + 4;
                var head = HttpRequestHead.Parse(window[..length]);
                _start += length;
                return head;
            }
            scanned = window.Length;
            if (scanned >= limits.MaxHeadBytes)
                throw new ClientProtocolException(431, $"the request head is longer than {limits.MaxHeadBytes} bytes");
            int n;
            try { n = await FillAsync(deadline.Token); }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                if (scanned == 0) return null; // idle keep-alive connection: closed quietly
                throw new ClientProtocolException(408, $"the request head did not arrive within {limits.HeadTimeout.TotalSeconds:0} s");
            }
            if (n == 0)
            {
                if (_end - _start == 0) return null;
                throw new ClientProtocolException(400, "the connection closed in the middle of a request head");
            }
        }
    }

    /// <summary>Reads more from the socket into the buffer (compacting or growing it up to the head limit); 0 at end of stream.</summary>
    async Task<int> FillAsync(CancellationToken token)
    {
        if (_start > 0 && _start == _end) _start = _end = 0;
        if (_end == _buffer.Length)
        {
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            else
                Array.Resize(ref _buffer, Math.Min(_buffer.Length * 2, limits.MaxHeadBytes + 8192));
        }
        int n = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, token);
        _end += n;
        return n;
    }

    /// <summary>Up to <paramref name="max"/> body bytes: buffered ones first, else one receive (bounded by the idle timeout).</summary>
    internal async ValueTask<int> ReadSomeAsync(Memory<byte> into, int max, CancellationToken stop)
    {
        if (_end > _start)
        {
            int n = Math.Min(Math.Min(max, into.Length), _end - _start);
            _buffer.AsMemory(_start, n).CopyTo(into);
            _start += n;
            return n;
        }
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(stop);
        idle.CancelAfter(limits.IdleTimeout);
        try { return await socket.ReceiveAsync(into[..Math.Min(max, into.Length)], SocketFlags.None, idle.Token); }
        catch (OperationCanceledException) when (!stop.IsCancellationRequested)
        {
            throw new IOException($"the client sent nothing for {limits.IdleTimeout.TotalSeconds:0} s in the middle of a request body");
        }
    }

    /// <summary>One line of a chunked body (without CRLF), at most 4 KiB.</summary>
    internal async ValueTask<string> ReadLineAsync(CancellationToken stop)
    {
        while (true)
        {
            var window = _buffer.AsSpan(_start, _end - _start);
            int lf = window.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                if (lf == 0 || window[lf - 1] != '\r') throw new IOException("a chunked body line ends with a bare LF");
                string line = Encoding.Latin1.GetString(window[..(lf - 1)]);
                _start += lf + 1;
                return line;
            }
            if (window.Length > 4096) throw new IOException("a chunked body line is longer than 4 KiB");
            using var idle = CancellationTokenSource.CreateLinkedTokenSource(stop);
            idle.CancelAfter(limits.IdleTimeout);
            int n;
            try { n = await FillAsync(idle.Token); }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                throw new IOException($"the client sent nothing for {limits.IdleTimeout.TotalSeconds:0} s in the middle of a request body");
            }
            if (n == 0) throw new IOException("the connection closed in the middle of a chunked body");
        }
    }
}

/// <summary>
/// A request body as the client framed it (Content-Length or chunked), read from the connection as the engine-side
/// client pulls it: never more than the framing says, so the next request's bytes stay in the reader.
/// </summary>
public sealed class RequestBodyStream(ClientReader reader, HttpRequestHead head, CancellationToken stop) : Stream
{
    long _remaining = head.Framing == BodyFraming.Length ? head.ContentLength : 0; // of the current chunk, for chunked
    bool _done = head.Framing == BodyFraming.None;

    /// <summary>Whether the whole body has been read (the next bytes on the connection are the next request's).</summary>
    public bool Done => _done;

    /// <summary>Reads the whole body into memory, refusing one above <paramref name="max"/> bytes (413).</summary>
    public async Task<byte[]> ReadAllAsync(int max)
    {
        if (head.Framing == BodyFraming.Length && head.ContentLength > max)
            throw new ClientProtocolException(413, $"the request body ({head.ContentLength} bytes) is larger than {max} bytes");
        using var all = new MemoryStream();
        var chunk = ArrayPool<byte>.Shared.Rent(16384);
        try
        {
            int n;
            while ((n = await ReadAsync(chunk.AsMemory(0, 16384))) > 0)
            {
                if (all.Length + n > max) throw new ClientProtocolException(413, $"the request body is larger than {max} bytes");
                all.Write(chunk, 0, n);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(chunk); }
        return all.ToArray();
    }

    /// <summary>Reads and drops what is left of the body (a refused request's), so the connection can go on.</summary>
    public async Task DrainAsync(long max)
    {
        var chunk = ArrayPool<byte>.Shared.Rent(16384);
        try
        {
            long total = 0;
            int n;
            while ((n = await ReadAsync(chunk.AsMemory(0, 16384))) > 0)
                if ((total += n) > max) throw new IOException("a refused request's body is too long to skip");
        }
        finally { ArrayPool<byte>.Shared.Return(chunk); }
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_done || buffer.Length == 0) return 0;
        using var both = CancellationTokenSource.CreateLinkedTokenSource(stop, cancellationToken);
        if (head.Framing == BodyFraming.Chunked && _remaining == 0)
        {
            if (!await NextChunkAsync(both.Token)) return 0;
        }
        int n = await reader.ReadSomeAsync(buffer, (int)Math.Min(_remaining, int.MaxValue), both.Token);
        if (n == 0) throw new IOException("the connection closed in the middle of a request body");
        _remaining -= n;
        if (head.Framing == BodyFraming.Length && _remaining == 0) _done = true;
        if (head.Framing == BodyFraming.Chunked && _remaining == 0)
        {
            if (await reader.ReadLineAsync(both.Token) != "") throw new IOException("a chunk is not followed by CRLF");
        }
        return n;
    }

    /// <summary>Reads a chunk-size line; false (and the trailer section consumed) at the last chunk.</summary>
    async Task<bool> NextChunkAsync(CancellationToken token)
    {
        string line = await reader.ReadLineAsync(token);
        string size = line.IndexOf(';') is var semi and >= 0 ? line[..semi] : line;
        size = size.Trim(' ', '\t');
        if (size.Length == 0 || size.Length > 12 || !size.All(char.IsAsciiHexDigit)) throw new IOException($"malformed chunk size \"{size}\"");
        _remaining = Convert.ToInt64(size, 16);
        if (_remaining > 0) return true;
        for (int i = 0; ; i++)
        {
            if (await reader.ReadLineAsync(token) == "") break;
            if (i > HttpRequestHead.MaxHeaders) throw new IOException("too many trailer fields");
        }
        _done = true;
        return false;
    }

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
