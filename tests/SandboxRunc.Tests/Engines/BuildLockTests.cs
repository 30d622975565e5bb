using System.Formats.Tar;
using System.Text;
using System.Text.Json.Nodes;
using CliWrap;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Engines;

/// <summary>
/// `docker build` under `install --lock` (issue 16): every RUN step of the classic builder (DOCKER_BUILDKIT=0) and of
/// dockerd's embedded BuildKit (DOCKER_BUILDKIT=1, which runs each step as `runc run` with the runc of dockerd's PATH)
/// runs in its own user namespace, a step's escape attempts fail, and the image holds what a build under runc holds:
/// the same files with the same owners, layer by layer (the ID mapping does not leak into layers, nor do mount points).
///
/// By default against the machine's dockerd: built first as it is (runc), then `install --lock`, built again, and
/// the lock undone (daemon.json restored byte for byte, the runc link removed). To try it on other daemons without
/// touching the machine's: SANDBOX_RUNC_TEST_LOCKED_DOCKER_HOST names a dockerd already locked (default runtime
/// sandbox-runc and a runc link to it first in its PATH) and SANDBOX_RUNC_TEST_UNLOCKED_DOCKER_HOST one that runs
/// runc; both must be set, and nothing is installed then. A daemon on whose default network no container starts
/// (no bridge, or docker0 gone) builds with --network=none.
/// </summary>
[Collection(DockerdConfiguration.Name)]
public sealed class BuildLockTests : IDisposable
{
    /// <summary>Debian's docker client: it speaks BuildKit's session itself (the static CLI some hosts have wants buildx).</summary>
    const string Client = "/usr/bin/docker";
    static readonly string? LockedHost = Env("SANDBOX_RUNC_TEST_LOCKED_DOCKER_HOST");
    static readonly string? UnlockedHost = Env("SANDBOX_RUNC_TEST_UNLOCKED_DOCKER_HOST");

    readonly string _context = Directory.CreateTempSubdirectory("srt-build").FullName;
    readonly string _tag = "srt-build-" + Guid.NewGuid().ToString("N")[..8];
    readonly List<(string? Host, string Image)> _images = [];
    MachineLock? _lock;

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    /// <summary>Each step prints what it is up to on a line of its own, marked, so that both builders' logs can be read alike.</summary>
    const string Dockerfile = """
        FROM IMAGE
        RUN echo "@uid_map $(cat /proc/self/uid_map)"
        RUN touch /f && touch /g && chown 1234:5678 /g && mkdir /d && mkdir -p /home/tester/made && chown 1000:1000 /home/tester/made
        RUN if mkdir -p /hostproc && mount -t proc proc /hostproc; then echo "@mount-proc ok"; else echo "@mount-proc refused"; fi; \
            if echo 1 > /proc/sys/kernel/sysrq; then echo "@sysctl ok"; else echo "@sysctl refused"; fi; \
            if mount -o remount,rw /proc/sys; then echo "@remount-proc-sys ok"; else echo "@remount-proc-sys refused"; fi; \
            rmdir /hostproc
        """;

    /// <summary>A step in the host's network namespace (docker build --network=host).</summary>
    const string HostNetworkDockerfile = """
        FROM IMAGE
        RUN echo "@netns $(readlink /proc/self/ns/net)"
        """;

