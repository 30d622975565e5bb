using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>Nothing of the host leaks in: fds, the runtime binary, ids that would escape the state root.</summary>
public sealed class SafetyTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [IntegrationFact]
    public async Task OnlyStdioReachesTheContainer()
    {
        // busybox ls opens the directory as fd 3 while it lists it: that is the only extra entry allowed.
        using var b = new Bundle("ls", "/proc/self/fd");
        string output = await _rt.RunOk(b.Write(), "fds");
        Assert.Equal(["0", "1", "2", "3"], output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [IntegrationFact]
    public async Task HostFdsOfTheCallerDoNotLeak()
    {
        // The caller has fd 7 open (not close-on-exec) and does not ask for it to be preserved.
        using var b = new Bundle("ls", "/proc/self/fd");
        var r = await _rt.DetachedWith("7</etc/hostname", "run", "--bundle", b.Write(), "fds7");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(["0", "1", "2", "3"], r.ContainerOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [IntegrationFact]
    public async Task PreserveFdsPassesFd3Through()
    {
        using var b = new Bundle("sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; echo; cat <&3");
        string input = Path.Combine(b.Dir, "fd3.txt");
        File.WriteAllText(input, "through fd 3\n");
        var r = await _rt.DetachedWith($"3<'{input}'", "run", "--preserve-fds", "1", "--bundle", b.Write(), "fd3");
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.ContainerOutput.Split('\n');
        Assert.StartsWith("0 1 2 3 ", lines[0]);
        Assert.Equal("through fd 3", lines[1]);
    }

    [IntegrationFact]
    public async Task WithoutPreserveFdsFd3IsClosed()
    {
        using var b = new Bundle("sh", "-c", "cat <&3");
        string input = Path.Combine(b.Dir, "fd3.txt");
        File.WriteAllText(input, "through fd 3\n");
        var r = await _rt.DetachedWith($"3<'{input}'", "run", "--bundle", b.Write(), "fd3closed");
        Assert.NotEqual(0, r.ExitCode);
        Assert.DoesNotContain("through fd 3", r.ContainerOutput);
    }

    [IntegrationFact]
    public async Task InitOfACreatedContainerIsAMemfdNotTheHostBinary()
    {
        using var b = new Bundle("true");
        await _rt.Create(b.Write(), "memfd");
        int pid = await _rt.Pid("memfd");
        string exe = new FileInfo($"/proc/{pid}/exe").LinkTarget!;
        Assert.Contains("memfd:sandbox-runc", exe);
        Assert.NotEqual(Path.GetFullPath(Repo.Binary), exe);
        Assert.DoesNotContain("artifacts", exe);
    }

    [IntegrationTheory]
    [InlineData("../x")]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData("")]
    public async Task InvalidIdsAreRefused(string id)
    {
        using var b = new Bundle("true");
        var r = await _rt.Detached("create", "--bundle", b.Write(), id);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("container id", r.Stderr);
        Assert.Empty(_rt.StateDirs());
        Assert.False(Directory.Exists(Path.Combine(Path.GetDirectoryName(_rt.StateRoot)!, "x")));
    }

    public void Dispose() => _rt.Dispose();
}
