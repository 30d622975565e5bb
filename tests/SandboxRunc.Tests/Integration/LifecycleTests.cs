using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>The OCI lifecycle on a real bundle: create → created → start → running → exit → stopped → delete.</summary>
public sealed class LifecycleTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task CreateStartExitDelete()
    {
        // Long enough to be seen running after start, under emulation (the VM's TCG) too.
        using var b = new Bundle("sh", "-c", $"sleep {(int)HangLimits.Seconds(2).TotalSeconds}");
        await _rt.Create(b.Write(), "life1");
        Assert.Equal("created", await _rt.Status("life1"));
        await _rt.Ok("start", "life1");
        Assert.Equal("running", await _rt.Status("life1"));
        await _rt.WaitStatus("life1", "stopped");
        await _rt.Ok("delete", "life1");
        var gone = await _rt.Run("state", "life1");
        Assert.NotEqual(0, gone.ExitCode);
        Assert.Contains("does not exist", gone.Stderr);
    }

    [IntegrationFact]
    public async Task RunReturnsTheExitCode()
    {
        using var b = new Bundle("sh", "-c", "echo out; exit 3");
        var r = await _rt.Run("run", "--bundle", b.Write(), "exit3");
        Assert.Equal(3, r.ExitCode);
        Assert.Equal("out\n", r.Stdout);
    }

    /// <summary>A supervisor process per container outlives `create`, runs while the container does, and ends with it.</summary>
    [IntegrationFact]
    public async Task SupervisorRunsAlongTheContainerAndEndsWithIt()
    {
        using var b = new Bundle("sleep", "30");
        await _rt.Create(b.Write(), "sup1");
        string pidFile = Path.Combine(_rt.StateRoot, "sup1", "supervisor.pid");
        for (int i = 0; i < 200 && !File.Exists(pidFile); i++) await Task.Delay(10);
        int sup = int.Parse(File.ReadAllText(pidFile));
        Assert.Contains("supervise", File.ReadAllText($"/proc/{sup}/cmdline"));
        using (var doc = System.Text.Json.JsonDocument.Parse((await _rt.Ok("state", "sup1")).Stdout))
            Assert.True(doc.RootElement.GetProperty("supervisorRunning").GetBoolean());

        await _rt.Ok("start", "sup1");
        await _rt.Ok("kill", "sup1", "KILL");
        await _rt.WaitStatus("sup1", "stopped");
        Assert.True(await Procs.WaitGone(sup), "the supervisor outlived its container");
        await _rt.Ok("delete", "sup1");
    }

    public void Dispose() => _rt.Dispose();
}
