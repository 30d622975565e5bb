using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxRunc.Policy;

namespace SandboxRunc.SocketProxy;

/// <summary>
/// What one proxy may hold and how long it waits. A container's proxy is its own process, so a container that
/// exhausts these only hurts itself; they exist so that it cannot make the proxy (host root) grow without bound,
/// and so that it holds at most <see cref="MaxConnections"/> of the engine's connections.
/// </summary>
public sealed record ProxyLimits
{
    /// <summary>Client connections at once (each holds at most one engine connection); beyond, 503 and close.</summary>
    public int MaxConnections { get; init; } = 64;
    /// <summary>Request line and header fields (X-Registry-Config of a build holds every registry's credentials).</summary>
    public int MaxHeadBytes { get; init; } = 64 * 1024;
    /// <summary>Bodies read whole to be judged: create, update (JSON).</summary>
    public int MaxJsonBody { get; init; } = 1 << 20;
    /// <summary>From the end of one response (or the connection) to the end of the next request head.</summary>
    public TimeSpan HeadTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>A request body that stops arriving.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>A write (to the client or the engine) that makes no progress: the reader stopped reading.</summary>
    public TimeSpan WriteStallTimeout { get; init; } = TimeSpan.FromSeconds(120);
}

/// <summary>What the proxy decides with, beyond the request: settings, runtimes, and the create judgement (impure).</summary>
public sealed class ProxyOptions
{
    /// <summary>The engine's socket: a path, or /proc/self/fd/N of the socket the container was allowed to mount (pinned).</summary>
    public required string EngineSocket { get; init; }
    /// <summary>The admin settings file, read for every request (an admin's change applies at once; a broken file refuses all).</summary>
    public required string SettingsPath { get; init; }
    /// <summary>The runtime name containers created through the socket get (HostConfig.Runtime).</summary>
    public required string Runtime { get; init; }
    /// <summary>Runtime names that are this runtime (dockerd's registrations of this binary): containers of those may be exec'd into.</summary>
    public required IReadOnlySet<string> IsolatedRuntimes { get; init; }
    /// <summary>Judges a container create (its spec as <see cref="SocketRequestPolicy.CreateSpec"/> makes it); throws PolicyException.</summary>
    public required Action<Oci.Spec, JsonObject, AdminSettings> JudgeCreate { get; init; }
    /// <summary>Every request and what became of it (tests, debugging).</summary>
    public Action<string, string, DockerRoute?, string?>? OnRequest { get; init; }
}

/// <summary>
/// The filtering proxy a container gets in place of the Docker Engine socket it was allowed to mount. It reads each
/// request's head from the container (<see cref="HttpRequestHead"/>, strict), decides with the command list and the
/// request policy, and forwards allowed requests to the engine with System.Net's SocketsHttpHandler over the engine's
/// unix socket, relaying responses as they come (chunked and streamed: logs -f, events, pull progress, stats) on
/// keep-alive connections. attach, exec start and BuildKit's session are hijacked connections: the engine is always
/// asked to upgrade (101), and the two byte streams are then copied both ways with half-close, so stdin's end
/// reaches the process and the output's end reaches the client.
///
/// Why not Kestrel (or YARP, which runs on it): Kestrel refuses an upgrade request that has a body
/// (UpgradeRequestCannotHavePayload, 400), and the docker CLI's exec start is exactly that (Upgrade: tcp with a JSON
/// body); nor can it give a handler the raw connection for dockerd's non-upgrade hijack. System.Net has no public
/// HTTP server parser, so the client side is ours (small and strict); the engine side is SocketsHttpHandler.
/// </summary>
public sealed class ProxyServer(Socket listener, ProxyOptions options, ProxyLimits? limits = null)
{
    readonly ProxyLimits _limits = limits ?? new ProxyLimits();
    readonly SocketsHttpHandler _handler = NewHandler(options.EngineSocket, (limits ?? new ProxyLimits()).MaxConnections);
    int _active;

    /// <summary>Connections being served now.</summary>
    public int Active => Volatile.Read(ref _active);

