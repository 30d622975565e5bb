using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, items 4 and 8, and the caches of every helper: the per-container helpers run as host root
/// outside the container's cgroup, so a container must not be able to grow them (open handles and stats of
/// a large mirrored file, thousands of held handles, huge sysctl writes, a walk of the whole mirror, refused
/// mounts filling the refusal log) nor hang them (FIFOs where a helper reads inside the container's root).
///
/// Memory is watched while the container works, every 100 ms, and the container is removed as soon as a
/// helper passes the cap, so that a runtime with the hole cannot take the host's memory. No timing is
/// asserted: the hang detectors are generous bounds. runc has no helpers: nothing to compare.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class HelperResourceTests : IDisposable
{
    /// <summary>The stated cap on a helper's resident memory.</summary>
    const long CapKiB = 64 * 1024;
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    /// <summary>The largest file under /sys/kernel (btf/vmlinux, 5.5 MB here): what a mirror might copy whole.</summary>
    static string LargestKernelFile()
    {
        if (File.Exists("/sys/kernel/btf/vmlinux")) return "/sys/kernel/btf/vmlinux";
        return new DirectoryInfo("/sys/kernel").EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, MaxRecursionDepth = 4 })
            .Where(f => (f.UnixFileMode & UnixFileMode.OtherRead) != 0).MaxBy(f => f.Length)!.FullName;
    }

    /// <summary>
    /// Starts `sleep` in a container, then the load (detached exec, each line's output to /tmp/load.N), and
    /// watches the helper's RSS until every line of <paramref name="load"/> printed its last line (one that
    /// starts as a done-key does: "held=" for "held=5000", whatever the count), the helper passes the cap (the
    /// container is then removed at once), or 150 s pass (a hang). The caller judges the done-keys themselves.
    /// </summary>
    async Task<(long MaxKiB, string Output)> Watch(string[] options, string role, string[] load, string[] doneKeys)
    {
        string name = await _docker.RunDetached("res", Runtimes.Sandbox, [.. options, .. await EscapeProbe.Mount()], "sleep", "600");
        int helper = role == "emulate" ? await Helpers.Emulator(_docker, name) : await Helpers.Supervisor(_docker, name);
        string script = string.Join("\n", load.Select((l, i) => $"({l}) > /tmp/load.{i} 2>&1 &")) + "\nwait";
        await _docker.Ok("exec", "-d", name, "sh", "-c", script);
        long max = 0;
        string output = "";
        var finals = doneKeys.Select(k => k[..(k.IndexOf('=') + 1)]).Distinct().ToArray();
        var until = DateTime.UtcNow.AddSeconds(150);
        var nextPoll = DateTime.UtcNow;
        while (true)
        {
            long rss = Helpers.RssKiB(helper);
            max = Math.Max(max, rss);
            if (rss > CapKiB)
            {
                await _docker.Run("rm", "-f", name);
                return (max, output + $"\n(container removed: the {role} helper passed {CapKiB} KiB)");
            }
            if (DateTime.UtcNow >= nextPoll)
            {
                output = (await _docker.Run("exec", name, "sh", "-c", "cat /tmp/load.* 2>/dev/null")).Stdout;
                if (output.Split('\n').Count(l => finals.Any(l.StartsWith)) >= load.Length) break;
                nextPoll = DateTime.UtcNow.AddSeconds(1);
            }
            if (DateTime.UtcNow > until) return (max, output + "\n(the load did not finish within 150 s: hung)");
            await Task.Delay(100);
        }
        for (int i = 0; i < 10; i++, await Task.Delay(100)) max = Math.Max(max, Helpers.RssKiB(helper));
        return (max, output);
    }

    static void ExpectBounded(Verdict v, string what, (long MaxKiB, string Output) w, string[] doneKeys)
    {
        v.Expect(doneKeys.All(k => w.Output.Contains(k)), Runtimes.Sandbox, $"{what}: the load ran to its end", w.Output);
        v.Expect(w.MaxKiB is > 0 and <= CapKiB, Runtimes.Sandbox, $"{what}: the helper's RSS stays within {CapKiB} KiB (peak {w.MaxKiB} KiB)", w.Output);
    }

    /// <summary>The issue's reproduction: 200 open handles and 300 stats of a 5.5 MB mirrored file from a 64 MiB container.</summary>
    [EscapeFact(Needs.Cc)]
    public async Task Emulator_LargeMirroredFileHandlesAndStatsAreBounded()
    {
        string file = LargestKernelFile();
        string[] done = ["held=200", "stats=300"];
        var w = await Watch(["--memory", "64m"], "emulate", [$"/probe hold {file} 200", $"/probe stat {file} 300"], done);
        var v = new Verdict();
        ExpectBounded(v, $"200 handles + 300 stats of {file}", w, done);
        v.Done();
    }

    [EscapeFact(Needs.Cc)]
    public async Task Emulator_ThousandsOfHeldMeminfoHandlesAreBounded()
    {
        string[] done = ["held=5000"];
        var w = await Watch(["--memory", "64m"], "emulate", ["/probe hold /proc/meminfo 5000"], done);
        var v = new Verdict();
        ExpectBounded(v, "5000 handles of /proc/meminfo held at once", w, done);
        v.Done();
    }

    /// <summary>1 MiB writes to a per-container sysctl, 50 times, from 4 writers: bounded, and the host's value untouched.</summary>
    [EscapeFact(Needs.Cc)]
    public async Task Emulator_HugeSysctlWritesAreBounded()
    {
        string hostPanic = File.ReadAllText("/proc/sys/kernel/panic").Trim();
        var writers = Enumerable.Range(0, 4).Select(_ => "/probe write /proc/sys/kernel/panic 1048576 50").ToArray();
        string[] done = ["writes=50"];
        var w = await Watch(["--memory", "64m", "--cap-add", "SYS_ADMIN"], "emulate", writers, done);
        var v = new Verdict();
        ExpectBounded(v, "4 x 50 writes of 1 MiB to /proc/sys/kernel/panic", w, done);
        v.Expect(Regex.Matches(w.Output, "writes=50").Count == 4, Runtimes.Sandbox, "all 4 writers finished", w.Output);
        v.Expect(File.ReadAllText("/proc/sys/kernel/panic").Trim() == hostPanic, Runtimes.Sandbox, $"host kernel.panic unchanged ({hostPanic})", w.Output);
        v.Done();
    }

    /// <summary>A walk of the whole mirror (every node of /sys/kernel and /proc/sys, twice): the node tables stay bounded.</summary>
    [EscapeFact(Needs.Cc)]
    public async Task Emulator_WalkingTheWholeMirrorIsBounded()
    {
        string[] done = ["walked=2"];
        var w = await Watch(["--memory", "64m"], "emulate",
            ["find /sys/kernel /proc/sys >/dev/null 2>&1; find /sys/kernel /proc/sys -type f 2>/dev/null | head -20000 | xargs -n 200 stat >/dev/null 2>&1; find /sys/kernel /proc/sys >/dev/null 2>&1; echo walked=2"], done);
        var v = new Verdict();
        ExpectBounded(v, "two walks of /sys/kernel and /proc/sys", w, done);
        v.Done();
    }

    /// <summary>
    /// 23 000 refused mounts, 3 000 of them with a 4 000-byte target (one /proc spelled long), would write
    /// about 20 MB of log lines: the supervisor's refusal log (with any rotated copies) stays within 2 MiB,
    /// the supervisor's RSS within the cap.
    /// </summary>
    [EscapeFact(Needs.Cc)]
    public async Task Supervisor_RefusalLogIsBounded()
    {
        const long LogCap = 2 * 1024 * 1024, Abort = 64 * 1024 * 1024;
        string name = await _docker.RunDetached("log", Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", .. await EscapeProbe.Mount()], "sleep", "600");
        string stateDir = await _docker.StateDir(name);
        int supervisor = await Helpers.Supervisor(_docker, name);
        long LogBytes() => Directory.GetFiles(stateDir, "refusals.log*").Sum(f => new FileInfo(f).Length);
        // 23 000 trapped calls: on a loaded machine each can take milliseconds, hence a bound of its own.
        var run = _docker.Run(TimeSpan.FromSeconds(200), "exec", name, "sh", "-c", "/probe umount /proc 20000; /probe umount /proc 3000 4000");
        long maxLog = 0, maxRss = 0;
        while (!run.IsCompleted)
        {
            maxLog = Math.Max(maxLog, LogBytes());
            maxRss = Math.Max(maxRss, Helpers.RssKiB(supervisor));
            if (maxLog > Abort || maxRss > CapKiB)
            {
                await _docker.Run("rm", "-f", name);
                break;
            }
            await Task.Delay(100);
        }
        var r = await run;
        if (Directory.Exists(stateDir)) maxLog = Math.Max(maxLog, LogBytes());
        var v = new Verdict();
        v.Expect(r.Stdout.Contains("calls=20000 ok=0 errno=1") && r.Stdout.Contains("calls=3000 ok=0 errno=1"), Runtimes.Sandbox, "every umount of /proc refused (EPERM)", r);
        v.Expect(maxLog <= LogCap, Runtimes.Sandbox, $"refusals.log stays within {LogCap} bytes (peak {maxLog})", r);
        v.Expect(maxRss is > 0 and <= CapKiB, Runtimes.Sandbox, $"the supervisor's RSS stays within {CapKiB} KiB (peak {maxRss})", r);
        v.Done();
    }

    /// <summary>
    /// Item 8: in a chroot whose proc/meminfo (and the other files .NET reads at a GC: cgroup limits,
    /// mountinfo, status) are FIFOs, the container makes many trapped calls, which the supervisor answers from
    /// inside that root. Meanwhile `docker exec C true` must finish (hang detector: 60 s, for a command that
    /// takes well under a second on a quiet machine, and a few on a loaded one) and a vetting refusal must
    /// still be answered.
    /// </summary>
    [EscapeFact(Needs.Cc)]
    public async Task Supervisor_CannotBeHungByFifosInTheCallersRoot()
    {
        string name = await _docker.RunDetached("fifo", Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", .. await EscapeProbe.Mount()], "sleep", "600");
        await _docker.Ok("exec", name, "sh", "-c", """
            set -e
            R=/tmp/cr
            mkdir -p $R/bin $R/proc/self $R/sys/fs/cgroup/memory $R/sys/fs/cgroup/cpu $R/n $R/tmp
            cp /bin/busybox /probe $R/bin/
            for f in proc/meminfo proc/stat proc/self/mountinfo proc/self/cgroup proc/self/status proc/self/maps \
                     sys/fs/cgroup/memory/memory.limit_in_bytes sys/fs/cgroup/memory/memory.usage_in_bytes \
                     sys/fs/cgroup/cpu/cpu.cfs_quota_us sys/fs/cgroup/cpu/cpu.cfs_period_us; do mkfifo $R/$f; done
            """);
        // Four tight loops of umount2 on a path that is no mount (each call resolved by the supervisor inside the
        // chroot) and a busybox loop of tmpfs mount and umount there.
        await _docker.Ok("exec", "-d", name, "sh", "-c", """
            for i in 1 2 3 4; do chroot /tmp/cr /bin/probe umount /n 200000 > /tmp/fifo.$i 2>&1 & done
            chroot /tmp/cr /bin/busybox sh -c 'while :; do /bin/busybox mount -t tmpfs t /n; /bin/busybox umount /n; done' >/dev/null 2>&1 &
            wait
            """);
        await Task.Delay(3000); // the loops are at work: many calls answered inside the chroot
        var v = new Verdict();
        const int Bound = 60;
        for (int i = 0; i < 2; i++)
        {
            var t = await Timed(Bound, "docker", "exec", name, "true");
            v.Expect(t.ExitCode == 0, Runtimes.Sandbox, $"docker exec true #{i + 1} finishes within {Bound} s", t);
            var u = await Timed(Bound, "docker", "exec", name, "umount", "/proc");
            v.Expect(u.ExitCode != 0 && u.Stderr.Contains("Operation not permitted"), Runtimes.Sandbox, $"umount /proc #{i + 1} still answered EPERM within {Bound} s", u);
            if (t.ExitCode == -1 || u.ExitCode == -1) break; // hung once is enough to know
        }
        v.Done();
    }

    /// <summary>A host command with a hang detector; a timeout is reported as exit -1.</summary>
    static async Task<DockerCli.Result> Timed(int seconds, string file, params string[] args)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        var sw = Stopwatch.StartNew();
        try
        {
            var r = await CliWrap.Cli.Wrap(file).WithArguments(args).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cts.Token);
            return new DockerCli.Result(r.ExitCode, r.StandardOutput, r.StandardError, sw.Elapsed);
        }
        catch (OperationCanceledException)
        {
            return new DockerCli.Result(-1, "", $"{file} {string.Join(' ', args)}: no answer within {seconds} s (hung)", sw.Elapsed);
        }
    }
}

