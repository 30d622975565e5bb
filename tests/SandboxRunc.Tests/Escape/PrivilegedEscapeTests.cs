using System.Globalization;
using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The classic container escapes with every capability (`--privileged` under sandbox-runc, whose
/// capabilities are the user namespace's only): global sysctls, /proc/sysrq-trigger, kernel modules, the
/// host's root block device, the kernel's sysfs knobs, the cgroup v1 release agent, and the host namespaces.
/// Each is shown to work under runc with the least it needs (runc's own --privileged fails on this host:
/// the bounding set lacks CAP_SYS_RESOURCE), and each host value is restored after.
/// </summary>
[Collection(HostGlobalSettings.Name)]
[SupportedOSPlatform("linux")]
public sealed class PrivilegedEscapeTests : IDisposable
{
    static readonly string[] Privileged = ["--privileged"];
    /// <summary>runc: /proc/sys writable (docker mounts it read-only otherwise) and CAP_SYS_ADMIN.</summary>
    static readonly string[] RuncProcSys = ["--cap-add", "SYS_ADMIN", "--security-opt", "systempaths=unconfined"];
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    /// <summary>
    /// Global sysctls. core_pattern, swappiness and dirty_ratio are mirrored (the host's, read-only); the
    /// inotify watch limit is "max wins", which may raise the host's value and must never lower it.
    /// </summary>
    [EscapeTheory]
    [InlineData("kernel/core_pattern")]
    [InlineData("vm/swappiness")]
    [InlineData("vm/dirty_ratio")]
    [InlineData("fs/inotify/max_user_watches")]
    public async Task Privileged_CannotChangeAGlobalSysctl(string key)
    {
        string path = "/proc/sys/" + key;
        string before = _host.Remember(path);
        string value = key switch
        {
            "kernel/core_pattern" => $"srt-core-{Guid.NewGuid().ToString("N")[..8]}",
            "fs/inotify/max_user_watches" => (long.Parse(before, CultureInfo.InvariantCulture) - 1).ToString(CultureInfo.InvariantCulture),
            _ => ((long.Parse(before, CultureInfo.InvariantCulture) + 1) % 100).ToString(CultureInfo.InvariantCulture),
        };
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var r = await _docker.Sh(runtime, runtime == Runtimes.Sandbox ? Privileged : RuncProcSys, $"echo {value} > {path}; echo write=$?");
            string after = File.ReadAllText(path).Trim();
            if (after != before) File.WriteAllText(path, before);
            if (runtime == Runtimes.Sandbox)
                v.Expect(after == before, runtime, $"host {key} unchanged (\"{before}\", was \"{after}\" after the attempt)", r);
            else
                v.Expect(after == value, runtime, $"host {key} written (\"{after}\")", r);
        }
        v.Done();
    }

    [EscapeFact(Needs.SysrqTrigger)]
    public async Task Privileged_CannotWriteSysrqTrigger()
    {
        // "h" only prints the help into the kernel log: the host sees it there.
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            int before = SysrqHelpLines();
            var r = await _docker.Sh(runtime, runtime == Runtimes.Sandbox ? Privileged : RuncProcSys, "echo h > /proc/sysrq-trigger; echo write=$?");
            await Task.Delay(200);
            int after = SysrqHelpLines();
            if (runtime == Runtimes.Sandbox)
                v.Expect(after == before, runtime, "no sysrq help in the host's kernel log", r);
            else
                v.Expect(after > before, runtime, "the host's kernel log shows the sysrq help", r);
        }
        v.Done();
    }

    static int SysrqHelpLines() => EscapeHost.Exec("dmesg").Split('\n').Count(l => l.Contains("sysrq: HELP"));

    /// <summary>
    /// A module is never loaded into the host here: the container asks to load a file that is no module. The
    /// kernel checks the capability first (EPERM) and the file after (ENOEXEC), so runc with CAP_SYS_MODULE
    /// gets past the check and sandbox-runc must not; /proc/modules is unchanged either way.
    /// </summary>
    [EscapeFact(Needs.Modules)]
    public async Task Privileged_CannotLoadAModule()
    {
        string before = File.ReadAllText("/proc/modules");
        const string script = "head -c 4096 /dev/zero > /tmp/x.ko; insmod /tmp/x.ko; echo insmod=$?; modprobe srt-none; echo modprobe=$?";
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, Privileged, script);
        v.Expect(sr.Stderr.Contains("not permitted") && !sr.Stderr.Contains("format error"), Runtimes.Sandbox, "init_module refused for want of the capability (EPERM), before the file is read", sr);
        var rc = await _docker.Sh(Runtimes.Runc, ["--cap-add", "SYS_MODULE"], script);
        v.Expect(!rc.Stderr.Contains("not permitted"), Runtimes.Runc, "init_module gets past the capability check (the file is then refused)", rc);
        v.Expect(File.ReadAllText("/proc/modules") == before, "host", "/proc/modules unchanged");
        v.Done();
    }

    /// <summary>mknod the host's root block device and mount it: the host's whole file system, writable.</summary>
    [EscapeFact(Needs.RootBlockDevice)]
    public async Task Privileged_CannotMountTheHostsRootDevice()
    {
        var dev = EscapeHost.RootDevice()!;
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string marker = _host.Marker("/");
            string[] options = runtime == Runtimes.Sandbox ? Privileged
                : ["--cap-add", "SYS_ADMIN", "--security-opt", "apparmor=unconfined", "--device-cgroup-rule", $"b {dev.Major}:{dev.Minor} rwm"];
            var r = await _docker.Sh(runtime, options, $"""
                mknod /tmp/b b {dev.Major} {dev.Minor}; echo mknod=$?
                mkdir /tmp/m && mount -t {dev.FsType} /tmp/b /tmp/m; echo mount=$?
                [ -b {dev.Path} ] && mount -t {dev.FsType} {dev.Path} /tmp/m; echo t > /tmp/m/{Path.GetFileName(marker)}
                """);
            bool written = File.Exists(marker);
            File.Delete(marker);
            if (runtime == Runtimes.Sandbox)
                v.Expect(!written, runtime, $"nothing written to the host's / ({marker})", r);
            else
                v.Expect(written, runtime, $"the host's / is written through the mounted device ({marker})", r);
        }
        v.Done();
    }

    [EscapeFact(Needs.RootBlockDevice | Needs.ReadableRootDevice)]
    public async Task Privileged_CannotReadTheHostsRootDevice()
    {
        var dev = EscapeHost.RootDevice()!;
        byte[] superblock = new byte[32];
        using (var f = File.OpenRead(dev.Path)) { f.Seek(1024, SeekOrigin.Begin); f.ReadExactly(superblock); }
        string hostHex = Convert.ToHexString(superblock).ToLowerInvariant();
        string script = $"mknod /tmp/b b {dev.Major} {dev.Minor}; od -An -tx1 -j1024 -N32 /tmp/b | tr -d ' \\n'; echo";
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, Privileged, script);
        v.Expect(!sr.Stdout.Contains(hostHex), Runtimes.Sandbox, "the host's superblock is not readable", sr);
        var rc = await _docker.Sh(Runtimes.Runc, ["--device-cgroup-rule", $"b {dev.Major}:{dev.Minor} r"], script);
        v.Expect(rc.Stdout.Contains(hostHex), Runtimes.Runc, "the host's superblock is read", rc);
        v.Done();
    }

    /// <summary>A kernel knob under /sys/kernel/mm (KSM's scan interval), written through /sys, a remounted /sys or a new sysfs.</summary>
    [EscapeFact(NeedsPath = "/sys/kernel/mm/ksm/sleep_millisecs")]
    public async Task Privileged_CannotWriteKernelMmKnobs()
    {
        const string path = "/sys/kernel/mm/ksm/sleep_millisecs";
        string before = _host.Remember(path);
        string value = before == "21" ? "22" : "21";
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, Privileged, $"""
            echo {value} > {path}; echo write=$?
            mount -o remount,rw /sys; echo {value} > {path}; echo remounted.write=$?
            mkdir /tmp/s && mount -t sysfs sysfs /tmp/s && echo {value} > /tmp/s/kernel/mm/ksm/sleep_millisecs; echo new.sysfs.write=$?
            """);
        string after = File.ReadAllText(path).Trim();
        if (after != before) File.WriteAllText(path, before);
        v.Expect(after == before, Runtimes.Sandbox, $"host {path} unchanged ({before}, was {after})", sr);
        var rc = await _docker.Sh(Runtimes.Runc, ["--cap-add", "SYS_ADMIN", "--security-opt", "apparmor=unconfined"],
            $"mount -o remount,rw /sys && echo {value} > {path}; echo write=$?");
        after = File.ReadAllText(path).Trim();
        if (after != before) File.WriteAllText(path, before);
        v.Expect(after == value, Runtimes.Runc, $"host {path} written ({after})", rc);
        v.Done();
    }

    /// <summary>
    /// The cgroup v1 release agent: mount a (named) v1 hierarchy, set its release_agent to a script the
    /// container wrote, let a cgroup empty with notify_on_release: the host's kernel runs the script as host
    /// root. Under runc this writes a marker file on the host; under sandbox-runc it must not, nor may the
    /// release_agent of a hierarchy the host uses be written.
    /// </summary>
    [Trait("Category", "CgroupV2")]
    [EscapeFact]
    public async Task Privileged_CannotUseTheCgroupReleaseAgent()
    {
        foreach (var agent in Directory.GetDirectories("/sys/fs/cgroup").Select(d => Path.Combine(d, "release_agent")).Where(File.Exists))
            _host.Remember(agent);
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string dir = _host.TempDir("ra");
            string marker = Path.Combine(dir, "marker");
            string hierarchy = $"srtra{Guid.NewGuid().ToString("N")[..8]}";
            _host.Defer($"remove cgroup hierarchy {hierarchy}", () => RemoveHierarchy(hierarchy));
            string script = $"""
                printf '#!/bin/sh\ntouch {marker}\n' > /w/agent && chmod +x /w/agent
                mkdir -p /tmp/cg && mount -t cgroup -o none,name={hierarchy} cgroup /tmp/cg; echo cg.mount=$?
                mkdir -p /tmp/cg/x && echo 1 > /tmp/cg/x/notify_on_release
                echo {dir}/agent > /tmp/cg/release_agent; echo agent=$?
                sh -c 'echo $$ > /tmp/cg/x/cgroup.procs'
                """;
            if (runtime == Runtimes.Sandbox)
                script += $"\nfor f in /sys/fs/cgroup/*/release_agent; do [ -e \"$f\" ] && echo {dir}/agent > \"$f\" 2>/dev/null && echo \"existing=$f\"; done; true";
            // On cgroup v2 docker gives every container a cgroup namespace of its own, from which the kernel lets no
            // one make a new v1 hierarchy: runc's container needs the host's for the attack to mean anything there (and sandbox-runc's is asked for the same).
            string[] runcCgroupNs = EmulationHelper.CgroupV2 ? ["--cgroupns=host"] : [];
            string[] privileges = runtime == Runtimes.Sandbox ? Privileged : Runtimes.RuncMountPrivileges;
            var r = await _docker.Sh(runtime, [.. privileges, .. runcCgroupNs, "-v", $"{dir}:/w"], script);
            // The attempt was made: a container that never started proves nothing either way.
            v.Expect(r.Stdout.Contains("cg.mount="), runtime, "the container ran the attempt", r);
            if (runtime == Runtimes.Sandbox)
            {
                await Task.Delay(3000); // the kernel runs the agent within milliseconds of the release
                v.Expect(!File.Exists(marker), runtime, $"the host ran no release agent (marker {marker})", r);
                v.Expect(Value(r, "existing") == "", runtime, "no host hierarchy's release_agent written", r);
            }
            else
            {
                bool ran = await Eventually.Happens(() => File.Exists(marker));
                v.Expect(ran, runtime, $"the host ran the container's release agent (marker {marker}, waited {Patience.Condition.TotalSeconds:0} s)", r);
            }
        }
        v.Done();
    }

    /// <summary>
    /// Mounts the named hierarchy on the host (creating it if it is gone), clears its agent, removes its
    /// cgroups and unmounts it; the kernel frees a v1 hierarchy unmounted without children. A cgroup just
    /// removed is still dying for a moment (the hierarchy then survives the unmount), so this is repeated
    /// until the hierarchy is gone from /proc/self/cgroup.
    /// </summary>
    static void RemoveHierarchy(string name)
    {
        string mnt = Path.Combine("/tmp", "srt-esc-cg-" + name);
        var until = DateTime.UtcNow + Patience.Condition; // a dying cgroup takes a moment, longer on a loaded machine
        while (DateTime.UtcNow < until && File.ReadAllText("/proc/self/cgroup").Contains($"name={name}:"))
        {
            Directory.CreateDirectory(mnt);
            try
            {
                EscapeHost.Exec("mount", "-t", "cgroup", "-o", $"none,name={name}", "cgroup", mnt);
                try
                {
                    File.WriteAllText(Path.Combine(mnt, "release_agent"), "\n");
                    foreach (var child in Directory.GetDirectories(mnt, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length))
                        Directory.Delete(child);
                }
                finally { EscapeHost.Exec("umount", mnt); }
            }
            finally { Directory.Delete(mnt); }
            Thread.Sleep(300);
        }
        if (File.ReadAllText("/proc/self/cgroup").Contains($"name={name}:"))
            throw new InvalidOperationException($"cgroup v1 hierarchy name={name} is still there");
    }

    [EscapeTheory]
    [InlineData("--network=host", "net", "sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--pid=host", "pid", "sandbox-runc containers can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--ipc=host", "ipc", "sandbox-runc containers can't share namespaces [ipc] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("--uts=host", "uts", "sandbox-runc containers can't share namespaces [uts] with the host (because they use the linux user-namespace for isolation)")]
    public async Task HostNamespaces_AreRefused(string option, string ns, string message)
    {
        string hostNs = new FileInfo($"/proc/self/ns/{ns}").LinkTarget!;
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, [option], $"readlink /proc/self/ns/{ns}");
        v.Expect(sr.ExitCode != 0 && sr.Stderr.Contains(message), Runtimes.Sandbox, $"refused with \"{message}\"", sr);
        v.Expect(!sr.Stdout.Contains(hostNs), Runtimes.Sandbox, $"never in the host's {hostNs}", sr);
        var rc = await _docker.Sh(Runtimes.Runc, [option], $"readlink /proc/self/ns/{ns}");
        v.Expect(rc.ExitCode == 0 && rc.Stdout.Trim() == hostNs, Runtimes.Runc, $"in the host's {hostNs}", rc);
        v.Done();
    }
}
