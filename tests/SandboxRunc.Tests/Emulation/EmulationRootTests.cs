// The emulation against the real kernel: namespaced sysctls reach the caller's own network and UTS
// namespaces (created here with unshare), the host's values stay untouched, and the real /proc parses.
using System.Diagnostics;
using System.Text;
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Emulation;

public class EmulationRootTests(ITestOutputHelper output)
{
    /// <summary>A sleep in new namespaces; waits until it is in them (unshare execs sleep in the same pid).</summary>
    sealed class Unshared : IDisposable
    {
        public readonly Process P;

        public Unshared(params string[] flags)
        {
            var psi = new ProcessStartInfo("unshare") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var f in flags) psi.ArgumentList.Add(f);
            psi.ArgumentList.Add("sleep");
            psi.ArgumentList.Add("60");
            P = Process.Start(psi)!;
            for (var end = DateTime.UtcNow + Patience.Condition; DateTime.UtcNow < end; Thread.Sleep(10))
            {
                try { if (File.ReadAllText($"/proc/{P.Id}/comm").Trim() == "sleep") return; }
                catch (IOException) { }
            }
            throw new Xunit.Sdk.XunitException("unshare did not start sleep");
        }

        public int Pid => P.Id;

        public void Dispose()
        {
            try { P.Kill(); P.WaitForExit(5000); } catch (InvalidOperationException) { }
            P.Dispose();
        }
    }

    static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return o.Trim();
    }

    static ContainerFileSystem RealFs() =>
        new(new ContainerView("root-test", HostClock.BoottimeNs(), 0, 0, new Dictionary<string, string>()));

    [RootFact]
    public void NetSysctlIsWrittenInTheCallersNetns_HostUnchanged()
    {
        string hostBefore = File.ReadAllText("/proc/sys/net/ipv4/ip_forward");
        using var ns = new Unshared("--net");
        using var fs = RealFs();
        var caller = new FuseCaller(ns.Pid, 0, 0);
        string nsPath = $"--net=/proc/{ns.Pid}/ns/net";
        // The listing of a per-netns directory is the caller's: the new netns has only "lo". Checked before
        // any write, so a broken namespace switch fails here instead of writing the host's ip_forward.
        Assert.Equal(0, fs.List("proc/sys/net/ipv4/conf", caller, out var conf));
        Assert.Equal(new[] { "all", "default", "lo" }, conf.Select(e => e.Name).OrderBy(n => n, StringComparer.Ordinal));
        string nsInitial = Run("nsenter", nsPath, "cat", "/proc/sys/net/ipv4/ip_forward");
        Assert.Equal(0, fs.Read("proc/sys/net/ipv4/ip_forward", caller, out var before));
        Assert.Equal(nsInitial + "\n", Encoding.ASCII.GetString(before));

        // Both values in turn: whatever the host has, one of them differs from it.
        foreach (var value in new[] { "0", "1" })
        {
            Assert.Equal(0, fs.Write("proc/sys/net/ipv4/ip_forward", caller, Encoding.ASCII.GetBytes(value + "\n")));
            Assert.Equal(value, Run("nsenter", nsPath, "cat", "/proc/sys/net/ipv4/ip_forward"));
            Assert.Equal(0, fs.Read("proc/sys/net/ipv4/ip_forward", caller, out var after));
            Assert.Equal(value + "\n", Encoding.ASCII.GetString(after));
            Assert.Equal(hostBefore, File.ReadAllText("/proc/sys/net/ipv4/ip_forward"));
        }

        Assert.Equal(0, fs.Lookup("proc/sys/net/ipv4/ip_forward", caller, out var node));
        Assert.Equal((FuseNodeKind.File, 0x1A4u), (node.Kind, node.Mode));
    }

    [RootFact]
    public void HostnameIsReadInTheCallersUtsNamespace()
    {
        using var ns = new Unshared("--uts");
        Run("nsenter", $"--uts=/proc/{ns.Pid}/ns/uts", "hostname", "emu-test-box");
        using var fs = RealFs();
        Assert.Equal(0, fs.Read("proc/sys/kernel/hostname", new FuseCaller(ns.Pid, 0, 0), out var name));
        Assert.Equal("emu-test-box\n", Encoding.ASCII.GetString(name));
        Assert.NotEqual("emu-test-box", File.ReadAllText("/proc/sys/kernel/hostname").Trim());
    }

    /// <summary>A FUSE request as the server hands it over: the caller's pidfd, and whether the caller still waits.</summary>
    sealed class FakeRequest(SandboxRunc.Interop.ThreadHandle? caller, bool abandoned) : IFuseRequest
    {
        public bool Abandoned => abandoned;
        public bool Commit() => !abandoned;
        public SandboxRunc.Interop.ThreadHandle? CallerThread() => caller;
    }

    static SandboxRunc.Interop.ThreadHandle PidFd(int pid) => SandboxRunc.Interop.ThreadHandle.Open(pid)!;

    [RootFact]
    public void AWriteWhoseCallerNoLongerWaits_IsDropped_AndOneThatWaitsLands()
    {
        using var ns = new Unshared("--net");
        using var fs = RealFs();
        using var pidfd = PidFd(ns.Pid);
        string nsPath = $"--net=/proc/{ns.Pid}/ns/net";
        string before = Run("nsenter", nsPath, "cat", "/proc/sys/net/ipv4/ip_forward");
        string other = before == "1" ? "0" : "1";
        var gone = new FuseCaller(ns.Pid, 0, 0) { Request = new FakeRequest(pidfd, abandoned: true) };
        Assert.NotEqual(0, fs.Write("proc/sys/net/ipv4/ip_forward", gone, Encoding.ASCII.GetBytes(other)));
        Assert.Equal(before, Run("nsenter", nsPath, "cat", "/proc/sys/net/ipv4/ip_forward"));
        var waiting = new FuseCaller(ns.Pid, 0, 0) { Request = new FakeRequest(pidfd, abandoned: false) };
        Assert.Equal(0, fs.Write("proc/sys/net/ipv4/ip_forward", waiting, Encoding.ASCII.GetBytes(other)));
        Assert.Equal(other, Run("nsenter", nsPath, "cat", "/proc/sys/net/ipv4/ip_forward"));
    }

    [RootFact]
    public void ACallerIsItsPidfd_NeverWhoeverHasItsPidLater()
    {
        // The pidfd of a caller that has exited (its pid free for anyone): nothing is read or written by that pid.
        string hostBefore = File.ReadAllText("/proc/sys/net/ipv4/ip_forward");
        var p = Process.Start("sleep", "60");
        using var pidfd = PidFd(p.Id);
        p.Kill();
        p.WaitForExit();
        using var fs = RealFs();
        var caller = new FuseCaller(p.Id, 0, 0) { Request = new FakeRequest(pidfd, abandoned: false) };
        Assert.Equal(-13, fs.Read("proc/sys/net/ipv4/ip_forward", caller, out var content));
        Assert.Empty(content);
        Assert.Equal(-13, fs.Write("proc/sys/net/ipv4/ip_forward", caller, Encoding.ASCII.GetBytes(hostBefore.Trim() == "1" ? "0" : "1")));
        Assert.Equal(hostBefore, File.ReadAllText("/proc/sys/net/ipv4/ip_forward"));
    }

    [RootFact]
    public void ACallerThreadIsEnteredThroughItsOwnPidfd()
    {
        // The request header carries the calling thread's id; a thread that is not its process's leader is
        // entered through a thread pidfd (PIDFD_THREAD). Here: a thread of this test process, in the host's UTS namespace.
        int tid = (int)SandboxRunc.Interop.Libc.syscall(186 /* gettid */, 0, 0, 0, 0, 0, 0);
        string name = "";
        int r = 0;
        var t = new Thread(() =>
        {
            int me = (int)SandboxRunc.Interop.Libc.syscall(186, 0, 0, 0, 0, 0, 0);
            using var fs = RealFs();
            r = fs.Read("proc/sys/kernel/hostname", new FuseCaller(me, 0, 0), out var bytes);
            name = Encoding.ASCII.GetString(bytes);
            tid = me;
        });
        t.Start();
        t.Join();
        Assert.NotEqual(Environment.ProcessId, tid);
        Assert.Equal(0, r);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/hostname"), name);
    }

    [RootFact]
    public void GoneCallerIsEacces()
    {
        using var fs = RealFs();
        Assert.Equal(-13, fs.Read("proc/sys/net/ipv4/ip_forward", new FuseCaller(int.MaxValue - 1, 0, 0), out _));
    }

    [RootFact]
    public void RealProcParses()
    {
        using var fs = RealFs();
        var caller = new FuseCaller(Environment.ProcessId, 0, 0);
        foreach (var f in new[] { "meminfo", "cpuinfo", "stat", "loadavg", "diskstats", "swaps", "uptime" })
            Assert.Equal(0, fs.Read("proc/" + f, caller, out _));
        Assert.Equal(0, fs.Read("proc/meminfo", caller, out var mem));
        string hostTotal = File.ReadLines("/proc/meminfo").First();
        Assert.Equal(hostTotal, Encoding.ASCII.GetString(mem).Split('\n')[0]);   // no cgroup: the host's MemTotal

        for (int i = 0; i < 1000; i++) fs.Read("proc/uptime", caller, out _);
        const int N = 20000;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < N; i++) fs.Read("proc/uptime", caller, out _);
        double us = sw.Elapsed.TotalMicroseconds / N;
        // A figure, not a verdict: a loaded machine makes any bound flaky; tests/bench/bench.sh measures the reads.
        output.WriteLine($"Read(proc/uptime): {us:F2} µs");
    }

    [RootFact(needsV1: true)]
    public void RealV1Cgroup_MemoryLimitAndCpuset()
    {
        string name = "emu-test-" + Environment.ProcessId;
        string mem = "/sys/fs/cgroup/memory/" + name, cs = "/sys/fs/cgroup/cpuset/" + name, acct = "/sys/fs/cgroup/cpuacct/" + name;
        Directory.CreateDirectory(mem);
        Directory.CreateDirectory(cs);
        Directory.CreateDirectory(acct);
        try
        {
            File.WriteAllText(mem + "/memory.limit_in_bytes", "268435456");
            File.WriteAllText(cs + "/cpuset.mems", File.ReadAllText("/sys/fs/cgroup/cpuset/cpuset.mems").Trim());
            File.WriteAllText(cs + "/cpuset.cpus", "0");
            using var fs = new ContainerFileSystem(new ContainerView("cg-test", HostClock.BoottimeNs(), 0, 0,
                new Dictionary<string, string> { ["memory"] = mem, ["cpuset"] = cs, ["cpuacct"] = acct }));
            var caller = new FuseCaller(Environment.ProcessId, 0, 0);
            Assert.Equal(0, fs.Read("proc/meminfo", caller, out var m));
            Assert.StartsWith("MemTotal:         262144 kB\n", Encoding.ASCII.GetString(m));
            Assert.Equal(0, fs.Read("proc/cpuinfo", caller, out var c));
            Assert.Single(Encoding.ASCII.GetString(c).Split('\n'), l => l.StartsWith("processor"));
            Assert.Equal(0, fs.Read("proc/stat", caller, out var st));
            var lines = Encoding.ASCII.GetString(st).Split('\n');
            Assert.Single(lines, l => l.StartsWith("cpu") && l.Length > 3 && char.IsDigit(l[3]));
        }
        finally
        {
            foreach (var d in new[] { mem, cs, acct }) try { Directory.Delete(d); } catch (IOException) { }
        }
    }
}
