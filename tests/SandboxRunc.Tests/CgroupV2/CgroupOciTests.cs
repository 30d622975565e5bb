using System.Runtime.Versioning;
using SandboxRunc.Oci;
using SandboxRunc.Tests.Escape;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.CgroupV2;

/// <summary>
/// The container's cgroup through the runtime's own command line (bundles, as containerd or a user would
/// drive it): the spec's device rules, and the systemd cgroup driver (`--systemd-cgroup`, cgroupsPath
/// "slice:prefix:name") with its transient scope.
/// </summary>
[Trait("Category", "CgroupV2")]
[SupportedOSPlatform("linux")]
public sealed class CgroupOciTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    public void Dispose() => _rt.Dispose();

    static string Id(string what) => what + Guid.NewGuid().ToString("N")[..6];

    /// <summary>
    /// linux.resources.devices = deny all, allow "b 254:0 r", with /dev/fuse (mode 0666) in linux.devices:
    /// the node is there but does not open (runc: "Operation not permitted"). With an allow rule for
    /// c 10:229 the same node opens, so the refusal is the rules' doing.
    /// </summary>
    [IntegrationFact]
    public async Task TheSpecsDeviceRulesDecideWhetherAListedDeviceOpens()
    {
        const string script = "test -c /dev/fuse && echo node; ( : 3<>/dev/fuse ) && echo opened || echo refused";
        foreach (bool allowFuse in new[] { false, true })
        {
            using var b = new Bundle("sh", "-c", script);
            b.Spec.Linux!.Devices = [new Device { Type = "c", Path = "/dev/fuse", Major = 10, Minor = 229, FileMode = 0x1B6, Uid = 0, Gid = 0 }];
            b.Spec.Linux.Resources!.Devices =
            [
                new DeviceCgroup { Allow = false, Access = "rwm" },
                new DeviceCgroup { Allow = true, Type = "b", Major = 254, Minor = 0, Access = "r" },
                .. allowFuse ? new[] { new DeviceCgroup { Allow = true, Type = "c", Major = 10, Minor = 229, Access = "rw" } } : [],
            ];
            string output = await _rt.RunOk(b.Write(), Id("devrules"));
            Assert.Contains("node", output);
            Assert.Contains(allowFuse ? "opened" : "refused", output);
        }
    }

    /// <summary>
    /// `--systemd-cgroup` with cgroupsPath "system.slice:sandbox-runc-test:ID", as dockerd's and containerd's
    /// systemd driver pass it: the container runs in the transient unit sandbox-runc-test-ID.scope that
    /// systemd knows, with the spec's limits; update, pause and resume act on it; delete removes the unit
    /// and its cgroup.
    /// </summary>
    [SystemdFact]
    public async Task SystemdDriver_TheContainerRunsInATransientScopeThatDeleteRemoves()
    {
        using var b = new Bundle("sleep", "100");
        string id = Id("sdscope"), unit = $"sandbox-runc-test-{id}.scope";
        b.Spec.Linux!.CgroupsPath = $"system.slice:sandbox-runc-test:{id}";
        b.Spec.Linux.Resources!.Memory = new MemoryResources { Limit = 64L << 20 };
        b.Spec.Linux.Resources.Pids = new PidsResources { Limit = 50 };
        var create = await _rt.Detached(["--systemd-cgroup", "create", "--bundle", b.Write(), id]);
        Assert.True(create.ExitCode == 0, $"create: {create}");
        string? dir = null;
        try
        {
            await _rt.Ok("--systemd-cgroup", "start", id);
            int pid = await _rt.Pid(id);
            dir = HostCgroups.OfProcess(pid, "memory");
            Assert.EndsWith($"system.slice/{unit}", dir);
            string memory = HostCgroups.V2 ? "memory.max" : "memory.limit_in_bytes";
            Assert.Equal("67108864", HostCgroups.Read(dir, memory));
            Assert.Equal("50", HostCgroups.Read(HostCgroups.OfProcess(pid, "pids"), "pids.max"));
            var show = await EscapeHost.Try("systemctl", "show", unit, "-p", "ActiveState", "-p", "ControlGroup");
            Assert.Contains("ActiveState=active", show.Stdout);
            Assert.Contains($"ControlGroup=/system.slice/{unit}", show.Stdout);

            await _rt.Ok("--systemd-cgroup", "update", "--memory", "96m", id);
            Assert.Equal("100663296", HostCgroups.Read(dir, memory));
            if (HostCgroups.V2)
                Assert.Contains("MemoryMax=100663296", (await EscapeHost.Try("systemctl", "show", unit, "-p", "MemoryMax")).Stdout);

            await _rt.Ok("--systemd-cgroup", "pause", id);
            Assert.Equal("paused", await _rt.Status(id));
            await _rt.Ok("--systemd-cgroup", "resume", id);
            Assert.Equal("running", await _rt.Status(id));

            await _rt.Ok("--systemd-cgroup", "kill", id, "KILL");
            await _rt.WaitStatus(id, "stopped");
            await _rt.Ok("--systemd-cgroup", "delete", id);
            for (var end = DateTime.UtcNow + HangLimits.Seconds(5); Directory.Exists(dir) && DateTime.UtcNow < end;) await Task.Delay(100);
            Assert.False(Directory.Exists(dir), $"delete left the cgroup {dir}");
            var units = await EscapeHost.Try("systemctl", "list-units", "--all", "--no-legend", "--plain", unit);
            Assert.DoesNotContain(unit, units.Stdout);
        }
        finally
        {
            await _rt.Run("--systemd-cgroup", "delete", "--force", id);
            await EscapeHost.Try("systemctl", "stop", unit);
        }
    }
}
