using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SystemContainers;

/// <summary>
/// The delegated cgroup subtree (README "System containers") is the container's to divide, never to grow: with every
/// capability of its user namespace (a system container), its root writes none of its own top's limit files, and a
/// child it makes with a higher limit is still held by the top's. (No runc half: under runc the container's cgroups
/// are writable only with --privileged, which fails on this host's bounding set; there root is host root and every
/// write here would succeed.)
/// </summary>
[Trait("Category", "SystemContainers")]
public sealed class DelegationEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();

    /// <param name="privileged">--privileged, else a system container by its label (read from dockerd's record of the
    /// container under its configured data root: a private dockerd with another data root is not seen).</param>
    [IntegrationTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ASystemContainerCannotRaiseItsOwnLimits(bool privileged)
    {
        bool v2 = HostCgroups.V2;
        string mem = v2 ? "/sys/fs/cgroup/memory.max" : "/sys/fs/cgroup/memory/memory.limit_in_bytes";
        string pids = v2 ? "/sys/fs/cgroup/pids.max" : "/sys/fs/cgroup/pids/pids.max";
        string child = v2 ? "/sys/fs/cgroup/child" : "/sys/fs/cgroup/memory/child";
        string childMem = v2 ? child + "/memory.max" : child + "/memory.limit_in_bytes";
        string script = $$"""
            grep CapEff /proc/self/status
            echo 1073741824 > {{mem}} 2>/dev/null; echo mem.write=$?
            echo max > {{pids}} 2>/dev/null; echo pids.write=$?
            chmod 666 {{mem}} 2>/dev/null; echo mem.chmod=$?
            echo mem.now=$(cat {{mem}}) pids.now=$(cat {{pids}})
            mkdir {{child}} && echo child.mkdir=0
            {{(v2 ? "echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; " : "")}}echo 1073741824 > {{childMem}} 2>/dev/null; echo child.write=$?
            echo $$ > {{child}}/cgroup.procs; echo child.join=$?
            x=$(head -c 200000000 /dev/zero | tr '\0' a); echo survived ${#x}
            """;
        var r = await _docker.Run(["run", "--rm", "--name", _docker.Name("deleg"), $"--runtime={DockerCli.Runtime}", "--network=none",
            .. (privileged ? new[] { "--privileged" } : ["--label", "io.sandbox-runc.system-container=true"]), "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "100",
            DockerCli.Image, "sh", "-c", script]);
        string o = r.Stdout;
        // CAP_SYS_ADMIN in its user namespace: the strongest delegatee (without it, the label was not seen)
        ulong capEff = Convert.ToUInt64(o.Split('\n').First(l => l.StartsWith("CapEff:"))[7..].Trim(), 16);
        Assert.True((capEff >> 21 & 1) == 1, $"the container holds no CAP_SYS_ADMIN (not a system container?): {r}");
        Assert.Contains("mem.write=1", o);
        Assert.Contains("pids.write=1", o);
        Assert.Contains("mem.chmod=1", o);
        Assert.Contains(v2 ? "mem.now=67108864 pids.now=100" : "mem.now=67108864 pids.now=100", o);
        Assert.Contains("child.mkdir=0", o);
        Assert.Contains("child.join=0", o);
        // the child's own limit (1 GiB) is its to write, but the top's 64 MiB still holds: killed, not "survived"
        Assert.DoesNotContain("survived", o);
        Assert.Equal(137, r.ExitCode);
    }

    public void Dispose() => _docker.Dispose();
}
