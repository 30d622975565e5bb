using System.Text.Json;
using SandboxRunc.Doctor;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>`check`'s verdicts from hand-written facts: no root, no host.</summary>
public class CheckVerdictsTests
{
    const string Self = "/usr/local/bin/sandbox-runc";

    static HostFeatureFacts GoodHost() => new(
        "6.1.0-13-amd64", 15000, null,
        [new IdmapProbe("/var/lib/docker", "data root", "ext4", true, null), new IdmapProbe("/tmp", "allow list", "tmpfs", false, null)],
        null, null, "v2", ["cpu", "memory", "pids"], null, null, new IdPoolFacts("uids 100000-...", 4096, 3), null);

    static DockerEngineFacts GoodDocker() => new(true, "/etc/docker/daemon.json", null, Self, "sandbox-runc", ["runc", "sandbox-runc"], "sandbox-runc", Self);

    static readonly OtherEngineFacts[] NoOthers = [new("containerd", false, "/etc/containerd/config.toml", false), new("podman", false, "/etc/containers/containers.conf", false)];

    static SettingsFacts GoodSettings() => new("/etc/sandbox-runc/admin-settings.json", true, null, true, true);

    static CheckLine Line(IEnumerable<CheckLine> lines, string name) => Assert.Single(lines, l => l.Name == name);

    [Fact]
    public void GoodHost_NothingMissing()
    {
        var lines = CheckVerdicts.HostLines(GoodHost());
        Assert.DoesNotContain(lines, l => l.Mark == Mark.Missing);
        Assert.Equal("4093 of 4096 free (uids 100000-...)", Line(lines, "ID ranges").Found);
        Assert.Equal(Mark.Info, Line(lines, "cgroups").Mark);
        Assert.All(lines, l => Assert.False(string.IsNullOrEmpty(l.Enables), $"{l.Name} says nothing of what it enables"));
    }

    [Theory]
    [InlineData("5.10.0-26-amd64", false)]
    [InlineData("5.12.0", true)]
    [InlineData("6.18.44-fc-v657", true)]
    [InlineData("4.19.0", false)]
    [InlineData("garbage", false)]
    public void Kernel_NeedsIdmappedMounts(string release, bool ok)
    {
        var kernel = Line(CheckVerdicts.HostLines(GoodHost() with { KernelRelease = release }), "kernel");
        Assert.Equal(ok ? Mark.Ok : Mark.Missing, kernel.Mark);
        Assert.Equal(ok, kernel.Advice is null);
    }

    [Fact]
    public void NoUserNamespaces_IsMissing_WithTheSysctlInTheAdvice()
    {
        var line = Line(CheckVerdicts.HostLines(GoodHost() with { MaxUserNamespaces = 0 }), "user namespaces");
        Assert.Equal(Mark.Missing, line.Mark);
        Assert.Contains("user.max_user_namespaces", line.Advice);
        var failed = Line(CheckVerdicts.HostLines(GoodHost() with { UserNamespaceError = "unshare: Operation not permitted" }), "user namespaces");
        Assert.Equal(Mark.Missing, failed.Mark);
        Assert.Contains("Operation not permitted", failed.Found);
    }

    [Fact]
    public void IdmapFailure_OnTheDataRoot_IsMissing_OnTmp_OnlyAdvice()
    {
        var host = GoodHost() with
        {
            Idmap = [new IdmapProbe("/var/lib/docker", "data root", "nfs", true, "mount_setattr(MOUNT_ATTR_IDMAP) /var/lib/docker: Invalid argument"),
                     new IdmapProbe("/tmp", "allow list", "tmpfs", false, "mount_setattr(MOUNT_ATTR_IDMAP) /tmp: Invalid argument")],
        };
        var lines = CheckVerdicts.HostLines(host);
        var root = Line(lines, "ID-mapped mounts /var/lib/docker");
        Assert.Equal(Mark.Missing, root.Mark);
        Assert.StartsWith("nfs: ", root.Found);
        Assert.Equal(Mark.Advice, Line(lines, "ID-mapped mounts /tmp").Mark);
    }