    [BuildClientFact]
    public async Task BuildsUnderTheLockAreIsolatedAndLeaveTheFilesRuncLeaves()
    {
        File.WriteAllText(Path.Combine(_context, "Dockerfile"), Dockerfile.Replace("IMAGE", DockerCli.Image));
        File.WriteAllText(Path.Combine(_context, "Dockerfile.hostnet"), HostNetworkDockerfile.Replace("IMAGE", DockerCli.Image));
        string hostNetns = new FileInfo("/proc/self/ns/net").LinkTarget!;
        var builders = new[] { false, true };

        // As the engine is: steps run under runc, as host root.
        await DefaultNetworkWorks(LockedHost); // asked before the lock, when --runtime=runc is still runc
        var runc = new Dictionary<bool, Build>();
        foreach (bool buildKit in builders)
        {
            runc[buildKit] = await BuildOn(UnlockedHost, buildKit, "runc");
            Assert.Equal("0 0 4294967295", runc[buildKit].Said("uid_map"));
            // --network=host: a step under runc is in the host's network namespace (BuildKit: dockerd grants network.host).
            var hostNet = await HostNetworkBuild(UnlockedHost, buildKit, "runc");
            Assert.True(hostNet.ExitCode == 0, hostNet.ToString());
            Assert.Equal(hostNetns, new Build("", hostNet.Stdout + "\n" + hostNet.Stderr).Said("netns"));
        }

        if (LockedHost is null) _lock = await MachineLock.Install();
        foreach (bool buildKit in builders)
        {
            string what = buildKit ? "BuildKit" : "classic builder";
            var locked = await BuildOn(LockedHost, buildKit, "locked");
            var map = locked.Said("uid_map").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(map.Length == 3 && map[0] == "0" && long.Parse(map[1]) >= 65536 && map[2] == "65536",
                $"{what} under the lock: a RUN step's uid_map is '{locked.Said("uid_map")}', not a range of its own\n{locked.Log}");
            // Escape attempts: refused (under runc too a step has no CAP_SYS_ADMIN; here not even the step's root of
            // its own user namespace may: mount is vetted, /proc/sys is the emulation's).
            foreach (var attempt in new[] { "mount-proc", "sysctl", "remount-proc-sys" })
                Assert.True(locked.Said(attempt) == "refused", $"{what} under the lock: {attempt} was '{locked.Said(attempt)}'\n{locked.Log}");
            // ...and a step in the host's network namespace is refused, saying why (the build fails).
            var hostNet = await HostNetworkBuild(LockedHost, buildKit, "locked");
            Assert.True(hostNet.ExitCode != 0 && (hostNet.Stdout + hostNet.Stderr).Contains("share a network namespace with the host"),
                $"{what} under the lock, --network=host: {hostNet}");

            // The same files with the same owners: in the image as docker runs it...
            Assert.Equal(await Owners(UnlockedHost, runc[buildKit].Image), await Owners(LockedHost, locked.Image));
            // ...and layer by layer in what docker save exports (owners, modes, names, and nothing more).
            var expected = await Layers(UnlockedHost, runc[buildKit].Image);
            var got = await Layers(LockedHost, locked.Image);
            Assert.Equal(expected.Count, got.Count);
            for (int i = 0; i < expected.Count; i++)
                Assert.True(expected[i].SequenceEqual(got[i]), $"{what}: layer {i} differs from runc's:\nrunc:   {string.Join(", ", expected[i])}\nlocked: {string.Join(", ", got[i])}");
        }
    }

