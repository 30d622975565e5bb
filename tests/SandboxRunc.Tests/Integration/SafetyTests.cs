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

    /// <summary>
    /// CVE-2019-5736 with a spec that brings its own mappings: the init runs a sealed memfd copy, so
    /// /proc/[init]/exe can never lead back to the host binary.
    /// </summary>
    [IntegrationFact]
    public async Task InitWithSpecMappingsIsASealedMemfdNotTheHostBinary()
    {
        using var b = new Bundle("true");
        b.Spec.Linux!.Namespaces!.Add(new SandboxRunc.Oci.Namespace { Type = "user" });
        // Outside the host's pool (a spec's own mappings inside it are refused).
        b.Spec.Linux.UidMappings = [new() { ContainerId = 0, HostId = 310000000, Size = 65536 }];
        b.Spec.Linux.GidMappings = [new() { ContainerId = 0, HostId = 310000000, Size = 65536 }];
        await _rt.Create(b.Write(), "memfd");
        int pid = await _rt.Pid("memfd");
        string exe = new FileInfo($"/proc/{pid}/exe").LinkTarget!;
        Assert.Contains("memfd:sandbox-runc", exe);
        Assert.DoesNotContain("artifacts", exe);
    }

    /// <summary>
    /// CVE-2019-5736 with an allocated range: the init is an unprivileged host user (the range base),
    /// and the host binary is root-owned and not writable by others, so it cannot be rewritten.
    /// </summary>
    [IntegrationFact]
    public async Task InitWithAnAllocatedRangeIsAnUnprivilegedHostUser()
    {
        using var b = new Bundle("true");
        await _rt.Create(b.Write(), "unpriv");
        int pid = await _rt.Pid("unpriv");
        var uidLine = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:"));
        var uids = uidLine.Split('\t', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
        Assert.All(uids, u => Assert.True(u >= 100000, $"init runs as host uid {u}: {uidLine}"));
        var mode = File.GetUnixFileMode(Repo.Binary);
        Assert.False(mode.HasFlag(UnixFileMode.OtherWrite) || mode.HasFlag(UnixFileMode.GroupWrite), $"{Repo.Binary} is {mode}");
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
