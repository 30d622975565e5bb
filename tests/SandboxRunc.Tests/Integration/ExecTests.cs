using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>`sandbox-runc exec` on a bundle: joins the running container; errors as runc's (exit 255, "exec failed:").</summary>
public sealed class ExecTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    async Task<Bundle> Running(string id, Action<Bundle>? edit = null)
    {
        var b = new Bundle("sleep", "120");
        edit?.Invoke(b);
        await _rt.Create(b.Write(), id);
        await _rt.Ok("start", id);
        return b;
    }

    [IntegrationFact]
    public async Task ExecSharesTheInitsNamespacesAndReturnsTheExitCode()
    {
        using var b = await Running("ex1");
        var r = await _rt.Run("exec", "ex1", "sh", "-c", "cat /proc/self/uid_map; cat /proc/1/cmdline; echo; hostname; exit 4");
        Assert.Equal(4, r.ExitCode);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int init = await _rt.Pid("ex1");
        Assert.Equal(File.ReadAllText($"/proc/{init}/uid_map").Trim(), lines[0].Trim());
        Assert.StartsWith("sleep", lines[1]);
        Assert.Equal(b.Spec.Hostname, lines[2]);
    }

    [IntegrationFact]
    public async Task DetachedExecWritesThePidFileOfTheProcess()
    {
        using var b = await Running("ex2");
        string pidFile = Path.Combine(_rt.StateRoot, "exec.pid");
        var r = await _rt.Detached("exec", "-d", "--pid-file", pidFile, "ex2", "sleep", "30");
        Assert.True(r.ExitCode == 0, r.ToString());
        int pid = int.Parse(File.ReadAllText(pidFile));
        // exec -d returns once the process is set up; its execve follows right after.
        await Eventually.Holds(() => File.ReadAllText($"/proc/{pid}/cmdline"), c => c.StartsWith("sleep"), $"exec'd process {pid} to be sleep",
            show: c => c.Replace('\0', ' '));
        // It is in the container's cgroup like the init.
        int init = await _rt.Pid("ex2");
        Assert.Equal(File.ReadAllText($"/proc/{init}/cgroup"), File.ReadAllText($"/proc/{pid}/cgroup"));
    }

    [IntegrationFact]
    public async Task ProcessFileIsUsedAsIs()
    {
        using var b = await Running("ex3");
        string file = Path.Combine(_rt.StateRoot, "process.json");
        Directory.CreateDirectory(_rt.StateRoot);
        File.WriteAllText(file, """{"args":["sh","-c","echo $GREETING; id -u; pwd"],"env":["GREETING=hello","PATH=/bin"],"cwd":"/tmp","user":{"uid":1000,"gid":1000}}""");
        var r = await _rt.Run("exec", "--process", file, "ex3");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("hello\n1000\n/tmp\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task ExecGetsTheContainersSeccompFilterAndCapabilities()
    {
        using var b = await Running("ex4", b =>
            b.Spec.Linux!.Seccomp = System.Text.Json.JsonSerializer.Deserialize(
                File.ReadAllBytes(Path.Combine(Repo.Fixtures, "seccomp", "docker-default.json")), SandboxRunc.Oci.OciJson.Default.Seccomp));
        var r = await _rt.Run("exec", "ex4", "sh", "-c", "grep CapEff /proc/self/status; unshare -U true");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Operation not permitted", r.Stderr);
        int init = await _rt.Pid("ex4");
        string initCaps = File.ReadLines($"/proc/{init}/status").First(l => l.StartsWith("CapEff:"));
        Assert.Contains(initCaps, r.Stdout);
        var added = await _rt.Run("exec", "--cap", "CAP_SYS_ADMIN", "ex4", "grep", "CapEff", "/proc/self/status");
        ulong eff = Convert.ToUInt64(added.Stdout.Split('\t')[1].Trim(), 16);
        Assert.True((eff & (1UL << 21)) != 0, added.ToString());
    }

    [IntegrationFact]
    public async Task ErrorsAreExecFailedWithStatus255()
    {
        using var b = await Running("ex5");
        var missing = await _rt.Run("exec", "ex5", "nope");
        Assert.Equal(255, missing.ExitCode);
        Assert.Contains("exec failed: exec: \"nope\": executable file not found in $PATH", missing.Stderr);

        var badFile = await _rt.Run("exec", "--process", "/nonexistent/process.json", "ex5");
        Assert.Equal(255, badFile.ExitCode);
        Assert.Contains("/nonexistent/process.json", badFile.Stderr);

        string bad = Path.Combine(_rt.StateRoot, "bad.json");
        File.WriteAllText(bad, "{\"args\": [\"sh\",}");
        var badJson = await _rt.Run("exec", "--process", bad, "ex5");
        Assert.Equal(255, badJson.ExitCode);
        Assert.Contains("bad.json: invalid JSON at line 1", badJson.Stderr);

        await _rt.Ok("kill", "ex5", "KILL");
        await _rt.WaitStatus("ex5", "stopped");
        var stopped = await _rt.Run("exec", "ex5", "true");
        Assert.Equal(255, stopped.ExitCode);
        Assert.Contains("cannot exec in a stopped container: ex5", stopped.Stderr);
    }

    public void Dispose() => _rt.Dispose();
}
