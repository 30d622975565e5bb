// Attempts against a container's emulated /proc and /sys, through real containers (bundle-level, the
// published binary), each judged by its host-visible effect:
//   - host root-only files of the /sys and /proc/sys mirror stay unreadable to container root (which holds
//     CAP_DAC_OVERRIDE over the nodes it owns), while ordinary files read; under runc, where container root
//     is host root, the same reads work (the attempt is meaningful);
//   - a nested user namespace's "root" cannot write per-container or "max wins" values (the host's value
//     stays), nor the container's network sysctls, while container root with CAP_SYS_ADMIN sets its own;
//   - a killed emulation helper fails closed: ENOTCONN, never host values, no zombie, `state` says so,
//     and `delete` still removes everything.
using System.Text.Json;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Escape;

public sealed class EmulationEscapeTests(ITestOutputHelper output) : IDisposable
{
    readonly RuntimeCli _rt = new();

    static string? FirstSlabObjects() =>
        Directory.Exists("/sys/kernel/slab")
            ? Directory.GetDirectories("/sys/kernel/slab").Select(d => d + "/objects").FirstOrDefault(File.Exists)
            : null;

    static bool RootOnly(string path) =>
        File.Exists(path) && (File.GetUnixFileMode(path) & (UnixFileMode.OtherRead | UnixFileMode.GroupRead)) == 0;

    [IntegrationFact]
    public async Task HostRootOnlyFilesOfTheMirror_StayUnreadable_OrdinaryOnesRead()
    {
        var secrets = new List<string> { "/proc/sys/vm/mmap_rnd_bits" };
        if (FirstSlabObjects() is { } slab) secrets.Add(slab);
        secrets.RemoveAll(p => !RootOnly(p));
        Assert.NotEmpty(secrets);   // every kernel has 0600 vm.mmap_rnd_bits (CONFIG_HAVE_ARCH_MMAP_RND_BITS)
        string script = string.Join("; ", secrets.Select(p => $"cat {p} >/dev/null 2>&1 && echo readable:{p} || echo refused:{p}; stat -c %a {p}"))
            + "; cat /proc/sys/kernel/ostype /sys/kernel/uevent_seqnum";
        // Every capability: container root with CAP_DAC_OVERRIDE is who the mode bits alone would not stop.
        var all = SandboxRunc.Namespaces.CapabilityNames.All.ToList();
        using var b = new Bundle("sh", "-c", script);
        var defaultCaps = b.Spec.Process!.Capabilities;
        b.Spec.Process.Capabilities = new SandboxRunc.Oci.Capabilities { Bounding = all, Effective = all, Permitted = all };
        string outText = await _rt.RunOk(b.Write(), "rootonly");
        output.WriteLine(outText);
        foreach (var p in secrets)
        {
            Assert.Contains("refused:" + p, outText);
            Assert.DoesNotContain("readable:" + p, outText);
        }
        Assert.Contains("\n0\n", "\n" + outText);       // shown as what "other" gets on the host: nothing
        Assert.Contains("Linux\n", outText);
        Assert.Matches(@"Linux\n\d+\n$", outText);

        // Under runc, container root is host root: the same reads work, so the attempt means something.
        if (File.Exists("/usr/sbin/runc") || File.Exists("/usr/bin/runc"))
        {
            string runcRoot = Path.Combine(Path.GetTempPath(), "sr-runc-" + Guid.NewGuid().ToString("N")[..8]);
            using var runc = new RuntimeCli(File.Exists("/usr/sbin/runc") ? "/usr/sbin/runc" : "/usr/bin/runc");
            b.Spec.Linux!.CgroupsPath += "-runc";
            b.Spec.Process.Capabilities = defaultCaps;   // root owns these files there: no capability needed (this host cannot grant them all)
            b.Spec.Linux.Namespaces = b.Spec.Linux.Namespaces!.Where(n => n.Type != "user").ToList();
            b.Spec.Linux.UidMappings = null;
            b.Spec.Linux.GidMappings = null;
            var r = await runc.Run("run", "--bundle", b.Write(), "rootonly-runc");
            output.WriteLine("runc: " + r);
            Assert.Equal(0, r.ExitCode);
            foreach (var p in secrets) Assert.Contains("readable:" + p, r.Stdout);
        }
    }

