using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// An overlay mounted inside the container takes only the top mount of each layer, never what is mounted
/// over or below it: with /sys (or a copy, a relative path to it, a layer list that names it anywhere) as a
/// layer it shows the sysfs under the container's masks and emulated files. The host-visible effect: the
/// host's /sys/firmware entries, which the container's /sys/firmware (a masked path) hides. Under runc the
/// same overlays list them (docker masks /sys/firmware there too); under sandbox-runc each is refused, and an
/// overlay of ordinary directories (inner docker's overlay2, on a volume or tmpfs) still works.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class OverlayLayerEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    /// <summary>A tmpfs of the container's own at /x with layer directories (an upper layer cannot lie on the rootfs' overlay).</summary>
    const string Prepare = "mkdir /x && mount -t tmpfs t /x && mkdir -p /x/l /x/u /x/w /x/m /x/e:x /x/s && echo lower > /x/l/f && mount --rbind /sys /x/s || exit 9";

    static readonly string[] HostFirmware = Directory.Exists("/sys/firmware") ? Directory.GetFileSystemEntries("/sys/firmware").Select(Path.GetFileName).OfType<string>().ToArray() : [];

    static bool SomeHostFirmwareListed(DockerCli.Result r) =>
        Value(r, "firmware").Split(' ', StringSplitOptions.RemoveEmptyEntries) is var listed && HostFirmware.Any(listed.Contains);

    static string Script(string lower) => $"""
        {Prepare}
        cd / && mount -t overlay overlay -o "lowerdir={lower}" /x/m; echo mount=$?
        echo firmware=$(ls /x/m/firmware 2>/dev/null | tr '\n' ' ')
        """;

    /// <summary>The lowerdir option's value: /sys among the layers, by every way of naming it.</summary>
    [EscapeTheory(NeedsPath = "/sys/firmware/memmap")]
    [InlineData("/x/l:/sys")]                        // the bottom layer
    [InlineData("/sys:/x/l")]                        // the top layer
    [InlineData(@"/x/e\:x:/sys")]                    // after an escaped ':'
    [InlineData("sys:/x/l")]                         // relative, from the cwd (/)
    [InlineData("/x/s:/x/l")]                        // an rbind copy of /sys
    [InlineData("/x/l:/sys/kernel/../firmware/..")]  // through ..
    public async Task OverlayOfSys_DoesNotShowTheMaskedHostFirmware(string lower)
    {
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN"], Script(lower));
        v.Expect(Value(sr, "mount") is { Length: > 0 } rc && rc != "0", Runtimes.Sandbox, "the overlay is refused", sr);
        v.Expect(!SomeHostFirmwareListed(sr), Runtimes.Sandbox, $"the host's /sys/firmware ({string.Join(' ', HostFirmware)}) is not seen", sr);

        var rr = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges, Script(lower));
        v.Expect(Value(rr, "mount") == "0" && SomeHostFirmwareListed(rr), Runtimes.Runc, "the overlay shows the host's masked /sys/firmware", rr);
        v.Done();
    }

    /// <summary>
    /// Other layers that are or hold kernel filesystems or protected mounts (meaningless or refused by the kernel
    /// under runc, so sandbox-runc only): upper and work dirs, the new append syntax, the rootfs with /proc and
    /// /sys below, /proc itself (which the kernel also refuses as a layer), /proc/sys, devpts. (The container's
    /// /sys/fs/cgroup is a tmpfs of its own with the cgroup mounts on it, none protected: an overlay of it is allowed.)
    /// </summary>
    [EscapeTheory]
    [InlineData("/x/l:/sys/kernel")]
    [InlineData("/x/l,lowerdir+=/sys")]
    [InlineData("/x/l,datadir+=/sys")]
    [InlineData("/x/l,upperdir=/sys/kernel,workdir=/x/w")]
    [InlineData("/x/l,upperdir=/x/u,workdir=/sys/kernel")]
    [InlineData("/:/x/l")]
    [InlineData("/x/l:/proc")]
    [InlineData("/x/l:/proc/sys")]
    [InlineData("/x/l:/dev/pts")]
    public async Task OverlayOfAKernelFilesystemOrAProtectedMount_IsRefused(string lower)
    {
        var sr = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN"], Script(lower));
        var v = new Verdict();
        v.Expect(Value(sr, "mount") is { Length: > 0 } rc && rc != "0", Runtimes.Sandbox, "the overlay is refused", sr);
        v.Expect(sr.Stderr.Contains("permission denied", StringComparison.OrdinalIgnoreCase), Runtimes.Sandbox, "with EPERM", sr);
        v.Done();
    }

    /// <summary>
    /// What inner docker's overlay2 does: relative lower layers through symlinks, from its own directory, with
    /// "index=off" and, in a user namespace on 5.11+, "userxattr" (Docker 20.10+ and containerd add it there):
    /// once on the engine storage the runtime gives a container that may run an engine (/var/lib/docker, on the
    /// host's disk) and once on a tmpfs of the container's own (the kernel takes both: a tmpfs without user.*
    /// xattrs, before 6.6, only makes overlayfs fall back to no xattrs). Writes land in upper. And a read-only
    /// overlay of two lower layers, one on the rootfs.
    /// </summary>
    [Trait("Category", "StockHost")] // also in the Debian 12 VM (kernel 6.1: no overlay layer by fd, the kernel mounts it)
    [EscapeFact]
    public async Task OverlayOfOrdinaryDirectories_Works()
    {
        // Where AppArmor is on (Debian 12, Ubuntu), docker's default profile denies every mount, whatever the runtime.
        const string appArmorOn = "/sys/module/apparmor/parameters/enabled";
        string[] appArmor = File.Exists(appArmorOn) && File.ReadAllText(appArmorOn).Trim() == "Y" ? ["--security-opt", "apparmor=unconfined"] : [];
        static string Overlay2(string key, string dir, string options) => $"""
            mkdir -p {dir}/l {dir}/o/l2 {dir}/o/diff {dir}/o/work {dir}/o/merged && echo lower > {dir}/l/f && echo two > {dir}/o/l2/g && ln -s ../l {dir}/o/L1 || exit 9
            cd {dir}/o && mount -t overlay overlay -o {options}lowerdir=L1:l2,upperdir=diff,workdir=work merged; echo {key}.mount=$?
            cat merged/f merged/g; echo new > merged/n; echo {key}.write=$?
            cat diff/n; grep " {dir}/o/merged " /proc/mounts
            cd / && umount {dir}/o/merged; echo {key}.umount=$?
            """;
        var sr = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", .. appArmor], $"""
            {Prepare}
            grep -q ' /var/lib/docker ' /proc/mounts && echo storage=yes
            {Overlay2("storage", "/var/lib/docker/overlay2-test", "index=off,userxattr,")}
            {Overlay2("tmpfs", "/x", "index=off,")}
            mkdir /tmp/l2 && echo two > /tmp/l2/g && mount -t overlay overlay -o ro,lowerdir=/tmp/l2:/x/l /x/m && cat /x/m/f && touch /x/m/x 2>/dev/null; echo ro.touch=$?
            """);
        var v = new Verdict();
        v.Expect(Value(sr, "storage") == "yes", Runtimes.Sandbox, "the container has engine storage at /var/lib/docker", sr);
        foreach (var key in new[] { "storage", "tmpfs" })
        {
            v.Expect(Value(sr, $"{key}.mount") == "0" && Value(sr, $"{key}.write") == "0" && Value(sr, $"{key}.umount") == "0", Runtimes.Sandbox,
                $"inner overlay2's overlay on {key}: made, written, unmounted", sr);
        }
        v.Expect(Regex.Matches(sr.Stdout, "lower\ntwo\n").Count >= 2 && Regex.Matches(sr.Stdout, "\nnew\n").Count >= 2, Runtimes.Sandbox,
            "both lower layers show, the write is in upperdir (both overlays)", sr);
        v.Expect(Value(sr, "ro.touch") is { Length: > 0 } t && t != "0", Runtimes.Sandbox, "a read-only overlay stays read-only", sr);

        // The kernel's own answer for the same overlay in a plain user namespace (what the runtime must not take away).
        var rr = await _docker.Sh(Runtimes.Runc, Runtimes.RuncMountPrivileges,
            $"unshare -Urm sh -c 'mkdir /x && mount -t tmpfs t /x || exit 9\n{Overlay2("tmpfs", "/x", "index=off,userxattr,")}'");
        v.Expect(Value(rr, "tmpfs.mount") == "0" && Value(rr, "tmpfs.write") == "0", Runtimes.Runc,
            "the kernel makes inner overlay2's overlay in a user namespace", rr);
        v.Done();
    }
}
