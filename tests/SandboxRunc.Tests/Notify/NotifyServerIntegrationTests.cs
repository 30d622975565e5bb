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

            // TOCTOU: the buffer flipped between mine and prot while remounting rw
            Assert.Equal("0", r["toctou_prot_rw"]);
            Assert.Equal("1", r["prot_ro_final"]);
            Assert.True(long.Parse(r["toctou_flips"]) >= 10000);
            Assert.True(int.Parse(r["toctou_ok"]) > 0, "some remounts hit the container's own tmpfs");
            Assert.True(int.Parse(r["toctou_eperm"]) > 0, "some remounts hit the protected mount");

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
            Assert.Equal("20000", r["jail_calls"]);

            var log = File.ReadAllLines(Path.Combine(dir, "refusals.jsonl"));
            Assert.Contains(log, l => l.Contains("\"syscall\":\"umount2\"") && l.Contains("/prot"));
            Assert.Contains(log, l => l.Contains("CAP_SYS_ADMIN"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

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

        using var conn = await listenSocket.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var (listener, payload) = UnixSocket.ReceiveFd((int)conn.Handle);
        int pid = int.Parse(payload);
        var rules = MountRules.FromMountInfo("probe", File.ReadAllText($"/proc/{pid}/mountinfo"), [Path.Combine(work, "prot")]);
        using var server = new NotifyServer(rules, Path.Combine(dir, "refusals.jsonl"), containerInitPid: pid);
        server.Start();
        server.AddListener(listener.Release());
        conn.Send("g"u8);

        bool exited = proc.WaitForExit(TimeSpan.FromSeconds(120));
        if (!exited) proc.Kill(entireProcessTree: true);
        string text = await stdout;
        output.WriteLine($"server: continued {server.Continued}, refused {server.Refused}, performed {server.Performed}");
        string err = await stderr;
        Assert.True(exited, $"probe hung:\n{text}\nstderr: {err}");
        Assert.True(proc.ExitCode == 0, $"probe exit {proc.ExitCode}:\n{text}\nstderr: {err}");
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
    }
}
