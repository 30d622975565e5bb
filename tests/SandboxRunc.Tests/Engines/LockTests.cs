using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using static SandboxRunc.Tests.Engines.EngineShell;

namespace SandboxRunc.Tests.Engines;

/// <summary>Tests that change the machine's dockerd configuration: run alone, after every parallel test.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DockerdConfiguration
{
    public const string Name = "dockerd configuration";
}

/// <summary>
/// `sandbox-runc install --lock` against the local dockerd: with it, a docker CLI user gets an isolated
/// container whatever runtime they name (--runtime=runc, the default) and with
/// --userns=host. The machine's daemon.json is restored byte for byte, and the runc link removed, after.
/// </summary>
[Collection(DockerdConfiguration.Name)]
public sealed class LockTests : IDisposable
{
    const string DaemonJson = "/etc/docker/daemon.json";
    const string Installed = "/usr/local/bin/sandbox-runc";
    readonly byte[]? _backup = File.Exists(DaemonJson) ? File.ReadAllBytes(DaemonJson) : null;
    readonly DockerCli _docker = new();

    async Task<string> UidMap(params string[] options) =>
        (await _docker.Ok(["run", "--rm", "--name", _docker.Name("lock"), .. options, DockerCli.Image, "cat", "/proc/self/uid_map"])).Stdout.Trim();

    static string[] Words(string s) => s.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    [IntegrationFact]
    public async Task LockedEngineGivesNoUnisolatedContainer()
    {
        Assert.Equal(["0", "0", "4294967295"], Words(await UidMap("--runtime=runc"))); // before: runc is runc

        var install = await Ok(Installed, ["install", "--lock"]);
        Assert.Contains("now run sandbox-runc", install.Stdout);
        await WaitDefaultRuntime("sandbox-runc");

        foreach (var options in new[] { ["--runtime=runc"], [], new[] { "--userns=host" } })
        {
            var map = Words(await UidMap(options));
            Assert.True(map[0] == "0" && long.Parse(map[1]) >= 100000 && map[2] == "65536",
                $"docker run {string.Join(' ', options)}: uid_map {string.Join(' ', map)}");
        }

        var again = await Ok(Installed, ["install", "--lock"]);
        Assert.Contains("no change", again.Stdout);

        var uninstall = await Ok(Installed, ["uninstall", "--lock"]);
        Assert.Contains("runc again", uninstall.Stdout);
        RestoreDaemonJson();
        await WaitDefaultRuntime("runc");
        Assert.Equal(["0", "0", "4294967295"], Words(await UidMap("--runtime=runc")));
    }

    /// <summary>Waits for dockerd's reload to show the default runtime (a reload is quick, slower on a loaded machine).</summary>
    static Task WaitDefaultRuntime(string name) =>
        Eventually.Holds(async () => (await Ok("docker", ["info", "--format", "{{.DefaultRuntime}}"])).Stdout.Trim(), r => r == name,
            $"dockerd's default runtime to be {name}");

    /// <summary>
    /// Back to the file as it was, and to runc as dockerd's default: a reload does not revert a key that
    /// was removed (dockerd keeps its current default runtime), so "runc" is set explicitly first.
    /// </summary>
    void RestoreDaemonJson()
    {
        int pid = int.Parse(File.ReadAllText("/var/run/docker.pid").Trim());
        var json = System.Text.Json.Nodes.JsonNode.Parse(_backup is null ? "{}" : System.Text.Encoding.UTF8.GetString(_backup))!.AsObject();
        if (json["default-runtime"] is null)
        {
            json["default-runtime"] = "runc";
            File.WriteAllText(DaemonJson, json.ToJsonString());
            SandboxRunc.Interop.Libc.kill(pid, 1);
            for (var end = DateTime.UtcNow + Patience.Condition; DateTime.UtcNow < end && !DockerInfo("{{.DefaultRuntime}}").Equals("runc");) Thread.Sleep(200);
        }
        if (_backup is not null) File.WriteAllBytes(DaemonJson, _backup);
        SandboxRunc.Interop.Libc.kill(pid, 1);
    }

    static string DockerInfo(string format) => Ok("docker", ["info", "--format", format]).GetAwaiter().GetResult().Stdout.Trim();

    public void Dispose()
    {
        // Whatever happened: no runc link of ours left, daemon.json as it was.
        try { SandboxRunc.Install.RuncTakeover.Unlock(SandboxRunc.Install.RuncTakeover.DockerdPath("/var/run/docker.pid"), Installed); }
        catch { }
        RestoreDaemonJson();
        _docker.Dispose();
    }
}
