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
        // The program runs until told to exit (a file in a host dir bound in), however slow the machine.
        string control = Path.Combine(Path.GetTempPath(), "sr-life-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(control);
        try
        {
            using var b = new Bundle("sh", "-c", "while [ ! -e /control/exit ]; do sleep 0.05; done");
            b.Spec.Mounts!.Add(new SandboxRunc.Oci.Mount { Destination = "/control", Type = "bind", Source = control, Options = ["rbind", "ro"] });
            await _rt.Create(b.Write(), "life1");
            Assert.Equal("created", await _rt.Status("life1"));
            await _rt.Ok("start", "life1");
            Assert.Equal("running", await _rt.Status("life1"));
            File.WriteAllText(Path.Combine(control, "exit"), "");
            await _rt.WaitStatus("life1", "stopped");
            await _rt.Ok("delete", "life1");
            var gone = await _rt.Run("state", "life1");
            Assert.NotEqual(0, gone.ExitCode);
            Assert.Contains("does not exist", gone.Stderr);
        }
        finally { Directory.Delete(control, true); }
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
        int sup = await Eventually.Holds(() => int.Parse(File.ReadAllText(pidFile)), p => p > 0, $"{pidFile} to name the supervisor");
        Assert.Contains("supervise", File.ReadAllText($"/proc/{sup}/cmdline"));
        using (var doc = System.Text.Json.JsonDocument.Parse((await _rt.Ok("state", "sup1")).Stdout))
            Assert.True(doc.RootElement.GetProperty("supervisorRunning").GetBoolean());

        await _rt.Ok("start", "sup1");
        await _rt.Ok("kill", "sup1", "KILL");
        await _rt.WaitStatus("sup1", "stopped");
        Assert.True(await Procs.WaitGone(sup), $"the supervisor outlived its container: {Procs.Describe(sup)}");
        await _rt.Ok("delete", "sup1");
    }

    public void Dispose() => _rt.Dispose();
}
