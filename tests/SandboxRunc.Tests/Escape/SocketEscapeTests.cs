using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using Xunit;
using static SandboxRunc.Tests.Escape.VolumeSourceEscapeTests;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 1, for the Docker Engine socket: a source that is the socket, or a dir that holds it
/// anywhere below (a local volume of /run, /var/run, a /tmp dir with the socket bound inside), is the
/// socket, refused for an image that is not allowed. Under runc the container drives dockerd through it:
/// it creates a volume, which the host's docker then lists.
///
/// Run alone (the host-global collection): PolicyDockerTests writes admin settings that, for a moment,
/// allow the test image to mount the socket.
/// </summary>
[Collection(HostGlobalSettings.Name)]
[SupportedOSPlatform("linux")]
public sealed class SocketEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    [EscapeTheory]
    [InlineData("run", "/run", "bind")]
    [InlineData("run-rbind", "/run", "rbind,rprivate")] // private: /run holds shared staging mounts (see VolumeSourceEscapeTests)
    [InlineData("var-run-symlink", "/var/run", "bind")]
    public Task LocalVolume_HoldingTheSocket_IsTheSocket(string name, string device, string o) =>
        VolumeSourceEscapeTests.Attempt(_docker, _host, name, new(_ => Bind(device, o), Effect.Marker | Effect.Socket, "/run", SocketDenied));

    /// <summary>/var/run is a symlink to /run, which holds the engine socket.</summary>
    [EscapeFact]
    public Task VarRunBind_IsRefused() =>
        BindSourceEscapeTests.Attempt(_docker, _host, ["--mount", "type=bind,source=/var/run,target=/x"], Effect.Marker | Effect.Socket, "/run",
            $"{Restricted}|{SocketDenied}");

    /// <summary>The socket itself, by its usual path, for an image not in the allowed list.</summary>
    [EscapeFact(Needs.Cc)]
    public Task SocketBind_IsRefusedForAnImageNotAllowed() =>
        DriveDockerd(["-v", "/var/run/docker.sock:/x/s"], "/x/s");

    /// <summary>A /tmp dir that has the engine socket bound two levels below it.</summary>
    [EscapeFact(Needs.Cc)]
    public async Task AllowedDirWithTheSocketBoundBelowIt_IsTheSocket()
    {
        string dir = _host.TempDir("nsock");
        string socket = Path.Combine(dir, "deep", "s");
        Directory.CreateDirectory(Path.GetDirectoryName(socket)!);
        File.WriteAllText(socket, "");
        _host.Bind("/run/docker.sock", socket);
        await DriveDockerd(["-v", $"{dir}:/x"], "/x/deep/s");
    }

    /// <summary>A local volume whose source dir has the socket bound below it.</summary>
    [EscapeFact(Needs.Cc)]
    public async Task LocalVolumeWithTheSocketBoundBelowIt_IsTheSocket()
    {
        string dir = _host.TempDir("vsock");
        string socket = Path.Combine(dir, "s");
        File.WriteAllText(socket, "");
        _host.Bind("/run/docker.sock", socket);
        string volume = _host.Volume("vsock", Bind(dir, "rbind"));
        await DriveDockerd(["-v", $"{volume}:/x"], "/x/s");
    }

    /// <summary>
    /// A directory of /run (the socket's filesystem) holding a hard link of the engine socket, made by host root:
    /// no place shows it, only the inode does. Found by searching the source when the socket has more than one name.
    /// </summary>
    [EscapeFact(Needs.Cc)]
    public async Task DirHoldingAHardLinkOfTheSocket_IsTheSocket()
    {
        string socket = Path.GetFullPath(EscapeHost.Exec("readlink", "-f", "/var/run/docker.sock").Trim());
        string dir = Path.Combine(Path.GetDirectoryName(socket)!, $"srt-esc-hlink-{_host.Unique}");
        Directory.CreateDirectory(Path.Combine(dir, "deep"));
        _host.Defer($"rm -r {dir}", () => Directory.Delete(dir, recursive: true));
        EscapeHost.Exec("ln", socket, Path.Combine(dir, "deep", "s"));
        await DriveDockerd(["-v", $"{dir}:/x"], "/x/deep/s");
    }

    /// <summary>Under both runtimes: the container sends "create volume V" to the socket at its path; docker on the host is asked whether V exists.</summary>
    async Task DriveDockerd(string[] mountOptions, string socketInContainer)
    {
        string[] probe = await EscapeProbe.Mount();
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string volume = $"srt-esc-bysock-{Guid.NewGuid().ToString("N")[..8]}";
            _host.Defer($"docker volume rm {volume}", () => { try { EscapeHost.Exec("docker", "volume", "rm", "-f", volume); } catch (InvalidOperationException) { } });
            var r = await _docker.RunIn(runtime, [.. mountOptions, .. probe], "/probe", "sock", socketInContainer, CreateVolumeRequest(volume));
            bool created = (await EscapeHost.Try("docker", "volume", "inspect", volume)).ExitCode == 0;
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && r.Stderr.Contains(SocketDenied), runtime, $"create refused with \"{SocketDenied}\"", r);
                v.Expect(!created, runtime, $"dockerd was not driven from the container (volume {volume} exists)", r);
            }
            else
                v.Expect(r.ExitCode == 0 && created, runtime, $"the container drives dockerd: volume {volume} created", r);
        }
        v.Done();
    }

    /// <summary>An HTTP/1.0 request to the Engine API that creates a named volume (visible with `docker volume inspect`).</summary>
    public static string CreateVolumeRequest(string volume)
    {
        string body = $"{{\"Name\":\"{volume}\"}}";
        return $"POST /volumes/create HTTP/1.0\nHost: docker\nContent-Type: application/json\nContent-Length: {body.Length}\n\n{body}";
    }
}
