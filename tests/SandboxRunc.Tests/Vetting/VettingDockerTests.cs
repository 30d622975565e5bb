using System.Text.Json;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Vetting;

/// <summary>
/// Syscall vetting as docker users meet it: mounts made at creation are immutable (a read-only volume
/// stays read-only, /proc and /sys stay mounted, also from a new mount namespace), mounts the container
/// makes itself are its own, a racing thread cannot slip a protected path past the check, and a killed
/// supervisor leaves mount failing, not unvetted.
/// </summary>
public sealed class VettingDockerTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly string _hostDir = Directory.CreateTempSubdirectory("sr-vet-").FullName;

    public void Dispose()
    {
        _docker.Dispose();
        try { Directory.Delete(_hostDir, true); } catch { }
    }

    static string Sh(params string[] lines) => string.Join("\n", lines);

    /// <summary>
    /// mount + umount2 of a tmpfs of the container's own, 300 times, the unmount right after the trapped mount:
    /// every one succeeds (none EBUSY), also with a second loop racing in the same container on another dir.
    /// </summary>
    [IntegrationFact]
    public async Task Vetting_MountThenUmountLoop_NeverBusy()
    {
        const string loop = "n=0; b=0; for i in $(seq 300); do mount -t tmpfs t $D || n=$((n+1)); umount $D 2>/tmp/err.$1 || { b=$((b+1)); cat /tmp/err.$1 >&2; umount -l $D; }; done; echo $1.mount.failed=$n $1.umount.failed=$b";
        var r = await _docker.RunRm(["--cap-add", "SYS_ADMIN"], "sh", "-c",
            "mkdir -p /tmp/a /tmp/b; " +
            $"D=/tmp/a sh -c '{loop}' x a & D=/tmp/b sh -c '{loop}' x b; wait");
        Assert.True(r.Stdout.Contains("a.mount.failed=0 a.umount.failed=0") && r.Stdout.Contains("b.mount.failed=0 b.umount.failed=0"), r.ToString());
    }

    [IntegrationFact]
    public async Task Vetting_ReadOnlyVolumeCannotBeRemountedReadWrite_ButOwnTmpfsCan()
    {
        var r = await _docker.RunRm(["--cap-add", "SYS_ADMIN", "-v", $"{_hostDir}:/mnt:ro"], "sh", "-c", Sh(
            "mount -o remount,rw /mnt; echo remount-rc=$?",
            "touch /mnt/x 2>/dev/null; echo touch-rc=$?",
            "mkdir -p /tmp/t && mount -t tmpfs t /tmp/t && echo tmpfs-ok",
            "mount -o remount,ro /tmp/t && touch /tmp/t/a 2>/dev/null; echo ro-touch-rc=$?",
            "mount -o remount,rw /tmp/t && touch /tmp/t/b && echo rw-again-ok"));
        Assert.Contains("remount-rc=", r.Stdout);
        Assert.DoesNotContain("remount-rc=0", r.Stdout);
        Assert.Matches("(?i)permission denied|not permitted", r.Stderr);
        Assert.DoesNotContain("touch-rc=0", r.Stdout);
        Assert.Contains("tmpfs-ok", r.Stdout);
        Assert.DoesNotContain("ro-touch-rc=0", r.Stdout);
        Assert.Contains("rw-again-ok", r.Stdout);
        Assert.False(File.Exists(Path.Combine(_hostDir, "x")));
    }

    [IntegrationFact]
    public async Task Vetting_ProcAndItsSubmountsCannotBeUnmounted()
    {
        var r = await _docker.RunRm(["--privileged"], "sh", "-c", Sh(
            "umount /proc; echo proc=$?",
            "umount /proc/sys; echo sys=$?",
            "umount -l /proc/uptime; echo uptime=$?",
            "umount /sys; echo sysfs=$?",
            "cat /proc/uptime >/dev/null && echo still-there"));
        Assert.Contains("still-there", r.Stdout);
        foreach (var what in new[] { "proc", "sys", "uptime", "sysfs" })
        {
            Assert.Contains($"{what}=", r.Stdout);
            Assert.DoesNotContain($"{what}=0", r.Stdout);
        }
    }

    /// <summary>A procfs the container mounts itself carries the same masked paths and emulated files as its /proc.</summary>
    [IntegrationFact]
    public async Task Vetting_NewProcMountGetsTheSameSubmounts()
    {
        foreach (var opts in new[] { new[] { "--privileged" }, new[] { "--cap-add", "SYS_ADMIN" } })
        {
            var r = await _docker.RunRm(opts, "sh", "-c", Sh(
                "mkdir -p /tmp/p && mount -t proc proc /tmp/p || exit 9",
                "echo '--proc'; awk '$5 ~ /^\\/proc\\// {print $5}' /proc/self/mountinfo | sort",
                "echo '--new'; awk '$5 ~ /^\\/tmp\\/p\\// {sub(\"^/tmp/p\", \"/proc\", $5); print $5}' /proc/self/mountinfo | sort",
                "echo '--uptime'; cut -d' ' -f1 /tmp/p/uptime"));
            Assert.True(r.ExitCode == 0, r.ToString());
            string Section(string name, string next)
            {
                int a = r.Stdout.IndexOf($"--{name}\n", StringComparison.Ordinal) + name.Length + 3;
                int b = next.Length == 0 ? r.Stdout.Length : r.Stdout.IndexOf($"--{next}\n", StringComparison.Ordinal);
                return r.Stdout[a..b].Trim();
            }
            string own = Section("proc", "new"), mounted = Section("new", "uptime");
            Assert.NotEmpty(own);
            Assert.Equal(own, mounted);
            // The container's own uptime is at most the time `docker run` took; the host's is far more.
            Assert.True(double.Parse(Section("uptime", ""), System.Globalization.CultureInfo.InvariantCulture) <= r.Elapsed.TotalSeconds + 1,
                $"the new procfs shows the host's uptime: {r}");
        }
    }

    [IntegrationFact]
    public async Task Vetting_RulesHoldInANewMountNamespace()
    {
        var r = await _docker.RunRm(["--cap-add", "SYS_ADMIN", "-v", $"{_hostDir}:/mnt:ro"], "unshare", "-m", "sh", "-c", Sh(
            "mount -o remount,rw /mnt; echo remount-rc=$?",
            "mount --bind /mnt /tmp && mount -o remount,bind,rw /tmp; echo bind-rc=$?",
            "touch /tmp/y 2>/dev/null; echo touch-rc=$?",
            "umount /proc; echo umount-rc=$?"));
        Assert.Contains("remount-rc=", r.Stdout);
        Assert.DoesNotContain("remount-rc=0", r.Stdout);
        Assert.DoesNotContain("bind-rc=0", r.Stdout);
        Assert.DoesNotContain("touch-rc=0", r.Stdout);
        Assert.DoesNotContain("umount-rc=0", r.Stdout);
        Assert.False(File.Exists(Path.Combine(_hostDir, "y")));
    }

    [IntegrationFact]
    public async Task Vetting_RacingThreadNeverRemountsTheProtectedPath()
    {
        string probe = await Probe();
        var r = await _docker.RunRm(["--cap-add", "SYS_ADMIN", "-v", $"{_hostDir}:/mnt:ro", "-v", $"{probe}:/toctou:ro"], "sh", "-c", Sh(
            "mkdir -p /tmp/mine && mount -t tmpfs t /tmp/mine && mount -o remount,ro /tmp/mine || exit 9",
            "/toctou /tmp/mine /mnt 10000"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("attempts=10000", r.Stdout);
        Assert.Contains("escaped=0", r.Stdout);
    }

    [IntegrationFact]
    public async Task Vetting_RefusalsAreLoggedNextToTheState()
    {
        string name = await _docker.RunDetached("vlog", DockerCli.Runtime, ["--cap-add", "SYS_ADMIN", "-v", $"{_hostDir}:/mnt:ro"], "sleep", "60");
        await _docker.Run("exec", name, "mount", "-o", "remount,rw", "/mnt");
        string log = Path.Combine(await _docker.StateDir(name), "refusals.log");
        var lines = File.ReadAllLines(log).Where(l => l.Length > 0).ToList();
        Assert.NotEmpty(lines);
        using var doc = JsonDocument.Parse(lines[^1]);
        Assert.Equal("mount", doc.RootElement.GetProperty("syscall").GetString());
        Assert.Contains("/mnt", lines[^1]);
        Assert.True(doc.RootElement.GetProperty("pid").GetInt32() > 0);
        Assert.False(string.IsNullOrEmpty(doc.RootElement.GetProperty("reason").GetString()));
    }

    [IntegrationFact]
    public async Task Vetting_KilledSupervisorFailsClosed_AndDeleteStillCleansUp()
    {
        string name = await _docker.RunDetached("vkill", DockerCli.Runtime, ["--cap-add", "SYS_ADMIN"], "sleep", "60");
        string stateDir = await _docker.StateDir(name);
        int supervisor = int.Parse(File.ReadAllText(Path.Combine(stateDir, "supervisor.pid")).Trim());
        string id = Path.GetFileName(stateDir);
        Assert.True(Procs.Alive(supervisor));
        System.Diagnostics.Process.GetProcessById(supervisor).Kill();
        Assert.True(await Procs.WaitGone(supervisor), $"the SIGKILLed supervisor lives on: {Procs.Describe(supervisor)}");

        // Both the init's descendants (listener closed) and a new exec (no supervisor to take it) fail.
        var r = await _docker.Run("exec", name, "sh", "-c", "mkdir -p /tmp/m; mount -t tmpfs t /tmp/m; echo rc=$?; grep -c ' /tmp/m ' /proc/self/mountinfo");
        Assert.Contains("rc=", r.Stdout);
        Assert.DoesNotContain("rc=0", r.Stdout);
        Assert.EndsWith("0", r.Stdout.Trim());

        var state = await CliWrap.Cli.Wrap(Repo.Binary).WithArguments(["--root", Path.GetDirectoryName(stateDir)!, "state", id])
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
        Assert.Contains("\"supervisorRunning\": false", state.StandardOutput.Replace("\"supervisorRunning\":false", "\"supervisorRunning\": false"));

        string key = Path.GetFileName(DockerCli.StagingDir(stateDir));
        await _docker.Ok("rm", "-f", name);
        Assert.False(Directory.Exists(stateDir));
        Assert.DoesNotContain(key, File.ReadAllText("/proc/self/mountinfo"));
        Assert.False(File.Exists($"/run/sandbox-runc/sv/{key}.sock"));
    }

    static readonly SemaphoreSlim ProbeLock = new(1, 1);

    /// <summary>The TOCTOU probe, compiled static (the test image has no libc).</summary>
    static async Task<string> Probe()
    {
        string output = Path.Combine(Repo.Root, "artifacts", "toctou");
        await ProbeLock.WaitAsync();
        try
        {
            if (File.Exists(output)) return output;
            string src = Path.Combine(Repo.Root, "tests", "SandboxRunc.Tests", "Vetting", "toctou.c");
            var cc = await CliWrap.Cli.Wrap("cc").WithArguments(["-static", "-O2", "-pthread", "-o", output, src])
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            Assert.True(cc.ExitCode == 0, cc.StandardError);
            return output;
        }
        finally { ProbeLock.Release(); }
    }
}
