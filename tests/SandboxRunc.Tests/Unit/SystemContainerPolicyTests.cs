using SandboxRunc.Cgroups;
using SandboxRunc.Oci;
using SandboxRunc.Policy;
using SandboxRunc.Seccomp.Notify;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>The spec rewrites of system containers (Policy/SystemContainerPolicy), without root.</summary>
public class SystemContainerPolicyTests
{
    static Spec DockerLike(params string[] args) => new()
    {
        Process = new Process
        {
            Args = [.. args],
            Env = ["PATH=/usr/bin"],
            Capabilities = new Capabilities { Bounding = ["CAP_CHOWN"], Effective = ["CAP_CHOWN"], Permitted = ["CAP_CHOWN"] },
        },
        Mounts =
        [
            new Mount { Destination = "/proc", Type = "proc", Source = "proc" },
            new Mount { Destination = "/sys", Type = "sysfs", Source = "sysfs", Options = ["nosuid", "ro"] },
            new Mount { Destination = "/sys/fs/cgroup", Type = "cgroup", Source = "cgroup", Options = ["ro", "nosuid", "noexec", "nodev"] },
        ],
        Linux = new Linux { Namespaces = [new() { Type = "pid" }, new() { Type = "mount" }], Seccomp = new SandboxRunc.Oci.Seccomp { DefaultAction = "SCMP_ACT_ERRNO" } },
    };

    [Fact]
    public void EveryContainerGetsItsOwnCgroupNamespaceAndAWritableCgroupMount()
    {
        var spec = SystemContainerPolicy.WithCgroupDelegation(DockerLike("sh"));
        Assert.Contains(spec.Linux!.Namespaces!, n => n.Type == "cgroup" && string.IsNullOrEmpty(n.Path));
        var cgroup = spec.Mounts!.Single(m => m.Destination == "/sys/fs/cgroup");
        Assert.DoesNotContain("ro", cgroup.Options!);
        Assert.Contains("rw", cgroup.Options!);
        Assert.Contains("nosuid", cgroup.Options!);
    }

    [Fact]
    public void ASystemContainersSysfsIsReadWriteSoAnInnerPrivilegedOneCanMountItsOwn_OthersKeepTheirs()
    {
        var system = SystemContainerPolicy.WithSystemContainer(DockerLike("dockerd"), heldMask: 1);
        var sys = system.Mounts!.Single(m => m.Destination == "/sys");
        Assert.DoesNotContain("ro", sys.Options!);
        Assert.Contains("rw", sys.Options!);
        Assert.Contains("nosuid", sys.Options!);
        var plain = SystemContainerPolicy.WithCgroupDelegation(DockerLike("sh"));
        Assert.Contains("ro", plain.Mounts!.Single(m => m.Destination == "/sys").Options!);
    }

    [Fact]
    public void AJoinedCgroupNamespaceIsKept()
    {
        var spec = DockerLike("sh");
        spec.Linux!.Namespaces!.Add(new Namespace { Type = "cgroup", Path = "/proc/42/ns/cgroup" });
        SystemContainerPolicy.WithCgroupDelegation(spec);
        Assert.Single(spec.Linux.Namespaces, n => n.Type == "cgroup");
    }

    [Theory]
    [InlineData("/sbin/init", true)]
    [InlineData("/lib/systemd/systemd", true)]
    [InlineData("dockerd", true)]
    [InlineData("/usr/bin/containerd", true)]
    [InlineData("sh", false)]
    [InlineData("/sbin/docker-init", false)]
    public void ASystemContainerIsKnownByItsCommand(string command, bool system) =>
        Assert.Equal(system, SystemContainerPolicy.IsSystemContainer(DockerLike(command), null));

    [Fact]
    public void TheLabelDecidesBothWays()
    {
        Assert.True(SystemContainerPolicy.IsSystemContainer(DockerLike("sh"), true));
        Assert.False(SystemContainerPolicy.IsSystemContainer(DockerLike("dockerd"), false));
    }

