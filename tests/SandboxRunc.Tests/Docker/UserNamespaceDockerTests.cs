using System.Text;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.Integration;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// The user namespace as a docker user sees it (docker CLI, --runtime=sandbox-runc, the installed
/// /usr/local/bin/sandbox-runc): one range per container, files and volumes with their host owners,
/// --privileged kept inside the namespace, and the ranges of removed containers free again.
/// </summary>
public sealed class UserNamespaceDockerTests : IDisposable
{
    const string IdTable = "/run/sandbox-runc/id-ranges.json";
    readonly string _prefix = "srus-" + Guid.NewGuid().ToString("N")[..6];
    readonly List<string> _names = [];
    readonly List<string> _dirs = [];

    static async Task<BufferedCommandResult> Docker(params string[] args)
    {
        using var cts = new CancellationTokenSource(Patience.Command);
        try
        {
            return await CliWrap.Cli.Wrap("docker").WithArguments(args).WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync(Encoding.UTF8, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)} did not finish within {Patience.Command.TotalSeconds:0} s (hung; killed)");
        }
    }

    static async Task<string> DockerOk(params string[] args)
    {
        var r = await Docker(args);
        if (r.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"docker {string.Join(' ', args)}: exit {r.ExitCode}\nstdout: {r.StandardOutput}\nstderr: {r.StandardError}");
        return r.StandardOutput;
    }

    string Name()
    {
        string n = $"{_prefix}-{_names.Count}";
        _names.Add(n);
        return n;
    }

    /// <summary>`docker run --rm --runtime=sandbox-runc [opts] IMAGE args...`.</summary>
    Task<BufferedCommandResult> Run(string[] opts, params string[] args) =>
        Docker(["run", "--rm", "--name", Name(), "--runtime=sandbox-runc", .. opts, Repo.TestImage, .. args]);

    async Task<string> RunOk(string[] opts, params string[] args)
    {
        var r = await Run(opts, args);
        Assert.True(r.ExitCode == 0, $"docker run {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StandardOutput}\n{r.StandardError}");
        return r.StandardOutput;
    }

    async Task<string> RunDetached(params string[] args) =>
        (await DockerOk(["run", "-d", "--name", Name(), "--runtime=sandbox-runc", Repo.TestImage, .. args])).Trim();

    static async Task<long> HostBase(string container)
    {
        int pid = int.Parse((await DockerOk("inspect", "-f", "{{.State.Pid}}", container)).Trim());
        return UserNs.ParseMap(File.ReadAllText($"/proc/{pid}/uid_map")).Base;
    }

    string HostDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "sr-vol-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        _dirs.Add(d);
        return d;
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task UserNamespaceDocker_EachContainerGetsItsOwnRange()
    {
        var (seen, size) = UserNs.ParseMap(await RunOk([], "cat", "/proc/self/uid_map"));
        Assert.Equal(65536, size);
        Assert.True(seen >= 100000, $"base {seen}");

        string sleeper = await RunDetached("sleep", "60");
        long held = await HostBase(sleeper);
        var (other, _) = UserNs.ParseMap(await RunOk([], "cat", "/proc/self/uid_map"));
        Assert.NotEqual(held, other);
        Assert.True(held >= 100000 && other >= 100000);
    }

    [IntegrationFact]
    public async Task UserNamespaceDocker_RootCanChangeItsImageFiles()
    {
        string output = await RunOk([], "sh", "-c", "touch /etc/x && chown 1000 /etc/x && rm /bin/ls && stat -c %u /etc/x && echo ok");
        Assert.Equal("1000\nok\n", output);
    }

    [IntegrationFact]
    public async Task UserNamespaceDocker_VolumeKeepsHostRootAsRoot()
    {
        string dir = HostDir();
        File.WriteAllText(Path.Combine(dir, "f"), "host\n");
        string output = await RunOk(["-v", $"{dir}:/data"], "sh", "-c", "stat -c %u:%g /data/f && echo inside > /data/new && echo wrote");
        Assert.Equal("0:0\nwrote\n", output);
        Assert.Equal("0:0", await UserNs.Owner(Path.Combine(dir, "new")));

        var ro = await Run(["-v", $"{dir}:/data:ro"], "sh", "-c", "stat -c %u /data/f; touch /data/ro-new");
        Assert.NotEqual(0, ro.ExitCode);
        Assert.StartsWith("0\n", ro.StandardOutput);
        Assert.Contains("Read-only file system", ro.StandardError);
        Assert.False(File.Exists(Path.Combine(dir, "ro-new")));
    }

    [IntegrationFact]
    public async Task UserNamespaceDocker_PrivilegedStaysInsideItsNamespace()
    {
        string panicBefore = File.ReadAllText("/proc/sys/kernel/panic");
        var blockDevices = Directory.GetFiles("/dev").Where(d => Path.GetFileName(d) is "vda" or "sda" or "nvme0n1" or "xvda").Select(Path.GetFileName).ToList();
        Assert.NotEmpty(blockDevices);
        string script =
            string.Concat(blockDevices.Select(d => $"test -e /dev/{d} && echo has-{d}; ")) +
            "(echo 13 > /proc/sys/kernel/panic) 2>&1 && echo panic=$(cat /proc/sys/kernel/panic); " +
            "(echo /bin/x > /proc/sys/kernel/modprobe) 2>&1 && echo modprobe-written || echo modprobe-refused; " +
            "grep -E 'Cap(Eff|Bnd)' /proc/self/status; " +
            "ip link add v0 type veth && ip link show v0 >/dev/null && echo veth-ok";
        string output = await RunOk(["--privileged"], "sh", "-c", script);
        Assert.DoesNotContain("has-", output);
        // kernel.panic is emulated per container: the write lands in the container's own value, never the
        // host's; a global entry that is not emulated (kernel.modprobe) stays the host's and refuses writes.
        Assert.Contains("panic=13", output);
        Assert.Contains("modprobe-refused", output);
        // Full = every capability docker knows (dockerd 20.10: up to CAP_AUDIT_READ, 37), all effective.
        var caps = output.Split('\n').Where(l => l.StartsWith("Cap")).ToDictionary(l => l[..6], l => Convert.ToUInt64(l[7..].Trim(), 16));
        Assert.Equal(caps["CapBnd"], caps["CapEff"]);
        Assert.Equal((1UL << 38) - 1, caps["CapEff"] & ((1UL << 38) - 1));
        Assert.Contains("veth-ok", output);
        Assert.Equal(panicBefore, File.ReadAllText("/proc/sys/kernel/panic"));
    }

    [IntegrationFact]
    public async Task UserNamespaceDocker_ConcurrentContainersHoldDisjointRanges()
    {
        var names = Enumerable.Range(0, 20).Select(_ => Name()).ToArray();
        var ids = await Task.WhenAll(names.Select(async n =>
            (await DockerOk("run", "-d", "--name", n, "--runtime=sandbox-runc", Repo.TestImage, "sleep", "60")).Trim()));
        var bases = await Task.WhenAll(names.Select(HostBase));
        Assert.Equal(20, bases.Distinct().Count());
        Assert.All(bases, b => Assert.True(b >= 100000, $"base {b}"));
        var held = UserNs.ReadTable(IdTable).Select(h => h.Id).ToHashSet();
        Assert.All(ids, id => Assert.Contains(id, held));

        await DockerOk(["rm", "-f", .. names]);
        var after = UserNs.ReadTable(IdTable).Select(h => h.Id).ToHashSet();
        Assert.All(ids, id => Assert.DoesNotContain(id, after));
    }

    public void Dispose()
    {
        if (_names.Count > 0) Docker(["rm", "-f", .. _names]).GetAwaiter().GetResult();
        foreach (var d in _dirs) try { Directory.Delete(d, true); } catch { }
    }
}
