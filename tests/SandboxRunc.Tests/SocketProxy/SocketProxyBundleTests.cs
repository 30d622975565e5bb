using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>
/// The whole path without dockerd running containers: the real binary creates a bundle container that mounts the
/// engine socket (allowed by a private settings file), its supervisor starts the proxy, and the host reaches the
/// socket the container sees through /proc/PID/root. The proxy forwards to the real dockerd (read-only requests here)
/// and dies with the container.
/// </summary>
public sealed class SocketProxyBundleTests : IDisposable
{
    readonly string _settings = Path.Combine(Path.GetTempPath(), $"srt-proxy-settings-{Guid.NewGuid():N}.json");
    readonly RuntimeCli _rt;

    public SocketProxyBundleTests()
    {
        File.WriteAllText(_settings, """
            {"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {
              "imageList": {"images": ["*"]}, "commandList": {"type": "deny", "commands": ["volume*"]}}}}
            """);
        _rt = new RuntimeCli(environment: new Dictionary<string, string> { ["SANDBOX_RUNC_ADMIN_SETTINGS"] = _settings });
    }

    static async Task<(int Exit, string Out)> Curl(string socket, string url)
    {
        var r = await CliWrap.Cli.Wrap("curl").WithArguments(["-sS", "--max-time", "30", "--unix-socket", socket, url])
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
        return (r.ExitCode, r.StandardOutput + r.StandardError);
    }

    static int[] ProxyPids(string id) =>
        Directory.GetDirectories("/proc").Select(d => int.TryParse(Path.GetFileName(d), out int p) ? p : 0).Where(p => p > 0)
            .Where(p =>
            {
                try { return File.ReadAllText($"/proc/{p}/cmdline").Split('\0') is var a && a.Contains("socket-proxy") && a.Contains(id); }
                catch (IOException) { return false; }
                catch (UnauthorizedAccessException) { return false; }
            }).ToArray();

    [EngineFact]
    public async Task AContainerAllowedTheSocket_GetsTheProxy_WhichDiesWithIt()
    {
        using var b = new Bundle("sleep", "60").WritableRootfs();
        b.Spec.Mounts!.Add(new Mount { Destination = "/var/run/docker.sock", Type = "bind", Source = EngineFactAttribute.EngineSocket, Options = ["rbind"] });
        string id = "srt-proxy-" + Guid.NewGuid().ToString("N")[..8];
        await _rt.Create(b.Write(), id);
        int pid = await _rt.Pid(id);
        string socket = $"/proc/{pid}/root/var/run/docker.sock";

        // What the container sees there is a socket that is not the engine's (another inode), served by the proxy.
        ulong inode = Inode(socket);
        Assert.NotEqual(0UL, inode);
        Assert.NotEqual(Inode(EngineFactAttribute.EngineSocket), inode);
        Assert.Single(ProxyPids(id));

        var ps = await Curl(socket, "http://docker/v1.41/containers/json");
        Assert.True(ps.Exit == 0 && ps.Out.StartsWith('['), ps.Out);
        var volumes = await Curl(socket, "http://docker/v1.41/volumes");
        Assert.Contains("docker command \\u0022/v1.41/volumes\\u0022 is blocked", volumes.Out);

        await _rt.Ok("delete", "--force", id);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (ProxyPids(id).Length > 0 && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.Empty(ProxyPids(id));
    }

    static ulong Inode(string path)
    {
        var r = CliWrap.Cli.Wrap("stat").WithArguments(["-L", "-c", "%i", path]).WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync().Task.GetAwaiter().GetResult();
        return ulong.TryParse(r.StandardOutput.Trim(), out var i) ? i : 0;
    }

    public void Dispose()
    {
        _rt.Dispose();
        File.Delete(_settings);
    }
}
