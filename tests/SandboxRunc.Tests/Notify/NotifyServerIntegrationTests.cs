using System.Diagnostics;
using System.Net.Sockets;
using SandboxRunc.Interop;
using SandboxRunc.Seccomp.Notify;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace SandboxRunc.Tests.Notify;

/// <summary>
/// The notify server end to end, without the runtime: probe.c (compiled here) becomes root of its
/// own user + mount namespace, installs <see cref="NotifyFilter.Program"/> with NEW_LISTENER, hands
/// us the listener, and runs mount scenarios that the kernel alone would all allow.
/// </summary>
public class NotifyServerIntegrationTests(ITestOutputHelper output)
{
    [RootFact]
    public async Task ProbeScenarios()
    {
        string dir = Directory.CreateTempSubdirectory("notify-probe-").FullName;
        try
        {
            var r = await RunProbe(dir);
            foreach (var (k, v) in r) output.WriteLine($"{k}={v}");

            // read-only bind made before the filter: stays read-only
            Assert.Equal("EPERM", r["remount_bind_rw_prot"]);
            Assert.Equal("EPERM", r["remount_rw_prot"]);
            Assert.Equal("EPERM", r["remount_bind_rw_prot_magic"]);
            Assert.Equal("0", r["remount_bind_ro_prot"]);
            Assert.Equal("1", r["prot_ro"]);

            // a tmpfs of the container's own: free, superblock options too
            Assert.Equal("0", r["tmpfs_mount_mine"]);
            Assert.Equal("0", r["tmpfs_remount_ro_mine"]);
            Assert.Equal("1", r["mine_ro_after_ro"]);
            Assert.Equal("0", r["tmpfs_remount_rw_size_mine"]);
            Assert.Equal("0", r["mine_ro_after_rw"]);
            Assert.Equal("2048", r["mine_size_kb"]);
            Assert.Equal("0", r["umount_mine"]);

            // protected mount: no unmount, no move
            Assert.Equal("EPERM", r["umount_prot"]);
            Assert.Equal("EPERM", r["umount_detach_prot"]);
            Assert.Equal("EPERM", r["move_prot"]);

            // a bind of a read-only initial mount stays read-only
            Assert.Equal("0", r["bind_prot_to_copy"]);
            Assert.Equal("1", r["copy_ro"]);
            Assert.Equal("EPERM", r["remount_bind_rw_copy"]);
            Assert.Equal("0", r["umount_copy"]);
            Assert.Equal("0", r["propagation_private_mine"]);

            // the same rules in a new mount namespace
            Assert.Equal("EPERM", r["unshare_remount_bind_rw_prot"]);
            Assert.Equal("EPERM", r["unshare_umount_prot"]);
            Assert.Equal("0", r["unshare_remount_ro_mine"]);
            Assert.Equal("1", r["unshare_mine_ro"]);

            Assert.Equal("EPERM", r["nocap_remount_mine"]);
            Assert.Equal("ENOSYS", r["open_tree"]);
            Assert.Equal("ENOSYS", r["fsopen"]);
            Assert.Equal("ENOSYS", r["mount_setattr"]);
            Assert.Equal("EBUSY", r["second_listener"]);

            // TOCTOU: the buffer flipped between mine and prot while remounting rw. What must never happen
            // decides: the protected mount became writable. How the remounts fell (toctou_ok on the tmpfs of
            // its own, toctou_eperm on the protected mount, toctou_other on a torn name) depends on the
            // scheduling: figures, printed above.
            Assert.Equal("0", r["toctou_prot_rw"]);
            Assert.Equal("1", r["prot_ro_final"]);

            // copies of the protected mount (rbind) stay protected and read-only; the copy as a whole may go
            Assert.Equal("0", r["copy_rbind"]);
            Assert.Equal("1", r["copy_prot_ro"]);
            Assert.Equal("EPERM", r["copy_umount_prot"]);
            Assert.Equal("EPERM", r["copy_umount_prot_detach"]);
            Assert.Equal("EPERM", r["copy_move_prot"]);
            Assert.Equal("EPERM", r["copy_remount_rw_prot"]);
            Assert.Equal("0", r["copy_umount_tree"]);

            // a nested user namespace reads a full CapEff but holds nothing over this mount namespace
            Assert.Equal("EPERM", r["nested_umount_mine"]);
            Assert.Equal("EPERM", r["nested_bind_over_mine"]);
            Assert.Equal("EPERM", r["nested_remount_ro_mine"]);
            Assert.Equal("0", r["umount_mine_after_nested"]);

            // pivot_root: performed onto our own mount; the copy under put_old stays protected;
            // refused onto the protected mount itself
            Assert.Equal("0", r["pivot_root_own"]);
            Assert.Equal("1", r["pivot_copy_prot_ro"]);
            Assert.Equal("EPERM", r["pivot_umount_copy_prot"]);
            Assert.Equal("0", r["pivot_umount_old"]);
            Assert.Equal("EPERM", r["pivot_root_prot"]);
            Assert.Equal("1", r["prot_ro_after_pivot"]);

            // a FIFO at proc/meminfo of the caller's root never hangs a worker
            Assert.Equal("10000", r["jail_calls"]);

            // a mount the caller holds open: busy, as the kernel says (the supervisor's few retries of a busy
            // unmount end); once closed, unmounted
            Assert.Equal("EBUSY", r["umount_held_bench"]);
            Assert.Equal("0", r["umount_released_bench"]);

            // The benchmark's 500 mounts and unmounts of a tmpfs of its own all worked (the timings are figures),
            // none refused with EBUSY (an unmount whose name showed another mount than the one decided on is
            // looked up again; the supervisor's stderr records each such case with both mount ids).
            Assert.True(r["bench_errors"] == "0", $"{r["bench_errors"]} mount/umount2 of a tmpfs of its own failed under the filter, first: {r["bench_first_error"]}");
            Assert.True(r["bench_umount_busy"] == "0", $"umount2 right after a trapped mount failed with EBUSY {r["bench_umount_busy"]} times of 500");

            var log = File.ReadAllLines(Path.Combine(dir, "refusals.jsonl"));
            Assert.Contains(log, l => l.Contains("\"syscall\":\"umount2\"") && l.Contains("/prot"));
            Assert.Contains(log, l => l.Contains("CAP_SYS_ADMIN"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The scenarios as a whole: well under the run's per-test hang limit (--blame-hang-timeout 300 s).</summary>
    static readonly TimeSpan WholeProbe = TimeSpan.FromSeconds(200);

    async Task<Dictionary<string, string>> RunProbe(string dir)
    {
        string probe = Path.Combine(dir, "probe");
        string sourceFile = Path.Combine(Repo.Root, "tests", "SandboxRunc.Tests", "Notify", "probe.c");
        var cc = Process.Start(new ProcessStartInfo("gcc", ["-O2", "-Wall", "-Werror", "-pthread", "-o", probe, sourceFile]) { RedirectStandardError = true })!;
        string ccErr = await cc.StandardError.ReadToEndAsync();
        await cc.WaitForExitAsync();
        Assert.True(cc.ExitCode == 0, "gcc: " + ccErr);

        string work = Path.Combine(dir, "work");
        Directory.CreateDirectory(work);
        string bpf = Path.Combine(dir, "filter.bpf");
        File.WriteAllBytes(bpf, NotifyFilter.Program());
        string sockPath = Path.Combine(dir, "sock");
        using var listenSocket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listenSocket.Bind(new UnixDomainSocketEndPoint(sockPath));
        listenSocket.Listen(1);

        var psi = new ProcessStartInfo(probe, [bpf, sockPath, work]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var proc = Process.Start(psi)!;
        var stdout = proc.StandardOutput.ReadToEndAsync();
        var stderr = proc.StandardError.ReadToEndAsync();
        NotifyServer? server = null;

        // Whatever goes wrong, the failure shows the probe's output, its stderr (die() messages) and exit status.
        async Task<string> Evidence(string what)
        {
            if (!proc.HasExited) { proc.Kill(entireProcessTree: true); await proc.WaitForExitAsync(); }
            string serverCounts = server is null ? "not started" : $"continued {server.Continued}, refused {server.Refused}, performed {server.Performed}";
            return $"probe {what}; exit status {proc.ExitCode}; server: {serverCounts}\nstdout:\n{await stdout}\nstderr: {await stderr}";
        }

        // The probe measures unfiltered mounts before it connects: under load that can take a while.
        var accept = listenSocket.AcceptAsync();
        if (await Task.WhenAny(accept, Task.Delay(Patience.Command)) != accept)
            Assert.Fail(await Evidence($"never handed over its listener within {Patience.Command.TotalSeconds:0} s"));
        using var conn = await accept;
        var (listener, payload) = UnixSocket.ReceiveFd((int)conn.Handle);
        int pid = int.Parse(payload);
        var rules = MountRules.FromMountInfo("probe", File.ReadAllText($"/proc/{pid}/mountinfo"), [Path.Combine(work, "prot")]);
        using (server = new NotifyServer(rules, Path.Combine(dir, "refusals.jsonl"), containerInitPid: pid))
        {
            server.Start();
            server.AddListener(listener.Release());
            conn.Send("g"u8);

            // A hang is no progress: no trapped call answered for a while. A loaded machine only makes the
            // scenarios slower (there, one trapped call can take several milliseconds, and there are ~15 000).
            var exit = proc.WaitForExitAsync();
            var total = Stopwatch.StartNew();
            var quiet = Stopwatch.StartNew();
            long answered = 0;
            while (true)
            {
                await Task.WhenAny(exit, Task.Delay(500));
                if (exit.IsCompleted) break;
                long now = server.Continued + server.Refused + server.Performed;
                if (now != answered)
                {
                    answered = now;
                    quiet.Restart();
                }
                else if (quiet.Elapsed > Patience.Condition)
                    Assert.Fail(await Evidence($"hung: no trapped call answered for {quiet.Elapsed.TotalSeconds:0} s ({answered} in all)"));
                if (total.Elapsed > WholeProbe)
                    Assert.Fail(await Evidence($"still running after {total.Elapsed.TotalSeconds:0} s, not hung ({answered} trapped calls answered): it must do less"));
            }
            if (proc.ExitCode != 0) Assert.Fail(await Evidence("failed"));
            output.WriteLine($"server: continued {server.Continued}, refused {server.Refused}, performed {server.Performed}");
        }
        // The server's reasons for its refusals of the probe's own tmpfs ("mine", which it may remount freely): a
        // refusal there says why in the failure's output (it failed once under a full suite's load, never alone).
        string refusals = Path.Combine(dir, "refusals.jsonl");
        if (File.Exists(refusals))
            foreach (var line in File.ReadLines(refusals).Where(l => l.Contains("/mine\"", StringComparison.Ordinal)).Take(5))
                output.WriteLine($"refusal: {line}");
        string text = await stdout;
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
    }
}