    [Fact]
    public void ASystemContainerGetsEveryHeldCapabilityAndNoSeccompProfileButOurs()
    {
        ulong held = ~0UL & ~(1UL << 24); // every capability but CAP_SYS_RESOURCE, as on this host
        var spec = SystemContainerPolicy.WithSystemContainer(DockerLike("dockerd"), held);
        Assert.Contains("CAP_SYS_ADMIN", spec.Process!.Capabilities!.Effective!);
        Assert.DoesNotContain("CAP_SYS_RESOURCE", spec.Process.Capabilities.Bounding!);
        Assert.Null(spec.Linux!.Seccomp);
        Assert.Equal("true", spec.Annotations![ContainerSettings.SystemContainerKey]);
        // dockerd is no init: no /run tmpfs, no container= variable
        Assert.DoesNotContain(spec.Mounts!, m => m.Destination == "/run");
        Assert.DoesNotContain(spec.Process.Env!, e => e.StartsWith("container="));
    }

    [Fact]
    public void AnInitGetsRunAndRunLockAsTmpfsAndTheContainerVariable()
    {
        var spec = SystemContainerPolicy.WithSystemContainer(DockerLike("/sbin/init"), ~0UL);
        Assert.Equal("tmpfs", spec.Mounts!.Single(m => m.Destination == "/run").Type);
        Assert.Equal("tmpfs", spec.Mounts!.Single(m => m.Destination == "/run/lock").Type);
        Assert.Contains(spec.Process!.Env!, e => e.StartsWith("container="));
    }

    [Fact]
    public void NoRunTmpfsOverTheSpecsMountsBelowRun()
    {
        var spec = DockerLike("/sbin/init");
        spec.Mounts!.Add(new Mount { Destination = "/run/secrets", Type = "bind", Source = "/x", Options = ["rbind"] });
        int count = spec.Mounts.Count;
        SystemContainerPolicy.WithSystemContainer(spec, ~0UL);
        Assert.DoesNotContain(spec.Mounts, m => m.Destination == "/run");
        // indexes of the spec's own mounts unchanged (the policy's verdicts are by index)
        Assert.Equal("/run/secrets", spec.Mounts[count - 1].Destination);
    }

    [Fact]
    public void EngineStorageIsBoundUnlessTheSpecMountsThere()
    {
        var spec = DockerLike("dockerd");
        spec.Mounts!.Add(new Mount { Destination = "/var/lib/docker/", Type = "bind", Source = "/vol", Options = ["rbind"] });
        var bound = SystemContainerPolicy.WithEngineStorage(spec, p => "/host" + p);
        Assert.Equal(["/var/lib/containerd", "/var/lib/kubelet"], bound);
        Assert.Equal("/host/var/lib/containerd", spec.Mounts.Single(m => m.Destination == "/var/lib/containerd").Source);
        Assert.Single(spec.Mounts, m => m.Destination.TrimEnd('/') == "/var/lib/docker");
    }

    [Fact]
    public void ExecInASystemContainerGetsTheInitsCapabilities()
    {
        var container = SystemContainerPolicy.WithSystemContainer(DockerLike("dockerd"), ~0UL);
        var p = SystemContainerPolicy.ForExec(new Process { Args = ["sh"], Capabilities = new Capabilities { Effective = ["CAP_CHOWN"] } }, container);
        Assert.Contains("CAP_SYS_ADMIN", p.Capabilities!.Effective!);
        var plain = SystemContainerPolicy.ForExec(new Process { Args = ["sh"], Capabilities = new Capabilities { Effective = ["CAP_CHOWN"] } }, DockerLike("sh"));
        Assert.Equal(["CAP_CHOWN"], plain.Capabilities!.Effective!);
    }