    [IntegrationFact]
    public async Task NestedUserNamespace_CannotWriteTheContainersValues_NorRaiseTheHost()
    {
        const string key = "/proc/sys/fs/inotify/max_user_instances";
        string hostBefore = File.ReadAllText(key).Trim();
        string higher = (long.Parse(hostBefore) + 3).ToString();   // a "max wins" write that would raise the host
        const string fwd = "/proc/sys/net/ipv4/conf/lo/forwarding";
        string script =
            $"f0=$(cat {fwd}); v=$((1 - f0)); p0=$(cat /proc/sys/kernel/panic); m0=$(cat {key}); " +
            $"unshare -U -r sh -c \"echo {higher} > {key}\" 2>&1; echo nested-maxwins=$?; " +
            "unshare -U -r sh -c \"echo $((p0 + 7)) > /proc/sys/kernel/panic\" 2>&1; echo nested-panic=$?; " +
            $"unshare -U -r sh -c \"echo $v > {fwd}\" 2>&1; echo nested-net=$?; " +
            $"unshare -U -r -n sh -c \"echo $v > {fwd} && [ \\$(cat {fwd}) = $v ]\" 2>&1; echo own-netns=$?; " +
            $"[ \"$(cat {key})\" = \"$m0\" ] && [ \"$(cat /proc/sys/kernel/panic)\" = \"$p0\" ] && [ \"$(cat {fwd})\" = \"$f0\" ] && echo unchanged";
        try
        {
            using var b = EmulationHelper.DockerLike(["sh", "-c", script]);
            string outText = await _rt.RunOk(b.Write(), "nestedns");
            output.WriteLine(outText);
            Assert.Contains("nested-maxwins=1", outText);
            Assert.Contains("nested-panic=1", outText);
            Assert.Contains("nested-net=1", outText);
            Assert.Contains("Operation not permitted", outText);
            Assert.Contains("own-netns=0", outText);                  // its own network namespace is its own to set
            Assert.EndsWith("\nunchanged\n", outText);                // the container's values stayed
            Assert.Equal(hostBefore, File.ReadAllText(key).Trim());   // and so did the host's

            // Container root holding CAP_SYS_ADMIN sets its own value (and "max wins" may raise the host: not asserted).
            using var admin = EmulationHelper.DockerLike(["sh", "-c", "echo 7 > /proc/sys/kernel/panic && cat /proc/sys/kernel/panic"], "CAP_SYS_ADMIN");
            string panicBefore = File.ReadAllText("/proc/sys/kernel/panic");
            Assert.Equal("7\n", await _rt.RunOk(admin.Write(), "sysadmin"));
            Assert.Equal(panicBefore, File.ReadAllText("/proc/sys/kernel/panic"));
        }
        finally
        {
            if (File.ReadAllText(key).Trim() != hostBefore) File.WriteAllText(key, hostBefore);
        }
    }

    [IntegrationFact]
    public async Task AKilledEmulationHelper_FailsClosed_Visibly_AndDeleteCleansUp()
    {
        string log = Path.Combine(Path.GetTempPath(), "sr-emu-log-" + Guid.NewGuid().ToString("N")[..8]);
        using var b = new Bundle("sleep", "1000");
        await _rt.Detached("--log", log, "create", "--bundle", b.Write(), "emukill");
        await _rt.Ok("start", "emukill");
        try
        {
            int supervisor = EmulationHelper.SupervisorPid(_rt, "emukill");
            int helper = EmulationHelper.HelperPid(_rt, "emukill");
            var before = await _rt.Ok("exec", "emukill", "cat", "/proc/uptime");
            Assert.Matches(@"^\d+\.\d+ \d+\.\d+\n$", before.Stdout);

            Assert.Equal(0, SandboxRunc.Interop.Libc.kill(helper, 9));
            Assert.True(await Procs.WaitGone(supervisor), "the supervisor did not stop after its emulation helper died");
            // Reaped: not even a zombie is left of it.
            Assert.False(Directory.Exists($"/proc/{helper}") && File.ReadAllText($"/proc/{helper}/stat").Contains(") Z "), "the helper is a zombie");

            var after = await _rt.Run("exec", "emukill", "sh", "-c", "cat /proc/uptime; cat /proc/sys/kernel/ostype; cat /proc/meminfo");
            output.WriteLine(after.ToString());
            Assert.Equal("", after.Stdout);   // no host value, nothing
            Assert.Contains("'/proc/uptime': Transport endpoint is not connected", after.Stderr);
            Assert.Contains("'/proc/sys/kernel/ostype': Transport endpoint is not connected", after.Stderr);

            var state = await _rt.Ok("state", "emukill");
            using (var doc = JsonDocument.Parse(state.Stdout))
            {
                Assert.Equal("running", doc.RootElement.GetProperty("status").GetString());
                Assert.False(doc.RootElement.GetProperty("supervisorRunning").GetBoolean());
            }
            string logText = File.Exists(log) ? File.ReadAllText(log) : "";
            output.WriteLine(logText);
            Assert.Contains($"the emulation server (pid {helper}) was killed by signal 9", logText);
        }
        finally
        {
            await _rt.Run("kill", "emukill", "KILL");
            var del = await _rt.Run("delete", "--force", "emukill");
            Assert.Equal(0, del.ExitCode);
            Assert.False(Directory.Exists(Path.Combine(_rt.StateRoot, "emukill")), "delete left the state dir");
            foreach (var c in new[] { "memory", "pids", "freezer" })
                if (!EmulationHelper.CgroupV2) Assert.False(Directory.Exists(b.CgroupDir(c)), $"delete left the {c} cgroup");
            File.Delete(log);
        }
    }

    public void Dispose() => _rt.Dispose();
}
