using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, items 2 and 5: protection follows the mount, not the path. Copies of the protected mounts
/// (an rbind of /proc, a new procfs, `unshare -m`, `mount --move`, pivot_root) cannot be taken apart to
/// show the host's uptime, meminfo or masked files; with io.sandbox-runc.protect-initial-mounts=true (a
/// docker label here; the annotation on bundles is in BundleEscapeTests) a read-only bind over a
/// read-write volume stays in place in every copy; a bind copy of a read-only volume stays read-only.
///
/// The runc half: runc has no emulated /proc files (its /proc/uptime is the host's), so for those the
/// attempt has nothing to compare and only sandbox-runc runs; runc masks the same paths as docker asks
/// (/proc/timer_list, /proc/keys...) and has no vetting, so there the same copy-and-unmount shows the
/// host's file, and a bind copy of a read-only volume can be remounted read-write onto the host.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class ProtectedMountCopyTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static readonly string[] SysAdmin = ["--cap-add", "SYS_ADMIN"];

    /// <summary>SYS_ADMIN without docker's seccomp profile, which refuses pivot_root (and unshare's clone flags) before any runtime sees it.</summary>
    static readonly string[] SysAdminUnconfined = ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined"];

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    static bool Refused(DockerCli.Result r, string key) => Value(r, key) is { Length: > 0 } rc && rc != "0";

    /// <summary>docker's masked /proc paths that this host's kernel has.</summary>
    static List<string> MaskedProcPaths() =>
        new[] { "asound", "acpi", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi" }
            .Where(p => Path.Exists("/proc/" + p)).ToList();

    /// <summary>Masked files with content for host root (what runc's root sees once the mask is gone).</summary>
    static List<string> MaskedFilesWithContent() =>
        MaskedProcPaths().Where(p => p != "kcore" && File.Exists("/proc/" + p) && File.ReadLines("/proc/" + p).Any()).ToList();

    [EscapeFact]
    public async Task RbindOfProc_UptimeCopyCannotBeUnmounted()
    {
        await EscapeHost.HostUpAtLeast(120);
        // runc: no emulated uptime to take away (its /proc/uptime is the host's): nothing to compare.
        var r = await _docker.Sh(Runtimes.Sandbox, SysAdmin, """
            mkdir /tmp/x && mount --rbind /proc /tmp/x || exit 9
            umount /tmp/x/uptime; echo umount=$?
            umount -l /tmp/x/uptime; echo lazy=$?
            echo uptime=$(cut -d' ' -f1 /tmp/x/uptime)
            """);
        double host = EscapeHost.Uptime();
        var v = new Verdict();
        v.Expect(Refused(r, "umount") && Refused(r, "lazy"), Runtimes.Sandbox, "umount of the copy of /proc/uptime refused", r);
        v.Expect(EscapeHost.IsContainerUptime(Value(r, "uptime"), host), Runtimes.Sandbox, $"the copy still shows the container's uptime, not the host's ({host:0})", r);
        v.Done();
    }

    [EscapeFact]
    public async Task RbindOfProc_MeminfoCopyCannotBeUnmounted()
    {
        // runc: /proc/meminfo is the host's there: nothing to compare.
        string hostTotal = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:"));
        var r = await _docker.Sh(Runtimes.Sandbox, [.. SysAdmin, "--memory", "64m"], """
            mkdir /tmp/x && mount --rbind /proc /tmp/x || exit 9
            umount /tmp/x/meminfo; echo umount=$?
            echo total=$(grep MemTotal /tmp/x/meminfo | tr -s ' ')
            """);
        var v = new Verdict();
        v.Expect(Refused(r, "umount"), Runtimes.Sandbox, "umount of the copy of /proc/meminfo refused", r);
        v.Expect(Value(r, "total") == "MemTotal: 65536 kB", Runtimes.Sandbox, $"the copy shows the container's 64 MiB, not the host's \"{hostTotal}\"", r);
        v.Done();
    }

    /// <summary>docker's masked paths (timer_list, keys, acpi...) in an rbind copy of /proc.</summary>
    [EscapeFact]
    public async Task RbindOfProc_MaskedPathCopiesCannotBeUnmasked()
    {
        var masked = MaskedProcPaths();
        Assert.True(masked.Count > 0, "none of docker's masked /proc paths exists on this kernel");
        string script = "mkdir /tmp/x && mount --rbind /proc /tmp/x || exit 9\n" + string.Join("\n", masked.Select(p =>
            $"umount /tmp/x/{p} 2>/dev/null; echo {p}.umount=$?\n" +
            $"if [ -d /tmp/x/{p} ]; then echo {p}.lines=$(ls /tmp/x/{p} | wc -l); else echo {p}.lines=$(head -c 65536 /tmp/x/{p} 2>/dev/null | wc -l); fi"));
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, SysAdmin, script);
        foreach (var p in masked)
        {
            v.Expect(Refused(sr, $"{p}.umount"), Runtimes.Sandbox, $"umount of the copy of /proc/{p} refused", sr);
            v.Expect(Value(sr, $"{p}.lines") == "0", Runtimes.Sandbox, $"the copy of /proc/{p} is still masked (empty)", sr);
        }
        var rc = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, script);
        foreach (var p in masked)
            v.Expect(Value(rc, $"{p}.umount") == "0", Runtimes.Runc, $"the copy of the mask on /proc/{p} can be unmounted", rc);
        foreach (var p in MaskedFilesWithContent())
            v.Expect(Value(rc, $"{p}.lines") is { Length: > 0 } n && n != "0", Runtimes.Runc, $"the host's /proc/{p} is then readable", rc);
        v.Done();
    }

    [EscapeFact]
    public async Task NewProcfs_UptimeAndSysCannotBeUnmounted()
    {
        await EscapeHost.HostUpAtLeast(120);
        // runc: mounting a new procfs over masked paths is refused by the kernel there (mount_too_revealing),
        // and its uptime would be the host's anyway: nothing to compare.
        var r = await _docker.Sh(Runtimes.Sandbox, SysAdmin, """
            mkdir /tmp/p && mount -t proc proc /tmp/p || exit 9
            umount /tmp/p/uptime; echo uptime.umount=$?
            umount /tmp/p/sys; echo sys.umount=$?
            umount /tmp/p/timer_list; echo timer_list.umount=$?
            echo uptime=$(cut -d' ' -f1 /tmp/p/uptime)
            """);
        double host = EscapeHost.Uptime();
        var v = new Verdict();
        foreach (var k in new[] { "uptime.umount", "sys.umount", "timer_list.umount" })
            v.Expect(Refused(r, k), Runtimes.Sandbox, $"{k} refused in the container's own new procfs", r);
        v.Expect(EscapeHost.IsContainerUptime(Value(r, "uptime"), host), Runtimes.Sandbox, $"the new procfs shows the container's uptime, not the host's ({host:0})", r);
        v.Done();
    }

    /// <summary>After `unshare -m` the mounts are copies in a new mount namespace.</summary>
    [EscapeFact]
    public async Task NewMountNamespace_CopiesStayProtected()
    {
        await EscapeHost.HostUpAtLeast(120);
        string script = """
            unshare -m sh -c '
            umount /proc/uptime 2>/dev/null; echo uptime.umount=$?
            umount /proc/timer_list; echo timer_list.umount=$?
            echo uptime=$(cut -d" " -f1 /proc/uptime)
            echo timer_list=$(head -1 /proc/timer_list 2>/dev/null)'
            """;
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, SysAdminUnconfined, script);
        double host = EscapeHost.Uptime();
        v.Expect(Refused(sr, "uptime.umount") && Refused(sr, "timer_list.umount"), Runtimes.Sandbox, "umount of /proc/uptime and /proc/timer_list refused after unshare -m", sr);
        v.Expect(EscapeHost.IsContainerUptime(Value(sr, "uptime"), host), Runtimes.Sandbox, $"uptime is the container's, not the host's ({host:0})", sr);
        v.Expect(Value(sr, "timer_list") == "", Runtimes.Sandbox, "/proc/timer_list still masked", sr);
        // runc: /proc/uptime is no mount there (umount fails, EINVAL); the masked timer_list is one.
        var rc = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, script);
        v.Expect(Value(rc, "timer_list.umount") == "0" && Value(rc, "timer_list").StartsWith("Timer List Version"), Runtimes.Runc,
            "unshare -m then umount unmasks the host's /proc/timer_list", rc);
        v.Done();
    }

    [EscapeFact]
    public async Task MountMove_OfAProtectedMountOrItsCopy_IsRefused()
    {
        await EscapeHost.HostUpAtLeast(120);
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, SysAdmin, """
            touch /tmp/y1 /tmp/y2 /tmp/y3
            mount --move /proc/uptime /tmp/y1; echo move=$?
            mkdir /tmp/x && mount --rbind /proc /tmp/x || exit 9
            mount --move /tmp/x/uptime /tmp/y2; echo copy.move=$?
            mount --move /proc/timer_list /tmp/y3; echo timer_list.move=$?
            echo uptime=$(cut -d' ' -f1 /proc/uptime)
            echo copy.uptime=$(cut -d' ' -f1 /tmp/x/uptime)
            echo timer_list=$(head -1 /proc/timer_list 2>/dev/null)
            """);
        double host = EscapeHost.Uptime();
        foreach (var k in new[] { "move", "copy.move", "timer_list.move" })
            v.Expect(Refused(sr, k), Runtimes.Sandbox, $"{k} refused", sr);
        v.Expect(EscapeHost.IsContainerUptime(Value(sr, "uptime"), host) && EscapeHost.IsContainerUptime(Value(sr, "copy.uptime"), host),
            Runtimes.Sandbox, $"/proc/uptime and its copy still show the container's uptime, not the host's ({host:0})", sr);
        v.Expect(Value(sr, "timer_list") == "", Runtimes.Sandbox, "/proc/timer_list still masked", sr);
        var rc = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, """
            touch /tmp/y3
            mount --move /proc/timer_list /tmp/y3; echo timer_list.move=$?
            echo timer_list=$(head -1 /proc/timer_list 2>/dev/null)
            """);
        v.Expect(Value(rc, "timer_list.move") == "0" && Value(rc, "timer_list").StartsWith("Timer List Version"), Runtimes.Runc,
            "moving the mask away shows the host's /proc/timer_list", rc);
        v.Done();
    }

    /// <summary>pivot_root into an rbind copy of / in a new mount namespace: the old root's /proc is a copy too.</summary>
    [EscapeFact]
    public async Task PivotRoot_OldRootCopiesStayProtected()
    {
        await EscapeHost.HostUpAtLeast(120);
        string script = """
            unshare -m sh -c '
            mkdir -p /tmp/nr && mount --rbind / /tmp/nr && cd /tmp/nr && mkdir -p old || exit 9
            pivot_root . old; echo pivot=$?
            cd /
            umount /old/proc/uptime 2>/dev/null; echo old.uptime.umount=$?
            umount /proc/uptime 2>/dev/null; echo uptime.umount=$?
            umount /old/proc/timer_list 2>/dev/null; echo old.timer_list.umount=$?
            umount /old/proc/sys 2>/dev/null; echo old.sys.umount=$?
            echo uptime=$(cut -d" " -f1 /old/proc/uptime 2>/dev/null || cut -d" " -f1 /proc/uptime)
            echo timer_list=$(head -1 /old/proc/timer_list 2>/dev/null)'
            """;
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, SysAdminUnconfined, script);
        double host = EscapeHost.Uptime();
        // pivot_root itself may be allowed (the copy of the root is the container's); what it leaves must stay protected.
        if (Value(sr, "pivot") == "0")
            foreach (var k in new[] { "old.uptime.umount", "uptime.umount", "old.timer_list.umount", "old.sys.umount" })
                v.Expect(Refused(sr, k), Runtimes.Sandbox, $"{k} refused after pivot_root", sr);
        v.Expect(EscapeHost.IsContainerUptime(Value(sr, "uptime"), host), Runtimes.Sandbox, $"uptime is the container's, not the host's ({host:0})", sr);
        v.Expect(Value(sr, "timer_list") == "", Runtimes.Sandbox, "/proc/timer_list still masked", sr);
        var rc = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, script);
        v.Expect(Value(rc, "pivot") == "0" && Value(rc, "old.timer_list.umount") == "0" && Value(rc, "timer_list").StartsWith("Timer List Version"),
            Runtimes.Runc, "pivot_root then umount of the old root's mask shows the host's /proc/timer_list", rc);
        v.Done();
    }

    /// <summary>
    /// pivot_root whose new root is a masked dir (/sys/firmware, /proc/acpi) would move the mask away from
    /// its place in the old root. The pivoting process cannot look at the old root afterwards (its root is the
    /// empty mask), so the effect shown is the call itself: refused under sandbox-runc, done under runc.
    /// The /proc/sys case, where the effect is a host sysctl, is in ProcSysCopyEscapeTests.
    /// </summary>
    [EscapeFact]
    public async Task PivotRoot_IntoAMaskedDir_IsRefused()
    {
        var dirs = new[] { "/sys/firmware", "/proc/acpi", "/proc/scsi", "/proc/asound" }.Where(Directory.Exists).ToList();
        Assert.True(dirs.Count > 0, "no masked dir exists on this host");
        string script = string.Join("\n", dirs.Select(d => $"unshare -m sh -c 'cd {d} && pivot_root . .'; echo {d}.pivot=$?"));
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, SysAdminUnconfined, script);
        foreach (var d in dirs)
            v.Expect(Refused(sr, $"{d}.pivot"), Runtimes.Sandbox, $"pivot_root into the mask on {d} refused", sr);
        var rc = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, script);
        foreach (var d in dirs)
            v.Expect(Value(rc, $"{d}.pivot") == "0", Runtimes.Runc, $"pivot_root into the mask on {d} works", rc);
        v.Done();
    }

    /// <summary>A bind copy of a read-only volume, remounted read-write (also after unshare -m).</summary>
    [EscapeFact]
    public async Task BindCopyOfReadOnlyVolume_CannotBeMadeWritable()
    {
        string dir = _host.TempDir("ro");
        string script = """
            mkdir /tmp/c && mount --bind /ro /tmp/c || exit 9
            mount -o remount,bind,rw /tmp/c; echo copy.remount=$?
            echo x > /tmp/c/copy 2>/dev/null; echo copy.write=$?
            mkdir /tmp/r && mount --rbind /ro /tmp/r && mount -o remount,bind,rw /tmp/r; echo rbind.remount=$?
            echo x > /tmp/r/rbind 2>/dev/null
            unshare -m sh -c 'mount -o remount,rw /ro; echo x > /ro/unshared 2>/dev/null'
            """;
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, [.. runtime == Runtimes.Sandbox ? SysAdminUnconfined : Runtimes.RuncMountPrivileges, "-v", $"{dir}:/ro:ro"], script);
            var written = new[] { "copy", "rbind", "unshared" }.Where(f => File.Exists(Path.Combine(dir, f))).ToList();
            foreach (var f in written) File.Delete(Path.Combine(dir, f));
            if (runtime == Runtimes.Sandbox)
                v.Expect(written.Count == 0 && Refused(r, "copy.remount") && Refused(r, "rbind.remount"), runtime,
                    $"read-only volume stays read-only in every copy; host files written: [{string.Join(", ", written)}]", r);
            else
                v.Expect(written.Count == 3, runtime, $"every copy made writable writes the host dir; written: [{string.Join(", ", written)}]", r);
        }
        v.Done();
    }

    /// <summary>
    /// Item 2 with protection on (item 5: as a docker label): a read-only bind over a read-write volume,
    /// taken apart in an rbind copy, would let the container write the host file under it.
    /// </summary>
    [EscapeFact]
    public async Task ProtectInitialMountsLabel_ReadOnlyLayerStaysInEveryCopy()
    {
        string dir = _host.TempDir("layer");
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        string[] mounts = ["--mount", $"type=bind,src={dir},dst=/data", "--mount", $"type=bind,src={dir}/sub,dst=/data/sub,readonly"];
        string script = """
            echo a > /data/sub/direct 2>/dev/null; echo direct.write=$?
            mkdir -p /mnt/y && mount --rbind /data /mnt/y || exit 9
            umount /mnt/y/sub; echo copy.umount=$?
            echo x > /mnt/y/sub/f 2>/dev/null; echo copy.write=$?
            umount /data/sub 2>/dev/null; echo umount=$?
            """;
        string hostFile = Path.Combine(dir, "sub", "f");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string[] options = runtime == Runtimes.Sandbox ? SysAdmin : Runtimes.RuncMountPrivileges;
            var r = await _docker.Sh(runtime, [.. options, "--label", "io.sandbox-runc.protect-initial-mounts=true", .. mounts], script);
            bool written = File.Exists(hostFile);
            File.Delete(hostFile);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(Refused(r, "umount") && Refused(r, "copy.umount"), runtime, "umount of the read-only layer and of its copy refused", r);
                v.Expect(!written, runtime, $"host {hostFile} not written", r);
            }
            else
                v.Expect(written && Value(r, "copy.umount") == "0", runtime, $"the copy is taken apart and host {hostFile} written", r);
        }
        v.Done();
    }

    /// <summary>
    /// Item 5: the docker label protects an ordinary volume from umount, as the annotation does. The host sees
    /// it: after the attempt, a write to /v lands in the host dir only if /v is still mounted.
    /// </summary>
    [EscapeFact]
    public async Task ProtectInitialMountsLabel_OrdinaryVolumeCannotBeUnmounted()
    {
        string dir = _host.TempDir("label");
        string hostFile = Path.Combine(dir, "after");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string[] options = runtime == Runtimes.Sandbox ? SysAdmin : Runtimes.RuncMountPrivileges;
            var r = await _docker.Sh(runtime, [.. options, "--label", "io.sandbox-runc.protect-initial-mounts=true", "-v", $"{dir}:/v"],
                "umount /v; echo umount=$?; umount -l /v 2>/dev/null; echo lazy=$?; echo x > /v/after");
            bool stillMounted = File.Exists(hostFile);
            File.Delete(hostFile);
            if (runtime == Runtimes.Sandbox)
                v.Expect(Refused(r, "umount") && Refused(r, "lazy") && stillMounted, runtime, $"umount of /v refused; /v still the host dir (wrote {hostFile}: {stillMounted})", r);
            else
                v.Expect(Value(r, "umount") == "0" && !stillMounted, runtime, "runc ignores the label: /v is unmounted, the write stays in the container", r);
        }
        v.Done();
    }
}