/// <summary>
/// Issue 11, item 9: races by pid. For 10 s, short-lived processes call sysinfo (answered by the supervisor
/// from the caller's memory), trapped umounts, and authorised namespaced sysctl writes (the container holds
/// NET_ADMIN and SYS_ADMIN; the emulation does them by entering the caller's namespaces) and are SIGKILLed
/// in the middle. The helpers must survive and still answer, and nothing outside the container may change:
/// the host's own ip_default_ttl and hostname (restored if they did). Run alone, as it could touch them.
/// </summary>
[Collection(HostGlobalSettings.Name)]
[SupportedOSPlatform("linux")]
public sealed class PidRaceSoakTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    [EscapeFact(Needs.Cc)]
    public async Task Soak_KilledCallersNeitherBreakTheHelpersNorReachTheHost()
    {
        string ttl = _host.Remember("/proc/sys/net/ipv4/ip_default_ttl");
        string hostname = _host.Remember("/proc/sys/kernel/hostname");
        string name = await _docker.RunDetached("soak", Runtimes.Sandbox,
            ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", .. await EscapeProbe.Mount()], "sleep", "600");
        int supervisor = await Helpers.Supervisor(_docker, name);
        int emulator = await Helpers.Emulator(_docker, name);
        var soak = await _docker.Run("exec", name, "/probe", "soak", "10");
        var v = new Verdict();
        v.Expect(soak.ExitCode == 0 && Regex.IsMatch(soak.Stdout, @"children=[1-9]\d*"), Runtimes.Sandbox, "the soak ran", soak);
        v.Expect(Procs.Alive(supervisor) && Procs.Alive(emulator), Runtimes.Sandbox, $"the supervisor ({supervisor}) and the emulation ({emulator}) survived", soak);
        var after = await _docker.Run("exec", name, "sh", "-c",
            "umount /proc; echo umount=$?; free | grep -c Mem:; cat /proc/sys/net/ipv4/ip_default_ttl; cut -d' ' -f1 /proc/uptime");
        v.Expect(after.ExitCode == 0 && after.Stdout.StartsWith("umount=1\n1\n99\n"), Runtimes.Sandbox,
            "the helpers still answer: umount refused, sysinfo, the container's own ttl (99, written by the soak), uptime", after);
        v.Expect(File.ReadAllText("/proc/sys/net/ipv4/ip_default_ttl").Trim() == ttl, Runtimes.Sandbox, $"host ip_default_ttl unchanged ({ttl})", soak);
        v.Expect(File.ReadAllText("/proc/sys/kernel/hostname").Trim() == hostname, Runtimes.Sandbox, $"host hostname unchanged ({hostname})", soak);
        v.Done();
    }
}
