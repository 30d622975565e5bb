using System.Text.Json.Nodes;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using static SandboxRunc.Tests.Engines.EngineShell;

namespace SandboxRunc.Tests.Engines;

/// <summary>
/// `sandbox-runc install` against the machine's dockerd. Other tests (and other users of this dockerd)
/// need the registration, so the real /etc/docker/daemon.json is never left without it: install runs on
/// the real file (already registered by build.sh: "no change"), the removing half runs on a copy, and
/// the file is restored byte for byte (then dockerd reloaded) should anything have changed it.
/// </summary>
[Collection(DockerdConfiguration.Name)]
public sealed class DockerInstallTests
{
    const string DaemonJson = "/etc/docker/daemon.json";
    const string Installed = "/usr/local/bin/sandbox-runc";

    /// <summary>The real file only ever gets the standard path, whichever copy of the binary runs install.</summary>
    static string[] PathArgs => Runtime == Installed ? [] : ["--path", Installed];

    static async Task<JsonObject> Runtimes() =>
        JsonNode.Parse((await Ok("docker", ["info", "--format", "{{json .Runtimes}}"])).Stdout)!.AsObject();

    static Task WaitListed(string path) =>
        Eventually.Holds(Runtimes, rt => (string?)rt["sandbox-runc"]?["path"] == path, $"docker info to list sandbox-runc with path {path}",
            show: rt => rt.ToJsonString());

    [IntegrationFact]
    public async Task Install_RealDaemonJson_RegisteredWithDockerd_UninstallOnACopy()
    {
        byte[]? backup = File.Exists(DaemonJson) ? File.ReadAllBytes(DaemonJson) : null;
        string copy = Path.Combine(Path.GetTempPath(), "sr-daemon-" + Guid.NewGuid().ToString("N")[..8] + ".json");
        try
        {
            var install = await Ok(Runtime, ["install", .. PathArgs]);
            bool wasRegistered = backup is not null
                && (string?)JsonNode.Parse(backup)?["runtimes"]?["sandbox-runc"]?["path"] == Installed;
            if (wasRegistered)
            {
                Assert.Contains($"{DaemonJson}: no change", install.Stdout);
                Assert.Equal(backup, File.ReadAllBytes(DaemonJson));
            }
            else
            {
                Assert.Contains($"{DaemonJson}: added runtimes.sandbox-runc", install.Stdout);
            }
            await WaitListed(Installed);
            Assert.Contains("no change", (await Ok(Runtime, ["install", .. PathArgs])).Stdout);

            // uninstall on a copy: the copy loses exactly the entry (and default-runtime if it were ours).
            string registered = File.ReadAllText(DaemonJson);
            File.WriteAllText(copy, registered);
            var un = await Ok(Runtime, ["uninstall", "--docker-config", copy, "--no-reload"]);
            Assert.Contains($"{copy}: removed runtimes.sandbox-runc", un.Stdout);
            var before = JsonNode.Parse(registered)!.AsObject();
            var after = JsonNode.Parse(File.ReadAllText(copy))!.AsObject();
            Assert.Null(after["runtimes"]?["sandbox-runc"]);
            foreach (var kv in before.Where(kv => kv.Key is not ("runtimes" or "default-runtime")))
                Assert.True(JsonNode.DeepEquals(kv.Value, after[kv.Key]), $"key {kv.Key} changed");
            Assert.Equal(registered, File.ReadAllText(DaemonJson));

            // install on that copy changes it and reloads the real dockerd (SIGHUP): dockerd re-reads its own,
            // unchanged file, keeps answering and keeps listing the runtime.
            var re = await Ok(Runtime, ["install", "--docker-config", copy, .. PathArgs]);
            Assert.Contains($"{copy}: added runtimes.sandbox-runc", re.Stdout);
            Assert.Contains("sent SIGHUP", re.Stdout);
            await Task.Delay(500);
            await WaitListed(Installed);
        }
        finally
        {
            File.Delete(copy);
            byte[]? now = File.Exists(DaemonJson) ? File.ReadAllBytes(DaemonJson) : null;
            if (!(now ?? []).AsSpan().SequenceEqual(backup ?? []) || (now is null) != (backup is null))
            {
                if (backup is null) File.Delete(DaemonJson);
                else SandboxRunc.Install.EngineConfig.WriteAtomic(DaemonJson, System.Text.Encoding.UTF8.GetString(backup));
                SandboxRunc.Install.EngineConfig.ReloadDockerd(SandboxRunc.Install.EngineConfig.DefaultDockerPidFile);
            }
        }
    }
}
