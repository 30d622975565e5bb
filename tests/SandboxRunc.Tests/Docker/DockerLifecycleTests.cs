using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// Detached containers through dockerd: logs, wait, stop, kill, restart. Stop behaviour depends on busybox
/// sh being PID 1 (a signal without a handler is ignored by a namespace's init), so the stop tests run the
/// same scenario under runc as the reference.
/// </summary>
public sealed class DockerLifecycleTests : IDisposable
{
    readonly DockerCli _docker = new();

    const string IgnoresTerm = "trap '' TERM; echo ready; while true; do sleep 0.1; done";
    const string HandlesTerm = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done";

    [IntegrationFact]
    public async Task DetachedOutputShowsInLogsAndWaitReturnsTheStatus()
    {
        string name = await _docker.RunDetached("logs", DockerCli.Runtime, [], "sh", "-c", "echo out; echo err >&2; exit 4");
        var wait = await _docker.Ok("wait", name);
        Assert.Equal("4", wait.Stdout.Trim());
        var logs = await _docker.Ok("logs", name);
        Assert.Equal("out\n", logs.Stdout);
        Assert.Equal("err\n", logs.Stderr);
        Assert.Equal("4", await _docker.Inspect(name, "{{.State.ExitCode}}"));
    }

    [IntegrationTheory]
    [InlineData("runc")]
    [InlineData(DockerCli.Runtime)]
    public async Task StopKillsAContainerThatIgnoresTermAfterTheTimeout(string runtime)
    {
        string name = await _docker.RunDetached("stopterm", runtime, [], "sh", "-c", IgnoresTerm);
        await _docker.WaitForLog(name, "ready");
        // Stop waits the grace period, then kills (137); that it returns at all is the command's hang bound.
        var stop = await _docker.Ok("stop", "-t", "2", name);
        Assert.True(stop.Elapsed >= TimeSpan.FromSeconds(2), $"{runtime}: stop returned early: {stop}");
        Assert.Equal("137", await _docker.Inspect(name, "{{.State.ExitCode}}"));
        Assert.Equal("false", await _docker.Inspect(name, "{{.State.Running}}"));
    }

    [IntegrationTheory]
    [InlineData("runc")]
    [InlineData(DockerCli.Runtime)]
    public async Task StopEndsAContainerThatHandlesTermQuicklyWithItsStatus(string runtime)
    {
        string name = await _docker.RunDetached("stopok", runtime, [], "sh", "-c", HandlesTerm);
        await _docker.WaitForLog(name, "ready");
        // The trap's exit 0 is the proof that TERM reached it: after the grace period docker would SIGKILL (137).
        var stop = await _docker.Ok("stop", "-t", "60", name);
        string exit = await _docker.Inspect(name, "{{.State.ExitCode}}");
        Assert.True(exit == "0", $"{runtime}: the TERM trap did not end it (exit {exit}): {stop}{await _docker.Describe(name)}");
    }

    [IntegrationFact]
    public async Task KillDefaultsToSigkillAnd137()
    {
        string name = await _docker.RunDetached("kill", DockerCli.Runtime, [], "sh", "-c", IgnoresTerm);
        await _docker.WaitForLog(name, "ready");
        await _docker.Ok("kill", name);
        Assert.Equal("137", (await _docker.Ok("wait", name)).Stdout.Trim());
    }

    [IntegrationFact]
    public async Task KillWithUsr1ReachesTheTrapAndTheContainerKeepsRunning()
    {
        string name = await _docker.RunDetached("usr1", DockerCli.Runtime, [], "sh", "-c",
            "trap 'echo got usr1' USR1; echo ready; while true; do sleep 0.1; done");
        await _docker.WaitForLog(name, "ready");
        await _docker.Ok("kill", "-s", "USR1", name);
        await _docker.WaitForLog(name, "got usr1");
        Assert.Equal("true", await _docker.Inspect(name, "{{.State.Running}}"));
    }

    [IntegrationFact]
    public async Task RestartStartsTheContainerAgain()
    {
        string name = await _docker.RunDetached("restart", DockerCli.Runtime, [], "sh", "-c", HandlesTerm.Replace("echo ready", "echo started"));
        await _docker.WaitForLog(name, "started");
        string firstStart = await _docker.Inspect(name, "{{.State.StartedAt}}");
        string firstPid = await _docker.Inspect(name, "{{.State.Pid}}");
        await _docker.Ok("restart", "-t", "5", name);
        Assert.Equal("true", await _docker.Inspect(name, "{{.State.Running}}"));
        Assert.NotEqual(firstStart, await _docker.Inspect(name, "{{.State.StartedAt}}"));
        Assert.NotEqual(firstPid, await _docker.Inspect(name, "{{.State.Pid}}"));
        await Eventually.Holds(() => _docker.Ok("logs", name), l => l.Stdout.Split('\n').Count(l => l == "started") == 2,
            "the restarted container to run its command again (\"started\" twice in its logs)");
    }

    public void Dispose() => _docker.Dispose();
}
