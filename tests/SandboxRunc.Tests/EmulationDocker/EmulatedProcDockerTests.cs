using System.Globalization;
using CliWrap.Buffered;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.EmulationDocker;

/// <summary>
/// The emulated /proc and /sys as docker users see them: the container's own uptime, swaps, sysctls,
/// product_uuid and resource views; many readers at once; nothing left after `docker rm -f`.
/// </summary>
public sealed class EmulatedProcDockerTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    static double HostUptime() => double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);

    [IntegrationFact]
    public async Task Emulation_UptimeIsTheContainersAndSwapsHasOnlyItsHeader()
    {
        var r = await _docker.RunRm([], "sh", "-c", "sleep 2; cat /proc/uptime; echo --; cat /proc/swaps");
        Assert.True(r.ExitCode == 0, r.ToString());
        var parts = r.Stdout.Split("--\n");
        var fields = parts[0].Trim().Split(' ');
        double up = double.Parse(fields[0], CultureInfo.InvariantCulture);
        // At least the 2 s it slept, at most the time `docker run` took in all (however slow the machine).
        Assert.InRange(up, 1.5, r.Elapsed.TotalSeconds + 0.5);
        Assert.Equal(2, fields.Length);
        Assert.True(HostUptime() > up + 5, "host uptime must be larger than the container's for this test to mean anything");
        var swaps = parts[1].Trim().Split('\n');
        Assert.Single(swaps);
        Assert.StartsWith("Filename", swaps[0]);
    }

    [IntegrationFact]
    public async Task Emulation_NonNamespacedSysctlsArePerContainer()
    {
        string hostPanic = File.ReadAllText("/proc/sys/kernel/panic").Trim();
        string hostOvercommit = File.ReadAllText("/proc/sys/vm/overcommit_memory").Trim();
        string a = await _docker.RunDetached("sysa", DockerCli.Runtime, ["--privileged"], "sleep", "60");
        string b = await _docker.RunDetached("sysb", DockerCli.Runtime, ["--privileged"], "sleep", "60");

        await _docker.Ok("exec", a, "sysctl", "-w", "kernel.panic=7");
        string newOvercommit = hostOvercommit == "1" ? "2" : "1";
        await _docker.Ok("exec", a, "sysctl", "-w", $"vm.overcommit_memory={newOvercommit}");
        Assert.Equal("7", (await _docker.Ok("exec", a, "cat", "/proc/sys/kernel/panic")).Stdout.Trim());
        Assert.Equal(newOvercommit, (await _docker.Ok("exec", a, "cat", "/proc/sys/vm/overcommit_memory")).Stdout.Trim());
        Assert.Equal(hostPanic, (await _docker.Ok("exec", b, "cat", "/proc/sys/kernel/panic")).Stdout.Trim());
        Assert.Equal(hostOvercommit, (await _docker.Ok("exec", b, "cat", "/proc/sys/vm/overcommit_memory")).Stdout.Trim());
        Assert.Equal(hostPanic, File.ReadAllText("/proc/sys/kernel/panic").Trim());
        Assert.Equal(hostOvercommit, File.ReadAllText("/proc/sys/vm/overcommit_memory").Trim());

        var bad = await _docker.Run("exec", a, "sysctl", "-w", "vm.overcommit_memory=5");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("Invalid argument", bad.Stderr + bad.Stdout);
        Assert.Equal(newOvercommit, (await _docker.Ok("exec", a, "cat", "/proc/sys/vm/overcommit_memory")).Stdout.Trim());
    }

    [IntegrationFact]
    public async Task Emulation_NamespacedSysctlsChangeOnlyTheContainersNamespace()
    {
        string hostTtl = File.ReadAllText("/proc/sys/net/ipv4/ip_default_ttl").Trim();
        string a = await _docker.RunDetached("neta", DockerCli.Runtime, ["--privileged"], "sleep", "60");
        string b = await _docker.RunDetached("netb", DockerCli.Runtime, ["--privileged"], "sleep", "60");
        string bForward = (await _docker.Ok("exec", b, "cat", "/proc/sys/net/ipv4/ip_forward")).Stdout.Trim();
        string hostForward = File.ReadAllText("/proc/sys/net/ipv4/ip_forward").Trim();

        await _docker.Ok("exec", a, "sysctl", "-w", "net.ipv4.ip_forward=1");
        await _docker.Ok("exec", a, "sysctl", "-w", "net.ipv4.ip_default_ttl=77");
        Assert.Equal("1", (await _docker.Ok("exec", a, "cat", "/proc/sys/net/ipv4/ip_forward")).Stdout.Trim());
        Assert.Equal("77", (await _docker.Ok("exec", a, "cat", "/proc/sys/net/ipv4/ip_default_ttl")).Stdout.Trim());
        // The kernel's own view of A's network namespace, from the host.
        int pidA = int.Parse(await _docker.Inspect(a, "{{.State.Pid}}"));
        var kernel = await CliWrap.Cli.Wrap("nsenter").WithArguments(["--net=/proc/" + pidA + "/ns/net", "cat", "/proc/sys/net/ipv4/ip_default_ttl"])
            .WithValidation(CliWrap.CommandResultValidation.None).ExecuteBufferedAsync();
        Assert.True(kernel.ExitCode == 0, kernel.StandardError);
        Assert.Equal("77", kernel.StandardOutput.Trim());
        Assert.Equal(bForward, (await _docker.Ok("exec", b, "cat", "/proc/sys/net/ipv4/ip_forward")).Stdout.Trim());
        Assert.Equal(hostTtl, (await _docker.Ok("exec", b, "cat", "/proc/sys/net/ipv4/ip_default_ttl")).Stdout.Trim());
        Assert.Equal(hostTtl, File.ReadAllText("/proc/sys/net/ipv4/ip_default_ttl").Trim());
        Assert.Equal(hostForward, File.ReadAllText("/proc/sys/net/ipv4/ip_forward").Trim());
    }

    /// <summary>
    /// product_uuid is bound over the container's sysfs file where the host has one. This VM has no DMI at
    /// all (no /sys/devices/virtual/dmi), so the container has none either, as under runc; the emulated
    /// file is then checked where the runtime mounts it for the container (its staging dir on the host).
    /// </summary>
    [IntegrationFact]
    public async Task Emulation_ProductUuidIsPerContainer_AndKernelDebugIsEmpty()
    {
        const string uuidPath = "sys/devices/virtual/dmi/id/product_uuid";
        string one = await _docker.RunDetached("uuid1", DockerCli.Runtime, [], "sleep", "60");
        string two = await _docker.RunDetached("uuid2", DockerCli.Runtime, [], "sleep", "60");
        async Task<string> Uuid(string name)
        {
            if (File.Exists("/" + uuidPath))
                return (await _docker.Ok("exec", name, "cat", "/" + uuidPath)).Stdout.Trim();
            Assert.NotEqual(0, (await _docker.Run("exec", name, "cat", "/" + uuidPath)).ExitCode);
            return File.ReadAllText($"{DockerCli.StagingDir(await _docker.StateDir(name))}/emu/{uuidPath}").Trim();
        }
        string a = await Uuid(one), b = await Uuid(two);
        Assert.Matches("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", a);
        Assert.NotEqual(a, b);
        Assert.Equal(a, await Uuid(one)); // stable for the container's life
        Assert.Equal("0", (await _docker.Ok("exec", one, "sh", "-c", "ls -A /sys/kernel/debug | wc -l")).Stdout.Trim());
        Assert.Equal("0", (await _docker.Ok("exec", one, "sh", "-c", "find /sys/kernel/debug /sys/kernel/tracing /sys/kernel/security /sys/kernel/config -mindepth 1 | wc -l")).Stdout.Trim());
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task Emulation_ResourceViewsFollowTheLimits()
    {
        var r = await _docker.RunRm(["--memory", "256m", "--cpus", "1"], "sh", "-c",
            "free -m | awk '/^Mem:/ {print $2}'; grep -c ^processor /proc/cpuinfo");
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.Stdout.Trim().Split('\n');
        Assert.Equal("256", lines[0].Trim());
        Assert.Equal("1", lines[1].Trim());

        var c = await _docker.RunRm(["--cpuset-cpus", "0"], "sh", "-c",
            "grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat");
        Assert.True(c.ExitCode == 0, c.ToString());
        Assert.Equal(["1", "1"], c.Stdout.Trim().Split('\n').Select(s => s.Trim()));
    }

    /// <summary>
    /// Behaviour, not speed (readers' throughput is measured by `./build.sh bench`): eight readers in four
    /// containers read the emulated /proc/uptime and /proc/meminfo while a ninth, reading /proc/cpuinfo and
    /// /proc/stat, is SIGKILLed in the middle of its reads. Each reader goes on until the kill is over (a
    /// stop file), so that the reads overlap it by construction. No read fails, no reader hangs (a bound
    /// only a hang exceeds), and every container's /proc still answers afterwards.
    /// </summary>
    [IntegrationFact]
    public async Task Emulation_ManyReadersAcrossContainers_AndAKilledReaderHangsNothing()
    {
        var containers = new List<string>();
        for (int i = 0; i < 4; i++)
            containers.Add(await _docker.RunDetached($"rd{i}", DockerCli.Runtime, [], "sleep", "600"));

        // The victim first: once it is reading, the readers start; it is killed while they read.
        var victim = _docker.Run("exec", containers[0], "sh", "-c", "while :; do cat /proc/cpuinfo /proc/stat >/dev/null; done");
        string victimNs = await PidNamespaceOf(containers[0]) ?? throw new Xunit.Sdk.XunitException($"{containers[0]} has no init");
        bool IsVictim(int pid) => Cmdline(pid)?.Contains("cat /proc/cpuinfo /proc/stat") == true && PidNamespace(pid) == victimNs;
        await Eventually.True(() => HostPids().Any(IsVictim), "the victim reader to run");

        // At least 200 rounds each (400 reads), then on until the stop file appears.
        const string loop = "i=0; while [ $i -lt 200 ] || [ ! -e /tmp/stop ]; do read a b < /proc/uptime || exit 3; read l < /proc/meminfo || exit 4; i=$((i+1)); done; echo done $i";
        var readers = Enumerable.Range(0, 8).Select(i => _docker.Run("exec", containers[i % 4], "sh", "-c", loop)).ToList();
        await Eventually.True(() => HostPids().Count(p => Cmdline(p)?.Contains("read a b < /proc/uptime") == true) >= 8, "the eight readers to run");

        // SIGKILL the victim's shell and the cat it is running: a reader killed in the middle of a read.
        var killed = new List<string>();
        foreach (int pid in HostPids().Where(IsVictim))
        {
            try
            {
                string what = Cmdline(pid) ?? "";
                System.Diagnostics.Process.GetProcessById(pid).Kill();
                killed.Add($"{pid} ({what})");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { } // gone already
        }
        Assert.True(killed.Count > 0, "no victim process was found to kill");
        var v = await victim;
        Assert.True(v.ExitCode != 0, $"the killed reader's docker exec ended with exit 0: {v}");

        foreach (var c in containers) await _docker.Ok("exec", c, "touch", "/tmp/stop");
        var results = await Task.WhenAll(readers);
        for (int i = 0; i < results.Length; i++)
            Assert.True(results[i].ExitCode == 0 && results[i].Stdout.StartsWith("done "),
                $"reader {i} in {containers[i % 4]} (killed: {string.Join(", ", killed)}): {results[i]}{await _docker.Describe(containers[i % 4])}");
        foreach (var c in containers)
        {
            var r = await _docker.Run("exec", c, "sh", "-c", "cat /proc/uptime /proc/cpuinfo /proc/stat >/dev/null && echo ok");
            Assert.True(r.ExitCode == 0 && r.Stdout == "ok\n", $"{c} after the kill: {r}{await _docker.Describe(c)}");
        }
    }

    static IEnumerable<int> HostPids() =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(p => p!.All(char.IsAsciiDigit)).Select(p => int.Parse(p!));

    static string? Cmdline(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>The pid namespace of a process ("pid:[INODE]"; null when it is gone).</summary>
    static string? PidNamespace(int pid)
    {
        try { return new FileInfo($"/proc/{pid}/ns/pid").LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    async Task<string?> PidNamespaceOf(string container) => PidNamespace(int.Parse(await _docker.Inspect(container, "{{.State.Pid}}")));

    [IntegrationFact]
    public async Task Emulation_NothingIsLeftAfterRmF()
    {
        string name = await _docker.RunDetached("gone", DockerCli.Runtime, [], "sleep", "60");
        string stateDir = await _docker.StateDir(name);
        int supervisor = int.Parse(File.ReadAllText(Path.Combine(stateDir, "supervisor.pid")).Trim());
        string staging = DockerCli.StagingDir(stateDir);
        bool Mounted() => File.ReadAllLines("/proc/self/mountinfo").Any(l => l.Contains(" - fuse.sandbox-runc ") && l.Contains(staging));
        Assert.True(Mounted(), "the container has no FUSE mount");
        await _docker.Ok("rm", "-f", name);
        Assert.True(await Procs.WaitGone(supervisor), $"the supervisor outlived docker rm -f: {Procs.Describe(supervisor)}");
        Assert.False(Mounted(), "the container's FUSE mount outlived docker rm -f");
    }
}
