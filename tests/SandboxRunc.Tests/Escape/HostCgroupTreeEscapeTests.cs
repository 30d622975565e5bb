using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The host's cgroup v2 tree stays out of sight: a container that mounts cgroup2 (its own cgroup namespace lets its root do
/// so with CAP_SYS_ADMIN) sees the subtree its cgroup namespace is rooted at, which must be its own cgroup, never the v2
/// root. On a hybrid host (v1 controllers at /sys/fs/cgroup, cgroup2 at /sys/fs/cgroup/unified) a runtime that places the
/// container in the v1 hierarchies only leaves it in the v2 root, where the host's processes are, so the namespace it
/// unshares there is rooted at the host's: the mount then lists every host cgroup (other containers' ids, the engines')
/// and the host's processes in cgroup.procs (0 for each: outside its pid namespace).
///
/// A marker cgroup made at the v2 root by the test is what must not show. The runc half: with its own cgroup namespace
/// (--cgroupns=private) runc's container sees only its own cgroup too; with the host's (--cgroupns=host) the same mount
/// shows the marker, so the check does see a host tree when one is there.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class HostCgroupTreeEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    const string Script = """
        mkdir -p /tmp/c2 && mount -t cgroup2 none /tmp/c2 || { echo 'not mounted'; exit 0; }
        echo "mounted"
        echo "self=$(grep '^0::' /proc/self/cgroup)"
        printf 'dirs='; for d in /tmp/c2/*; do [ -d "$d" ] && printf '%s,' "${d##*/}"; done; echo
        echo "procs=$(tr '\n' ' ' < /tmp/c2/cgroup.procs)"
        """;

    [EscapeFact(Needs.Cgroup2)]
    public async Task MountingCgroup2_ShowsTheContainersOwnCgroup_NotTheHosts()
    {
        string mount = HostCgroups.UnifiedMount()!;
        string marker = "sandbox-runc-escape-" + Guid.NewGuid().ToString("N")[..12];
        string markerDir = Path.Combine(mount, marker);
        Directory.CreateDirectory(markerDir);
        try
        {
            var v = new Verdict();
            var r = await _docker.Sh(Runtimes.Sandbox, ["--network=none", "--cap-add", "SYS_ADMIN"], Script);
            v.Expect(r.ExitCode == 0 && r.Stdout.Contains("mounted\n") && !r.Stdout.Contains("not mounted"),
                Runtimes.Sandbox, "its root mounts cgroup2 in its own cgroup namespace (the attempt is made)", r);
            v.Expect(!r.Stdout.Contains(marker), Runtimes.Sandbox, $"the mount does not show the host's cgroup {marker} at the v2 root", r);
            v.Expect(r.Stdout.Contains("procs=") && !Procs(r.Stdout).Contains("0"), Runtimes.Sandbox,
                "its cgroup.procs lists no process outside its pid namespace (shown as 0)", r);
            v.Expect(Procs(r.Stdout).Contains("1"), Runtimes.Sandbox, "its cgroup.procs lists its own init (the mount is its own cgroup)", r);

            var rp = await _docker.Sh(Runtimes.Runc, ["--network=none", "--cgroupns=private", .. Runtimes.RuncMountPrivileges], Script);
            v.Expect(rp.Stdout.Contains("mounted\n") && !rp.Stdout.Contains(marker) && Procs(rp.Stdout).Contains("1"), Runtimes.Runc,
                "--cgroupns=private: the mount shows its own cgroup only", rp);
            var rh = await _docker.Sh(Runtimes.Runc, ["--network=none", "--cgroupns=host", .. Runtimes.RuncMountPrivileges], Script);
            v.Expect(rh.Stdout.Contains("mounted\n") && rh.Stdout.Contains(marker), Runtimes.Runc,
                $"--cgroupns=host: the mount shows the host's tree, the marker {marker} included (the check sees one when it is there)", rh);
            v.Done();
        }
        finally { Directory.Delete(markerDir); }
    }

    static string[] Procs(string stdout) =>
        stdout.Split('\n').FirstOrDefault(l => l.StartsWith("procs=", StringComparison.Ordinal))?["procs=".Length..]
            .Split(' ', StringSplitOptions.RemoveEmptyEntries) ?? [];
}
