using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// `--pid=container:x` and `--ipc=container:x`: the joiner shares x's user namespace (which owns the
/// namespaces it joins), so it can mount its procfs and sees x's processes; both show x's range.
/// </summary>
public sealed class SharedNamespaceDockerTests : IDisposable
{
    readonly DockerCli _docker = new();

    [IntegrationFact]
    public async Task PidAndIpcOfAnotherContainerCanBeJoined()
    {
        string donor = await _docker.RunDetached("donor", DockerCli.Runtime, ["--ipc=shareable"], "sleep", "120");
        string donorMap = (await _docker.Ok("exec", donor, "cat", "/proc/self/uid_map")).Stdout.Trim();

        var pid = await _docker.RunRm([$"--pid=container:{donor}"], "sh", "-c", "cat /proc/self/uid_map; cat /proc/1/cmdline; echo; touch /etc/y && echo wrote");
        Assert.True(pid.ExitCode == 0, pid.ToString());
        var lines = pid.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(donorMap, lines[0].Trim());
        Assert.StartsWith("sleep", lines[1]);
        Assert.Equal("wrote", lines[2]);

        var ipc = await _docker.RunRm([$"--ipc=container:{donor}"], "cat", "/proc/self/uid_map");
        Assert.True(ipc.ExitCode == 0, ipc.ToString());
        Assert.Equal(donorMap, ipc.Stdout.Trim());
    }

    public void Dispose() => _docker.Dispose();
}
