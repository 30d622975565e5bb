using System.Diagnostics;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SystemContainers;

/// <summary>systemd as PID 1 and containerd inside a container under sandbox-runc, with no flag but the runtime.</summary>
[Trait("Category", "SystemContainers")]
public sealed class SystemdAndContainerdTests : IDisposable
{
    readonly DockerCli _docker = new();

    /// <summary>Units that cannot run in any container (README "System containers"): a boot may be "degraded" for these only.</summary>
    /// debugfs, tracefs and configfs cannot be mounted in a user namespace; Debian's units try when the bounding set has
    /// CAP_SYS_RAWIO, which a system container keeps (an inner `docker run --privileged` needs every capability).
    static readonly string[] CannotRunInAContainer = ["sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount"];

    [IntegrationFact]
    public async Task SystemdBootsRunsJournaldAndStopsCleanly()
    {
        string image = await SystemImage.Tag();
        string name = _docker.Name("systemd");
        // The image's command is /sbin/init and its stop signal SIGRTMIN+3; nothing else is asked.
        await _docker.Ok("run", "-d", "--name", name, $"--runtime={DockerCli.Runtime}", "--network=none", image);

        var state = await Eventually.Holds(() => _docker.Run("exec", name, "systemctl", "is-system-running"),
            r => r.Stdout.Trim() is "running" or "degraded", $"systemd in {name} to finish booting", HangLimits.Seconds(60));
        if (state.Stdout.Trim() == "degraded")
        {
            var failed = await _docker.Run("exec", name, "systemctl", "--failed", "--plain", "--no-legend", "--no-pager");
            var units = failed.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).ToList();
            Assert.True(units.All(CannotRunInAContainer.Contains), $"units failed that should run in a container: {failed.Stdout}");
        }

        var journal = await _docker.Ok("exec", name, "journalctl", "-b", "--no-pager", "-o", "cat");
        Assert.Contains("Reached target", journal.Stdout);
        Assert.Contains("Startup finished", journal.Stdout);

        // docker stop waits 10 s before it kills: a clean shutdown by SIGRTMIN+3 is done before. Under emulation (the
        // VM's TCG, hang limits scaled) every step of systemd's shutdown is several times slower, so the grace period
        // is scaled the same way; on a real machine it is docker's default, 10 s.
        var grace = HangLimits.Seconds(10);
        var sw = Stopwatch.StartNew();
        await _docker.Ok("stop", "-t", ((int)grace.TotalSeconds).ToString(), name);
        sw.Stop();
        string exitCode = await _docker.Inspect(name, "{{.State.ExitCode}}");
        if (sw.Elapsed >= grace || exitCode == "137")
        {
            var logs = await _docker.Run("logs", "--tail", "40", name);
            Assert.Fail($"docker stop took {sw.Elapsed.TotalSeconds:0.0} s of {grace.TotalSeconds:0} s, exit code {exitCode} " +
                $"(systemd did not shut down on SIGRTMIN+3); its last console lines:\n{logs.Stdout}{logs.Stderr}");
        }
    }

    [IntegrationFact]
    public async Task ContainerdInsideImportsAndRunsAnImage()
    {
        string image = await SystemImage.Tag();
        string name = _docker.Name("containerd");
        await _docker.Ok("run", "-d", "--name", name, $"--runtime={DockerCli.Runtime}", "--network=none", image, "containerd");
        await Eventually.Holds(() => _docker.Run("exec", name, "ctr", "version"), r => r.ExitCode == 0,
            $"containerd in {name} to answer", HangLimits.Seconds(60));

        var psi = new ProcessStartInfo("sh", ["-c", $"docker save {DockerCli.Image} | docker exec -i {name} ctr image import -"])
            { RedirectStandardOutput = true, RedirectStandardError = true };
        using (var p = Process.Start(psi)!)
        {
            string output = await p.StandardOutput.ReadToEndAsync() + await p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(Patience.Command);
            await p.WaitForExitAsync(cts.Token);
            Assert.True(p.ExitCode == 0, $"ctr image import: exit {p.ExitCode}: {output}");
        }
        string reference = "docker.io/library/" + DockerCli.Image;
        var run = await _docker.Ok("exec", name, "ctr", "run", "--rm", reference, "t1", "echo", "hello from ctr run");
        Assert.Contains("hello from ctr run", run.Stdout);
        var traces = await HostTraces.Of(_docker, name);
        await _docker.Ok("rm", "-f", name);
        await Eventually.Holds(() => Task.FromResult(traces.Left()), l => l.Count == 0,
            $"nothing of {name} left on the host after docker rm -f", show: l => string.Join("\n", l));
    }

    public void Dispose() => _docker.Dispose();
}
