using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 1 and its class: restricted host mounts smuggled in through docker's `local` volume
/// driver. dockerd mounts whatever the volume's options say (a bind of any host path, a procfs, the host's
/// root block device...) on /var/lib/docker/volumes/NAME/_data and hands the runtime that path, so the
/// source must be judged by what it is (device, inode, mount), not by the path docker chose.
///
/// Sources that are or contain the docker socket are in SocketEscapeTests (run alone: other tests' admin
/// settings allow the test image to mount the socket for a moment).
///
/// Every attempt runs twice: under sandbox-runc the create must be refused with the restricted-mount (or
/// docker-socket) message and nothing may reach the host; under runc the same container must reach the
/// host (write the marker file, print the host's /etc/shadow, see a host process or interface), which
/// shows the attempt itself works.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class VolumeSourceEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    public const string Restricted = "because it's configured as a restricted host mount";
    public const string SocketDenied = "docker socket mount denied";

    /// <summary>What a container that got the host source can show.</summary>
    [Flags]
    public enum Effect
    {
        /// <summary>Writes a file into the source dir: it appears on the host.</summary>
        Marker = 1,
        /// <summary>Prints shadow from the source: the host's /etc/shadow.</summary>
        Shadow = 2,
        /// <summary>Reads the test process's cmdline from the source: the host's procfs.</summary>
        HostProcess = 4,
        /// <summary>Lists class/net from the source: the host's sysfs (docker0).</summary>
        HostInterfaces = 8,
        /// <summary>Sees docker.sock in the source.</summary>
        Socket = 16,
    }

    /// <param name="Options">the local driver's options, given a scratch dir under /tmp.</param>
    /// <param name="MarkerDir">the host dir the container's /x is, for <see cref="Effect.Marker"/>.</param>
    /// <param name="MayHoldSocket">the source may hold the docker socket (a bind of the whole host root, where /run
    /// is on the root filesystem): the socket's refusal is as good as the restricted one.</param>
    public sealed record SourceCase(Func<string, string[]> Options, Effect Effect, string? MarkerDir = null, string Refusal = Restricted,
        bool MayHoldSocket = false);

    public static string[] Bind(string device, string o = "bind") => ["type=none", $"o={o}", $"device={device}"];

    public static readonly Dictionary<string, SourceCase> Cases = new()
    {
        ["etc"] = new(_ => Bind("/etc"), Effect.Marker | Effect.Shadow, "/etc"),
        ["etc-readonly"] = new(_ => Bind("/etc", "bind,ro"), Effect.Shadow),
        ["etc-rbind"] = new(_ => Bind("/etc", "rbind"), Effect.Marker | Effect.Shadow, "/etc"),
        ["etc-via-symlink"] = new(tmp => Bind(Symlink(tmp, "/etc")), Effect.Marker | Effect.Shadow, "/etc"),
        ["etc-via-dotdot"] = new(_ => Bind("/tmp/../etc"), Effect.Marker | Effect.Shadow, "/etc"),
        ["etc-docker"] = new(_ => Bind("/etc/docker"), Effect.Marker, "/etc/docker"),
        ["run-sandbox-runc"] = new(_ => Bind("/run/sandbox-runc"), Effect.Marker, "/run/sandbox-runc"),
        // docker's data root is a shared mount (peer group of the overlay mounts of every container): a bind of
        // it, or a recursive one holding it, would receive copies of every container's rootfs mount, and
        // dockerd's lazy unmount of the volume would propagate and unmount the real ones of containers being
        // started at that moment (seen: "exec: sh: executable file not found"). Private, the copy is the same
        // attack without that side effect on the host.
        ["var-lib-docker"] = new(_ => Bind("/var/lib/docker", "bind,private"), Effect.Marker, "/var/lib/docker"),
        ["root"] = new(_ => Bind("/"), Effect.Marker, "/", MayHoldSocket: true),
        ["root-rbind"] = new(_ => Bind("/", "rbind,rprivate"), Effect.Marker, "/", MayHoldSocket: true),
        // The runtime's own binary is restricted, and so is every dir above it (README: "the path, anything
        // below, anything above").
        ["usr-local-bin"] = new(_ => Bind("/usr/local/bin"), Effect.Marker, "/usr/local/bin"),
        ["proc-bind"] = new(_ => Bind("/proc"), Effect.HostProcess),
        ["sys-bind"] = new(_ => Bind("/sys"), Effect.HostInterfaces),
        ["dev-bind"] = new(_ => Bind("/dev"), Effect.Marker, "/dev"),
        // Not binds: dockerd mounts a new instance of a kernel filesystem, which is the host's.
        ["procfs"] = new(_ => ["type=proc", "device=proc"], Effect.HostProcess),
        ["sysfs"] = new(_ => ["type=sysfs", "device=sysfs"], Effect.HostInterfaces),
        ["devtmpfs"] = new(_ => ["type=devtmpfs", "device=devtmpfs"], Effect.Marker, "/dev"),
        ["overlay-over-etc"] = new(tmp => ["type=overlay", "device=overlay", $"o=lowerdir=/etc,upperdir={Dir(tmp, "u")},workdir={Dir(tmp, "w")}"], Effect.Shadow),
    };

    public static TheoryData<string> CaseNames => [.. Cases.Keys];

    static string Symlink(string tmp, string target)
    {
        string link = Path.Combine(tmp, "lnk");
        File.CreateSymbolicLink(link, target);
        return link;
    }

    static string Dir(string tmp, string name)
    {
        string d = Path.Combine(tmp, name);
        Directory.CreateDirectory(d);
        return d;
    }

    [EscapeTheory]
    [MemberData(nameof(CaseNames))]
    public Task LocalVolume_SourceIsJudgedByWhatItIs(string name) => Attempt(name, Cases[name]);

    [EscapeFact(NeedsPath = "/boot")]
    public Task LocalVolume_Boot() => Attempt("boot", new(_ => Bind("/boot"), Effect.Marker, "/boot"));

    [EscapeFact(NeedsPath = "/var/lib/containerd")]
    public Task LocalVolume_ContainerdState() => Attempt("var-lib-containerd", new(_ => Bind("/var/lib/containerd"), Effect.Marker, "/var/lib/containerd"));

    [EscapeFact(NeedsPath = "/lib/modules")]
    public Task LocalVolume_KernelModules() => Attempt("lib-modules", new(_ => Bind("/lib/modules"), Effect.Marker, "/lib/modules"));

    /// <summary>The host's root filesystem mounted again from its block device: the whole host, writable.</summary>
    [EscapeFact(Needs.RootBlockDevice)]
    public Task LocalVolume_HostRootBlockDevice()
    {
        var dev = EscapeHost.RootDevice()!;
        return Attempt("root-device", new(_ => [$"type={dev.FsType}", $"device={dev.Path}"], Effect.Marker, "/", MayHoldSocket: true));
    }

    /// <summary>The same driver options given inline to `docker run --mount type=volume,volume-opt=...`: dockerd creates the volume at run.</summary>
    [EscapeFact]
    public async Task InlineVolumeOptions_AreJudgedLikeACreatedVolume()
    {
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string volume = $"srt-esc-inline-{Guid.NewGuid().ToString("N")[..8]}";
            _host.Defer($"docker volume rm {volume}", () => { try { EscapeHost.Exec("docker", "volume", "rm", "-f", volume); } catch (InvalidOperationException) { } });
            string marker = _host.Marker("/etc");
            var r = await _docker.Sh(runtime,
                ["--mount", $"type=volume,src={volume},dst=/x,volume-driver=local,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/etc"],
                $"head -1 /x/shadow; echo t > /x/{Path.GetFileName(marker)}");
            bool escaped = File.Exists(marker) || r.Stdout.Contains(EscapeHost.ShadowFirstLine());
            File.Delete(marker);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && r.Stderr.Contains(Restricted), runtime, $"create refused with \"{Restricted}\"", r);
                v.Expect(!escaped, runtime, "host /etc neither read nor written", r);
            }
            else
                v.Expect(r.ExitCode == 0 && escaped, runtime, "the container reads and writes the host's /etc", r);
        }
        v.Done();
    }

    /// <summary>Control: a tmpfs volume is no host path and keeps working under both runtimes.</summary>
    [EscapeFact]
    public async Task Control_TmpfsVolumeWorks()
    {
        string volume = _host.Volume("tmpfs", "type=tmpfs", "device=tmpfs", "o=size=1m");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, ["-v", $"{volume}:/x"], "echo ok > /x/f && cat /x/f");
            v.Expect(r.ExitCode == 0 && r.Stdout == "ok\n", runtime, "a tmpfs volume is usable", r);
        }
        v.Done();
    }

    Task Attempt(string name, SourceCase c) => Attempt(_docker, _host, name, c);

    /// <summary>Creates the volume, runs the case's script with it at /x under both runtimes, checks the host.</summary>
    public static async Task Attempt(DockerCli docker, HostScope host, string name, SourceCase c)
    {
        string tmp = host.TempDir("vol");
        string volume = host.Volume(name, c.Options(tmp));
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string? marker = c.MarkerDir is null ? null : host.Marker(c.MarkerDir);
            var r = await docker.Sh(runtime, ["-v", $"{volume}:/x"], Script(c.Effect, marker));
            var escaped = Observe(c.Effect, marker, r);
            if (runtime == Runtimes.Sandbox)
            {
                bool refused = r.Stderr.Contains(c.Refusal) || c.MayHoldSocket && r.Stderr.Contains(SocketDenied);
                v.Expect(r.ExitCode != 0 && refused, runtime, $"create refused with \"{c.Refusal}\"" + (c.MayHoldSocket ? $" or \"{SocketDenied}\"" : ""), r);
                v.Expect(escaped.Count == 0, runtime, $"nothing of the host reached: {string.Join(", ", escaped)}", r);
            }
            else
            {
                var expected = Enum.GetValues<Effect>().Where(e => c.Effect.HasFlag(e)).Select(e => e.ToString()).ToList();
                v.Expect(r.ExitCode == 0 && expected.All(escaped.Contains), runtime,
                    $"the attempt reaches the host ({string.Join(", ", expected)}); seen: {string.Join(", ", escaped)}", r);
            }
        }
        v.Done();
    }

    static string Script(Effect effect, string? marker)
    {
        var lines = new List<string>();
        if (effect.HasFlag(Effect.Shadow)) lines.Add("head -1 /x/shadow");
        if (effect.HasFlag(Effect.HostProcess)) lines.Add($"tr '\\0' ' ' < /x/{Environment.ProcessId}/cmdline; echo");
        if (effect.HasFlag(Effect.HostInterfaces)) lines.Add("ls /x/class/net");
        if (effect.HasFlag(Effect.Socket)) lines.Add("test -S /x/docker.sock && echo docker-socket-visible");
        if (marker is not null) lines.Add($"echo t > /x/{Path.GetFileName(marker)}");
        return string.Join("\n", lines);
    }

    /// <summary>What of the host the container reached (and removes the marker it wrote).</summary>
    public static List<string> Observe(Effect effect, string? marker, DockerCli.Result r)
    {
        var seen = new List<string>();
        if (marker is not null && File.Exists(marker))
        {
            seen.Add(nameof(Effect.Marker));
            File.Delete(marker);
        }
        var lines = r.Stdout.Split('\n').Select(l => l.Trim()).ToList();
        if (effect.HasFlag(Effect.Shadow) && lines.Contains(EscapeHost.ShadowFirstLine())) seen.Add(nameof(Effect.Shadow));
        if (effect.HasFlag(Effect.HostProcess) && lines.Contains(EscapeHost.OwnCommandLine().Trim())) seen.Add(nameof(Effect.HostProcess));
        if (effect.HasFlag(Effect.HostInterfaces) && lines.Contains(EscapeHost.HostOnlyInterface())) seen.Add(nameof(Effect.HostInterfaces));
        if (effect.HasFlag(Effect.Socket) && lines.Contains("docker-socket-visible")) seen.Add(nameof(Effect.Socket));
        return seen;
    }
}