    [Fact]
    public void SeccompFuseAndPool_AreNeeded()
    {
        var lines = CheckVerdicts.HostLines(GoodHost() with
        {
            SeccompNotifyError = "seccomp SECCOMP_GET_ACTION_AVAIL: Operation not supported",
            FuseError = "open /dev/fuse: No such file or directory",
            Pool = new IdPoolFacts("p", 4, 4),
        });
        Assert.Equal(Mark.Missing, Line(lines, "seccomp user notify").Mark);
        Assert.Equal(Mark.Missing, Line(lines, "/dev/fuse").Mark);
        Assert.Equal(Mark.Missing, Line(lines, "ID ranges").Mark);
        var unreadable = Line(CheckVerdicts.HostLines(GoodHost() with { Pool = null, PoolError = "table cannot be trusted" }), "ID ranges");
        Assert.Contains("ranges --rebuild", unreadable.Advice);
    }

    [Fact]
    public void Engines_AllInForce()
    {
        var lines = CheckVerdicts.EngineLines(GoodDocker(), NoOthers, GoodSettings(), Self);
        Assert.All(lines, l => Assert.True(l.Mark is Mark.Ok or Mark.Info, $"{l.Name}: {l.Mark} {l.Found}"));
    }

    [Fact]
    public void Dockerd_RuntimeInTheFileButNotLoaded_SaysReload()
    {
        var line = Line(CheckVerdicts.EngineLines(GoodDocker() with { LoadedRuntimes = ["runc"] }, NoOthers, GoodSettings(), Self), "dockerd knows it");
        Assert.Equal(Mark.Missing, line.Mark);
        Assert.Contains("-HUP", line.Advice);
    }

    [Fact]
    public void Dockerd_NotDefaultNotLocked_IsAdviceNotFailure()
    {
        var lines = CheckVerdicts.EngineLines(GoodDocker() with { ConfigDefault = null, LoadedDefault = "runc", RuncInPath = "/usr/sbin/runc" }, NoOthers, GoodSettings(), Self);
        Assert.Equal(Mark.Advice, Line(lines, "dockerd default").Mark);
        var lockLine = Line(lines, "dockerd lock");
        Assert.Equal(Mark.Advice, lockLine.Mark);
        Assert.Equal("sandbox-runc install --lock", lockLine.Advice);
        Assert.True(new CheckReport("t", lines, []).Passed);
    }

    [Fact]
    public void Dockerd_WithoutTheRuntime_Fails()
    {
        var lines = CheckVerdicts.EngineLines(GoodDocker() with { ConfigRuntimePath = null }, NoOthers, GoodSettings(), Self);
        Assert.Equal(Mark.Missing, Line(lines, "dockerd knows it").Mark);
        Assert.False(new CheckReport("t", lines, []).Passed);
    }

    [Fact]
    public void BrokenOrDisabledSettings_Fail()
    {
        var broken = CheckVerdicts.EngineLines(GoodDocker(), NoOthers, GoodSettings() with { Error = "admin settings x: line 3: not valid JSON" }, Self);
        Assert.Equal(Mark.Missing, Line(broken, "admin settings").Mark);
        var off = CheckVerdicts.EngineLines(GoodDocker(), NoOthers, GoodSettings() with { Enabled = false }, Self);
        Assert.Equal(Mark.Missing, Line(off, "admin settings").Mark);
        var unlocked = CheckVerdicts.EngineLines(GoodDocker(), NoOthers, GoodSettings() with { Locked = false }, Self);
        Assert.Equal(Mark.Advice, Line(unlocked, "settings locked").Mark);
    }

