using System.Net.Sockets;
using System.Text;
using SandboxRunc.SocketProxy;
using Xunit;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>
/// The proxy's request reader, the hostile side: strict heads, bodies read exactly as framed, and every read bounded
/// in bytes and in time. Over a real socket pair (no root); timeouts are small limits, the hang detectors generous.
/// </summary>
public class Http1Tests
{
    static HttpRequestHead Parse(string head) => HttpRequestHead.Parse(Encoding.Latin1.GetBytes(head));

    [Fact]
    public void Head_OfTheCli_IsParsed()
    {
        var h = Parse("POST /v1.41/containers/create?name=web HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: Docker-Client/20.10.24+dfsg1 (linux)\r\n" +
                      "Content-Length: 42\r\nContent-Type: application/json\r\n\r\n");
        Assert.Equal(("POST", "/v1.41/containers/create", "name=web"), (h.Method, h.RawPath, h.Query));
        Assert.Equal((BodyFraming.Length, 42L, true, true), (h.Framing, h.ContentLength, h.KeepAlive, h.Http11));
        Assert.Equal("application/json", h.Header("content-type"));

        var up = Parse("POST /v1.41/exec/e/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 2\r\n\r\n");
        Assert.Equal("tcp", up.Upgrade);
        var old = Parse("GET /_ping HTTP/1.0\r\n\r\n");
        Assert.False(old.KeepAlive);
        var chunked = Parse("POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        Assert.Equal((BodyFraming.Chunked, true), (chunked.Framing, chunked.ExpectContinue));
    }

    [Theory]
    [InlineData("GET /_ping HTTP/1.1\nHost: x\r\n\r\n", 400)]                              // bare LF
    [InlineData("GET /_ping HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400)]                  // obsolete line folding
    [InlineData("POST /build HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400)] // smuggling classic
    [InlineData("POST /build HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400)]
    [InlineData("POST /build HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400)]
    [InlineData("POST /build HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400)]
    [InlineData("POST /build HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501)]
    [InlineData("POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400)]
    [InlineData("POST /build HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 501)]
    [InlineData("GET http://docker/_ping HTTP/1.1\r\n\r\n", 400)]                           // absolute-form
    [InlineData("GET /_ping HTTP/2.0\r\n\r\n", 505)]
    [InlineData("get /_ping HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET  /_ping HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET /_ping HTTP/1.1\r\nX-Bad\u0001: 1\r\n\r\n", 400)]
    [InlineData("GET /_ping HTTP/1.1\r\nX: a\u0000b\r\n\r\n", 400)]
    [InlineData("GET /_p\u00e9ng HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET /_ping HTTP/1.1\r\n: empty\r\n\r\n", 400)]
    [InlineData("GET /_ping HTTP/1.1\r\nX: 1\r\n", 400)]                                     // no empty line
    public void MalformedHeads_AreRefused(string head, int status) =>
        Assert.Equal(status, Assert.Throws<ClientProtocolException>(() => Parse(head)).Status);

    [Fact]
    public void TooManyHeaders_Are431() =>
        Assert.Equal(431, Assert.Throws<ClientProtocolException>(() =>
            Parse("GET /_ping HTTP/1.1\r\n" + string.Concat(Enumerable.Range(0, 101).Select(i => $"X-{i}: {i}\r\n")) + "\r\n")).Status);

    /// <summary>A connected pair: the test's end and the proxy's end.</summary>
    static (Socket Client, Socket Server) Pair()
    {
        string path = Path.Combine(Path.GetTempPath(), $"srt-http1-{Guid.NewGuid():N}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        client.Connect(new UnixDomainSocketEndPoint(path));
        var server = listener.Accept();
        File.Delete(path);
        return (client, server);
    }

    static readonly TimeSpan Hang = TimeSpan.FromSeconds(30);

    /// <summary>Small byte limits, roomy timeouts (a loaded machine must not turn a 431 or 413 into a 408).</summary>
    static ProxyLimits Small => new()
    {
        MaxHeadBytes = 4096,
        HeadTimeout = TimeSpan.FromSeconds(30),
        IdleTimeout = TimeSpan.FromSeconds(30),
    };

    /// <summary>Short timeouts, for the tests of a client that stops sending.</summary>
    static ProxyLimits Impatient => Small with
    {
        HeadTimeout = TimeSpan.FromMilliseconds(300),
        IdleTimeout = TimeSpan.FromMilliseconds(300),
    };

    [Fact]
    public async Task PipelinedRequests_AreReadOneAtATime_BodiesExactlyAsFramed()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync(Encoding.ASCII.GetBytes(
                "POST /containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}" +
                "POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n" +
                "GET /_ping HTTP/1.1\r\n\r\n"));
            client.Shutdown(SocketShutdown.Send);
            var reader = new ClientReader(server, Small);

            var first = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            var body1 = new RequestBodyStream(reader, first, CancellationToken.None);
            Assert.Equal("{}", Encoding.ASCII.GetString(await body1.ReadAllAsync(1024).WaitAsync(Hang)));
            Assert.True(body1.Done);

            var second = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            var body2 = new RequestBodyStream(reader, second, CancellationToken.None);
            Assert.Equal("abcde", Encoding.ASCII.GetString(await body2.ReadAllAsync(1024).WaitAsync(Hang)));
            Assert.True(body2.Done);

            var third = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            Assert.Equal("/_ping", third.Target);
            Assert.Null(await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang)); // closed between requests: quietly
        }
    }

    [Fact]
    public async Task EndlessHead_IsCutAtTheLimit()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            var reader = new ClientReader(server, Small);
            var read = reader.ReadHeadAsync(CancellationToken.None);
            // Far more than the limit, with no end of head: the reader must stop taking it (and not buffer it all).
            var junk = Encoding.ASCII.GetBytes("GET /_ping HTTP/1.1\r\nX: " + new string('a', 4000));
            var sending = Task.Run(async () =>
            {
                try { for (int i = 0; i < 64; i++) await client.SendAsync(junk); }
                catch (SocketException) { }
            });
            var e = await Assert.ThrowsAsync<ClientProtocolException>(() => read.WaitAsync(Hang));
            Assert.Equal(431, e.Status);
            server.Close();
            await sending.WaitAsync(Hang);
        }
    }

    [Fact]
    public async Task SlowHead_TimesOut_AndAnIdleConnectionEndsQuietly()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync("GET /_ping HTTP/1.1\r\nHost"u8.ToArray());
            var e = await Assert.ThrowsAsync<ClientProtocolException>(() => new ClientReader(server, Impatient).ReadHeadAsync(CancellationToken.None).WaitAsync(Hang));
            Assert.Equal(408, e.Status);
        }
        (client, server) = Pair();
        using (client)
        using (server)
            Assert.Null(await new ClientReader(server, Impatient).ReadHeadAsync(CancellationToken.None).WaitAsync(Hang));
    }

    [Fact]
    public async Task SlowBody_TimesOut()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync("POST /containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Im"u8.ToArray());
            var reader = new ClientReader(server, Impatient);
            var head = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            var body = new RequestBodyStream(reader, head, CancellationToken.None);
            var e = await Assert.ThrowsAsync<IOException>(() => body.ReadAllAsync(1024).WaitAsync(Hang));
            Assert.Contains("sent nothing", e.Message);
        }
    }

    [Theory]
    [InlineData(false)] // declared too large: refused before reading it
    [InlineData(true)]  // chunks that add up too large: refused once past the limit
    public async Task LargeJsonBodies_Are413(bool chunked)
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync(Encoding.ASCII.GetBytes(chunked ? "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" : "POST /c HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"));
            var chunk = Encoding.ASCII.GetBytes(chunked ? "400\r\n" + new string('a', 1024) + "\r\n" : new string('a', 1024));
            var sending = Task.Run(async () =>
            {
                try { for (int i = 0; i < 4; i++) await client.SendAsync(chunk); }
                catch (SocketException) { }
            });
            var reader = new ClientReader(server, Small);
            var h = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            var e = await Assert.ThrowsAsync<ClientProtocolException>(() => new RequestBodyStream(reader, h, CancellationToken.None).ReadAllAsync(1024).WaitAsync(Hang));
            Assert.Equal(413, e.Status);
            await sending.WaitAsync(Hang);
        }
    }

    [Theory]
    [InlineData("zz\r\n")]                          // not hex
    [InlineData("1234567890abc\r\n")]               // absurd size
    [InlineData("3\r\nabcX\r\n")]                  // chunk data not followed by CRLF
    [InlineData("3\nabc\r\n0\r\n\r\n")]            // bare LF
    public async Task MalformedChunks_FailTheBody(string chunks)
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync(Encoding.ASCII.GetBytes("POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks));
            client.Shutdown(SocketShutdown.Send);
            var reader = new ClientReader(server, Small);
            var h = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            await Assert.ThrowsAnyAsync<IOException>(() => new RequestBodyStream(reader, h, CancellationToken.None).ReadAllAsync(1 << 20).WaitAsync(Hang));
        }
    }

    [Fact]
    public async Task EndlessChunkLine_IsCut()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            await client.SendAsync(Encoding.ASCII.GetBytes("POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + new string('x', 10000)));
            var reader = new ClientReader(server, Small);
            var h = (await reader.ReadHeadAsync(CancellationToken.None).WaitAsync(Hang))!;
            var e = await Assert.ThrowsAnyAsync<IOException>(() => new RequestBodyStream(reader, h, CancellationToken.None).ReadAllAsync(1 << 20).WaitAsync(Hang));
            Assert.Contains("longer than 4 KiB", e.Message);
        }
    }
}