    sealed record Build(string Image, string Log)
    {
        /// <summary>What a step printed after "@KEY " (the classic builder prints lines as they are, BuildKit after "#N 0.123 ").</summary>
        public string Said(string key)
        {
            foreach (var line in Log.Split('\n'))
            {
                int at = line.IndexOf("@" + key + " ", StringComparison.Ordinal);
                // Skip the echo of the RUN line itself (both builders show the command).
                if (at >= 0 && !line.Contains("RUN ", StringComparison.Ordinal) && !line.Contains("echo", StringComparison.Ordinal))
                    return string.Join(' ', line[(at + key.Length + 2)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
            }
            throw new Xunit.Sdk.XunitException($"the build printed no '@{key}' line:\n{Log}");
        }
    }

    async Task<Build> BuildOn(string? host, bool buildKit, string what)
    {
        string image = $"{_tag}-{(buildKit ? "buildkit" : "classic")}-{what}";
        _images.Add((host, image));
        string network = await DefaultNetworkWorks(host) ? "default" : "none";
        // --force-rm: the classic builder keeps the container of a failed step (a refused one too) without it.
        var r = await Docker(host, buildKit, ["build", "--no-cache", "--force-rm", "--network=" + network, "--progress=plain", "-t", image, _context]);
        string log = $"DOCKER_BUILDKIT={(buildKit ? 1 : 0)} docker build on {host ?? "the machine's dockerd"}: exit {r.ExitCode}\n{r.Stdout}\n{r.Stderr}";
        Assert.True(r.ExitCode == 0, log);
        return new Build(image, r.Stdout + "\n" + r.Stderr);
    }

    readonly Dictionary<string, bool> _networkWorks = [];

    /// <summary>
    /// Whether a container starts on the daemon's default network (a daemon may have no bridge, or a "bridge" network
    /// whose docker0 is gone): asked once per daemon, before the lock, of runc.
    /// </summary>
    async Task<bool> DefaultNetworkWorks(string? host)
    {
        if (_networkWorks.TryGetValue(host ?? "", out bool works)) return works;
        works = (await Docker(host, false, ["network", "inspect", "bridge"])).ExitCode == 0
            && (await Docker(host, false, ["run", "--rm", "--runtime=runc", "--network=bridge", DockerCli.Image, "true"])).ExitCode == 0;
        return _networkWorks[host ?? ""] = works;
    }

    async Task<EngineShell.Result> HostNetworkBuild(string? host, bool buildKit, string what)
    {
        string image = $"{_tag}-hostnet-{(buildKit ? "buildkit" : "classic")}-{what}";
        _images.Add((host, image));
        return await Docker(host, buildKit, ["build", "--no-cache", "--force-rm", "--network=host", "--progress=plain", "-f",
            Path.Combine(_context, "Dockerfile.hostnet"), "-t", image, _context]);
    }

    /// <summary>The owners and modes of what the steps made (and of the image's own /home/tester), as a container of the image sees them.</summary>
    async Task<string> Owners(string? host, string image)
    {
        var r = await Docker(host, false, ["run", "--rm", "--network=none", image, "stat", "-c", "%n %u:%g %a",
            "/f", "/g", "/d", "/home/tester", "/home/tester/made", "/etc/passwd"]);
        Assert.True(r.ExitCode == 0, $"docker run {image}: {r.Stdout}\n{r.Stderr}");
        return r.Stdout;
    }

    /// <summary>Each layer of the image as docker save exports it: its entries' names, owners and modes (not times).</summary>
    async Task<List<List<string>>> Layers(string? host, string image)
    {
        string tar = Path.Combine(_context, image + ".tar");
        var r = await Docker(host, false, ["save", "-o", tar, image]);
        Assert.True(r.ExitCode == 0, $"docker save {image}: {r.Stderr}");
        var files = new Dictionary<string, byte[]>();
        using (var reader = new TarReader(File.OpenRead(tar)))
            while (reader.GetNextEntry() is { } e)
                if (e.DataStream is { } data && e.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile)
                {
                    using var ms = new MemoryStream();
                    data.CopyTo(ms);
                    files[e.Name] = ms.ToArray();
                }
        var manifest = JsonNode.Parse(files["manifest.json"])!.AsArray()[0]!["Layers"]!.AsArray();
        var layers = new List<List<string>>();
        foreach (var layer in manifest)
        {
            var entries = new List<string>();
            using var reader = new TarReader(new MemoryStream(files[layer!.GetValue<string>()]));
            while (reader.GetNextEntry() is { } e)
                entries.Add($"{e.Name} {e.Uid}:{e.Gid} {Convert.ToString((int)e.Mode, 8)} {e.EntryType}");
            entries.Sort(StringComparer.Ordinal);
            layers.Add(entries);
        }
        File.Delete(tar);
        return layers;
    }

    static async Task<EngineShell.Result> Docker(string? host, bool buildKit, string[] args)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var env = new Dictionary<string, string?> { ["DOCKER_BUILDKIT"] = buildKit ? "1" : "0" };
        if (host is not null) env["DOCKER_HOST"] = host;
        using var cts = new CancellationTokenSource(Patience.Command * 3);
        try
        {
            var r = await CliWrap.Cli.Wrap(Client).WithArguments(args).WithEnvironmentVariables(env).WithValidation(CommandResultValidation.None)
                .WithStandardOutputPipe(PipeTarget.ToStringBuilder(stdout)).WithStandardErrorPipe(PipeTarget.ToStringBuilder(stderr))
                .ExecuteAsync(cts.Token);
            return new EngineShell.Result(r.ExitCode, stdout.ToString(), stderr.ToString());
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)} did not finish (hung; killed)\nstdout: {stdout}\nstderr: {stderr}");
        }
    }

    public void Dispose()
    {
        foreach (var (host, image) in _images)
            try { Docker(host, false, ["rmi", "-f", image]).GetAwaiter().GetResult(); } catch { }
        _lock?.Dispose();
        Directory.Delete(_context, true);
    }
}

