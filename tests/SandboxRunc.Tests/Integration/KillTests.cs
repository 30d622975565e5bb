using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>`kill`: signal names and numbers, --all, and the errors users see.</summary>
public sealed class KillTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    // The container's init is pid 1 of its namespace: the kernel only delivers signals it has a handler for
    // (SIGKILL/SIGSTOP aside), so the scripts trap the signal they expect.
    async Task<RuntimeCli.Result> Started(Bundle b, string id)
    {
        var r = await _rt.Create(b.Write(), id);
        await _rt.Ok("start", id);
        return r;
    }

    static Task WaitForOutput(RuntimeCli.Result r, string text) =>
        Eventually.Holds(() => r.ContainerOutput, o => o.Contains(text), $"the container to print \"{text}\"");

    [IntegrationFact]
    public async Task DefaultSignalIsSigterm()
    {
        using var b = new Bundle("sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done");
        var r = await Started(b, "kterm");
        await WaitForOutput(r, "ready");
        await _rt.Ok("kill", "kterm");
        await _rt.WaitStatus("kterm", "stopped");
        Assert.Contains("got-term", r.ContainerOutput);
    }

    [IntegrationTheory]
    [InlineData("KILL")]
    [InlineData("SIGKILL")]
    [InlineData("9")]
    [InlineData("kill")]
    public async Task SigkillByNameOrNumber(string signal)
    {
        using var b = new Bundle("sleep", "100");
        await Started(b, "kkill");
        Assert.Equal("running", await _rt.Status("kkill"));
        await _rt.Ok("kill", "kkill", signal);
        await _rt.WaitStatus("kkill", "stopped");
    }

    [IntegrationFact]
    public async Task Sigusr1ReachesTheTrap()
    {
        using var b = new Bundle("sh", "-c", "trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.1; done");
        var r = await Started(b, "kusr1");
        await WaitForOutput(r, "ready");
        await _rt.Ok("kill", "kusr1", "SIGUSR1");
        await _rt.WaitStatus("kusr1", "stopped");
        Assert.Equal("ready\ngot\n", r.ContainerOutput);
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task KillAllReachesEveryProcessInTheCgroup()
    {
        using var b = new Bundle("sh", "-c", "sleep 100 & sleep 100 & echo ready; wait");
        var r = await Started(b, "kall");
        await WaitForOutput(r, "ready");
        string procs = Path.Combine(b.CgroupDir("pids"), "cgroup.procs");
        var pids = File.ReadAllLines(procs).Where(l => l.Length > 0).Select(int.Parse).ToList();
        if (pids.Count != 3)
        {
            int init = await _rt.Pid("kall");
            string where = init > 0 && File.Exists($"/proc/{init}/cgroup") ? $"the init ({init}) is in {File.ReadAllText($"/proc/{init}/cgroup").Trim()}"
                : $"the container is {await _rt.Status("kall")}";
            Assert.Fail($"{procs} lists {pids.Count} processes, not the init and its two sleeps; {where}; its output: {r.ContainerOutput}");
        }
        await _rt.Ok("kill", "--all", "kall", "KILL");
        await _rt.WaitStatus("kall", "stopped");
        await Eventually.Holds(() => File.ReadAllText(procs).Trim(), p => p == "", $"{procs} to empty");
        foreach (int pid in pids) Assert.True(await Procs.WaitGone(pid), $"pid {pid} survived kill --all: {Procs.Describe(pid)}");
    }

    [IntegrationTheory]
    [InlineData("SIGFOO")]
    [InlineData("NOTASIGNAL")]
    [InlineData("99")]
    [InlineData("-3")]
    public async Task BadSignalIsRefused(string signal)
    {
        using var b = new Bundle("sleep", "100");
        await Started(b, "kbad");
        var r = await _rt.Run("kill", "kbad", signal);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("signal", r.Stderr);
        Assert.Contains(signal.TrimStart('-'), r.Stderr);
        Assert.Equal("running", await _rt.Status("kbad"));
    }

    [IntegrationFact]
    public async Task KillOfAStoppedContainerFails()
    {
        using var b = new Bundle("true");
        await Started(b, "kstopped");
        await _rt.WaitStatus("kstopped", "stopped");
        var r = await _rt.Run("kill", "kstopped", "KILL");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("not running", r.Stderr);
    }

    [IntegrationFact]
    public async Task KillOfAnUnknownContainerFails()
    {
        var r = await _rt.Run("kill", "nosuchcontainer");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("does not exist", r.Stderr);
    }

    public void Dispose() => _rt.Dispose();
}
