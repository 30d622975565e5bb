using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using Xunit;
using static SandboxRunc.Tests.Escape.VolumeSourceEscapeTests;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 1, for plain binds (-v HOST:CTR, --mount type=bind): a source is what it resolves to and
/// everything mounted below it. An allowed dir under /tmp that has a host bind of /etc (or of the docker
/// socket) somewhere below is /etc (or the socket); a symlink or a `..` is followed; a path flipped between
/// a dir and a symlink while the container is created never gives the container the symlink's target.
/// Controls: an ordinary named volume, a fresh /tmp dir and a tmpfs keep working under both runtimes.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class BindSourceEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    Task Attempt(string[] mountOptions, Effect effect, string? markerDir, string refusal) =>
        Attempt(_docker, _host, mountOptions, effect, markerDir, refusal);

    /// <summary>Runs the effect's script with the mount options (source at /x) under both runtimes: refused with the message / reaches the host.</summary>
    public static async Task Attempt(DockerCli docker, HostScope host, string[] mountOptions, Effect effect, string? markerDir, string refusal)
    {
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string? marker = markerDir is null ? null : host.Marker(markerDir);
            string script = string.Join("\n", new[]
            {
                effect.HasFlag(Effect.Shadow) ? "head -1 /x/shadow" : "",
                effect.HasFlag(Effect.Socket) ? "test -S /x/docker.sock && echo docker-socket-visible" : "",
                marker is null ? "" : $"echo t > /x/{Path.GetFileName(marker)}",
            }.Where(l => l.Length > 0));
            var r = await docker.Sh(runtime, mountOptions, script);
            var escaped = Observe(effect, marker, r);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && System.Text.RegularExpressions.Regex.IsMatch(r.Stderr, refusal), runtime, $"create refused with /{refusal}/", r);
                v.Expect(escaped.Count == 0, runtime, $"nothing of the host reached: {string.Join(", ", escaped)}", r);
            }
            else
                v.Expect(r.ExitCode == 0 && escaped.Count == Enum.GetValues<Effect>().Count(e => effect.HasFlag(e)), runtime,
                    $"the attempt reaches the host; seen: {string.Join(", ", escaped)}", r);
        }
        v.Done();
    }

    /// <summary>/tmp/D is allowed, but D/sub is a host bind of /etc: -v /tmp/D:/x (a recursive bind) carries /etc in.</summary>
    [EscapeFact]
    public async Task AllowedDirWithEtcBoundBelowIt_IsEtc()
    {
        string dir = _host.TempDir("nest");
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        _host.Bind("/etc", Path.Combine(dir, "sub"));
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string marker = _host.Marker("/etc");
            var r = await _docker.Sh(runtime, ["-v", $"{dir}:/x"], $"head -1 /x/sub/shadow; echo t > /x/sub/{Path.GetFileName(marker)}");
            bool wrote = File.Exists(marker);
            File.Delete(marker);
            bool read = r.Stdout.Split('\n').Contains(EscapeHost.ShadowFirstLine());
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && r.Stderr.Contains(Restricted), runtime, $"create refused with \"{Restricted}\"", r);
                v.Expect(!wrote && !read, runtime, $"host /etc untouched (written: {wrote}, shadow read: {read})", r);
            }
            else
                v.Expect(r.ExitCode == 0 && wrote && read, runtime, $"the container reads and writes host /etc (written: {wrote}, shadow read: {read})", r);
        }
        v.Done();
    }

    /// <summary>A symlink under /tmp to /etc.</summary>
    [EscapeFact]
    public Task SymlinkToEtc_IsEtc()
    {
        string link = Path.Combine(_host.TempDir("lnk"), "etc-link");
        File.CreateSymbolicLink(link, "/etc");
        return Attempt(["-v", $"{link}:/x"], Effect.Marker | Effect.Shadow, "/etc", Restricted);
    }

    /// <summary>A symlink to / in the middle of the path: /tmp/D/root-link/etc.</summary>
    [EscapeFact]
    public Task SymlinkInTheMiddle_IsFollowed()
    {
        string dir = _host.TempDir("midlnk");
        File.CreateSymbolicLink(Path.Combine(dir, "root-link"), "/");
        return Attempt(["--mount", $"type=bind,source={dir}/root-link/etc,target=/x"], Effect.Marker | Effect.Shadow, "/etc", Restricted);
    }

    /// <summary>A bind of a hard-to-spot path: /tmp/D/../../etc.</summary>
    [EscapeFact]
    public Task DotDotPath_IsEtc()
    {
        string dir = _host.TempDir("dotdot");
        return Attempt(["-v", $"{dir}/../../etc:/x"], Effect.Marker | Effect.Shadow, "/etc", Restricted);
    }

    /// <summary>
    /// A host thread flips /tmp/race-X between an empty dir and a symlink to /etc while containers with
    /// -v /tmp/race-X:/x are created (3 streams of 10). Refused or an empty dir are both fine; the host's /etc
    /// must never be seen or written. Under runc, the same path left as the symlink shows /etc: the probe works.
    /// </summary>
    [EscapeFact]
    public async Task DirFlippedToSymlinkDuringCreate_NeverGivesEtc()
    {
        string parent = _host.TempDir("race");
        string path = Path.Combine(parent, "flip");
        Directory.CreateDirectory(path);
        using var stop = new CancellationTokenSource();
        var flipper = Task.Factory.StartNew(() => Flip(path, stop.Token), TaskCreationOptions.LongRunning);
        var seen = new List<string>();
        int ran = 0, refused = 0;
        try
        {
            var streams = Enumerable.Range(0, 3).Select(async _ =>
            {
                for (int i = 0; i < 10; i++)
                {
                    string marker = _host.Marker("/etc");
                    var r = await _docker.Sh(Runtimes.Sandbox, ["-v", $"{path}:/x"], $"ls /x; echo t > /x/{Path.GetFileName(marker)}");
                    bool wrote = File.Exists(marker);
                    File.Delete(marker);
                    lock (seen)
                    {
                        if (r.ExitCode == 0) ran++; else refused++;
                        if (wrote || r.Stdout.Split('\n').Any(l => l is "shadow" or "passwd" or "hostname"))
                            seen.Add($"run {ran + refused}: host /etc reached (written: {wrote}); ls /x: {string.Join(' ', r.Stdout.Split('\n').Take(12))} ...");
                        else if (r.Stderr.Contains("Unhandled exception") || r.Stderr.Contains("   at "))
                            seen.Add($"run {ran + refused}: the runtime crashed\n{r}");
                    }
                }
            });
            await Task.WhenAll(streams);
        }
        finally
        {
            stop.Cancel();
            await flipper;
        }
        var v = new Verdict();
        v.Expect(seen.Count == 0, Runtimes.Sandbox, $"30 creates while the source flips ({ran} ran, {refused} refused) never reach host /etc:\n{string.Join("\n", seen)}");

        // runc, with the path left as the symlink: it mounts /etc.
        if (!File.Exists(path) && !Directory.Exists(path)) Directory.CreateDirectory(path);
        if (new FileInfo(path).LinkTarget is null) { EmptyDir(path); Directory.Delete(path); File.CreateSymbolicLink(path, "/etc"); }
        string runcMarker = _host.Marker("/etc");
        var rr = await _docker.Sh(Runtimes.Runc, ["-v", $"{path}:/x"], $"ls /x; echo t > /x/{Path.GetFileName(runcMarker)}");
        bool runcWrote = File.Exists(runcMarker);
        File.Delete(runcMarker);
        v.Expect(rr.ExitCode == 0 && runcWrote && rr.Stdout.Split('\n').Contains("shadow"), Runtimes.Runc, "the symlinked source gives host /etc", rr);
        File.Delete(path);
        v.Done();
    }

    /// <summary>Flips PATH between a real (emptied) dir and a symlink to /etc, checking what it is each time (lstat).</summary>
    static void Flip(string path, CancellationToken stop)
    {
        var random = new Random();
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var info = new FileInfo(path);
                if (info.LinkTarget is not null)
                {
                    File.Delete(path);
                    Directory.CreateDirectory(path);
                }
                else if (Directory.Exists(path))
                {
                    EmptyDir(path);
                    Directory.Delete(path);
                    File.CreateSymbolicLink(path, "/etc");
                }
                else Directory.CreateDirectory(path);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            Thread.Sleep(random.Next(0, 3));
        }
        try
        {
            if (new FileInfo(path).LinkTarget is not null) File.Delete(path);
        }
        catch (IOException) { }
    }

    /// <summary>Removes the files a container wrote into the real dir (never follows a link: the caller checked it is a dir).</summary>
    static void EmptyDir(string path)
    {
        foreach (var f in Directory.EnumerateFileSystemEntries(path))
            if (new FileInfo(f).LinkTarget is not null || File.Exists(f)) File.Delete(f);
    }

    [EscapeFact]
    public async Task Control_NamedVolumeFreshTmpDirAndTmpfsWork()
    {
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string volume = _host.Volume("ctl");
            string dir = _host.TempDir("ctl");
            var r = await _docker.Sh(runtime, ["-v", $"{volume}:/v", "-v", $"{dir}:/d", "--tmpfs", "/t"],
                "echo v > /v/f && echo d > /d/f && echo t > /t/f && cat /v/f /d/f /t/f");
            v.Expect(r.ExitCode == 0 && r.Stdout == "v\nd\nt\n", runtime, "named volume, bind of a fresh /tmp dir and --tmpfs all usable", r);
            string onHost = Path.Combine(dir, "f");
            v.Expect(File.Exists(onHost) && File.ReadAllText(onHost) == "d\n", runtime, $"what the container wrote is in {onHost} on the host", r);
            string volumeFile = $"/var/lib/docker/volumes/{volume}/_data/f";
            v.Expect(File.Exists(volumeFile), runtime, $"what the container wrote is in {volumeFile}", r);
        }
        v.Done();
    }
}
