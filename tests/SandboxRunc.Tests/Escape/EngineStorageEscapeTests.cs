using System.Diagnostics;
using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The host directory a container that can run an engine gets at /var/lib/docker, /var/lib/containerd and
/// /var/lib/kubelet (Rootfs/EngineStorage: /var/lib/sandbox-runc/storage/KEY, KEY from the container's state dir, which a
/// docker CLI user can compute from the container's ID). It is the container's alone: no other container may bind it by
/// its host path, and removing it on delete, as host root, never follows a symbolic link someone swapped in while the
/// removal runs (a removal by path did: it emptied a host directory).
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class EngineStorageEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    /// <summary>A --privileged container (it gets engine storage) running <paramref name="script"/>; returns its name and storage dir.</summary>
    async Task<(string Name, string Storage)> WithStorage(string script)
    {
        string name = await _docker.RunDetached("storage", DockerCli.Runtime, ["--network=none", "--privileged"], "sh", "-c", script);
        await _docker.WaitForLog(name, "ready");
        string stateDir = await _docker.StateDir(name);
        foreach (var dir in new[] { stateDir, "/var" + stateDir })
        {
            string key = SandboxRunc.Container.CreateOperation.StagingKey(
                new SandboxRunc.Container.StateStore(Path.GetDirectoryName(dir)!), Path.GetFileName(dir));
            string storage = SandboxRunc.Rootfs.EngineStorage.DirOf(key);
            if (Directory.Exists(storage)) return (name, storage);
        }
        throw new Xunit.Sdk.XunitException($"no engine storage found for {name} (state dir {stateDir})");
    }

    [EscapeFact]
    public async Task AnotherContainersEngineStorage_CannotBeBound()
    {
        string secret = $"srt-secret-{_host.Unique}";
        var (_, storage) = await WithStorage($"echo {secret} > /var/lib/docker/marker; chmod 711 /var/lib/docker; chmod 644 /var/lib/docker/marker; echo ready; exec sleep 1000");
        string[] bind = ["--network=none", "-v", $"{storage}/docker:/victim"];
        var v = new Verdict();
        var ours = await _docker.Sh(Runtimes.Sandbox, bind, "cat /victim/marker");
        v.Expect(ours.ExitCode != 0 && !ours.Stdout.Contains(secret) && ours.Stderr.Contains("restricted host mount"), Runtimes.Sandbox,
            "another container's engine storage is refused as a restricted host mount", ours);
        // runc: the same bind shows that container's files (the path is right, and host root reads them)
        var runc = await _docker.Sh(Runtimes.Runc, bind, "cat /victim/marker");
        v.Expect(runc.ExitCode == 0 && runc.Stdout.Contains(secret), Runtimes.Runc, "the bind shows the other container's engine storage", runc);
        v.Done();
    }

    /// <summary>
    /// A container makes a world-writable directory in its engine storage; while `docker rm -f` removes the storage,
    /// someone who can write there (here a process on the host with the container's root uid, standing for a second
    /// container bound at it before the storage became a restricted mount, or one sharing its user namespace) keeps
    /// exchanging directories with symbolic links to a host directory. Nothing in that host directory may go.
    /// </summary>
    [EscapeFact(Needs.Cc)]
    public async Task RemovingEngineStorage_NeverFollowsASymlinkSwappedIn()
    {
        string victim = _host.TempDir("victim");
        for (int i = 0; i < 20; i++) File.WriteAllText(Path.Combine(victim, $"file{i}"), "x");
        var (name, storage) = await WithStorage("mkdir /var/lib/docker/x && chmod 777 /var/lib/docker /var/lib/docker/x && echo ready; exec sleep 1000");
        string racing = Path.Combine(storage, "docker", "x");
        var owner = File.GetUnixFileMode(racing); // 0777 as the container made it
        Assert.Equal((UnixFileMode)0b111_111_111, owner);
        string uid = EscapeHost.Exec("stat", "-c", "%u", racing).Trim();

        var psi = new ProcessStartInfo("setpriv");
        foreach (var a in new[] { $"--reuid={uid}", $"--regid={uid}", "--clear-groups", await EscapeProbe.Binary(), "swap", racing, victim, "200" })
            psi.ArgumentList.Add(a);
        using var racer = Process.Start(psi)!;
        try
        {
            // It makes its 200 pairs before it starts swapping them.
            await Eventually.Holds(() => Task.FromResult(Directory.GetFileSystemEntries(racing).Length), n => n == 400 || racer.HasExited,
                "the racer to make its 200 directory/symlink pairs");
            Assert.False(racer.HasExited, "the racer exited before it could race");
            await Task.Delay(200);
            var rm = await _docker.Run(TimeSpan.FromSeconds(90), "rm", "-f", name);
            Assert.True(rm.ExitCode == 0, $"docker rm -f: {rm}");
        }
        finally
        {
            racer.Kill();
            racer.WaitForExit();
            // What the runtime left (it may stop at what keeps changing under it) goes now that nobody races.
            if (Directory.Exists(storage)) EscapeHost.Exec("rm", "-rf", "--one-file-system", storage);
        }
        int left = Directory.GetFiles(victim).Length;
        Assert.True(left == 20, $"the removal of {name}'s engine storage followed a swapped-in symlink: {20 - left} of 20 files of {victim} are gone");
    }
}
