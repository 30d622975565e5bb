using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Policy;
using SandboxRunc.SocketProxy;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>Skips (with the reason) where the proxy cannot be run against a real engine: not root, no dockerd, no client.</summary>
public sealed class EngineFactAttribute : FactAttribute
{
    public const string Client = "/usr/bin/docker";
    public const string EngineSocket = "/var/run/docker.sock";

    public EngineFactAttribute()
    {
        if (Environment.UserName != "root") Skip = "needs root: the proxy judges creates with the host's facts and reaches dockerd's socket";
        else if (!File.Exists(Client)) Skip = $"needs Debian's docker client at {Client} (apt-get install docker.io)";
        else if (!EngineAnswers()) Skip = $"needs a running dockerd at {EngineSocket}";
    }

    static bool EngineAnswers()
    {
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(EngineSocket));
            s.Send("GET /_ping HTTP/1.0\r\n\r\n"u8);
            s.ReceiveTimeout = 5000;
            var buffer = new byte[512];
            return s.Receive(buffer) > 0 && Encoding.ASCII.GetString(buffer).Contains(" 200 ");
        }
        catch (SocketException) { return false; }
    }
}

/// <summary>
/// The proxy in this process on a temporary socket, forwarding to the real dockerd, driven by Debian's docker client
/// (20.10, API 1.41) and curl as a container would drive its mounted socket. Containers created through it are
/// forced onto runc here (the test's own "this runtime": the installed runtime is shared and not under test), which is
/// what shows the rewrite. Every container is named srt-proxy-* and removed on Dispose, with the temporary directory.
/// </summary>
public sealed class SocketProxyEngineTests : IDisposable
{
    const string Image = "sandbox-runc-test:latest";
    static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);

    readonly ITestOutputHelper _output;
    readonly string _dir = Directory.CreateTempSubdirectory("srt-proxy-").FullName;
    readonly List<string> _names = [];
    readonly List<(CancellationTokenSource Stop, Task Run)> _proxies = [];
    public readonly List<(string Method, string Target, DockerRoute? Route, string? Refusal)> Requests = [];

    public SocketProxyEngineTests(ITestOutputHelper output) => _output = output;

    string Settings => Path.Combine(_dir, "admin-settings.json");

    void CommandList(string type, params string[] commands) =>
        File.WriteAllText(Settings, new System.Text.Json.Nodes.JsonObject
        {
            ["configurationFileVersion"] = 2,
            ["enhancedContainerIsolation"] = new System.Text.Json.Nodes.JsonObject
            {
                ["value"] = true,
                ["dockerSocketMount"] = new System.Text.Json.Nodes.JsonObject
                {
                    ["imageList"] = new System.Text.Json.Nodes.JsonObject { ["images"] = new System.Text.Json.Nodes.JsonArray() },
                    ["commandList"] = new System.Text.Json.Nodes.JsonObject
                    {
                        ["type"] = type,
                        ["commands"] = new System.Text.Json.Nodes.JsonArray(commands.Select(c => (System.Text.Json.Nodes.JsonNode)c).ToArray()),
                    },
                },
            },
        }.ToJsonString());

    /// <summary>Starts a proxy on a new socket in the temporary directory; returns its path.</summary>
    (string Socket, ProxyServer Server) Proxy(string runtime = "runc", string[]? isolated = null, ProxyLimits? limits = null)
    {
        string path = Path.Combine(_dir, $"p{_proxies.Count}.sock");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(64);
        var server = new ProxyServer(listener, new ProxyOptions
        {
            EngineSocket = EngineFactAttribute.EngineSocket,
            SettingsPath = Settings,
            Runtime = runtime,
            IsolatedRuntimes = (isolated ?? [runtime]).ToHashSet(),
            JudgeCreate = SocketProxyService.JudgeCreate("/run/sandbox-runc"),
            OnRequest = (method, target, route, refusal) => { lock (Requests) Requests.Add((method, target, route, refusal)); },
        }, limits);
        var stop = new CancellationTokenSource();
        _proxies.Add((stop, Task.Run(async () => { using (listener) await server.RunAsync(stop.Token); })));
        return (path, server);
    }

    string Name(string what)
    {
        string name = $"srt-proxy-{what}-{Guid.NewGuid().ToString("N")[..8]}";
        _names.Add(name);
        return name;
    }

    sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    /// <summary>Debian's docker client through the socket (the real engine's when <paramref name="socket"/> is null).</summary>
    async Task<Result> Docker(string? socket, string? stdin, params string[] args)
    {
        var cmd = CliWrap.Cli.Wrap(EngineFactAttribute.Client)
            .WithArguments(["-H", "unix://" + (socket ?? EngineFactAttribute.EngineSocket), .. args])
            .WithEnvironmentVariables(e => e.Set("DOCKER_CONFIG", _dir))
            .WithValidation(CommandResultValidation.None);
        if (stdin is not null) cmd = cmd.WithStandardInputPipe(PipeSource.FromString(stdin));
        using var cts = new CancellationTokenSource(Hang);
        try
        {
            var r = await cmd.ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
            var result = new Result(r.ExitCode, r.StandardOutput, r.StandardError);
            _output.WriteLine($"docker {string.Join(' ', args)}: {result}");
            return result;
        }
        catch (OperationCanceledException) { throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)} did not finish within {Hang.TotalSeconds} s"); }
    }

    async Task<Result> Ok(string? socket, params string[] args)
    {
        var r = await Docker(socket, null, args);
        Assert.True(r.ExitCode == 0, $"docker {string.Join(' ', args)}: {r}");
        return r;
    }

    async Task<Result> Curl(string socket, params string[] args)
    {
        var r = await CliWrap.Cli.Wrap("curl").WithArguments(["-sS", "--max-time", "30", "--unix-socket", socket, .. args])
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
        return new Result(r.ExitCode, r.StandardOutput, r.StandardError);
    }

    [EngineFact]
    public async Task DenyList_CliWorks_AndPushBuildVolumesAreBlocked()
    {
        CommandList("deny", "push", "build", "volume*");
        var (sock, _) = Proxy();

        await Ok(sock, "ps");
        Assert.Equal("hi", (await Ok(sock, "run", "--rm", Image, "echo", "hi")).Stdout.Trim());

        // stdin through an attach, both ways, its end passed on (cat ends when the input does).
        var cat = await Docker(sock, "one\ntwo\n", "run", "--rm", "-i", Image, "cat");
        Assert.True(cat.ExitCode == 0, cat.ToString());
        Assert.Equal("one\ntwo\n", cat.Stdout);

        // logs -f follows a running container's output to its end.
        string logger = Name("logs");
        await Ok(sock, "run", "-d", "--name", logger, Image, "sh", "-c", "echo a; sleep 2; echo b");
        Assert.Equal("a\nb\n", (await Ok(sock, "logs", "-f", logger)).Stdout);

        // exec (hijacked) with and without stdin.
        string sleeper = Name("exec");
        await Ok(sock, "run", "-d", "--name", sleeper, Image, "sleep", "60");
        Assert.Equal("in", (await Ok(sock, "exec", sleeper, "echo", "in")).Stdout.Trim());
        var exec = await Docker(sock, "through exec\n", "exec", "-i", sleeper, "cat");
        Assert.True(exec.ExitCode == 0, exec.ToString());
        Assert.Equal("through exec\n", exec.Stdout);
        var code = await Docker(sock, null, "exec", sleeper, "sh", "-c", "exit 3");
        Assert.Equal(3, code.ExitCode);

        // events: a streamed response, relayed as it comes, until --until.
        string since = DateTimeOffset.UtcNow.ToUnixTimeSeconds().ToString();
        await Ok(sock, "kill", sleeper);
        var events = await Ok(sock, "events", "--since", since, "--until", (long.Parse(since) + 3).ToString(), "--filter", "container=" + sleeper);
        Assert.Contains("kill", events.Stdout);

        // Blocked, with ECI's message, the request as sent.
        var volumes = await Docker(sock, null, "volume", "ls");
        Assert.NotEqual(0, volumes.ExitCode);
        Assert.Contains("docker command \"/v1.41/volumes\" is blocked", volumes.Stderr);
        var build = await Docker(sock, "FROM " + Image + "\n", "build", "-t", "srt-proxy-build", "-");
        Assert.NotEqual(0, build.ExitCode);
        Assert.Contains("is blocked", build.Stderr);
        var push = await Curl(sock, "-i", "-X", "POST", "http://docker/v1.41/images/myimage/push?tag=latest");
        Assert.Contains("HTTP/1.1 403", push.Stdout);
        Assert.Contains("{\"message\":\"docker command \\u0022/v1.41/images/myimage/push?tag=latest\\u0022 is blocked", push.Stdout);
    }

    [EngineFact]
    public async Task Terminals_ExecAndRunWithATty_ThroughAPty()
    {
        CommandList("deny", "push", "build", "volume*");
        var (sock, _) = Proxy();
        string sleeper = Name("tty");
        await Ok(sock, "run", "-d", "--name", sleeper, Image, "sleep", "60");
        // util-linux's script gives the client a pty, as a user's terminal would (exec -it, run -it: a tty hijack plus resizes).
        async Task<string> InPty(string command)
        {
            var r = await CliWrap.Cli.Wrap("script").WithArguments(["-qec", command, "/dev/null"])
                .WithEnvironmentVariables(e => e.Set("DOCKER_CONFIG", _dir))
                .WithStandardInputPipe(PipeSource.FromString(""))
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(new CancellationTokenSource(Hang).Token);
            _output.WriteLine($"{command}: exit {r.ExitCode}\n{r.StandardOutput}{r.StandardError}");
            Assert.True(r.ExitCode == 0, $"{command}: exit {r.ExitCode}\n{r.StandardOutput}{r.StandardError}");
            return r.StandardOutput;
        }
        string client = $"{EngineFactAttribute.Client} -H unix://{sock}";
        var exec = await InPty($"{client} exec -it {sleeper} sh -c 'echo tty-ok; tty'");
        Assert.Contains("tty-ok", exec);
        Assert.Contains("/dev/pts/", exec);
        var run = await InPty($"{client} run -it --rm {Image} sh -c 'echo run-ok; tty'");
        Assert.Contains("run-ok", run);
        Assert.Contains("/dev/pts/", run);
    }

    [EngineFact]
    public async Task Build_Allowed_StreamsItsContext_AndTheHostNetworkIsRefused()
    {
        CommandList("deny", "push");
        var (sock, _) = Proxy();
        string tag = Name("build");
        string dockerfile = $"FROM {Image}\nRUN echo built > /built\n";
        try
        {
            var host = await Docker(sock, dockerfile, "build", "--network=host", "-t", tag, "-");
            Assert.NotEqual(0, host.ExitCode);
            Assert.Contains("docker build --network=host is refused", host.Stderr);
            var build = await Docker(sock, dockerfile, "build", "-t", tag, "-");
            Assert.True(build.ExitCode == 0, build.ToString());
            Assert.Equal("built", (await Ok(sock, "run", "--rm", tag, "cat", "/built")).Stdout.Trim());
        }
        finally { await Docker(null, null, "rmi", "-f", tag); }
    }

    [EngineFact]
    public async Task BuildKit_SessionAndGrpcHijacks_GoThrough()
    {
        CommandList("deny", "push");
        var (sock, _) = Proxy();
        string tag = Name("buildkit");
        try
        {
            var r = await CliWrap.Cli.Wrap(EngineFactAttribute.Client).WithArguments(["-H", "unix://" + sock, "build", "--progress=plain", "-t", tag, "-"])
                .WithEnvironmentVariables(e => e.Set("DOCKER_CONFIG", _dir).Set("DOCKER_BUILDKIT", "1"))
                .WithStandardInputPipe(PipeSource.FromString($"FROM {Image}\nRUN echo built > /built\n"))
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(new CancellationTokenSource(Hang).Token);
            _output.WriteLine($"exit {r.ExitCode}\n{r.StandardOutput}\n{r.StandardError}");
            lock (Requests) foreach (var q in Requests) _output.WriteLine($"{q.Method} {q.Target} -> {q.Route} {q.Refusal}");
            Assert.True(r.ExitCode == 0, r.StandardError);
            Assert.Contains(Requests, q => q.Target.EndsWith("/session"));
            Assert.Equal("built", (await Ok(sock, "run", "--rm", tag, "cat", "/built")).Stdout.Trim());
        }
        finally { await Docker(null, null, "rmi", "-f", tag); }
    }

    [EngineFact]
    public async Task AllowList_PsWorks_ImagesIsBlocked()
    {
        CommandList("allow", "ps", "container*");
        var (sock, _) = Proxy();
        await Ok(sock, "ps");
        var images = await Docker(sock, null, "images");
        Assert.NotEqual(0, images.ExitCode);
        Assert.Contains("docker command \"/v1.41/images/json\" is blocked", images.Stderr);
    }

    [EngineFact]
    public async Task Creates_AreJudgedAndForcedOntoThisRuntime()
    {
        CommandList("deny", "push");
        var (sock, _) = Proxy();
        var hostPid = await Docker(sock, null, "create", "--name", Name("hostpid"), "--runtime=runc", "--privileged", "--pid=host", Image, "true");
        Assert.NotEqual(0, hostPid.ExitCode);
        Assert.Contains("sandbox-runc containers can't share namespaces [pid] with the host", hostPid.Stderr);
        var etc = await Docker(sock, null, "create", "--name", Name("etc"), "-v", "/etc:/x", Image, "true");
        Assert.Contains("can't mount /etc because it's configured as a restricted host mount", etc.Stderr);
        var socket = await Docker(sock, null, "create", "--name", Name("sock"), "-v", "/var/run/docker.sock:/var/run/docker.sock", Image, "true");
        Assert.Contains("docker socket mount denied for container with image", socket.Stderr);
        var optOut = await Docker(sock, null, "create", "--name", Name("optout"), "--label", "io.sandbox-runc.isolation=off", Image, "true");
        Assert.Contains("io.sandbox-runc.isolation=off refused for a container created through a mounted docker socket", optOut.Stderr);
        // Nothing of the refused ones exists.
        Assert.DoesNotContain("srt-proxy-hostpid", (await Ok(null, "ps", "-a", "--format", "{{.Names}}")).Stdout);

        // Created (not started: the runtime it asked for is the installed one) and rewritten onto the proxy's.
        string plain = Name("plain");
        await Ok(sock, "create", "--name", plain, "--runtime=sandbox-runc", "--privileged", Image, "true");
        var inspected = await Ok(null, "inspect", "-f", "{{.HostConfig.Runtime}} {{.HostConfig.Privileged}} {{index .Config.Labels \"io.sandbox-runc.isolation\"}}", plain);
        Assert.Equal("runc true on", inspected.Stdout.Trim());
    }

    [EngineFact]
    public async Task ExecAttachAndCopyInto_OnlyIntoIsolatedContainers()
    {
        CommandList("deny", "push");
        string target = Name("runc");
        await Ok(null, "run", "-d", "--name", target, "--runtime=runc", Image, "sleep", "60");
        // A proxy whose runtime is "sandbox-runc": the runc container is not one of its isolated ones.
        var (sock, _) = Proxy(runtime: "sandbox-runc");
        var exec = await Docker(sock, null, "exec", target, "true");
        Assert.Contains($"docker container exec on container {target} is refused through a mounted docker socket: it runs under runtime \"runc\"", exec.Stderr);
        // The CLI shows a refused hijack by its status only ("unable to upgrade to tcp, received 403"); curl shows the message.
        var attach = await Docker(sock, null, "attach", "--no-stdin", target);
        Assert.NotEqual(0, attach.ExitCode);
        Assert.Contains("received 403", attach.Stderr);
        var raw = await Curl(sock, "-X", "POST", $"http://docker/v1.41/containers/{target}/attach?stream=1&stdout=1");
        Assert.Contains($"docker container attach on container {target} is refused through a mounted docker socket", raw.Stdout);
        File.WriteAllText(Path.Combine(_dir, "f"), "x");
        var cp = await Docker(sock, null, "cp", Path.Combine(_dir, "f"), target + ":/tmp/f");
        Assert.Contains("is refused through a mounted docker socket", cp.Stderr);
        // Reading is allowed.
        await Ok(sock, "logs", target);
    }

    [EngineFact]
    public async Task AHeldHijack_DoesNotBlockOtherRequests()
    {
        CommandList("deny", "push");
        var (sock, server) = Proxy();
        string sleeper = Name("held");
        await Ok(sock, "run", "-d", "--name", sleeper, Image, "sleep", "60");

        // An exec whose stdin stays open: its hijacked stream is held for as long as the client likes.
        using var holdStdin = new CancellationTokenSource();
        var pipe = new AnonymousPipeStdin();
        var held = CliWrap.Cli.Wrap(EngineFactAttribute.Client)
            .WithArguments(["-H", "unix://" + sock, "exec", "-i", sleeper, "cat"])
            .WithEnvironmentVariables(e => e.Set("DOCKER_CONFIG", _dir))
            .WithStandardInputPipe(PipeSource.Create(pipe.CopyToAsync))
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(holdStdin.Token);
        var sw = Stopwatch.StartNew();
        while (!Requests.Any(r => r.Target.Contains("/exec/") && r.Target.EndsWith("/start")) && sw.Elapsed < Hang) await Task.Delay(50);

        for (int i = 0; i < 5; i++) await Ok(sock, "ps");
        await Ok(sock, "run", "--rm", Image, "true");
        Assert.True(server.Active >= 1);

        pipe.End();
        var r = await held.Task.WaitAsync(Hang);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("held\n", r.StandardOutput);
    }

    [EngineFact]
    public async Task RawClients_MalformedAndSlowRequests_AreAnswered()
    {
        CommandList("deny", "push");
        var (sock, _) = Proxy(limits: new ProxyLimits { HeadTimeout = TimeSpan.FromSeconds(1) });
        var ping = await Curl(sock, "http://docker/_ping");
        Assert.Equal("OK", ping.Stdout);
        var version = await Curl(sock, "http://docker/v1.20/version");
        Assert.Contains("docker API version 1.20 is refused", version.Stdout);
        var dotdot = await Curl(sock, "--path-as-is", "http://docker/v1.41/images/x/%2e%2e/push");
        Assert.Contains("is not a clean path", dotdot.Stdout);

        using var raw = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await raw.ConnectAsync(new UnixDomainSocketEndPoint(sock));
        await raw.SendAsync("GET /_ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"u8.ToArray());
        var answer = await ReadToEndAsync(raw);
        Assert.StartsWith("HTTP/1.1 400 ", answer);

        using var slow = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await slow.ConnectAsync(new UnixDomainSocketEndPoint(sock));
        await slow.SendAsync("GET /_ping HTTP/1.1\r\nHo"u8.ToArray());
        Assert.StartsWith("HTTP/1.1 408 ", await ReadToEndAsync(slow));
    }

    [EngineFact]
    public async Task CliRequests_MatchTheRouteTable()
    {
        // Every request the CLI made for the commands above went to a route of the table (none unknown).
        CommandList("deny", "push");
        var (sock, _) = Proxy();
        string c = Name("routes");
        await Ok(sock, "version");
        await Ok(sock, "info");
        await Ok(sock, "images");
        await Ok(sock, "volume", "ls");
        await Ok(sock, "network", "ls");
        await Ok(sock, "system", "df");
        await Ok(sock, "run", "-d", "--name", c, Image, "sleep", "60");
        await Ok(sock, "inspect", c);
        await Ok(sock, "top", c);
        await Ok(sock, "stats", "--no-stream", c);
        await Ok(sock, "exec", c, "true");
        await Ok(sock, "cp", c + ":/etc/hostname", Path.Combine(_dir, "hostname"));
        await Ok(sock, "cp", Path.Combine(_dir, "hostname"), c + ":/tmp/");
        await Ok(sock, "diff", c);
        await Ok(sock, "pause", c);
        await Ok(sock, "unpause", c);
        await Ok(sock, "update", "--memory", "64m", "--memory-swap", "128m", c);
        await Ok(sock, "rename", c, c + "-2");
        _names.Add(c + "-2");
        await Ok(sock, "stop", "-t", "0", c + "-2");
        await Ok(sock, "rm", c + "-2");
        lock (Requests)
        {
            foreach (var r in Requests) _output.WriteLine($"{r.Method} {r.Target} -> {r.Route?.ToString() ?? "(none)"} {r.Refusal}");
            Assert.All(Requests, r => Assert.True(r.Route is not null, $"{r.Method} {r.Target} matches no route"));
            Assert.All(Requests, r => Assert.Null(r.Refusal));
        }
    }

    static async Task<string> ReadToEndAsync(Socket s)
    {
        var all = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(Hang);
        int n;
        while ((n = await s.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0) all.Write(buffer, 0, n);
        return Encoding.UTF8.GetString(all.ToArray());
    }

    /// <summary>A stdin that stays open until <see cref="End"/>.</summary>
    sealed class AnonymousPipeStdin
    {
        readonly TaskCompletionSource _end = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public void End() => _end.TrySetResult();
        public async Task CopyToAsync(Stream destination, CancellationToken token)
        {
            await destination.WriteAsync("held\n"u8.ToArray(), token);
            await destination.FlushAsync(token);
            await _end.Task.WaitAsync(token);
        }
    }

    public void Dispose()
    {
        foreach (var (stop, _) in _proxies) stop.Cancel();
        foreach (var name in _names)
        {
            try
            {
                CliWrap.Cli.Wrap(EngineFactAttribute.Client).WithArguments(["-H", "unix://" + EngineFactAttribute.EngineSocket, "rm", "-f", name])
                    .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync().Task.GetAwaiter().GetResult();
            }
            catch (Exception e) { _output.WriteLine($"cleanup of {name}: {e.Message}"); }
        }
        foreach (var (_, run) in _proxies)
            try { run.Wait(TimeSpan.FromSeconds(10)); } catch (AggregateException) { }
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