    [Theory]
    [InlineData("docker-default", null)]
    [InlineData("cri-containerd.apparmor.d", null)]
    [InlineData("containers-default-0.50.1", null)]
    [InlineData("my-own-profile", "my-own-profile")]
    [InlineData(null, null)]
    public void ASystemContainerAndItsExecsLoseOnlyTheEngineDefaultAppArmorProfile(string? asked, string? kept)
    {
        var spec = DockerLike("dockerd");
        spec.Process!.ApparmorProfile = asked;
        Assert.Equal(kept, SystemContainerPolicy.WithSystemContainer(spec, ~0UL).Process!.ApparmorProfile);
        var exec = SystemContainerPolicy.ForExec(new Process { Args = ["sh"], ApparmorProfile = asked }, spec);
        Assert.Equal(kept, exec.ApparmorProfile);
        // not in an ordinary container
        var plain = SystemContainerPolicy.ForExec(new Process { Args = ["sh"], ApparmorProfile = "docker-default" }, DockerLike("sh"));
        Assert.Equal("docker-default", plain.ApparmorProfile);
    }

    static AdminSettings Settings(string? systemContainers) => AdminSettings.Parse(systemContainers is null
        ? """{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true}}"""
        : $$$"""{"configurationFileVersion": 2, "enhancedContainerIsolation": {"systemContainers": "{{{systemContainers}}}"} }""", "/test/admin-settings.json");

    /// <summary>What the policy hands create for a fixture container running `command`, labelled or not.</summary>
    static bool? AskedSystemContainer(AdminSettings settings, string command, string? label)
    {
        var doc = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(TestSupport.Repo.Fixtures, "policy", "bind-tmp-idmapped.json")))!.AsObject();
        var spec = SpecLoader.Parse(System.Text.Encoding.UTF8.GetBytes(doc["spec"]!.ToJsonString()), "fixture");
        spec.Process ??= new Process();
        spec.Process.Args = [command];
        spec.Linux ??= new Linux();
        spec.Linux.Namespaces ??= new[] { "pid", "ipc", "uts", "mount", "network" }.Select(t => new Namespace { Type = t }).ToList();
        if (label is not null) (spec.Annotations ??= [])[ContainerSettings.SystemContainerKey] = label;
        var asked = IsolationPolicy.Decide(spec, settings, PolicyFixtureTests.Facts(doc)).Settings.SystemContainer;
        return asked;
    }

    [Theory]
    [InlineData(null, "dockerd", null, true)]      // auto: by the command
    [InlineData("auto", "sh", "true", true)]       // auto: by the label
    [InlineData("label", "dockerd", null, false)]  // label: the command alone is not enough
    [InlineData("label", "sh", "true", true)]
    [InlineData("off", "dockerd", "true", false)]  // off: nobody
    public void TheAdminDecidesWhoMayBeASystemContainer(string? setting, string command, string? label, bool system)
    {
        var settings = Settings(setting);
        var spec = DockerLike(command);
        Assert.Equal(system, SystemContainerPolicy.IsSystemContainer(spec, AskedSystemContainer(settings, command, label)));
    }

    [Fact]
    public void AnUnknownSystemContainersSettingIsRefused()
    {
        var e = Assert.Throws<PolicyException>(() => Settings("yes"));
        Assert.Contains("enhancedContainerIsolation.systemContainers must be \"auto\", \"label\" or \"off\"", e.Message);
    }

    [Fact]
    public void DelegationNeverHandsOverALimitFile()
    {
        Assert.Equal(["cgroup.procs", "tasks"], CgroupManager.DelegatedFilesOf(CgroupVersion.V1));
        Assert.Equal(["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"], CgroupManager.DelegatedFilesOf(CgroupVersion.V2));
    }

    const string Status = "Name:\tx\nTgid:\t5000\nNStgid:\t5000\t40\nPid:\t5001\nNSpid:\t5001\t41\n";

    [Theory]
    [InlineData("/proc/self/task/41/ns/net", "/proc/40/task/41/ns/net")]
    [InlineData("/proc/thread-self/ns/net", "/proc/40/task/41/ns/net")]
    [InlineData("/proc/self", "/proc/40")]
    [InlineData("/proc/self/fd/6", "/proc/self/fd/6")]
    [InlineData("/proc/thread-self/fd/12", "/proc/thread-self/fd/12")]
    [InlineData("/proc/selfish", "/proc/selfish")]
    [InlineData("/tmp/proc/self/x", "/tmp/proc/self/x")]
    public void ProcSelfIsTheCallersOwnEntry(string path, string expected) =>
        Assert.Equal(expected, ProcSelf.Translate(path, Status));
}