    static SocketsHttpHandler NewHandler(string engineSocket, int maxConnections) => new()
    {
        ConnectCallback = async (_, token) =>
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try { await socket.ConnectAsync(new UnixDomainSocketEndPoint(engineSocket), token); }
            catch { socket.Dispose(); throw; }
            return new NetworkStream(socket, ownsSocket: true);
        },
        UseProxy = false,
        UseCookies = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        MaxConnectionsPerServer = maxConnections,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        ConnectTimeout = TimeSpan.FromSeconds(10),
        MaxResponseHeadersLength = 256, // KiB
    };

    /// <summary>Accepts and serves connections until <paramref name="stop"/>.</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        using var invoker = new HttpMessageInvoker(_handler, disposeHandler: true);
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await listener.AcceptAsync(stop); }
            catch (OperationCanceledException) { break; }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.Interrupted) { continue; }
            if (Interlocked.Increment(ref _active) > _limits.MaxConnections)
            {
                Interlocked.Decrement(ref _active);
                _ = RefuseBusyAsync(client);
                continue;
            }
            _ = ServeAsync(client, invoker, stop);
        }
    }

    async Task RefuseBusyAsync(Socket client)
    {
        using (client)
        {
            try
            {
                await WriteErrorAsync(client, 503, $"too many connections through this container's docker socket (at most {_limits.MaxConnections})", close: true, http11: true);
                await CloseGracefullyAsync(client);
            }
            catch (Exception e) when (IsConnectionError(e)) { }
        }
    }

    async Task ServeAsync(Socket client, HttpMessageInvoker invoker, CancellationToken stop)
    {
        try
        {
            var reader = new ClientReader(client, _limits);
            while (true)
            {
                HttpRequestHead? head;
                try { head = await reader.ReadHeadAsync(stop); }
                catch (ClientProtocolException e)
                {
                    await WriteErrorAsync(client, e.Status, e.Message, close: true, http11: true);
                    await CloseGracefullyAsync(client);
                    return;
                }
                if (head is null) return;
                if (!await HandleAsync(reader, head, invoker, stop)) return;
            }
        }
        catch (Exception e) when (IsConnectionError(e)) { }
        catch (Exception e)
        {
            Cli.Log.Warn($"socket proxy: a connection failed: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            client.Dispose();
            Interlocked.Decrement(ref _active);
        }
    }

    static bool IsConnectionError(Exception e) =>
        e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or HttpRequestException;

    /// <summary>Serves one request; returns whether the connection goes on to the next one.</summary>
    async Task<bool> HandleAsync(ClientReader reader, HttpRequestHead head, HttpMessageInvoker invoker, CancellationToken stop)
    {
        var client = reader.Socket;
        var body = new RequestBodyStream(reader, head, stop);
        DockerRoute? route = null;
        HttpContent? content = null;
        string target = head.Target;
        try
        {
            string path = SocketRequestPolicy.DecodePath(head.RawPath);
            var (version, _) = DockerApiRoutes.SplitVersion(path);
            SocketRequestPolicy.CheckVersion(version);
            route = DockerApiRoutes.Match(head.Method, path);
            var settings = AdminSettings.Load(options.SettingsPath);
            if (!CommandListPolicy.Allows(settings.CommandList, route))
                throw new PolicyException(CommandListPolicy.BlockedMessage(head.Target, options.SettingsPath));
            if (route?.Kind == RouteKind.Refused)
                throw new PolicyException($"docker command \"{head.Target}\" is refused through a mounted docker socket: {route.Refusal}");
            switch (route?.Kind)
            {
                case RouteKind.ContainerCreate:
                {
                    await ContinueAsync(client, head);
                    var json = SocketRequestPolicy.ParseObject(await body.ReadAllAsync(_limits.MaxJsonBody), "container create");
                    SocketRequestPolicy.CheckCreate(json);
                    options.JudgeCreate(SocketRequestPolicy.CreateSpec(json), json, settings);
                    content = Json(SocketRequestPolicy.Isolated(json, options.Runtime), head);
                    break;
                }
                case RouteKind.ContainerUpdate:
                {
                    await ContinueAsync(client, head);
                    var json = SocketRequestPolicy.ParseObject(await body.ReadAllAsync(_limits.MaxJsonBody), "container update");
                    SocketRequestPolicy.CheckUpdate(json);
                    content = Json(SocketRequestPolicy.Serialize(json), head);
                    break;
                }
                case RouteKind.ContainerStart:
                    SocketRequestPolicy.CheckStartBody(head.ContentLength, head.Framing == BodyFraming.Chunked);
                    break;
                case RouteKind.Build:
                    SocketRequestPolicy.CheckBuild(head.Query);
                    break;
                case RouteKind.ExecCreate or RouteKind.Attach or RouteKind.ArchivePut:
                    target = await RequireIsolatedAsync(invoker, head, route, path, stop);
                    break;
                case RouteKind.ExecStart:
                    await RequireIsolatedExecAsync(invoker, DockerApiRoutes.Parameter(route, path, "id")!, stop);
                    break;
            }
        }
        catch (PolicyException e)
        {
            options.OnRequest?.Invoke(head.Method, head.Target, route, e.Message);
            return await RefuseAsync(client, body, head, 403, e.Message);
        }
        catch (ClientProtocolException e)
        {
            options.OnRequest?.Invoke(head.Method, head.Target, route, e.Message);
            return await RefuseAsync(client, body, head, e.Status, e.Message);
        }
        options.OnRequest?.Invoke(head.Method, head.Target, route, null);

        if (route?.Hijack == true)
            return await HijackAsync(reader, head, body, target, stop);

        if (content is null && head.Framing != BodyFraming.None)
        {
            await ContinueAsync(client, head);
            content = new StreamContent(body, 64 * 1024);
            if (head.Framing == BodyFraming.Length) content.Headers.ContentLength = head.ContentLength;
        }
        else if (content is null && head.Method is "POST" or "PUT")
            content = new ByteArrayContent([]);
        using var request = EngineRequest(head, target, content);

        HttpResponseMessage response;
        try { response = await invoker.SendAsync(request, stop); }
        catch (HttpRequestException e)
        {
            await WriteErrorAsync(client, 502, $"sandbox-runc socket proxy: the docker engine did not answer ({e.Message})", close: true, head.Http11);
            return false;
        }
        using (response)
        {
            bool framed = await RelayResponseAsync(client, head, response, stop);
            // A body the engine did not read to its end leaves bytes that are not a request: end the connection.
            return framed && head.KeepAlive && body.Done;
        }
    }

    /// <summary>"100 Continue" to a client that waits for it before sending its body.</summary>
    async Task ContinueAsync(Socket client, HttpRequestHead head)
    {
        if (head.ExpectContinue && head.Http11) await SendAsync(client, "HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray());
    }

    static ByteArrayContent Json(byte[] bytes, HttpRequestHead head)
    {
        var c = new ByteArrayContent(bytes);
        c.Headers.TryAddWithoutValidation("Content-Type", head.Header("Content-Type") ?? "application/json");
        return c;
    }

    static readonly HashSet<string> HopByHop = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect",
    };

    /// <summary>The request the engine gets: the method, the target as sent (or with the container's full ID), the
    /// end-to-end header fields; the framing, Host and Connection are the engine client's own.</summary>
    static HttpRequestMessage EngineRequest(HttpRequestHead head, string target, HttpContent? content)
    {
        var request = new HttpRequestMessage(new HttpMethod(head.Method),
            new Uri("http://docker" + target, new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true }))
        {
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        foreach (var (name, value) in head.Headers)
        {
            if (HopByHop.Contains(name)) continue;
            if (!request.Headers.TryAddWithoutValidation(name, value) && content is not null)
            {
                if (name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)) content.Headers.Remove(name);
                content.Headers.TryAddWithoutValidation(name, value);
            }
        }
        return request;
    }

    /// <summary>
    /// exec create, attach, docker cp into: only a container that runs under this runtime (dockerd's record says so).
    /// Returns the target to forward, naming the container by the full ID the check found, so a name that is
    /// removed and reused in between cannot make the request reach another container.
    /// </summary>
    async Task<string> RequireIsolatedAsync(HttpMessageInvoker invoker, HttpRequestHead head, DockerRoute route, string path, CancellationToken stop)
    {
        string name = DockerApiRoutes.Parameter(route, path, "id")!;
        var info = await EngineJsonAsync(invoker, $"/containers/{Uri.EscapeDataString(name)}/json", stop);
        if (info is null) return head.Target; // no such container: the engine answers the request with its 404
        string id = (info["Id"] as JsonValue)?.GetValue<string>() ?? "";
        CheckRuntime(info, name, route.Owners[0]);
        // Replace the container segment of the raw target (a container name holds no '/', so segments line up):
        // the route's {id} segment, after the leading empty one and the version prefix, if any.
        var raw = head.RawPath.Split('/');
        var decoded = path.Split('/');
        int at = 1 + (DockerApiRoutes.SplitVersion(path).Version is null ? 0 : 1) + Array.IndexOf(route.Segments, "{id}");
        if (id.Length == 0 || raw.Length != decoded.Length || at >= decoded.Length || decoded[at] != name)
            throw new PolicyException($"request path \"{head.RawPath}\" is not a plain container path");
        raw[at] = id;
        return string.Join('/', raw) + (head.Query.Length > 0 ? "?" + head.Query : "");
    }

    async Task RequireIsolatedExecAsync(HttpMessageInvoker invoker, string execId, CancellationToken stop)
    {
        var exec = await EngineJsonAsync(invoker, $"/exec/{Uri.EscapeDataString(execId)}/json", stop);
        if (exec?["ContainerID"] is not JsonValue v || v.GetValue<string>() is not { Length: > 0 } container) return; // the engine answers 404
        var info = await EngineJsonAsync(invoker, $"/containers/{container}/json", stop)
                   ?? throw new PolicyException($"exec {execId}: its container {container} is gone");
        CheckRuntime(info, container, "container exec");
    }

    void CheckRuntime(JsonObject info, string name, string command)
    {
        string runtime = (info["HostConfig"]?["Runtime"] as JsonValue)?.GetValue<string>() ?? "";
        if (!options.IsolatedRuntimes.Contains(runtime))
            throw new PolicyException($"docker {command} on container {name} is refused through a mounted docker socket: it runs under runtime \"{runtime}\", " +
                                      $"not sandbox-runc (only isolated containers can be entered or written to from a container)");
    }

    /// <summary>GET of a small JSON document from the engine (inspect); null on 404.</summary>
    static async Task<JsonObject?> EngineJsonAsync(HttpMessageInvoker invoker, string path, CancellationToken stop)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://docker" + path);
        using var response = await invoker.SendAsync(request, stop);
        if (response.StatusCode == HttpStatusCode.NotFound) return null;
        var bytes = await response.Content.ReadAsByteArrayAsync(stop);
        if (!response.IsSuccessStatusCode)
            throw new PolicyException($"the engine refused {path}: {(int)response.StatusCode} {Encoding.UTF8.GetString(bytes.AsSpan(0, Math.Min(bytes.Length, 300)))}");
        try { return JsonNode.Parse(bytes) as JsonObject; }
        catch (JsonException) { throw new PolicyException($"the engine's answer to {path} is not JSON"); }
    }

    /// <summary>Answers a refused request; returns whether the connection can go on (its body was skipped whole).</summary>
    async Task<bool> RefuseAsync(Socket client, RequestBodyStream body, HttpRequestHead head, int status, string message)
    {
        // A small body is skipped and the connection kept; a large one (a build context) is not waited for.
        bool keep = head.KeepAlive;
        if (!body.Done)
        {
            if (head.Framing == BodyFraming.Length && head.ContentLength <= 1 << 20)
            {
                try { await body.DrainAsync(1 << 20); }
                catch (IOException) { keep = false; }
            }
            else keep = false;
        }
        await WriteErrorAsync(client, status, message, close: !keep, head.Http11, noBody: head.Method == "HEAD");
        if (!keep) await CloseGracefullyAsync(client);
        return keep;
    }

    /// <summary>Writes the engine's response to the client, re-framed for this connection; false when it had to be delimited by closing.</summary>
    async Task<bool> RelayResponseAsync(Socket client, HttpRequestHead head, HttpResponseMessage response, CancellationToken stop)
    {
        int status = (int)response.StatusCode;
        bool noBody = head.Method == "HEAD" || status is (>= 100 and < 200) or 204 or 304;
        long? length = response.Content.Headers.ContentLength;
        bool chunked = !noBody && length is null && head.Http11;
        bool closeDelimited = !noBody && length is null && !head.Http11;

        var sb = new StringBuilder(512);
        sb.Append(head.Http11 ? "HTTP/1.1 " : "HTTP/1.0 ").Append(status).Append(' ').Append(response.ReasonPhrase ?? "").Append("\r\n");
        AppendHeaders(sb, response.Headers, skipHopByHop: true);
        AppendHeaders(sb, response.Content.Headers, skipHopByHop: true);
        if (length is { } l) sb.Append("Content-Length: ").Append(l).Append("\r\n");
        if (chunked) sb.Append("Transfer-Encoding: chunked\r\n");
        if (closeDelimited || !head.KeepAlive) sb.Append("Connection: close\r\n");
        else if (!head.Http11) sb.Append("Connection: keep-alive\r\n");
        sb.Append("\r\n");
        await SendAsync(client, Encoding.Latin1.GetBytes(sb.ToString()));
        if (noBody) return true;

        await using var stream = await response.Content.ReadAsStreamAsync(stop);
        var buffer = ArrayPool<byte>.Shared.Rent(32 * 1024);
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer.AsMemory(0, 32 * 1024), stop)) > 0)
            {
                if (chunked)
                {
                    await SendAsync(client, Encoding.ASCII.GetBytes($"{n:x}\r\n"));
                    await SendAsync(client, buffer.AsMemory(0, n));
                    await SendAsync(client, "\r\n"u8.ToArray());
                }
                else await SendAsync(client, buffer.AsMemory(0, n));
            }
            if (chunked) await SendAsync(client, "0\r\n\r\n"u8.ToArray());
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
        return !closeDelimited;
    }

    static void AppendHeaders(StringBuilder sb, HttpHeaders headers, bool skipHopByHop)
    {
        foreach (var (name, values) in headers.NonValidated)
        {
            if (skipHopByHop && HopByHop.Contains(name)) continue;
            foreach (var value in values)
                if (!value.Any(c => c is '\r' or '\n')) sb.Append(name).Append(": ").Append(value).Append("\r\n");
        }
    }

    /// <summary>
    /// attach, exec start, BuildKit's session: the engine is asked to upgrade the connection (whatever the client
    /// asked: a client that did not ask gets dockerd's own non-upgrade answer, "200 OK" and the raw stream), then the
    /// bytes are copied both ways. The end of one direction is passed on as a half-close (shutdown of writing), so
    /// `docker exec -i c cat &lt; file` ends when the file does, and the client sees the output's end.
    ///
    /// The engine side is a connection of its own on which the request is written here, not by SocketsHttpHandler:
    /// that client joins repeated header fields into one line ("a, b"), and BuildKit's session names each method
    /// it serves in an X-Docker-Expose-Session-Grpc-Method field of its own (joined, dockerd finds none and the build
    /// fails with "no local sources enabled"). The request is still written from the parsed fields (each checked free
    /// of control characters), with its own framing: never the client's bytes.
    /// </summary>
    async Task<bool> HijackAsync(ClientReader reader, HttpRequestHead head, RequestBodyStream body, string target, CancellationToken stop)
    {
        var client = reader.Socket;
        // The bodies of these requests are small JSON (exec start's), read whole like create's.
        await ContinueAsync(client, head);
        byte[] payload;
        try { payload = await body.ReadAllAsync(_limits.MaxJsonBody); }
        catch (ClientProtocolException e)
        {
            await WriteErrorAsync(client, e.Status, e.Message, close: true, head.Http11);
            await CloseGracefullyAsync(client);
            return false;
        }

        var sb = new StringBuilder(1024);
        sb.Append(head.Method).Append(' ').Append(target).Append(" HTTP/1.1\r\nHost: docker\r\n");
        foreach (var (name, value) in head.Headers)
            if (!HopByHop.Contains(name)) sb.Append(name).Append(": ").Append(value).Append("\r\n");
        sb.Append("Connection: Upgrade\r\nUpgrade: ").Append(head.Upgrade ?? "tcp").Append("\r\n");
        if (payload.Length > 0 || head.Method is "POST" or "PUT") sb.Append("Content-Length: ").Append(payload.Length).Append("\r\n");
        sb.Append("\r\n");

        using var engine = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        byte[] responseHead;
        ReadOnlyMemory<byte> early;
        int status;
        try
        {
            using (var connect = CancellationTokenSource.CreateLinkedTokenSource(stop))
            {
                connect.CancelAfter(TimeSpan.FromSeconds(10));
                await engine.ConnectAsync(new UnixDomainSocketEndPoint(options.EngineSocket), connect.Token);
            }
            await SendAsync(engine, Encoding.Latin1.GetBytes(sb.ToString()), stop);
            if (payload.Length > 0) await SendAsync(engine, payload, stop);
            (responseHead, early, status) = await ReadEngineHeadAsync(engine, stop);
        }
        catch (Exception e) when (e is SocketException or IOException || e is OperationCanceledException && !stop.IsCancellationRequested)
        {
            await WriteErrorAsync(client, 502, $"sandbox-runc socket proxy: the docker engine did not answer ({e.Message})", close: true, head.Http11);
            return false;
        }

        if (status != 101)
        {
            // An error (no such container, not running, ...): the engine's whole answer, then both connections end
            // (the engine, told by the half-close that no more is coming, closes after answering).
            engine.Shutdown(SocketShutdown.Send);
            await SendAsync(client, responseHead, stop);
            if (early.Length > 0) await SendAsync(client, early, stop);
            await PumpToClientAsync(engine, client, stop);
            return false;
        }

        if (head.Upgrade is not null) await SendAsync(client, responseHead, stop);
        else
        {
            // dockerd's answer to a hijack without Upgrade: 200 and the raw stream until the connection closes.
            var ok = new StringBuilder(head.Http11 ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n");
            foreach (var line in Encoding.Latin1.GetString(responseHead).Split("\r\n").Skip(1))
                if (line.Length > 0 && line.IndexOf(':') is > 0 and var colon && !HopByHop.Contains(line[..colon])) ok.Append(line).Append("\r\n");
            await SendAsync(client, Encoding.Latin1.GetBytes(ok.Append("\r\n").ToString()), stop);
        }
        if (early.Length > 0) await SendAsync(client, early, stop);

        using var done = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var toEngine = PumpToEngineAsync(reader, engine, done.Token);
        var toClient = PumpToClientAsync(engine, client, done.Token);
        // Output ended: a client that keeps its side open after it is not waited for long.
        var first = await Task.WhenAny(toEngine, toClient);
        if (first == toClient && !toEngine.IsCompleted) done.CancelAfter(TimeSpan.FromSeconds(5));
        if (first.IsFaulted) done.Cancel();
        try { await Task.WhenAll(toEngine, toClient); }
        catch (Exception e) when (IsConnectionError(e)) { }
        return false;
    }

    /// <summary>The engine's response head to a hijack request (status line to the empty line, at most 64 KiB, within
    /// the head timeout), the bytes that came after it, and its status code.</summary>
    async Task<(byte[] Head, ReadOnlyMemory<byte> Early, int Status)> ReadEngineHeadAsync(Socket engine, CancellationToken stop)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
        deadline.CancelAfter(_limits.HeadTimeout);
        var buffer = new byte[64 * 1024];
        int filled = 0;
        while (true)
        {
            int n = await engine.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, deadline.Token);
            if (n == 0) throw new IOException("the engine closed the connection before answering");
            int from = Math.Max(0, filled - 3);
            filled += n;
            int end = buffer.AsSpan(from, filled - from).IndexOf("\r\n\r\n"u8);
            if (end >= 0)
            {
                end += from + 4;
                string statusLine = Encoding.Latin1.GetString(buffer, 0, Math.Min(end, 64));
                var parts = statusLine.Split(' ', 3);
                if (parts.Length < 2 || !parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal) || !int.TryParse(parts[1], out int status))
                    throw new IOException("the engine's answer is not HTTP/1.x");
                return (buffer[..end], buffer.AsMemory(end, filled - end), status);
            }
            if (filled == buffer.Length) throw new IOException("the engine's response head is longer than 64 KiB");
        }
    }

    /// <summary>Client to engine: what the client sent after the request head first, then the socket; its end becomes the engine's half-close.</summary>
    async Task PumpToEngineAsync(ClientReader reader, Socket engine, CancellationToken token)
    {
        var pending = reader.Buffered;
        if (pending.Length > 0)
        {
            await SendAsync(engine, pending, token);
            reader.Consume(pending.Length);
        }
        var buffer = ArrayPool<byte>.Shared.Rent(32 * 1024);
        try
        {
            int n;
            while ((n = await reader.Socket.ReceiveAsync(buffer.AsMemory(0, 32 * 1024), SocketFlags.None, token)) > 0)
                await SendAsync(engine, buffer.AsMemory(0, n), token);
            engine.Shutdown(SocketShutdown.Send);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Engine to client: the output; its end becomes the client's half-close.</summary>
    async Task PumpToClientAsync(Socket engine, Socket client, CancellationToken token)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(32 * 1024);
        try
        {
            int n;
            while ((n = await engine.ReceiveAsync(buffer.AsMemory(0, 32 * 1024), SocketFlags.None, token)) > 0)
                await SendAsync(client, buffer.AsMemory(0, n), token);
            client.Shutdown(SocketShutdown.Send);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Sends everything, failing if the reader takes nothing for <see cref="ProxyLimits.WriteStallTimeout"/>.</summary>
    async Task SendAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken token = default)
    {
        while (data.Length > 0)
        {
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(token);
            stall.CancelAfter(_limits.WriteStallTimeout);
            int n = await socket.SendAsync(data, SocketFlags.None, stall.Token);
            data = data[n..];
        }
    }

    /// <summary>A JSON error the docker CLI shows as "Error response from daemon: MESSAGE" (its head alone to a HEAD
    /// request: a body there would be read as the next response, as Go's client reports).</summary>
    async Task WriteErrorAsync(Socket client, int status, string message, bool close, bool http11, bool noBody = false)
    {
        var body = new MemoryStream();
        using (var w = new Utf8JsonWriter(body))
        {
            w.WriteStartObject();
            w.WriteString("message", message);
            w.WriteEndObject();
        }
        body.WriteByte((byte)'\n');
        string reason = status switch
        {
            400 => "Bad Request", 403 => "Forbidden", 408 => "Request Timeout", 413 => "Payload Too Large", 431 => "Request Header Fields Too Large",
            501 => "Not Implemented", 502 => "Bad Gateway", 503 => "Service Unavailable", 505 => "HTTP Version Not Supported", _ => "Error",
        };
        string headText = $"{(http11 ? "HTTP/1.1" : "HTTP/1.0")} {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n" +
                          (close ? "Connection: close\r\n" : http11 ? "" : "Connection: keep-alive\r\n") + "\r\n";
        await SendAsync(client, Encoding.ASCII.GetBytes(headText));
        if (!noBody) await SendAsync(client, body.ToArray());
    }

    /// <summary>Ends a connection whose client may still be sending (a refused upload): half-close, then read and drop
    /// a little of what comes, so that closing does not reset the connection before the client has read the answer.</summary>
    static async Task CloseGracefullyAsync(Socket client)
    {
        try
        {
            client.Shutdown(SocketShutdown.Send);
            using var linger = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            var buffer = ArrayPool<byte>.Shared.Rent(16384);
            try
            {
                long total = 0;
                int n;
                while (total < 4 << 20 && (n = await client.ReceiveAsync(buffer, SocketFlags.None, linger.Token)) > 0) total += n;
            }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
        }
        catch (Exception e) when (IsConnectionError(e)) { }
    }
}
