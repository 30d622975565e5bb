using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using Xunit;
using static SandboxRunc.Tests.Escape.VolumeSourceEscapeTests;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The second adversarial review (R2): a source is inside a protected directory by where it sits on the host,
/// not only by its filesystem (another container's staging tmpfs under /run/sandbox-runc, another container's
/// overlay under the data root, /dev/shm); a part of another filesystem mounted below an allowed dir, and a file
/// with other names (a hard link of /etc/shadow), keep their host owners. Each attempt runs under runc too,
/// where it reaches what it aims at.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class PlacedInsideEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    /// <summary>Another container's staging dir holds its ID-mapped views of the image's layers: binding it wrote shared layers as host root.</summary>
    [EscapeFact]
    public async Task AnotherContainersStagingDir_IsRefused()
    {
        string victim = await _docker.RunDetached("victim", Runtimes.Sandbox, [], "sleep", "300");
        string staging = DockerCli.StagingDir(await _docker.StateDir(victim));
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            // Read only: under runc the layers are writable, and a write would change the test image for everyone.
            var r = await _docker.Sh(runtime, ["-v", $"{staging}:/st"], "ls /st");
            if (runtime == Runtimes.Sandbox)
                v.Expect(r.ExitCode != 0 && r.Stderr.Contains(Restricted), runtime, $"create refused with \"{Restricted}\"", r);
            else
                v.Expect(r.ExitCode == 0 && r.Stdout.Trim().Length > 0, runtime, "the other container's staged mounts are listed", r);
        }
        v.Done();
    }

    /// <summary>Another container's merged overlay: a file planted in its /tmp.</summary>
    [EscapeFact]
    public async Task AnotherContainersMergedOverlay_IsRefused()
    {
        string victim = await _docker.RunDetached("victim", Runtimes.Runc, [], "sleep", "300");
        string merged = await _docker.Inspect(victim, "{{.GraphDriver.Data.MergedDir}}");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string planted = $"planted-{_host.Unique}-{runtime}";
            var r = await _docker.Sh(runtime, ["-v", $"{merged}:/bm"], $"echo t > /bm/tmp/{planted}");
            var seen = await _docker.Run("exec", victim, "ls", "/tmp");
            bool reached = seen.Stdout.Split('\n').Contains(planted);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && r.Stderr.Contains(Restricted), runtime, $"create refused with \"{Restricted}\"", r);
                v.Expect(!reached, runtime, "nothing planted in the other container", seen);
            }
            else
                v.Expect(r.ExitCode == 0 && reached, runtime, "a file is planted in the other container's /tmp", seen);
        }
        v.Done();
    }

    /// <summary>/dev/shm is a tmpfs of its own inside /dev: the host's shared memory, writable.</summary>
    [EscapeFact]
    public Task HostDevShm_IsRefused() =>
        BindSourceEscapeTests.Attempt(_docker, _host, ["-v", "/dev/shm:/x"], Effect.Marker, "/dev/shm", Restricted);

    /// <summary>/tmp/D is allowed and ID-mapped, but D/ssh is a host bind of /etc/ssh: it keeps its host owners.</summary>
    [EscapeFact]
    public async Task EtcSshBoundBelowAnAllowedDir_KeepsItsOwners()
    {
        string dir = _host.TempDir("ssh");
        Directory.CreateDirectory(Path.Combine(dir, "ssh"));
        _host.Bind("/etc/ssh", Path.Combine(dir, "ssh"));
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string marker = _host.Marker("/etc/ssh");
            var r = await _docker.Sh(runtime, ["-v", $"{dir}:/x"], $"echo t > /x/ssh/{Path.GetFileName(marker)}");
            bool wrote = File.Exists(marker);
            File.Delete(marker);
            if (runtime == Runtimes.Sandbox)
                v.Expect(!wrote, runtime, "host /etc/ssh untouched", r);
            else
                v.Expect(wrote, runtime, "the container writes into host /etc/ssh", r);
        }
        v.Done();
    }

    /// <summary>A hard link of /etc/shadow under /tmp is /etc/shadow: never ID-mapped, so container root cannot read it.</summary>
    [EscapeFact]
    public async Task HardLinkOfShadow_IsNotIdMapped()
    {
        string dir = _host.TempDir("hardlink");
        string link = Path.Combine(dir, "shadow");
        EscapeHost.Exec("ln", "/etc/shadow", link);
        _host.Defer($"rm {link}", () => File.Delete(link));
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, ["-v", $"{link}:/s"], "head -1 /s");
            bool read = r.Stdout.Split('\n').Contains(EscapeHost.ShadowFirstLine());
            if (runtime == Runtimes.Sandbox)
                v.Expect(!read, runtime, "the host's shadow stays unreadable", r);
            else
                v.Expect(read, runtime, "the container reads the host's shadow", r);
        }
        v.Done();
    }
}
