using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>`run`: the exit status of the container's program becomes ours; --detach; --no-pivot; --pid-file.</summary>
public sealed class RunTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [IntegrationTheory]
    [InlineData("exit 0", 0)]
    [InlineData("exit 3", 3)]
    [InlineData("exit 255", 255)]
    public async Task ExitCodeOfTheProgram(string script, int expected)
    {
        using var b = new Bundle("sh", "-c", script);
        var r = await _rt.Run("run", "--bundle", b.Write(), "rexit");
        Assert.Equal(expected, r.ExitCode);
        Assert.Empty(_rt.StateDirs());
    }

    [IntegrationFact]
    public async Task KilledBySigkillExits137()
    {
        using var b = new Bundle("sleep", "100");
        var run = _rt.Run("run", "--bundle", b.Write(), "r137");
        await Eventually.Holds(() => _rt.Run("state", "r137"), s => s.ExitCode == 0 && s.Stdout.Contains("\"running\""),
            "container r137 to be running");
        await _rt.Ok("kill", "r137", "KILL");
        var r = await run;
        Assert.Equal(137, r.ExitCode);
        Assert.Empty(_rt.StateDirs());
    }

    [IntegrationFact]
    public async Task DetachReturnsWhileTheContainerRuns()
    {
        using var b = new Bundle("sh", "-c", "echo started; sleep 100");
        var r = await _rt.Detached("run", "--detach", "--bundle", b.Write(), "rdetach");
        Assert.True(r.ExitCode == 0, r.ToString());
        // Returned while the container runs: a run that waited for it would have found it stopped.
        Assert.Equal("running", await _rt.Status("rdetach"));
        await Eventually.Holds(() => r.ContainerOutput, o => o.Contains("started"), "the container to print \"started\"");
        Assert.Equal("started\n", r.ContainerOutput);
        await _rt.Ok("kill", "rdetach", "KILL");
        await _rt.WaitStatus("rdetach", "stopped");
        await _rt.Ok("delete", "rdetach");
        Assert.Empty(_rt.StateDirs());
    }

    [IntegrationFact]
    public async Task NoPivotRuns()
    {
        using var b = new Bundle("sh", "-c", "ls /bin/busybox && cat /etc/hostname 2>/dev/null; echo pivot-ok");
        var r = await _rt.Run("run", "--no-pivot", "--bundle", b.Write(), "rnopivot");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("/bin/busybox", r.Stdout);
        Assert.Contains("pivot-ok", r.Stdout);
    }

    [IntegrationFact]
    public async Task PidFileHoldsTheInitPid()
    {
        using var b = new Bundle("sleep", "100");
        string pidFile = Path.Combine(b.Dir, "init.pid");
        await _rt.Create(b.Write(), "rpidfile", "--pid-file", pidFile);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim());
        Assert.Equal(await _rt.Pid("rpidfile"), pid);
        Assert.True(Procs.Alive(pid));
        await _rt.Ok("delete", "--force", "rpidfile");
        Assert.True(await Procs.WaitGone(pid), $"init {pid} survived delete --force");
    }

    public void Dispose() => _rt.Dispose();
}
