using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Sdk;

namespace SandboxRunc.Tests.Escape;

/// <summary>What an escape attempt needs from this host beyond root and dockerd.</summary>
[Flags]
public enum Needs
{
    None = 0,
    /// <summary>cc and a static libc, to build the probe (escape-probe.c) the busybox image lacks.</summary>
    Cc = 1,
    /// <summary>The host's root filesystem on a block device (mountinfo "/" with a /dev/... source).</summary>
    RootBlockDevice = 2,
    /// <summary>Host root can open the root block device (some VM sandboxes refuse even host root).</summary>
    ReadableRootDevice = 4,
    /// <summary>A kernel with loadable modules (/proc/modules).</summary>
    Modules = 8,
    /// <summary>/proc/sysrq-trigger.</summary>
    SysrqTrigger = 16,
    /// <summary>A cgroup2 hierarchy mounted (v2 at /sys/fs/cgroup, or a hybrid host's below it).</summary>
    Cgroup2 = 32,
}

/// <summary>
/// An escape attempt: needs root and dockerd. Skipped, with the reason, when the host lacks what the
/// attempt needs, so that no attempt passes because its prerequisite is missing.
/// </summary>
public sealed class EscapeFactAttribute : FactAttribute
{
    public EscapeFactAttribute(Needs needs = Needs.None) => Skip = EscapeHost.Missing(needs, null);

    /// <summary>A host path the attempt is about; skipped when it does not exist here.</summary>
    public string? NeedsPath { get => null; set => Skip ??= EscapeHost.Missing(Needs.None, value); }
}

/// <summary>As <see cref="EscapeFactAttribute"/>, for theories.</summary>
public sealed class EscapeTheoryAttribute : TheoryAttribute
{
    public EscapeTheoryAttribute(Needs needs = Needs.None) => Skip = EscapeHost.Missing(needs, null);

    /// <summary>A host path the attempt is about; skipped when it does not exist here.</summary>
    public string? NeedsPath { get => null; set => Skip ??= EscapeHost.Missing(Needs.None, value); }
}

/// <summary>
/// Tests that change (or, against a runtime with a hole, may change) settings global to the host: host
/// sysctls, cgroup release agents, the kernel's sysfs knobs, the admin settings every container is created
/// under. They run alone, after every parallel test (xunit 2 runs the collections that disable
/// parallelization one at a time once all the others are done), and restore every value they read first.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HostGlobalSettings
{
    public const string Name = "escape: host-global settings";
}

/// <summary>The two runtimes an attempt is run under, and what runc needs for the mount-based attacks.</summary>
public static class Runtimes
{
    public const string Sandbox = DockerCli.Runtime;

    /// <summary>Debian's /usr/sbin/runc, registered in dockerd under its reserved name.</summary>
    public const string Runc = "runc";

    /// <summary>
    /// runc's --privileged fails on this host (the bounding set lacks CAP_SYS_RESOURCE), so the mount attacks
    /// get CAP_SYS_ADMIN without docker's seccomp and AppArmor profiles, which would refuse mount(2) first.
    /// </summary>
    public static readonly string[] RuncMountPrivileges =
        ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"];

    /// <summary>`docker run --rm --runtime=RUNTIME [options] IMAGE command...`, named so that Dispose removes it.</summary>
    public static Task<DockerCli.Result> RunIn(this DockerCli docker, string runtime, string[] options, params string[] command) =>
        docker.Run(["run", "--rm", "--name", docker.Name("esc"), $"--runtime={runtime}", .. options, DockerCli.Image, .. command]);

    /// <summary>`sh -c SCRIPT` under a runtime.</summary>
    public static Task<DockerCli.Result> Sh(this DockerCli docker, string runtime, string[] options, string script) =>
        docker.RunIn(runtime, options, "sh", "-c", script);
}

/// <summary>
/// Collects the failed expectations of both halves of an attempt (sandbox-runc must refuse, runc must let it
/// through) and reports them together, each with the container's exit code and output.
/// </summary>
public sealed class Verdict
{
    readonly List<string> _failures = [];

    public void Expect(bool ok, string runtime, string expectation, object? evidence = null)
    {
        if (!ok) _failures.Add($"{runtime}: {expectation}" + (evidence is null ? "" : $"\n    {evidence.ToString()!.Replace("\n", "\n    ")}"));
    }

