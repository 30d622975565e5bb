using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.Escape;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>
/// Issue 15's CI tests through the real dockerd and the installed runtime: a container started with
/// `--runtime=sandbox-runc -v /var/run/docker.sock:/var/run/docker.sock` from an image the admin settings
/// allow-list for the socket, whose own docker client (Debian's, copied into the image) drives the engine
/// through the mounted socket, that is through the runtime's proxy. dockerd starts the runtime without our
/// environment, so the tests write the real /etc/sandbox-runc/admin-settings.json (and restore what was
/// there, byte for byte, or remove it): they run alone, in the host-global collection.
/// </summary>
[Collection(HostGlobalSettings.Name)]
public sealed class SocketProxyDockerTests : IDisposable
{
    const string SettingsFile = "/etc/sandbox-runc/admin-settings.json";
    const string Socket = "/var/run/docker.sock";

    readonly ITestOutputHelper _output;
    readonly DockerCli _docker = new();
    readonly string _image = $"srt-sockcli-{Guid.NewGuid().ToString("N")[..8]}:1";
    readonly string _context = Directory.CreateTempSubdirectory("srt-sockcli-").FullName;

    public SocketProxyDockerTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        _docker.Dispose(); // every container named by _docker.Name, the ones created from inside too
        try { _docker.Run("rmi", "-f", _image).GetAwaiter().GetResult(); } catch { }
        try { Directory.Delete(_context, recursive: true); } catch (IOException) { }
    }

    /// <summary>
    /// The test image plus Debian's docker client and curl, each with the shared libraries `ldd` names (the
    /// client is dynamic against libc only; curl needs many), copied to the same paths.
    /// </summary>
    async Task BuildClientImage()
    {
        string root = Path.Combine(_context, "root");
        foreach (var binary in new[] { EngineFactAttribute.Client, "/usr/bin/curl" })
        {
            Copy(binary, root);
            var ldd = await CliWrap.Cli.Wrap("ldd").WithArguments([binary]).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            foreach (Match m in Regex.Matches(ldd.StandardOutput, @"(?:=>\s*)?(/\S+)\s+\(0x"))
                Copy(m.Groups[1].Value, root);
        }
        File.WriteAllText(Path.Combine(_context, "Dockerfile"), $"FROM {DockerCli.Image}\nCOPY root/ /\n");
        await _docker.Ok("build", "-q", "-t", _image, _context);
    }

    static void Copy(string file, string root)
    {
        string target = root + file;
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        if (!File.Exists(target)) File.Copy(file, target); // follows symlinks: the library's content
    }

    /// <summary>
    /// Writes the admin settings (the client image allow-listed for the socket, the given command list) for the
    /// duration of <paramref name="body"/>; restores the file that was there exactly (content, mode, owner), or removes it.
    /// </summary>
    async Task WithSettings(string type, string[] commands, Func<Task> body)
    {
        var settings = new JsonObject
        {
            ["configurationFileVersion"] = 2,
            ["enhancedContainerIsolation"] = new JsonObject
            {
                ["value"] = true,
                ["locked"] = false,
                ["dockerSocketMount"] = new JsonObject
                {
                    ["imageList"] = new JsonObject { ["images"] = new JsonArray(_image), ["allowDerivedImages"] = false },
                    ["commandList"] = new JsonObject
                    {
                        ["type"] = type,
                        ["commands"] = new JsonArray([.. commands.Select(c => (JsonNode)c)]),
                    },
                },
            },
        }.ToJsonString();
        byte[]? before = File.Exists(SettingsFile) ? File.ReadAllBytes(SettingsFile) : null;
        UnixFileMode mode = before is null ? 0 : File.GetUnixFileMode(SettingsFile);
        bool madeDir = !Directory.Exists(Path.GetDirectoryName(SettingsFile));
        Directory.CreateDirectory(Path.GetDirectoryName(SettingsFile)!);
        try
        {
            File.WriteAllText(SettingsFile, settings);
            File.SetUnixFileMode(SettingsFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            await body();
        }
        finally
        {
            if (before is null)
            {
                File.Delete(SettingsFile);
                if (madeDir) Directory.Delete(Path.GetDirectoryName(SettingsFile)!);
            }
            else
            {
                File.WriteAllBytes(SettingsFile, before);
                File.SetUnixFileMode(SettingsFile, mode);
            }
        }
    }

    /// <summary>Starts the container allowed the socket (a sleeper); returns its name.</summary>
    async Task<string> StartClient()
    {
        string name = _docker.Name("sockcli");
        await _docker.Ok("run", "-d", "--name", name, $"--runtime={DockerCli.Runtime}", "-v", $"{Socket}:{Socket}", _image, "sleep", "600");
        return name;
    }

    /// <summary>`docker exec CLIENT sh -c SCRIPT`: the script's docker and curl reach the engine through the mounted socket.</summary>
    async Task<DockerCli.Result> Inside(string client, string script, string? stdin = null)
    {
        var r = await _docker.RunWithStdin(stdin, ["exec", .. stdin is null ? Array.Empty<string>() : ["-i"], client, "sh", "-c", script]);
        _output.WriteLine($"inside: {script}\n{r}");
        return r;
    }

    async Task<DockerCli.Result> InsideOk(string client, string script)
    {
        var r = await Inside(client, script);
        Assert.True(r.ExitCode == 0, $"{script}: {r}{await _docker.Diagnose(client)}");
        return r;
    }

    static void AssertBlocked(DockerCli.Result r, string target)
    {
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Contains($"docker command \"{target}", r.Stdout + r.Stderr);
        Assert.Contains("is blocked; if you wish to allow it, configure the docker socket command list", r.Stdout + r.Stderr);
    }

    [EngineFact]
    public async Task DenyList_CliWorksThroughTheMountedSocket_PushBuildVolumesAreBlocked()
    {
        await BuildClientImage();
        await WithSettings("deny", ["push", "build", "volume*"], async () =>
        {
            string client = await StartClient();
            Assert.Contains("CONTAINER ID", (await InsideOk(client, "docker ps")).Stdout);

            string run = _docker.Name("run");
            Assert.Equal("hi\n", (await InsideOk(client, $"docker run --rm --name {run} {_image} echo hi")).Stdout);

            // logs -f follows a short container's output to its end.
            string logger = _docker.Name("logs");
            await InsideOk(client, $"docker run -d --name {logger} {_image} sh -c 'echo a; sleep 2; echo b'");
            Assert.Equal("a\nb\n", (await InsideOk(client, $"docker logs -f {logger}")).Stdout);

            // exec (a hijack), plain, with stdin, and with a terminal: the host's `docker exec -t` gives the inner client a pty.
            string sleeper = _docker.Name("exec");
            await InsideOk(client, $"docker run -d --name {sleeper} {_image} sleep 120");
            Assert.Equal("in\n", (await InsideOk(client, $"docker exec {sleeper} echo in")).Stdout);
            var cat = await Inside(client, $"docker exec -i {sleeper} cat", stdin: "through exec\n");
            Assert.True(cat.ExitCode == 0, cat.ToString());
            Assert.Equal("through exec\n", cat.Stdout);
            var tty = await _docker.RunWithStdin("", "exec", "-t", client, "docker", "exec", "-it", sleeper, "sh", "-c", "echo tty-ok; tty");
            _output.WriteLine($"exec -it: {tty}");
            Assert.True(tty.ExitCode == 0, tty.ToString());
            Assert.Contains("tty-ok", tty.Stdout);
            Assert.Contains("/dev/pts/", tty.Stdout);

            AssertBlocked(await Inside(client, "docker volume ls"), "/v1.41/volumes");
            AssertBlocked(await Inside(client, $"echo 'FROM {_image}' | docker build -t {_docker.Name("build")} -"), "/v1.41/build");
            var push = await Inside(client, $"curl -sS -i -X POST --unix-socket {Socket} 'http://docker/v1.41/images/myimage/push?tag=latest'");
            Assert.Contains("HTTP/1.1 403", push.Stdout);
            Assert.Contains("docker command \\u0022/v1.41/images/myimage/push?tag=latest\\u0022 is blocked", push.Stdout);
        });
    }

    [EngineFact]
    public async Task AllowList_PsWorks_ImagesIsBlocked()
    {
        await BuildClientImage();
        await WithSettings("allow", ["ps", "container*"], async () =>
        {
            string client = await StartClient();
            Assert.Contains("CONTAINER ID", (await InsideOk(client, "docker ps")).Stdout);
            AssertBlocked(await Inside(client, "docker images"), "/v1.41/images/json");
        });
    }

    [EngineFact]
    public async Task CreatesThroughTheSocket_AreRefusedOrRunUnderThisRuntime()
    {
        await BuildClientImage();
        await WithSettings("deny", ["push"], async () =>
        {
            string client = await StartClient();
            string escape = _docker.Name("hostpid");
            var refused = await Inside(client, $"docker run --name {escape} --runtime=runc --privileged --pid=host {_image} true");
            Assert.True(refused.ExitCode != 0, refused.ToString());
            Assert.Contains("sandbox-runc containers can't share namespaces [pid] with the host", refused.Stderr);
            Assert.Equal("", (await _docker.Ok("ps", "-a", "-q", "--filter", $"name={escape}")).Stdout.Trim());

            string plain = _docker.Name("plain");
            await InsideOk(client, $"docker run -d --name {plain} {_image} sleep 120");
            Assert.Equal($"{DockerCli.Runtime} running", await _docker.Inspect(plain, "{{.HostConfig.Runtime}} {{.State.Status}}"));
            // Its own ID range: the user namespace maps root to an unprivileged host ID, not the identity map.
            string uidMap = (await _docker.Ok("exec", plain, "cat", "/proc/self/uid_map")).Stdout;
            _output.WriteLine($"uid_map: {uidMap}");
            var fields = uidMap.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            Assert.True(fields.Length >= 3, uidMap);
            Assert.Equal("0", fields[0]);
            Assert.NotEqual("0", fields[1]);
            Assert.NotEqual("4294967295", fields[2]);
        });
    }
}