/// <summary>Needs root and Debian's docker client (/usr/bin/docker); both other daemons or neither.</summary>
public sealed class BuildClientFactAttribute : FactAttribute
{
    public BuildClientFactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: changes dockerd's configuration (install --lock)";
        else if (!File.Exists("/usr/bin/docker"))
            Skip = "needs Debian's docker client at /usr/bin/docker (apt-get install docker.io): BuildKit builds without buildx";
        else if (Environment.GetEnvironmentVariable("SANDBOX_RUNC_TEST_LOCKED_DOCKER_HOST") is { Length: > 0 }
                 != Environment.GetEnvironmentVariable("SANDBOX_RUNC_TEST_UNLOCKED_DOCKER_HOST") is { Length: > 0 })
            Skip = "SANDBOX_RUNC_TEST_LOCKED_DOCKER_HOST and SANDBOX_RUNC_TEST_UNLOCKED_DOCKER_HOST go together";
    }
}

/// <summary>
/// `sandbox-runc install --lock` on the machine's dockerd, undone on Dispose whatever happened: the runc link removed
/// and daemon.json restored byte for byte, with runc as the default again (a reload does not revert a removed key).
/// </summary>
sealed class MachineLock : IDisposable
{
    const string DaemonJson = "/etc/docker/daemon.json";
    readonly byte[]? _backup = File.Exists(DaemonJson) ? File.ReadAllBytes(DaemonJson) : null;

    MachineLock() { }

    public static async Task<MachineLock> Install()
    {
        var l = new MachineLock();
        try
        {
            await EngineShell.Ok(EngineShell.Runtime, ["install", "--lock"]);
            await WaitDefaultRuntime("sandbox-runc");
            return l;
        }
        catch
        {
            l.Dispose();
            throw;
        }
    }

    static Task WaitDefaultRuntime(string name) =>
        Eventually.Holds(async () => (await EngineShell.Ok("docker", ["info", "--format", "{{.DefaultRuntime}}"])).Stdout.Trim(), r => r == name,
            $"dockerd's default runtime to be {name}");

    public void Dispose()
    {
        try { SandboxRunc.Install.RuncTakeover.Unlock(SandboxRunc.Install.RuncTakeover.DockerdPath("/var/run/docker.pid"), EngineShell.Runtime); }
        catch { }
        int pid = int.Parse(File.ReadAllText("/var/run/docker.pid").Trim());
        var json = JsonNode.Parse(_backup is null ? "{}" : Encoding.UTF8.GetString(_backup))!.AsObject();
        if (json["default-runtime"] is null)
        {
            json["default-runtime"] = "runc";
            File.WriteAllText(DaemonJson, json.ToJsonString());
            SandboxRunc.Interop.Libc.kill(pid, 1);
            try { WaitDefaultRuntime("runc").GetAwaiter().GetResult(); } catch { }
        }
        if (_backup is not null) File.WriteAllBytes(DaemonJson, _backup);
        SandboxRunc.Interop.Libc.kill(pid, 1);
    }
}