    public void Done()
    {
        if (_failures.Count > 0) throw new XunitException(string.Join("\n\n", _failures));
    }
}

/// <summary>
/// Host changes made by a test (or by a container that escaped), undone in reverse order on Dispose:
/// mounts, files, dirs, docker volumes, sysctls. Every undo runs, whatever the others did.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostScope : IDisposable
{
    readonly Stack<(string What, Action Undo)> _undo = new();

    public string Unique { get; } = Guid.NewGuid().ToString("N")[..10];

    public void Defer(string what, Action undo)
    {
        lock (_undo) _undo.Push((what, undo));
    }

    /// <summary>A fresh dir under /tmp (mode 0755 unless given), removed on Dispose.</summary>
    public string TempDir(string what, UnixFileMode? mode = null)
    {
        string dir = Path.Combine("/tmp", $"srt-esc-{what}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, mode ?? (UnixFileMode)0b111_101_101);
        Defer($"rm -r {dir}", () => RemoveTree(dir));
        return dir;
    }

    /// <summary>A file name an escaped container would write on the host, in <paramref name="hostDir"/>; removed on Dispose.</summary>
    public string Marker(string hostDir)
    {
        string path = Path.Combine(hostDir, $"srt-pwned-{Guid.NewGuid().ToString("N")[..10]}");
        Defer($"rm {path}", () => File.Delete(path));
        return path;
    }

    /// <summary>`mount --bind SOURCE TARGET` on the host; lazily unmounted on Dispose.</summary>
    public void Bind(string source, string target)
    {
        EscapeHost.Exec("mount", "--bind", source, target);
        Defer($"umount {target}", () => EscapeHost.Exec("umount", "-l", target));
    }

    /// <summary>`docker volume create NAME` with driver options; removed (after its mounts are gone) on Dispose.</summary>
    public string Volume(string what, params string[] driverOptions)
    {
        string name = $"srt-esc-{what}-{Guid.NewGuid().ToString("N")[..8]}";
        var args = new List<string> { "volume", "create", "--driver", "local" };
        foreach (var o in driverOptions) args.AddRange(["--opt", o]);
        args.Add(name);
        Defer($"docker volume rm {name}", () => RemoveVolume(name));
        EscapeHost.Exec("docker", [.. args]);
        return name;
    }

    /// <summary>Records a /proc/sys or /sys value now; writes it back on Dispose if it changed.</summary>
    public string Remember(string path)
    {
        string before = File.ReadAllText(path).Trim();
        Defer($"restore {path}", () =>
        {
            if (File.ReadAllText(path).Trim() != before) File.WriteAllText(path, before);
        });
        return before;
    }

    /// <summary>
    /// Docker removes a local volume's _data dir after unmounting it; should a mount still be there (a
    /// bind of /etc, the host's root), it must go first so that nothing under the source can be removed.
    /// </summary>
    static void RemoveVolume(string name)
    {
        string data = $"/var/lib/docker/volumes/{name}/_data";
        // Not lazily: a lazy unmount of a mount in a shared peer group propagates to the other members.
        for (int i = 0; i < 8 && EscapeHost.IsMountPoint(data); i++)
            EscapeHost.Exec("umount", data);
        if (EscapeHost.IsMountPoint(data))
            throw new InvalidOperationException($"{data} is still a mount point: volume {name} left for an admin to remove");
        EscapeHost.Exec("docker", "volume", "rm", "-f", name);
    }

    /// <summary>rm -r that never crosses into a mount (a bind left by a failed unmount is left alone).</summary>
    static void RemoveTree(string dir)
    {
        if (!Directory.Exists(dir)) return;
        if (EscapeHost.MountPoints().Any(m => m == dir || m.StartsWith(dir + "/", StringComparison.Ordinal)))
            throw new InvalidOperationException($"{dir} still has mounts below it: left in place");
        Directory.Delete(dir, recursive: true);
    }

    public void Dispose()
    {
        var errors = new List<string>();
        while (true)
        {
            (string What, Action Undo) step;
            lock (_undo)
            {
                if (_undo.Count == 0) break;
                step = _undo.Pop();
            }
            try { step.Undo(); }
            catch (Exception e) { errors.Add($"{step.What}: {e.Message}"); }
        }
        if (errors.Count > 0) Console.Error.WriteLine("escape test clean-up: " + string.Join("; ", errors));
    }
}

/// <summary>Facts about the host, read the way an administrator would check them.</summary>
public static class EscapeHost
{
    public static string? Missing(Needs needs, string? path)
    {
        if (Environment.UserName != "root") return "needs root: runs containers through dockerd and the real runtimes";
        if (path is not null && !Path.Exists(path)) return $"{path} does not exist on this host: nothing to mount";
        if (needs.HasFlag(Needs.Cc) && (CHeaderCheck.FindCc() is null || !File.Exists(StaticLibc)))
            return $"the probe is built with cc -static: needs cc and {StaticLibc} (libc6-dev)";
        if (needs.HasFlag(Needs.RootBlockDevice) && RootDevice() is null)
            return "the host's root filesystem is not on a block device found in /proc/self/mountinfo";
        if (needs.HasFlag(Needs.ReadableRootDevice) && RootDevice() is { } dev && !CanOpen(dev.Path))
            return $"host root itself cannot open {dev.Path} on this machine (EPERM: the VM's sandbox refuses it), so a container failing to read it would prove nothing";
        if (needs.HasFlag(Needs.Modules) && !File.Exists("/proc/modules"))
            return "the kernel has no loadable-module support (no /proc/modules): nothing to load";
        if (needs.HasFlag(Needs.SysrqTrigger) && !File.Exists("/proc/sysrq-trigger"))
            return "the kernel has no /proc/sysrq-trigger (built without CONFIG_MAGIC_SYSRQ)";
        if (needs.HasFlag(Needs.Cgroup2) && HostCgroups.UnifiedMount() is null)
            return "this host mounts no cgroup2 hierarchy (a pure v1 host): there is no v2 tree to see";
        return null;
    }

    const string StaticLibc = "/usr/lib/x86_64-linux-gnu/libc.a";

    public sealed record BlockDevice(string Path, string FsType, int Major, int Minor);

    /// <summary>The block device and filesystem type of the host's "/" (from mountinfo), if it is one.</summary>
    public static BlockDevice? RootDevice()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (f.Length < 10 || f[4] != "/" || dash < 0 || dash + 2 >= f.Length) continue;
            var mm = f[2].Split(':');
            string source = f[dash + 2];
            if (!source.StartsWith("/dev/", StringComparison.Ordinal) || !File.Exists(source)) return null;
            return new BlockDevice(source, f[dash + 1], int.Parse(mm[0]), int.Parse(mm[1]));
        }
        return null;
    }

    static bool CanOpen(string path)
    {
        try { using var s = File.OpenRead(path); return true; }
        catch (Exception) { return false; }
    }

    public static IEnumerable<string> MountPoints() =>
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4).Select(f => Unescape(f[4]));

    public static bool IsMountPoint(string path) => MountPoints().Contains(path);

    static string Unescape(string s) => s.Replace("\\040", " ").Replace("\\011", "\t").Replace("\\012", "\n").Replace("\\134", "\\");

    public static double Uptime() => double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);

    /// <summary>
    /// Waits (once, on a freshly booted host) until the host has been up for a while, so that "the container's
    /// uptime" and "the host's uptime" cannot be mistaken for each other.
    /// </summary>
    public static async Task HostUpAtLeast(double seconds)
    {
        while (Uptime() < seconds) await Task.Delay(1000);
    }

    /// <summary>A number printed by a container, or null.</summary>
    public static double? Number(string text) =>
        double.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : null;

    /// <summary>True when the printed uptime is the container's own (small), not the host's.</summary>
    public static bool IsContainerUptime(string printed, double hostUptime) =>
        Number(printed) is { } v && v < 60 && hostUptime - v > 60;

    /// <summary>A network interface the host has and a container's own network namespace does not.</summary>
    public static string HostOnlyInterface() =>
        new[] { "docker0" }.Concat(Directory.GetFileSystemEntries("/sys/class/net").Select(Path.GetFileName).Order()!)
            .First(n => n is not null && Directory.Exists($"/sys/class/net/{n}") && n is not ("lo" or "eth0") && !n.StartsWith("veth"))!;

    /// <summary>This test process's command line as `tr '\0' ' '` prints it: what a container reading the host's /proc sees.</summary>
    public static string OwnCommandLine() => File.ReadAllText("/proc/self/cmdline").Replace('\0', ' ');

    /// <summary>The first line of the host's /etc/shadow: what a container that can read the host's /etc prints.</summary>
    public static string ShadowFirstLine() => File.ReadLines("/etc/shadow").First();

    /// <summary>Runs a host command, throwing with its output when it fails.</summary>
    public static string Exec(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        if (!p.WaitForExit(Patience.Command))
        {
            p.Kill(true);
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} did not finish within {Patience.Command.TotalSeconds:0} s (hung; killed)");
        }
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr}");
        return stdout.Result;
    }

    /// <summary>As <see cref="Exec"/>, returning the exit code and both streams instead of throwing.</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> Try(string file, params string[] args)
    {
        using var cts = new CancellationTokenSource(Patience.Command);
        try
        {
            var r = await CliWrap.Cli.Wrap(file).WithArguments(args).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cts.Token);
            return (r.ExitCode, r.StandardOutput, r.StandardError);
        }
        catch (OperationCanceledException)
        {
            throw new XunitException($"{file} {string.Join(' ', args)} did not finish within {Patience.Command.TotalSeconds:0} s (hung; killed)");
        }
    }

    /// <summary>A value read in a container's namespace from the host (`nsenter -t PID -n|-u ...`).</summary>
    public static async Task<string> InNamespace(int pid, string nsFlag, params string[] command)
    {
        var r = await Try("nsenter", ["-t", pid.ToString(CultureInfo.InvariantCulture), nsFlag, .. command]);
        if (r.ExitCode != 0) throw new XunitException($"nsenter -t {pid} {nsFlag} {string.Join(' ', command)}: {r.Stderr}");
        return r.Stdout.Trim();
    }
}

