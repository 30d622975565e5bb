using SandboxRunc.Tests.Escape;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// The isolation policy as a docker user meets it (docker CLI, --runtime=sandbox-runc, the installed
/// /usr/local/bin/sandbox-runc): host namespaces, restricted mounts and the engine socket refused with
/// the messages users search for; ordinary binds and container-to-container joins work. The tests that
/// need admin settings are <see cref="PolicyDockerSettingsTests"/>.
/// </summary>
public sealed class PolicyDockerTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly List<string> _dirs = [];

    internal static void AssertRefused(DockerCli.Result r, string message)
    {
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [IntegrationTheory]
    [InlineData("--network=host", "sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--pid=host", "sandbox-runc containers can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--ipc=host", "sandbox-runc containers can't share namespaces [ipc] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--uts=host", "sandbox-runc containers can't share namespaces [uts] with the host (because they use the linux user-namespace for isolation)")]
    public async Task PolicyDocker_HostNamespacesAreRefused(string option, string message) =>
        AssertRefused(await _docker.RunRm([option], "true"), message);

    [IntegrationFact]
    public async Task PolicyDocker_PidAndIpcTogetherAreListedTogether() =>
        AssertRefused(await _docker.RunRm(["--pid=host", "--ipc=host"], "true"),
            "sandbox-runc containers can't share namespaces [pid ipc] with the host");

    [IntegrationFact]
    public async Task PolicyDocker_DaemonJsonMountIsRefused()
    {
        Assert.True(File.Exists("/etc/docker/daemon.json"));
        AssertRefused(await _docker.RunRm(["-v", "/etc/docker/daemon.json:/mnt/x"], "true"),
            "can't mount /etc/docker/daemon.json because it's configured as a restricted host mount");
    }

    [IntegrationFact]
    public async Task PolicyDocker_ParentOfDockersStateIsRefused() =>
        AssertRefused(await _docker.RunRm(["-v", "/var:/mnt/var:ro"], "true"),
            "can't mount /var because it's configured as a restricted host mount");

    [IntegrationFact]
    public async Task PolicyDocker_OrdinaryBindAndDockersOwnMountsWork()
    {
        string dir = Path.Combine("/tmp", "srp-data-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        _dirs.Add(dir);
        File.WriteAllText(Path.Combine(dir, "f"), "hello\n");
        // docker binds /etc/hosts, /etc/hostname and /etc/resolv.conf from its own state for every container.
        var r = await _docker.RunRm(["-v", $"{dir}:/data"], "sh", "-c", "cat /data/f && cat /etc/hostname >/dev/null && grep -q localhost /etc/hosts && echo ok");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("hello\nok\n", r.Stdout);
        var shm = await _docker.RunRm(["--ipc=shareable"], "sh", "-c", "touch /dev/shm/x && echo shm-ok");
        Assert.True(shm.ExitCode == 0, shm.ToString());
    }

    [IntegrationFact]
    public async Task PolicyDocker_NamedVolumeWorks()
    {
        string volume = "srp-vol-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            var r = await _docker.RunRm(["-v", $"{volume}:/v"], "sh", "-c", "echo x > /v/f && cat /v/f");
            Assert.True(r.ExitCode == 0, r.ToString());
        }
        finally { await _docker.Run("volume", "rm", "-f", volume); }
    }

    [IntegrationFact]
    public async Task PolicyDocker_JoiningAnotherContainersNamespacesWorks()
    {
        // The network only: joining another container's pid or ipc namespace needs its user namespace too
        // (proc and mqueue mounts), which is the user-namespace work's to add.
        string other = await _docker.RunDetached("netowner", DockerCli.Runtime, [], "sh", "-c", "hostname > /tmp/h; sleep 60");
        var r = await _docker.RunRm([$"--network=container:{other}"], "sh", "-c", "ip link show lo >/dev/null && echo joined");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("joined\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task PolicyDocker_SocketMountIsDeniedForAnUnlistedImage()
    {
        AssertRefused(await _docker.RunRm(["-v", "/var/run/docker.sock:/var/run/docker.sock"], "true"),
            "docker socket mount denied for container with image \"docker.io/library/sandbox-runc-test\"; image is not in the allowed list");
        AssertRefused(await _docker.RunRm(["-v", "/run/docker.sock:/s"], "true"), "docker socket mount denied");
    }

    public void Dispose()
    {
        _docker.Dispose();
        foreach (var dir in _dirs) try { Directory.Delete(dir, true); } catch (IOException) { }
    }
}

/// <summary>
/// Allow-listed images and the opt-out label, as the admin settings decide them. dockerd starts the runtime
/// without our environment, so these tests write the real /etc/sandbox-runc/admin-settings.json and always
/// remove it. Those files only relax the defaults for the images and labels of these tests, but every
/// container created on the host meanwhile runs under them (another test's refused socket mount would be
/// allowed): the tests run alone, with the other host-global ones. A malformed file would fail every create
/// on the host: that case is tested through `policy check` and a private settings file.
/// </summary>
[Collection(HostGlobalSettings.Name)]
public sealed class PolicyDockerSettingsTests : IDisposable
{
    const string SettingsFile = "/etc/sandbox-runc/admin-settings.json";
    readonly DockerCli _docker = new();
    readonly List<string> _images = [];
    readonly List<string> _dirs = [];

    static void AssertRefused(DockerCli.Result r, string message) => PolicyDockerTests.AssertRefused(r, message);

    /// <summary>Writes the admin settings for the duration of <paramref name="body"/>, root-owned 0644; always removed.</summary>
    static async Task WithSettings(string json, Func<Task> body)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(SettingsFile)!);
        File.WriteAllText(SettingsFile, json);
        File.SetUnixFileMode(SettingsFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        try { await body(); }
        finally { File.Delete(SettingsFile); }
    }

    static string SocketSettings(string images, bool derived = false) =>
        $$"""{ "configurationFileVersion": 2, "enhancedContainerIsolation": { "value": true, "locked": false, "dockerSocketMount": { "imageList": { "images": [{{images}}], "allowDerivedImages": {{(derived ? "true" : "false")}} } } } }""";

    /// <summary>docker build from a Dockerfile text (and one file "marker" with the given content), tagged.</summary>
    async Task Build(string tag, string dockerfile, string marker = "")
    {
        string dir = Path.Combine(Path.GetTempPath(), "srp-build-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        _dirs.Add(dir);
        File.WriteAllText(Path.Combine(dir, "Dockerfile"), dockerfile);
        File.WriteAllText(Path.Combine(dir, "marker"), marker);
        _images.Add(tag);
        await _docker.Ok("build", "-q", "-t", tag, dir);
    }

    async Task Tag(string source, string tag)
    {
        _images.Add(tag);
        await _docker.Ok("tag", source, tag);
    }

    [IntegrationFact]
    public async Task PolicyDocker_SocketMountWorksForAListedImage() =>
        await WithSettings(SocketSettings("\"sandbox-runc-test\""), async () =>
        {
            var r = await _docker.RunRm(["-v", "/var/run/docker.sock:/var/run/docker.sock"], "sh", "-c", "test -S /var/run/docker.sock && echo sock");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Equal("sock\n", r.Stdout);
        });

    /// <summary>
    /// An allowed name counts through the image ID dockerd resolves it to. The container is created from the
    /// test image under the allowed name; then the name moves to a different image (FROM scratch, another
    /// file). At start the container's name still says "srp-allowed:cli", its image ID is the test image's:
    /// denied. A container from the test image under another name is denied too.
    /// </summary>
    [IntegrationFact]
    public async Task PolicyDocker_SocketAllowListComparesImageIds()
    {
        string suffix = Guid.NewGuid().ToString("N")[..6];
        string allowed = $"srp-allowed-{suffix}:cli", other = $"srp-other-{suffix}:1";
        await WithSettings(SocketSettings($"\"{allowed}\""), async () =>
        {
            await Tag(DockerCli.Image, allowed);
            await Tag(DockerCli.Image, other);
            string name = _docker.Name("retag");
            await _docker.Ok("create", "--name", name, $"--runtime={DockerCli.Runtime}", "-v", "/var/run/docker.sock:/var/run/docker.sock", allowed, "true");
            await Build(allowed, "FROM scratch\nCOPY marker /marker\n", "the allowed image " + suffix);
            var r = await _docker.Run("start", "-a", name);
            AssertRefused(r, $"docker socket mount denied for container with image \"docker.io/library/srp-allowed-{suffix}\"; image is not in the allowed list");

            var o = await _docker.Run("run", "--rm", "--name", _docker.Name("other"), $"--runtime={DockerCli.Runtime}",
                "-v", "/var/run/docker.sock:/var/run/docker.sock", other, "true");
            AssertRefused(o, $"docker socket mount denied for container with image \"docker.io/library/srp-other-{suffix}\"");
        });
    }

    [IntegrationFact]
    public async Task PolicyDocker_DerivedImagesPassOnlyWhenAllowed()
    {
        string derived = $"srp-derived-{Guid.NewGuid().ToString("N")[..6]}:1";
        await Build(derived, $"FROM {DockerCli.Image}\nCOPY marker /marker\n", "derived");
        string[] run = ["run", "--rm", "--name", "", $"--runtime={DockerCli.Runtime}", "-v", "/var/run/docker.sock:/var/run/docker.sock", derived, "cat", "/marker"];
        await WithSettings(SocketSettings("\"sandbox-runc-test:latest\"", derived: false), async () =>
        {
            run[3] = _docker.Name("derived");
            AssertRefused(await _docker.Run(run), "docker socket mount denied for container with image \"docker.io/library/srp-derived");
        });
        await WithSettings(SocketSettings("\"sandbox-runc-test:latest\"", derived: true), async () =>
        {
            run[3] = _docker.Name("derived");
            var r = await _docker.Run(run);
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Equal("derived", r.Stdout);
        });
    }

    [IntegrationFact]
    public async Task PolicyDocker_OptOutLabelFollowsTheSettings()
    {
        string[] optOut = ["--label", "io.sandbox-runc.isolation=off", "--network=host"];
        AssertRefused(await _docker.RunRm(optOut, "true"), "io.sandbox-runc.isolation=off refused: enhanced container isolation is on for every container");
        await WithSettings("""{ "configurationFileVersion": 2, "enhancedContainerIsolation": { "value": false, "locked": false } }""", async () =>
        {
            var r = await _docker.RunRm(optOut, "cat", "/proc/self/uid_map");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.DoesNotContain("4294967295", r.Stdout); // the user namespace stays
        });
        await WithSettings("""{ "configurationFileVersion": 2, "enhancedContainerIsolation": { "value": false, "locked": true } }""", async () =>
            AssertRefused(await _docker.RunRm(optOut, "true"), "io.sandbox-runc.isolation=off refused: enhanced container isolation is locked by the admin settings"));
    }

    public void Dispose()
    {
        _docker.Dispose();
        foreach (var image in _images) _docker.Run("rmi", "-f", image).GetAwaiter().GetResult();
        foreach (var dir in _dirs) try { Directory.Delete(dir, true); } catch (IOException) { }
    }
}
