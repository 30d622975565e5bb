// The emulation helper runs as host root outside the container: a container must not be able to make it
// grow without bound (seen: 200 opens and 300 stats of /sys/kernel/btf/vmlinux grew it to 4 GB), and what
// it does make it use is charged to that container. Bundle-level, with the published binary.
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Escape;

public sealed class EmulationMemoryTests(ITestOutputHelper output) : IDisposable
{
    readonly RuntimeCli _rt = new();

    /// <summary>The stated cap on the helper's resident memory, whatever a container does.</summary>
    const long RssCapKb = 64 * 1024;
    const int AttackSeconds = 30;

    /// <summary>
    /// Everything at once for 30 s: 300 handles held open on the largest mirrored file (and as many snapshots
    /// of /proc/meminfo), thousands of stats of it, endless readers of it and of the generated files, writes
    /// of 128 KiB values, thousands of distinct lookups, and walks of large mirrored trees.
    /// </summary>
    static string Attack(string big) => $$"""
        end=$(( $(cut -d. -f1 /proc/uptime) + {{AttackSeconds}} ))
        alive() { [ $(cut -d. -f1 /proc/uptime) -lt $end ]; }
        i=0; while [ $i -lt 300 ]; do (exec 3<{{big}} 4</proc/meminfo; while alive; do sleep 1; done) & i=$((i+1)); done
        (while alive; do i=0; while [ $i -lt 1000 ]; do [ -e {{big}} ]; i=$((i+1)); done; done) &
        for r in 1 2 3; do (while alive; do cat {{big}} >/dev/null; cat /proc/meminfo /proc/cpuinfo /proc/stat /proc/uptime >/dev/null; done) & done
        (while alive; do head -c 131072 /dev/zero | tr '\0' '7' > /proc/sys/kernel/panic; head -c 131072 /dev/zero | tr '\0' '1' > /proc/sys/net/ipv4/ip_forward; done) 2>/dev/null &
        (n=0; while alive; do [ -e /proc/sys/kernel/nope$n ]; [ -e /sys/kernel/nope$n ]; cat /proc/sys/kernel/x$n 2>/dev/null; n=$((n+1)); done) &
        (while alive; do ls -R /sys/kernel /proc/sys >/dev/null 2>&1; done) &
        wait
        echo attack-done
        """;

    [IntegrationFact]
    public async Task HelperMemoryStaysBounded_AndIsChargedToTheContainerOnV1()
    {
        const string big = "/sys/kernel/btf/vmlinux";
        if (!File.Exists(big) || new FileInfo(big).Length < 1 << 20)
        {
            output.WriteLine($"no large sysfs binary attribute at {big}: the attack uses it if there, skipped otherwise");
            return;
        }
        using var b = EmulationHelper.DockerLike(["sleep", "1000"], "CAP_SYS_ADMIN", "CAP_NET_ADMIN");
        b.Spec.Linux!.Resources!.Memory = new MemoryResources { Limit = 256L << 20 };
        await _rt.Create(b.Write(), "memattack");
        await _rt.Ok("start", "memattack");
        int helper = EmulationHelper.HelperPid(_rt, "memattack");
        string cgroup = EmulationHelper.MemoryCgroupDir(b);
        long startRss = EmulationHelper.RssKb(helper);
        long startAnon = EmulationHelper.AnonBytes(cgroup);

        // v1: the helper is charged to the container's memory cgroup, that hierarchy only. v2: it stays out of the
        // container's tree (its threads would count in the container's pids), bounded by its own caps alone.
        string container = "/" + b.Spec.Linux.CgroupsPath!.Trim('/');
        if (EmulationHelper.CgroupV2)
            Assert.False(EmulationHelper.MemoryCgroupOf(helper).StartsWith(container, StringComparison.Ordinal), "the helper is in the container's v2 cgroup tree");
        else
            Assert.Equal(container, EmulationHelper.MemoryCgroupOf(helper));
        var ps = await _rt.Ok("ps", "--format", "json", "memattack");
        Assert.DoesNotContain(helper.ToString(), ps.Stdout.Trim('[', ']', '\n').Split(','));
        if (!EmulationHelper.CgroupV2)
            Assert.DoesNotContain(helper.ToString(), File.ReadAllText(b.CgroupDir("pids") + "/cgroup.procs").Split('\n'));

        var attack = _rt.Run("exec", "memattack", "sh", "-c", Attack(big));
        long maxRss = startRss;
        var samples = new List<long>();
        while (!attack.IsCompleted)
        {
            long rss = EmulationHelper.RssKb(helper);
            maxRss = Math.Max(maxRss, rss);
            samples.Add(rss);
            await Task.WhenAny(attack, Task.Delay(250));
        }
        var r = await attack;
        long endAnon = EmulationHelper.AnonBytes(cgroup);
        // Still serving, and still the same process.
        Assert.Equal(helper, EmulationHelper.HelperPid(_rt, "memattack"));
        var after = await _rt.Run("exec", "memattack", "sh", "-c", "head -1 /proc/meminfo; cat " + big + " | wc -c");
        output.WriteLine($"helper RSS: start {startRss} KiB, max {maxRss} KiB (cap {RssCapKb} KiB), end {EmulationHelper.RssKb(helper)} KiB over {samples.Count} samples");
        output.WriteLine($"container anon memory (memory.stat): before {startAnon / 1024} KiB, after the attack {endAnon / 1024} KiB");
        output.WriteLine($"attack: {r.ExitCode} {r.Stdout.Trim()} | after: {after.Stdout.Trim().Replace('\n', ' ')}");

        Assert.Contains("attack-done", r.Stdout);
        Assert.True(maxRss <= RssCapKb, $"the helper reached {maxRss} KiB RSS, above the {RssCapKb} KiB cap");
        Assert.Equal(0, after.ExitCode);
        Assert.StartsWith("MemTotal:         262144 kB", after.Stdout);
        Assert.EndsWith("\n" + new FileInfo(big).Length + "\n", after.Stdout);   // sendfile through the page cache sees it whole
        // The attackers are gone; what stays charged to the container is what the helper grew by after joining it (v1).
        if (!EmulationHelper.CgroupV2)
            Assert.True(endAnon > startAnon, $"the container's cgroup shows no cost: anon {startAnon} -> {endAnon} bytes");
    }

    [OomScoreFact]
    public async Task ATinyMemoryLimitStillReadsItsEmulatedFiles()
    {
        // docker allows --memory 6m: the helper's start-up is not charged to it, only what it grows by.
        using var b = new Bundle("sh", "-c",
            "head -1 /proc/meminfo; i=0; while [ $i -lt 200 ]; do cat /proc/meminfo /proc/stat /proc/cpuinfo /proc/uptime >/dev/null || exit 1; i=$((i+1)); done; echo loops-ok");
        b.Spec.Linux!.Resources!.Memory = new MemoryResources { Limit = 6L << 20 };
        var r = await _rt.Run("run", "--bundle", b.Write(), "tinymem");
        output.WriteLine(r.ToString());
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("MemTotal:           6144 kB\nloops-ok\n", r.Stdout);
    }

    public void Dispose() => _rt.Dispose();
}