/// <summary>The per-container helpers of sandbox-runc on the host, found by their command lines.</summary>
public static class Helpers
{
    /// <summary>Pids whose command line has all the words (e.g. "emulate" and the container id).</summary>
    public static List<int> Find(params string[] words)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                var args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                if (args.Length > 0 && Path.GetFileName(args[0]) == "sandbox-runc" && words.All(w => args.Contains(w)))
                    found.Add(pid);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return found;
    }

    /// <summary>The `sandbox-runc ... emulate ID` process of a docker container.</summary>
    public static async Task<int> Emulator(DockerCli docker, string name) => await One(docker, name, "emulate");

    /// <summary>The `sandbox-runc ... supervise ID` process of a docker container.</summary>
    public static async Task<int> Supervisor(DockerCli docker, string name) => await One(docker, name, "supervise");

    static async Task<int> One(DockerCli docker, string name, string role)
    {
        string id = await docker.Inspect(name, "{{.Id}}");
        var pids = await Eventually.Holds(() => Find(role, id), p => p.Count == 1, $"container {name} ({id}) to have one `sandbox-runc {role}` process",
            show: p => $"{p.Count} of them: {string.Join(", ", p.Select(Procs.Describe))}");
        return pids[0];
    }

    /// <summary>Resident set size in KiB (VmRSS), or -1 when the process is gone.</summary>
    public static long RssKiB(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        catch (IOException) { }
        return -1;
    }
}

