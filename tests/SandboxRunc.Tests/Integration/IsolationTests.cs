using System.Text.Json;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>What a container sees of its limits and walls: cgroup limits, masked and read-only paths, seccomp.</summary>
public sealed class IsolationTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task CgroupLimitsAreVisibleInside()
    {
        // Inside, the container's cgroup namespace shows its own cgroup at /sys/fs/cgroup.
        using var b = new Bundle("sh", "-c", HostCgroups.V2
            ? "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
            : "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us");
        b.Spec.Linux!.Resources!.Memory = new MemoryResources { Limit = 64L << 20 };
        b.Spec.Linux.Resources.Pids = new PidsResources { Limit = 42 };
        b.Spec.Linux.Resources.Cpu = new CpuResources { Quota = 25000, Period = 100000 };
        string output = await _rt.RunOk(b.Write(), "cglimits");
        string[] expected = HostCgroups.V2 ? ["67108864", "42", "25000 100000"] : ["67108864", "42", "25000", "100000"];
        Assert.Equal(expected, output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(Directory.Exists(b.CgroupDir("memory")), "run left its memory cgroup behind");
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task PidsLimitIsEnforced()
    {
        using var b = new Bundle("sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done");
        b.Spec.Linux!.Resources!.Pids = new PidsResources { Limit = 4 };
        var r = await _rt.Run("run", "--bundle", b.Write(), "cgpids");
        Assert.Contains("can't fork: Resource temporarily unavailable", r.Stdout + r.Stderr);
    }

    [IntegrationFact]
    public async Task MaskedPathsAreEmpty()
    {
        using var b = new Bundle("sh", "-c",
            "echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c); echo keys=$(cat /proc/keys 2>/dev/null | wc -c); echo firmware=$(ls -A /sys/firmware | wc -l)");
        string output = await _rt.RunOk(b.Write(), "masked");
        Assert.Contains("kcore=0\n", output);
        Assert.Contains("keys=0\n", output);
        Assert.Contains("firmware=0\n", output);
    }

    [IntegrationFact]
    public async Task WithoutMaskingTheSamePathsHaveContent()
    {
        // The control for MaskedPathsAreEmpty: the same checks see content when nothing is masked.
        using var b = new Bundle("sh", "-c", "echo keys=$(cat /proc/keys 2>/dev/null | wc -c); echo firmware=$(ls -A /sys/firmware | wc -l)");
        b.Spec.Linux!.MaskedPaths = [];
        string output = await _rt.RunOk(b.Write(), "unmasked");
        Assert.DoesNotContain("firmware=0\n", output);
    }

    [IntegrationFact]
    public async Task ReadonlyPathsRefuseWrites()
    {
        // This VM's kernel has no CONFIG_MAGIC_SYSRQ (no /proc/sysrq-trigger): the default readonlyPaths
        // are checked with /proc/bus and /proc/fs; sysrq-trigger (written "h": print help, harmless) only
        // where it exists. /proc/sys is emulated and not read-only: there the emulation refuses a write by
        // a process without the capability it needs (no CAP_SYS_ADMIN in the default spec).
        string script = "grep ' /proc/fs ' /proc/self/mountinfo; echo x > /proc/sys/kernel/domainname; echo domainname=$(cat /proc/sys/kernel/domainname)";
        if (File.Exists("/proc/sysrq-trigger")) script += "; echo h > /proc/sysrq-trigger";
        using var b = new Bundle("sh", "-c", script);
        var r = await _rt.Run("run", "--bundle", b.Write(), "rosys");
        Assert.Matches(@" /proc/fs ro,", r.Stdout);
        Assert.Contains("write error: Operation not permitted", r.Stderr);
        Assert.DoesNotContain("domainname=x", r.Stdout);
        if (File.Exists("/proc/sysrq-trigger"))
            Assert.Contains("can't create /proc/sysrq-trigger: Read-only file system", r.Stderr);
    }

    [IntegrationFact]
    public async Task ReadonlyFileInAWritableRoot()
    {
        using var b = new Bundle("sh", "-c", "touch /y && echo y-ok; echo x >> /etc/group").WritableRootfs();
        b.Spec.Linux!.ReadonlyPaths = [.. b.Spec.Linux.ReadonlyPaths!, "/etc/group"];
        var r = await _rt.Run("run", "--bundle", b.Write(), "rofile");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("y-ok", r.Stdout);
        Assert.Contains("Read-only file system", r.Stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(Repo.Rootfs, "etc", "group")), File.ReadAllText(Path.Combine(b.Dir, "rootfs", "etc", "group")));
    }

    [IntegrationFact]
    public async Task ReadonlyRootRefusesWrites()
    {
        using var b = new Bundle("touch", "/x");
        var r = await _rt.Run("run", "--bundle", b.Write(), "roroot");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Read-only file system", r.Stderr);
        Assert.False(File.Exists(Path.Combine(Repo.Rootfs, "x")));
    }

    [IntegrationFact]
    public async Task WritableRootAcceptsWrites()
    {
        using var b = new Bundle("touch", "/x").WritableRootfs();
        await _rt.RunOk(b.Write(), "rwroot");
        Assert.True(File.Exists(Path.Combine(b.Dir, "rootfs", "x")));
    }

    static SandboxRunc.Oci.Seccomp DockerDefault() =>
        JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(Repo.Fixtures, "seccomp", "docker-default.json")), OciJson.Default.Seccomp)!;

    [IntegrationFact]
    public async Task DockerDefaultSeccompBlocksUnshareButNotNormalCommands()
    {
        using var b = new Bundle("sh", "-c", "echo hello; ls / >/dev/null && echo ls-ok; unshare -U true; echo unshare=$?");
        b.Spec.Linux!.Seccomp = DockerDefault();
        var r = await _rt.Run("run", "--bundle", b.Write(), "seccomp1");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("hello\n", r.Stdout);
        Assert.Contains("ls-ok\n", r.Stdout);
        Assert.Contains("unshare=1", r.Stdout);
        Assert.Contains("Operation not permitted", r.Stderr);
    }

    [IntegrationFact]
    public async Task WithoutSeccompUnshareWorks()
    {
        // The control: the same container without the profile may create a user namespace.
        using var b = new Bundle("sh", "-c", "unshare -U true; echo unshare=$?");
        string output = await _rt.RunOk(b.Write(), "seccomp0");
        Assert.Contains("unshare=0", output);
    }

    public void Dispose() => _rt.Dispose();
}
