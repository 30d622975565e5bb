using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.Escape;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.CgroupV2;

/// <summary>
/// What docker users get from the container's cgroup, checked on the host where the engine's cgroup driver
/// put it (cgroupfs: docker/ID; systemd: system.slice/docker-ID.scope) and on v1 and v2 alike: limits
/// that reach the kernel, device rules that hold, nothing left after `rm -f`, limits the container cannot
/// lift. Run on the host's hierarchy by `./build.sh test` and in the cgroup v2 VM under both drivers.
/// </summary>
[Trait("Category", "CgroupV2")]
[SupportedOSPlatform("linux")]
public sealed class CgroupDockerTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    async Task<int> Pid(string name) => int.Parse(await _docker.Inspect(name, "{{.State.Pid}}"));

    /// <summary>systemd runs the host (PID 1): units can be listed.</summary>
    static bool Systemd => Directory.Exists("/run/systemd/system");

    /// <summary>The transient units systemd knows (loaded, whatever their state).</summary>
    static async Task<string> ScopeUnits()
    {
        var (rc, stdout, stderr) = await EscapeHost.Try("systemctl", "list-units", "--type=scope", "--all", "--no-legend", "--plain");
        Assert.True(rc == 0, $"systemctl list-units failed: {stderr}");
        return stdout;
    }

    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task RmFLeavesNoCgroupAndNoScope()
    {
        string name = await _docker.RunDetached("cgrm", DockerCli.Runtime, ["--memory", "64m"], "sleep", "100");
        string id = await _docker.Inspect(name, "{{.Id}}");
        string dir = HostCgroups.OfProcess(await Pid(name), "memory");
        Assert.True(Directory.Exists(dir), $"the container's cgroup {dir} does not exist while it runs");
        Assert.Contains(id, dir);
        bool scope = dir.EndsWith(".scope", StringComparison.Ordinal);
        if (scope) Assert.Contains(id, await ScopeUnits());

        await _docker.Ok("rm", "-f", name);
        for (var end = DateTime.UtcNow + HangLimits.Seconds(10); Directory.Exists(dir) && DateTime.UtcNow < end;) await Task.Delay(100);
        Assert.False(Directory.Exists(dir), $"docker rm -f left the cgroup {dir}");
        if (Systemd)
            Assert.DoesNotContain(id, await ScopeUnits());
        if (!HostCgroups.V2)
            foreach (var controller in new[] { "pids", "cpu", "blkio", "devices", "freezer" })
                Assert.False(Directory.Exists(dir.Replace("/memory/", $"/{controller}/")), $"docker rm -f left the {controller} cgroup");
    }

    /// <summary>
    /// The emulated /proc files read the container's cgroup (v1 or v2, whatever the driver): meminfo's total
    /// is the memory limit and its free part shrinks with what the container holds; cpuinfo and stat list
    /// one processor for --cpus 1. `free` would not show it: it asks sysinfo(2), answered apart.
    /// </summary>
    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task TheEmulatedProcFilesShowTheCgroupsLimits()
    {
        string name = await _docker.RunDetached("procv2", DockerCli.Runtime, ["--memory", "256m", "--cpus", "1", "--shm-size", "128m"], "sleep", "100");
        async Task<long> Kb(string key) =>
            long.Parse((await _docker.Ok("exec", name, "sh", "-c", $"awk '/^{key}:/ {{print $2}}' /proc/meminfo")).Stdout.Trim());
        Assert.Equal(256 * 1024, await Kb("MemTotal"));
        long freeBefore = await Kb("MemFree");
        // 64 MiB held in a tmpfs file (shmem is charged to the container's memory cgroup).
        await _docker.Ok("exec", name, "sh", "-c", "mkdir -p /dev/shm/x && head -c 64m /dev/zero > /dev/shm/x/f");
        long freeAfter = await Kb("MemFree");
        Assert.True(freeBefore - freeAfter >= 60 * 1024, $"MemFree went from {freeBefore} to {freeAfter} kB after 64 MiB were held");
        var cpus = await _docker.Ok("exec", name, "sh", "-c", "grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat");
        Assert.Equal("1\n1\n", cpus.Stdout);
    }

    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task CpusetCpusConfinesTheContainer()
    {
        Assert.True(Environment.ProcessorCount >= 2, "this test needs a host with at least 2 CPUs to mean anything");
        string name = await _docker.RunDetached("cpuset", DockerCli.Runtime, ["--cpuset-cpus", "0"], "sleep", "100");
        string dir = HostCgroups.OfProcess(await Pid(name), "cpuset");
        Assert.Equal("0", HostCgroups.Read(dir, "cpuset.cpus"));
        if (HostCgroups.V2) Assert.Equal("0", HostCgroups.Read(dir, "cpuset.cpus.effective"));
        // nproc counts the CPUs the kernel lets the process run on (sched_getaffinity).
        Assert.Equal("1", (await _docker.Ok("exec", name, "nproc")).Stdout.Trim());
    }

    [Trait("Category", "CgroupDriver")]
    [EscapeFact(Needs.RootBlockDevice)]
    public async Task DeviceReadBpsThrottlesTheDevice()
    {
        var dev = EscapeHost.RootDevice()!;
        string name = await _docker.RunDetached("rbps", DockerCli.Runtime, ["--device-read-bps", $"{dev.Path}:1mb"], "sleep", "100");
        string dir = HostCgroups.OfProcess(await Pid(name), "blkio");
        if (HostCgroups.V2)
            Assert.Contains(File.ReadAllLines(Path.Combine(dir, "io.max")), l => l.StartsWith($"{dev.Major}:{dev.Minor} rbps=1048576 ", StringComparison.Ordinal));
        else
            Assert.Contains($"{dev.Major}:{dev.Minor} 1048576", File.ReadAllLines(Path.Combine(dir, "blkio.throttle.read_bps_device")));
    }

    /// <summary>
    /// `--device /dev/fuse:/dev/fuse:r`: the node opens for reading and not for writing (docker's own rules
    /// do not list c 10:229; they do list /dev/null rwm, which is why a read-only /dev/null stays writable
    /// under runc too). Under both runtimes.
    /// </summary>
    [IntegrationFact]
    public async Task ADeviceGivenReadOnlyOpensForReadingOnly()
    {
        const string script = "test -c /dev/fuse && echo node; ( : </dev/fuse ) && echo read-open; ( : >/dev/fuse ) && echo write-open; true";
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, ["--device", "/dev/fuse:/dev/fuse:r"], script);
            v.Expect(r.Stdout.Contains("node") && r.Stdout.Contains("read-open"), runtime, "/dev/fuse opens for reading", r);
            v.Expect(r.Stdout.Contains("node") && !r.Stdout.Contains("write-open"), runtime, "/dev/fuse does not open for writing", r);
        }
        v.Done();
    }

    /// <summary>`--device /dev/fuse:/dev/x`: the node is where docker was told to put it, as with runc.</summary>
    [IntegrationFact]
    public async Task ADeviceAppearsAtThePathItWasGiven()
    {
        const string script = "ls -l /dev/x; test -c /dev/x && ( : <>/dev/x ) && echo opened";
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, ["--device", "/dev/fuse:/dev/x"], script);
            v.Expect(r.Stdout.Contains(" 10, 229 ") && r.Stdout.Contains("opened"), runtime, "/dev/x is c 10:229 and opens", r);
        }
        v.Done();
    }

    /// <summary>
    /// A character device node (/dev/fuse, c 10:229, mode 0666, so that file permissions are no barrier)
    /// handed in by a bind mount: docker's default device rules do not list it, so opening it is refused under
    /// both runtimes. With `--device-cgroup-rule 'c 10:229 rw'` it opens under runc; under sandbox-runc a rule
    /// never opens a device the container was not given (`--device`): it only narrows what a given one may do.
    /// </summary>
    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task DeviceCgroupRuleOpensABoundNodeUnderRuncOnly()
    {
        string dir = _host.TempDir("devrule");
        string node = Path.Combine(dir, "fuse");
        EscapeHost.Exec("mknod", "-m", "0666", node, "c", "10", "229");
        const string script = "( : 3<>/d/fuse ) && echo opened || echo refused";
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var denied = await _docker.Sh(runtime, ["-v", $"{dir}:/d"], script);
            v.Expect(denied.Stdout.Contains("refused") && !denied.Stdout.Contains("opened"), runtime, "no rule: the node does not open", denied);
            var ruled = await _docker.Sh(runtime, ["-v", $"{dir}:/d", "--device-cgroup-rule", "c 10:229 rw"], script);
            if (runtime == Runtimes.Runc)
                v.Expect(ruled.Stdout.Contains("opened"), runtime, "--device-cgroup-rule 'c 10:229 rw': the node opens", ruled);
            else
                v.Expect(ruled.Stdout.Contains("refused") && !ruled.Stdout.Contains("opened"), runtime, "--device-cgroup-rule 'c 10:229 rw' alone: the node still does not open", ruled);
        }
        v.Done();
    }

    /// <summary>
    /// The host's root block device as a node (mode 0666) in a bind-mounted directory: the container cannot
    /// read it. runc with `--device-cgroup-rule 'b M:m r'` reads its superblock, so the node itself works.
    /// </summary>
    [EscapeFact(Needs.RootBlockDevice | Needs.ReadableRootDevice)]
    public async Task ABoundHostBlockDeviceCannotBeOpened()
    {
        var dev = EscapeHost.RootDevice()!;
        string dir = _host.TempDir("blkdev");
        EscapeHost.Exec("mknod", "-m", "0666", Path.Combine(dir, "disk"), "b", dev.Major.ToString(), dev.Minor.ToString());
        const string script = "dd if=/d/disk of=/dev/null bs=4096 count=1; echo read=$?";
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, ["-v", $"{dir}:/d"], script);
        v.Expect(sr.Stdout.Contains("read=") && !sr.Stdout.Contains("read=0"), Runtimes.Sandbox, "the host's disk is not readable", sr);
        var sp = await _docker.Sh(Runtimes.Sandbox, ["--privileged", "-v", $"{dir}:/d"], script);
        v.Expect(sp.Stdout.Contains("read=") && !sp.Stdout.Contains("read=0"), Runtimes.Sandbox, "--privileged: the host's disk is not readable", sp);
        var rc = await _docker.Sh(Runtimes.Runc, ["-v", $"{dir}:/d", "--device-cgroup-rule", $"b {dev.Major}:{dev.Minor} r"], script);
        v.Expect(rc.Stdout.Contains("read=0"), Runtimes.Runc, "with a rule for it, the node reads", rc);
        v.Done();
    }

    /// <summary>
    /// The container raising its own memory limit from inside: writing the limit file, after remounting the
    /// cgroup filesystem read-write, and through a cgroup filesystem it mounts itself. runc with
    /// CAP_SYS_ADMIN (no AppArmor, no seccomp) lifts it through a cgroup filesystem it mounts; sandbox-runc
    /// with --privileged must not. On v2 the kernel refuses writes to the limits of a cgroup namespace's own
    /// root from inside that namespace, so the runc reference runs in the host's (--cgroupns host), where
    /// the attempt works.
    /// </summary>
    [Trait("Category", "CgroupDriver")]
    [IntegrationFact]
    public async Task TheContainerCannotLiftItsOwnMemoryLimit()
    {
        string file = HostCgroups.V2 ? "memory.max" : "memory.limit_in_bytes";
        string inside = HostCgroups.V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
        // 96 MiB: above the 64 MiB limit, below docker's v1 memory+swap limit (128 MiB), which a v1 memory
        // limit may not exceed.
        const string unlimited = "100663296";
        string fresh = HostCgroups.V2 ? "mount -t cgroup2 none /tmp/cg" : "mount -t cgroup -o memory none /tmp/cg";
        // The container's own cgroup below the root of a cgroup filesystem it mounts itself, as its
        // /proc/self/cgroup names it: "/" in a cgroup namespace of its own, "/docker/ID" (or the scope) in the host's.
        string own = HostCgroups.V2 ? "$1 == \"0\"" : "$2 ~ /(^|,)memory(,|$)/";
        string script = $$"""
            echo {{unlimited}} > {{inside}}/{{file}}; echo write=$?
            mount -o remount,rw {{inside}} && echo {{unlimited}} > {{inside}}/{{file}}; echo remount.write=$?
            p=$(awk -F: '{{own}} {print $3; exit}' /proc/self/cgroup)
            mkdir -p /tmp/cg && {{fresh}} && echo {{unlimited}} > /tmp/cg$p/{{file}}; echo new.mount.write=$?
            """;
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string[] options = runtime == Runtimes.Sandbox ? ["--privileged"]
                : HostCgroups.V2 ? [.. Runtimes.RuncMountPrivileges, "--cgroupns", "host"] : Runtimes.RuncMountPrivileges;
            string name = await _docker.RunDetached("cglift", runtime, [.. options, "--memory", "64m"], "sleep", "100");
            string dir = HostCgroups.OfProcess(await Pid(name), "memory");
            Assert.Equal("67108864", HostCgroups.Read(dir, file));
            var r = await _docker.Run("exec", name, "sh", "-c", script);
            string after = HostCgroups.Read(dir, file);
            if (runtime == Runtimes.Sandbox)
                v.Expect(after == "67108864", runtime, $"the limit stays 64 MiB (now {after})", r);
            else
                v.Expect(after == unlimited, runtime, $"the limit is lifted to 96 MiB (now {after})", r);
        }
        v.Done();
    }

    /// <summary>On cgroup v2 the container has its own cgroup namespace: its cgroup is the root it sees.</summary>
    [CgroupV2Fact]
    public async Task OnV2TheContainerSeesItsCgroupAsTheRoot()
    {
        var r = await _docker.RunRm([], "sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("0::/\nmax\n", r.Stdout);
    }
}