/// <summary>
/// The static probe (escape-probe.c) the busybox image lacks: built once per source version into
/// artifacts/, bind-mounted read-only at /probe.
/// </summary>
public static class EscapeProbe
{
    static readonly SemaphoreSlim BuildLock = new(1, 1);

    public static async Task<string> Binary()
    {
        string src = Path.Combine(Repo.Root, "tests", "SandboxRunc.Tests", "Escape", "escape-probe.c");
        string hash = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(src)))[..12].ToLowerInvariant();
        string output = Path.Combine(Repo.Root, "artifacts", $"escape-probe-{hash}");
        await BuildLock.WaitAsync();
        try
        {
            if (File.Exists(output)) return output;
            Directory.CreateDirectory(Path.GetDirectoryName(output)!);
            string tmp = output + ".tmp" + Environment.ProcessId;
            var cc = await CliWrap.Cli.Wrap(CHeaderCheck.FindCc() ?? "cc").WithArguments(["-static", "-O2", "-Wall", "-Werror", "-o", tmp, src])
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            Assert.True(cc.ExitCode == 0, $"building the escape probe failed: {cc.StandardError}");
            File.Move(tmp, output, overwrite: true);
            return output;
        }
        finally { BuildLock.Release(); }
    }

    /// <summary>The docker option that puts the probe at /probe.</summary>
    public static async Task<string[]> Mount() => ["-v", $"{await Binary()}:/probe:ro"];
}
