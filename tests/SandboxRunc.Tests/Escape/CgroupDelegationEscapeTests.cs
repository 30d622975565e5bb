using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The delegated cgroup subtree (README "System containers") seen from the host code that ends a container: whatever a
/// plain container (no flags, its root unprivileged) builds below its own cgroup, `docker rm -f` ends every process of
/// it and leaves no cgroup behind. Two shapes: a child it froze (v1: it owns the child's freezer.state, and a frozen
/// task ignores SIGKILL until thawed, so its pid namespace's init never exits), and a chain of cgroups nested deeper
/// than a path can name (PATH_MAX: a walk by path stops there). No runc half: under runc a container's cgroups are
/// read-only unless its root is host root (--privileged, which fails on this host's bounding set), where it may do
/// anything anyway.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class CgroupDelegationEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    static readonly TimeSpan RmBound = TimeSpan.FromSeconds(90);

    [EscapeFact]
    public async Task AFrozenChildCgroup_DoesNotOutliveDockerRmF()
    {
        string top = HostCgroups.V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/freezer";
        string freeze = HostCgroups.V2 ? "echo 1 > $C/cgroup.freeze" : "echo FROZEN > $C/freezer.state";
        string state = HostCgroups.V2 ? "$(cat $C/cgroup.freeze)" : "$(cat $C/freezer.state)";
        string script = $"""
            C={top}/x
            mkdir $C || exit 1
            sleep 1000 &
            echo $! > $C/cgroup.procs || exit 1
            {freeze}
            sleep 1
            echo frozen={state}
            exec sleep 1000
            """;
        string name = await _docker.RunDetached("frozen", DockerCli.Runtime, ["--network=none"], "sh", "-c", script);
        await _docker.WaitForLog(name, "frozen=");
        int pid = int.Parse(await _docker.Inspect(name, "{{.State.Pid}}"));
        string child = Path.Combine(HostCgroups.OfProcess(pid, "freezer"), "x");
        var logs = await _docker.Run("logs", name);
        Assert.Contains(HostCgroups.V2 ? "frozen=1" : "frozen=FROZEN", logs.Stdout);
        int sleeper = File.ReadAllLines(Path.Combine(child, "cgroup.procs")).Select(int.Parse).Single();

        var rm = await _docker.Run(RmBound, "rm", "-f", name);
        bool survived = IsAlive(sleeper);
        if (survived)
        {
            // Leave the host clean: thaw it from here, then docker can end it.
            File.WriteAllText(Path.Combine(child, HostCgroups.V2 ? "cgroup.freeze" : "freezer.state"), HostCgroups.V2 ? "0" : "THAWED");
            await _docker.Run(RmBound, "rm", "-f", name);
        }
        Assert.False(survived || rm.ExitCode != 0,
            $"the container's process {sleeper} in the cgroup it froze outlived `docker rm -f` (alive: {survived}): {rm}");
    }

    [EscapeFact]
    public async Task CgroupsNestedPastPathMax_AreRemovedWithTheContainer()
    {
        string top = HostCgroups.V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/pids";
        string level = new('n', 250);
        // 16 levels of 251 bytes: more than PATH_MAX (4096) from the host's /sys/fs/cgroup/pids/docker/ID (and as deep as
        // the container's own shell can name from its /sys/fs/cgroup/pids).
        string script = $"""
            cd {top} || exit 1
            i=0
            while [ $i -lt 16 ]; do mkdir {level} && cd {level} || break; i=$((i+1)); done
            sleep 1000 &
            echo $! > cgroup.procs && echo depth=$i
            exec sleep 1000
            """;
        string name = await _docker.RunDetached("deep", DockerCli.Runtime, ["--network=none"], "sh", "-c", script);
        await _docker.WaitForLog(name, "depth=");
        Assert.Contains("depth=16", (await _docker.Run("logs", name)).Stdout);
        int pid = int.Parse(await _docker.Inspect(name, "{{.State.Pid}}"));
        var dirs = HostCgroups.V2 ? [HostCgroups.OfProcess(pid, "")]
            : new[] { "pids", "memory", "freezer", "cpu", "devices", "blkio" }
                .Select(c => { try { return HostCgroups.OfProcess(pid, c); } catch (Xunit.Sdk.XunitException) { return null; } })
                .OfType<string>().Distinct().ToArray();

        var rm = await _docker.Run(RmBound, "rm", "-f", name);
        var left = dirs.Where(Directory.Exists).ToList();
        foreach (var dir in left) RemoveChain(dir);
        Assert.True(rm.ExitCode == 0 && left.Count == 0, $"cgroups of the container left after `docker rm -f`: [{string.Join(", ", left)}]; {rm}");
    }

    static bool IsAlive(int pid)
    {
        try { return !File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1].StartsWith('Z'); }
        catch (IOException) { return false; }
    }

    /// <summary>Removes a cgroup and its chain of children by cd (bash: dash's cd names the whole path, which is too long).</summary>
    static void RemoveChain(string dir) =>
        EscapeHost.Exec("bash", "-c", $"cd '{dir}' && d=0 && while cd nnnn* 2>/dev/null; do d=$((d+1)); done; " +
            "while [ $d -gt 0 ]; do cd ..; rmdir nnnn* ; d=$((d-1)); done; cd / && rmdir '" + dir + "'");
}
