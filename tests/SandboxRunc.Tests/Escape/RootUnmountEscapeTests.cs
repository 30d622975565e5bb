using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// umount2 of the caller's own root without MNT_DETACH does not unmount anything: the kernel (do_umount) remounts
/// that mount's SUPERBLOCK read-only instead, allowed when the caller has CAP_SYS_ADMIN over the user namespace
/// that owns the superblock (ns_capable(sb->s_user_ns)). A container's root has that only for filesystems its own
/// user namespace made; the supervisor unmounts as host root from the caller's root (it chroots there), and host
/// root has it over every superblock. A container that chroots into a bind of a host filesystem (a volume) and
/// runs `umount /` would make that filesystem read-only for the whole host.
///
/// The control: a root in a user namespace of its own (unshare -Urm on the host, the kernel's own check) is
/// refused with EPERM. The runc half runs as host root with CAP_SYS_ADMIN (as the mount attacks do): there the
/// host's filesystem goes read-only, which is what makes the attempt meaningful.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class RootUnmountEscapeTests : IDisposable
{
    const string Runc = "/usr/sbin/runc";
    readonly List<IDisposable> _owned = [];
    readonly HostScope _host = new();

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
        _host.Dispose();
    }

    T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    static string Value(string output, string key) =>
        Regex.Match(output, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    /// <summary>A tmpfs of the host's (its superblock belongs to the host's user namespace), with busybox in it.</summary>
    string HostTmpfs()
    {
        string dir = _host.TempDir("rootumount");
        EscapeHost.Exec("mount", "-t", "tmpfs", "-o", "size=16m", "srt-rootumount", dir);
        _host.Defer($"umount {dir}", () => EscapeHost.Exec("umount", "-l", dir));
        File.Copy(Path.Combine(Repo.Rootfs, "bin/busybox"), Path.Combine(dir, "busybox"));
        File.SetUnixFileMode(Path.Combine(dir, "busybox"), (UnixFileMode)0b111_101_101);
        return dir;
    }

    /// <summary>Whether the host can still write to the directory (a read-only superblock: EROFS).</summary>
    static string HostWrite(string dir)
    {
        try
        {
            File.WriteAllText(Path.Combine(dir, "written-by-host"), "x");
            return "ok";
        }
        catch (IOException e) { return "error: " + e.Message; }
    }

    [EscapeFact]
    public async Task UnmountingTheRootOfAChrootOnAHostVolume_DoesNotMakeTheHostsFilesystemReadOnly()
    {
        var v = new Verdict();

        // The kernel's own answer for a root that holds CAP_SYS_ADMIN only in its user namespace.
        string control = HostTmpfs();
        string copy = _host.TempDir("rootumount-copy");
        var c = await EscapeHost.Try("unshare", "-Urm", "sh", "-c",
            $"mount --bind {control} {copy} && cd {copy} && chroot . /busybox umount /; echo umount=$?");
        v.Expect(Value(c.Stdout, "umount") is { Length: > 0 } crc && crc != "0" && HostWrite(control) == "ok", "kernel",
            $"a user namespace's root is refused (control: {c.Stdout.Trim()} {c.Stderr.Trim()}; host write: {HostWrite(control)})");

        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string vol = HostTmpfs();
            Assert.Equal("ok", HostWrite(vol));
            var b = Own(new Bundle("sh", "-c", """
                chroot /vol /busybox true; echo chroot=$?
                chroot /vol /busybox umount /; echo umount=$?
                """));
            var caps = b.Spec.Process!.Capabilities!;
            caps.Bounding = [.. caps.Bounding ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
            caps.Effective = [.. caps.Effective ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
            caps.Permitted = [.. caps.Permitted ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
            b.Spec.Mounts!.Add(new Mount { Destination = "/vol", Type = "bind", Source = vol, Options = ["rbind", "rw"] });
            var rt = Own(runtime == Runtimes.Sandbox ? new RuntimeCli() : new RuntimeCli(Runc));
            var r = await rt.Run("run", "--bundle", b.Write(), $"esc-rootumount-{Guid.NewGuid().ToString("N")[..8]}");
            string output = r.Stdout + r.ContainerOutput;
            string host = HostWrite(vol);
            v.Expect(Value(output, "chroot") == "0", runtime, "the container chroots into the host's tmpfs", r);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(Value(output, "umount") is { Length: > 0 } rc && rc != "0", runtime,
                    "umount of the chroot's root refused (it would remount the host's superblock read-only)", r);
                v.Expect(host == "ok", runtime, $"the host still writes to its tmpfs ({host})", r);
            }
            else
                v.Expect(Value(output, "umount") == "0" && host != "ok", runtime,
                    $"runc's root, host root, remounts the host's tmpfs read-only (host write: {host})", r);
        }
        v.Done();
    }

    /// <summary>
    /// What the container's root may do to its own filesystems still works, now that the supervisor acts without
    /// host CAP_SYS_ADMIN in its effective set: a superblock option of its own tmpfs, a bind, a read-only remount of
    /// it, a move, an unmount, pivot_root in a mount namespace of its own, and `umount /` in a chroot on its own tmpfs (which the kernel answers by making that
    /// superblock read-only, as for the container's root).
    /// </summary>
    [EscapeFact]
    public async Task OperationsOnTheContainersOwnFilesystems_StillWork()
    {
        var b = Own(new Bundle("sh", "-c", """
            mkdir /tmp/own && mount -t tmpfs own /tmp/own && cp /bin/busybox /tmp/own/; echo own=$?
            mount -o remount,size=8m /tmp/own; echo size=$?
            grep -q ' /tmp/own tmpfs .*size=8192k' /proc/mounts; echo sized=$?
            mkdir /tmp/b && mount --bind /tmp/own /tmp/b; echo bind=$?
            mount -o remount,bind,ro /tmp/b; echo ro=$?
            mkdir /tmp/m && mount --move /tmp/b /tmp/m; echo move=$?
            umount /tmp/m; echo umount=$?
            chroot /tmp/own /busybox umount /; echo rootumount=$?
            touch /tmp/own/x 2>/dev/null; echo write=$?
            mkdir /tmp/pr && mount -t tmpfs pr /tmp/pr && mkdir /tmp/pr/old
            unshare -m sh -c 'cd /tmp/pr && pivot_root . old; echo pivot=$?'
            """));
        var caps = b.Spec.Process!.Capabilities!;
        caps.Bounding = [.. caps.Bounding ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
        caps.Effective = [.. caps.Effective ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
        caps.Permitted = [.. caps.Permitted ?? [], "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"];
        b.Spec.Mounts!.Add(new Mount { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev"] });
        var rt = Own(new RuntimeCli());
        var r = await rt.Run("run", "--bundle", b.Write(), $"esc-ownfs-{Guid.NewGuid().ToString("N")[..8]}");
        string output = r.Stdout + r.ContainerOutput;
        var v = new Verdict();
        foreach (var key in new[] { "own", "size", "sized", "bind", "ro", "move", "umount", "rootumount", "pivot" })
            v.Expect(Value(output, key) == "0", Runtimes.Sandbox, $"{key} works", r);
        v.Expect(Value(output, "write") is { Length: > 0 } w && w != "0", Runtimes.Sandbox, "the own tmpfs is read-only after `umount /` in the chroot", r);
        v.Done();
    }
}
