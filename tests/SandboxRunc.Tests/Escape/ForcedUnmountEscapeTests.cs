using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Fuse;
using SandboxRunc.Oci;
using SandboxRunc.Tests.Fuse;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// umount2(MNT_FORCE) needs CAP_SYS_ADMIN in the host's user namespace (the kernel's can_umount), and before
/// it unmounts anything the kernel calls the superblock's umount_begin: a FUSE filesystem aborts its
/// connection (every mount of it fails from then on with "Transport endpoint is not connected", the host's
/// mount included), NFS kills its client's calls. The supervisor unmounts for the container as host root, so
/// it must not pass the flag on: a container that has a host FUSE filesystem bound in (a volume on sshfs, a
/// docker volume plugin's mount) could otherwise take it down for the host, and a container could abort its
/// own emulation connection while requests are being served (their callers then no longer wait, and a thread
/// id is only known to be the caller's while it waits).
///
/// The runc half runs without a user namespace and with CAP_SYS_ADMIN (as the mount attacks do): there the
/// forced unmount of the bind copy aborts the host's FUSE connection, so the attempt shows what it detects.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class ForcedUnmountEscapeTests : IDisposable
{
    const string Runc = "/usr/sbin/runc";
    readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
    }

    T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    /// <summary>A FUSE filesystem served by this test process on a host directory (root's, as a host daemon's would be).</summary>
    sealed class HostFuse : IDisposable
    {
        public readonly string Dir = Directory.CreateTempSubdirectory("sandbox-runc-forced-").FullName;
        readonly FuseMount _mount;
        readonly FuseServer _server;

        public HostFuse()
        {
            var fs = new DictionaryFileSystem();
            fs.AddFile("hello", "hello from the host's fuse\n");
            _mount = FuseMount.Mount(Dir);
            _server = FuseServer.Serve(_mount.Device, fs);
        }

        /// <summary>The host's own read of the file: its content, or the error (ENOTCONN once the connection is aborted).</summary>
        public string HostRead()
        {
            try { return File.ReadAllText(Path.Combine(Dir, "hello")); }
            catch (IOException e) { return "error: " + e.Message; }
        }

        public void Dispose()
        {
            try { _mount.Dispose(); } catch { }
            _server.Wait(TimeSpan.FromSeconds(5));
            try { Directory.Delete(Dir); } catch { }
        }
    }

    static string Value(string output, string key) =>
        Regex.Match(output, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    [EscapeFact]
    public async Task ForcedUnmountOfABoundHostFuseMount_DoesNotAbortTheHostsConnection()
    {
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var fuse = Own(new HostFuse());
            Assert.StartsWith("hello", fuse.HostRead());
            // A copy of its own (never a protected mount), forced off: only umount_begin's side effect is at stake.
            var b = Own(new Bundle("sh", "-c", """
                echo seen=$(cat /home/hello)
                mkdir /tmp/c && mount --bind /home /tmp/c; echo bind=$?
                umount -f /tmp/c; echo force=$?
                echo after=$(cat /home/hello 2>&1)
                """));
            var caps = b.Spec.Process!.Capabilities!;
            caps.Bounding = [.. caps.Bounding ?? [], "CAP_SYS_ADMIN"];
            caps.Effective = [.. caps.Effective ?? [], "CAP_SYS_ADMIN"];
            caps.Permitted = [.. caps.Permitted ?? [], "CAP_SYS_ADMIN"];
            b.Spec.Mounts!.Add(new Mount { Destination = "/home", Type = "bind", Source = fuse.Dir, Options = ["rbind", "rw"] });
            b.Spec.Mounts.Add(new Mount { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev"] });
            var rt = Own(runtime == Runtimes.Sandbox ? new RuntimeCli() : new RuntimeCli(Runc));
            var r = await rt.Run("run", "--bundle", b.Write(), $"esc-force-{Guid.NewGuid().ToString("N")[..8]}");
            string host = fuse.HostRead();
            string output = r.Stdout + r.ContainerOutput;
            v.Expect(Value(output, "seen").StartsWith("hello") && Value(output, "bind") == "0", runtime,
                "the container sees the host's FUSE files and makes its own bind copy of them", r);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(Value(output, "force") is { Length: > 0 } rc && rc != "0", runtime, "umount -f refused (it needs host CAP_SYS_ADMIN)", r);
                v.Expect(host.StartsWith("hello"), runtime, $"the host still reads its FUSE file (read: {host.Trim()})", r);
            }
            else
                v.Expect(Value(output, "force") == "0" && host.StartsWith("error"), runtime,
                    $"runc's root, host root, forces the copy off and aborts the host's connection (host read: {host.Trim()})", r);
        }
        v.Done();
    }

    /// <summary>The container's own emulation connection: a forced unmount of a copy of /proc/uptime would abort it.</summary>
    [EscapeFact]
    public async Task ForcedUnmountOfACopyOfAnEmulatedFile_LeavesTheEmulationServing()
    {
        // runc has no emulated files: nothing to compare.
        var b = Own(new Bundle("sh", "-c", """
            mkdir /tmp/c && touch /tmp/c/uptime && mount --bind /proc/uptime /tmp/c/uptime; echo bind=$?
            umount -f /tmp/c/uptime; echo force=$?
            cat /proc/uptime >/dev/null; echo uptime=$?
            """));
        var caps = b.Spec.Process!.Capabilities!;
        caps.Bounding = [.. caps.Bounding ?? [], "CAP_SYS_ADMIN"];
        caps.Effective = [.. caps.Effective ?? [], "CAP_SYS_ADMIN"];
        caps.Permitted = [.. caps.Permitted ?? [], "CAP_SYS_ADMIN"];
        b.Spec.Mounts!.Add(new Mount { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev"] });
        var rt = Own(new RuntimeCli());
        var r = await rt.Run("run", "--bundle", b.Write(), $"esc-force-{Guid.NewGuid().ToString("N")[..8]}");
        string output = r.Stdout + r.ContainerOutput;
        var v = new Verdict();
        v.Expect(Value(output, "bind") == "0", Runtimes.Sandbox, "the container binds a copy of its emulated /proc/uptime", r);
        v.Expect(Value(output, "force") is { Length: > 0 } rc && rc != "0", Runtimes.Sandbox, "umount -f of the copy refused", r);
        v.Expect(Value(output, "uptime") == "0", Runtimes.Sandbox, "/proc/uptime still reads (the emulation's connection was not aborted)", r);
        v.Done();
    }
}
