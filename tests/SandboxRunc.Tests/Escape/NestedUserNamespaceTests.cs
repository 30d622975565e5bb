using System.Globalization;
using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 3: a process in a user namespace nested in the container's (`unshare -U -r`, possible
/// with docker's default capabilities once docker's seccomp profile is off) reads a full CapEff, yet holds
/// no capability over the container's namespaces. Every check a helper makes for it (the emulation's sysctl
/// writes: global, per-container, net, uts, ipc; the supervisor's mount, umount, bind, remount, proc) must
/// refuse it, and the host must show no change: host sysctls, the container's namespaces read from the host
/// with nsenter, the container's mount table read from /proc/PID/mountinfo, host files.
///
/// runc has nothing to compare here: its container root is host root, and a nested namespace's root has no
/// capability over the parent's namespaces, which the kernel itself enforces (and docker mounts its
/// /proc/sys read-only). Instead, the controls show that what the nested namespace is refused works for the
/// container's own root when it holds the capability, and in a network namespace the nested one owns.
/// </summary>
[Collection(HostGlobalSettings.Name)]
[SupportedOSPlatform("linux")]
public sealed class NestedUserNamespaceTests : IDisposable
{
    const string InotifyInstances = "/proc/sys/fs/inotify/max_user_instances";
    static readonly string[] Unconfined = ["--security-opt", "seccomp=unconfined"];
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    static bool Refused(DockerCli.Result r, string key) => Value(r, key) is { Length: > 0 } rc && rc != "0";

    async Task<(string Name, int Pid)> Container(params string[] options)
    {
        string name = await _docker.RunDetached("nest", Runtimes.Sandbox, [.. Unconfined, .. options], "sleep", "300");
        return (name, int.Parse(await _docker.Inspect(name, "{{.State.Pid}}"), CultureInfo.InvariantCulture));
    }

    /// <summary>`docker exec NAME unshare -U -r sh -c SCRIPT`, which first prints the nested uid_map.</summary>
    Task<DockerCli.Result> Nested(string name, string script) =>
        _docker.Run("exec", name, "unshare", "-U", "-r", "sh", "-c", "echo nested=$(tr -s ' ' < /proc/self/uid_map)\n" + script);

    static void ExpectNested(Verdict v, DockerCli.Result r) =>
        v.Expect(Value(r, "nested") == "0 0 1", Runtimes.Sandbox, "the script ran in a nested user namespace (uid_map \"0 0 1\")", r);

    /// <summary>The issue's reproduction: a global (host) sysctl written from the nested namespace.</summary>
    [EscapeFact]
    public async Task NestedUserNamespace_CannotWriteAHostSysctl()
    {
        string before = _host.Remember(InotifyInstances);
        string value = (long.Parse(before, CultureInfo.InvariantCulture) + 3).ToString(CultureInfo.InvariantCulture);
        var (name, _) = await Container();
        var r = await Nested(name, $"echo {value} > {InotifyInstances}; echo write=$?");
        string after = File.ReadAllText(InotifyInstances).Trim();
        if (after != before) File.WriteAllText(InotifyInstances, before);
        var v = new Verdict();
        ExpectNested(v, r);
        v.Expect(Refused(r, "write"), Runtimes.Sandbox, "the write is refused", r);
        v.Expect(after == before, Runtimes.Sandbox, $"host fs.inotify.max_user_instances unchanged ({before}, was {after} after the attempt)", r);
        v.Done();
    }