    [Fact]
    public void ContainerdNotConfigured_AdvisesInstallContainerd()
    {
        var lines = CheckVerdicts.EngineLines(GoodDocker(), [new OtherEngineFacts("containerd", true, "/etc/containerd/config.toml", false)], GoodSettings(), Self);
        Assert.Contains("install --containerd", Line(lines, "containerd knows it").Advice);
    }

    [Theory]
    [InlineData("         0          0 4294967295\n", true)]
    [InlineData("0 0 4294967295", true)]
    [InlineData("0 165536 65536", false)]
    [InlineData("0 0 4294967295\n0 0 1", false)]
    [InlineData("0 0 65536", false)]
    public void HostUidMap(string map, bool host) => Assert.Equal(host, CheckVerdicts.IsHostUidMap(map));

    [Fact]
    public void Container_Isolated_OnlyWithSupervisorAndOwnUserNamespace()
    {
        var c = new RunningContainer("docker", "abc", "web", "nginx", "sandbox-runc", 42, "0 165536 65536\n", Supervised: true);
        Assert.True(CheckVerdicts.Judge(c).Isolated);
        // The runtime name proves nothing: "runc" is sandbox-runc under the lock.
        Assert.True(CheckVerdicts.Judge(c with { Runtime = "runc" }).Isolated);
        Assert.False(CheckVerdicts.Judge(c with { Supervised = false }).Isolated);
        Assert.False(CheckVerdicts.Judge(c with { UidMap = "0 0 4294967295" }).Isolated);
        Assert.False(CheckVerdicts.Judge(c with { UidMap = null }).Isolated);
        Assert.Contains("host's user namespace", CheckVerdicts.Judge(c with { Supervised = false, UidMap = "0 0 4294967295" }).Found);
    }

    [Fact]
    public void Report_FailsOnAContainerNotUnderIsolation_AndTheTableAndJsonSaySo()
    {
        var bare = CheckVerdicts.Judge(new RunningContainer("docker", new string('a', 64), "bare", "busybox", "runc", 7, "0 0 4294967295", false));
        var report = new CheckReport("t", CheckVerdicts.HostLines(GoodHost()), [bare]);
        Assert.Equal(1, report.ExitStatus);
        string table = report.Table();
        Assert.Contains("✗ docker     aaaaaaaaaaaa  bare", table);
        Assert.Contains("1 container(s) not under isolation", table);

        using var doc = JsonDocument.Parse(JsonSerializer.Serialize(report, CheckJson.Default.CheckReport));
        Assert.False(doc.RootElement.GetProperty("passed").GetBoolean());
        Assert.Equal(1, doc.RootElement.GetProperty("exitStatus").GetInt32());
        var c = doc.RootElement.GetProperty("containers")[0];
        Assert.Equal(new string('a', 64), c.GetProperty("id").GetString());
        Assert.False(c.GetProperty("isolated").GetBoolean());
        Assert.Equal("ok", doc.RootElement.GetProperty("checks")[0].GetProperty("mark").GetString());
    }

    [Fact]
    public void Table_GivesAdviceUnderEveryMissingLine()
    {
        var lines = CheckVerdicts.HostLines(GoodHost() with { FuseError = "open /dev/fuse: No such file or directory" });
        string table = new CheckReport("t", lines, []).Table();
        var rows = table.Split('\n');
        int at = Array.FindIndex(rows, r => r.Contains("✗ /dev/fuse"));
        Assert.True(at >= 0, table);
        Assert.StartsWith("      for: ", rows[at + 1]);
        Assert.StartsWith("      -> modprobe fuse", rows[at + 2]);
        Assert.EndsWith("isolation is NOT in force (1 needed feature(s) missing, 0 container(s) not under isolation)", table.TrimEnd());
    }

    [Theory]
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc]", true)]
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"sandbox-runc\"]", true)]
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc.options]", false)]
    [InlineData("# [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc]", false)]
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]", false)]
    public void ContainerdTable(string line, bool found) => Assert.Equal(found, EngineProbe.HasTable("version = 2\n" + line + "\n", "runtimes", "sandbox-runc"));
}