    /// <summary>Per-container (kernel.panic), net (ip_forward), uts (hostname) and ipc (shmmax) sysctls.</summary>
    [EscapeFact]
    public async Task NestedUserNamespace_CannotWriteTheContainersSysctls()
    {
        var (name, pid) = await Container();
        string panic = (await _docker.Ok("exec", name, "cat", "/proc/sys/kernel/panic")).Stdout.Trim();
        string forward = await EscapeHost.InNamespace(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_forward");
        string hostname = await EscapeHost.InNamespace(pid, "-u", "hostname");
        string shmmax = await EscapeHost.InNamespace(pid, "-i", "cat", "/proc/sys/kernel/shmmax");
        string hostPanic = File.ReadAllText("/proc/sys/kernel/panic").Trim();
        string newPanic = panic == "77" ? "78" : "77", newForward = forward == "1" ? "0" : "1";

        var r = await Nested(name, $"""
            echo {newPanic} > /proc/sys/kernel/panic; echo panic.write=$?
            echo {newForward} > /proc/sys/net/ipv4/ip_forward; echo ip_forward.write=$?
            echo srt-pwned > /proc/sys/kernel/hostname; echo hostname.write=$?
            echo 4096 > /proc/sys/kernel/shmmax; echo shmmax.write=$?
            """);
        var v = new Verdict();
        ExpectNested(v, r);
        foreach (var k in new[] { "panic.write", "ip_forward.write", "hostname.write", "shmmax.write" })
            v.Expect(Refused(r, k), Runtimes.Sandbox, $"{k} refused", r);
        v.Expect((await _docker.Ok("exec", name, "cat", "/proc/sys/kernel/panic")).Stdout.Trim() == panic, Runtimes.Sandbox, $"the container's kernel.panic unchanged ({panic})", r);
        v.Expect(await EscapeHost.InNamespace(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_forward") == forward, Runtimes.Sandbox, $"ip_forward of the container's netns, read from the host, unchanged ({forward})", r);
        v.Expect(await EscapeHost.InNamespace(pid, "-u", "hostname") == hostname, Runtimes.Sandbox, $"hostname of the container's uts namespace, read from the host, unchanged ({hostname})", r);
        v.Expect(await EscapeHost.InNamespace(pid, "-i", "cat", "/proc/sys/kernel/shmmax") == shmmax, Runtimes.Sandbox, $"shmmax of the container's ipc namespace, read from the host, unchanged ({shmmax})", r);
        v.Expect(File.ReadAllText("/proc/sys/kernel/panic").Trim() == hostPanic, Runtimes.Sandbox, "host kernel.panic unchanged", r);
        v.Done();
    }

    /// <summary>
    /// Every mount operation the supervisor performs itself (remount, umount, bind, a new procfs done as an rbind)
    /// from the nested namespace, which owns no mount namespace: the container's mount table, read from the
    /// host, does not change, and the volumes stay what they were.
    /// </summary>
    [EscapeFact]
    public async Task NestedUserNamespace_CannotHaveTheSupervisorMount()
    {
        string rw = _host.TempDir("nest-rw"), ro = _host.TempDir("nest-ro");
        var (name, pid) = await Container("-v", $"{rw}:/v", "-v", $"{ro}:/ro:ro");
        var before = MountTable(pid);
        var r = await Nested(name, """
            mount -o remount,rw /ro; echo ro.remount.rw=$?
            echo x > /ro/nested 2>/dev/null
            umount /proc/uptime; echo uptime.umount=$?
            mount --bind /tmp /proc/sys; echo bind.over.proc.sys=$?
            umount /v; echo volume.umount=$?
            mount -o remount,bind,ro /v; echo volume.remount.ro=$?
            mkdir -p /tmp/b; mount --bind /v /tmp/b; echo volume.bind=$?
            mkdir -p /tmp/p; mount -t proc proc /tmp/p; echo proc.mount=$?
            """);
        var after = MountTable(pid);
        await _docker.Run("exec", name, "sh", "-c", "echo x > /v/after");
        var v = new Verdict();
        ExpectNested(v, r);
        foreach (var k in new[] { "ro.remount.rw", "uptime.umount", "bind.over.proc.sys", "volume.umount", "volume.remount.ro", "volume.bind", "proc.mount" })
            v.Expect(Refused(r, k), Runtimes.Sandbox, $"{k} refused", r);
        v.Expect(before.SequenceEqual(after), Runtimes.Sandbox,
            $"the container's mount table, read from the host, is unchanged:\n  before: {string.Join("\n          ", before)}\n  after:  {string.Join("\n          ", after)}", r);
        v.Expect(!File.Exists(Path.Combine(ro, "nested")), Runtimes.Sandbox, $"nothing written to the read-only volume's host dir {ro}", r);
        v.Expect(File.Exists(Path.Combine(rw, "after")), Runtimes.Sandbox, $"/v is still the host dir {rw}, writable", r);
        v.Done();
    }

    /// <summary>Mount point and options of every mount of the container (its init's mountinfo on the host).</summary>
    static List<string> MountTable(int pid) =>
        File.ReadLines($"/proc/{pid}/mountinfo").Select(l => l.Split(' ')).Select(f => $"{f[4]} {f[5]}").Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// Controls: the container's own root with CAP_SYS_ADMIN and CAP_NET_ADMIN does what the nested namespace
    /// was refused (so the refusals are about the namespace, not a broken path), and the nested namespace may
    /// write the sysctls of a network namespace it owns.
    /// </summary>
    [EscapeFact]
    public async Task Control_WhatTheNestedNamespaceIsRefusedWorksWithTheCapability()
    {
        string rw = _host.TempDir("nest-ctl");
        var (name, pid) = await Container("--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "-v", $"{rw}:/v");
        string forward = await EscapeHost.InNamespace(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_forward");
        string newForward = forward == "1" ? "0" : "1";
        var v = new Verdict();

        var own = await _docker.Run("exec", name, "sh", "-c", $"""
            echo 77 > /proc/sys/kernel/panic; echo panic.write=$?
            echo {newForward} > /proc/sys/net/ipv4/ip_forward; echo ip_forward.write=$?
            echo srt-own > /proc/sys/kernel/hostname; echo hostname.write=$?
            umount /v; echo volume.umount=$?
            echo x > /v/after
            """);
        foreach (var k in new[] { "panic.write", "ip_forward.write", "hostname.write", "volume.umount" })
            v.Expect(Value(own, k) == "0", Runtimes.Sandbox, $"container root with the capability: {k} works", own);
        v.Expect(await EscapeHost.InNamespace(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_forward") == newForward, Runtimes.Sandbox, "ip_forward changed in the container's netns", own);
        v.Expect(await EscapeHost.InNamespace(pid, "-u", "hostname") == "srt-own", Runtimes.Sandbox, "hostname changed in the container's uts namespace", own);
        v.Expect(!File.Exists(Path.Combine(rw, "after")), Runtimes.Sandbox, "/v was unmounted: the write stayed in the container", own);

        var owned = await Nested(name, """
            unshare -n sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward; echo new.netns.write=$?; echo new.netns.value=$(cat /proc/sys/net/ipv4/ip_forward)'
            """);
        v.Expect(Value(owned, "new.netns.write") == "0" && Value(owned, "new.netns.value") == "1", Runtimes.Sandbox,
            "the nested namespace writes ip_forward of the network namespace it created", owned);
        v.Expect(await EscapeHost.InNamespace(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_forward") == newForward, Runtimes.Sandbox,
            "... and the container's own netns keeps its value", owned);
        v.Done();
    }

    /// <summary>
    /// Control for the host-sysctl attempt: "max wins" entries (README) may be raised on the host by the
    /// container's root holding CAP_SYS_ADMIN; the nested namespace, holding none over the container, may not.
    /// </summary>
    [EscapeFact]
    public async Task Control_ContainerRootWithSysAdminMayRaiseAMaxWinsEntry()
    {
        string before = _host.Remember(InotifyInstances);
        string value = (long.Parse(before, CultureInfo.InvariantCulture) + 5).ToString(CultureInfo.InvariantCulture);
        var (name, _) = await Container("--cap-add", "SYS_ADMIN");
        var r = await _docker.Run("exec", name, "sh", "-c", $"echo {value} > {InotifyInstances}; echo write=$?");
        string after = File.ReadAllText(InotifyInstances).Trim();
        if (after != before) File.WriteAllText(InotifyInstances, before);
        var v = new Verdict();
        v.Expect(Value(r, "write") == "0" && after == value, Runtimes.Sandbox, $"the host value is raised to {value} (was {before}, now {after})", r);
        v.Done();
    }
}
