using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The supervisor resolves a bind's source in the caller's root as host root, with CAP_DAC_OVERRIDE and
/// CAP_DAC_READ_SEARCH over every inode; the container's root has them only over inodes whose owner is mapped into
/// its user namespace. A host directory of a host user's (mode 0700, its owner outside the container's range) is
/// one the container's root cannot search: `cat /vol/d/f` fails with EACCES. A bind of /vol/d/f resolved by the
/// supervisor reaches the file through that directory and attaches it where the container can open it (the file's
/// own mode, 0644, then lets it read). The control: a root in a user namespace of its own (unshare -Urm on the
/// host) cannot resolve the source either. The source lies outside the file-sharing allow list (a plain bind: host
/// owners stay); in an ID-mapped bind an owner outside the mapping has no mapping for host root either, and the
/// kernel then refuses host root the search too.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class LookupPermissionEscapeTests : IDisposable
{
    readonly List<IDisposable> _owned = [];
    readonly HostScope _host = new();

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
        _host.Dispose();
    }

    static string Value(string output, string key) =>
        Regex.Match(output, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    const int ForeignUid = 4_000_000; // outside every container's range

    // OPEN HOLE (redteam5): fails today (bind=0, the secret is read). Skipped so that CI stays green until the
    // supervisor resolves paths with the caller's own credentials; remove the Skip with the fix.
    [EscapeFact(Skip = "open hole: the supervisor resolves mount paths with host root's CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (redteam5 report)")]
    public async Task BindThroughADirectoryTheContainerCannotSearch_IsRefused()
    {
        // Outside the file-sharing allow list, so a plain bind (host owners stay): in an ID-mapped bind an owner outside
        // the mapping has no mapping for host root either, and the kernel refuses host root the search as well.
        string vol = $"/run/srt-esc-lookupperm-{_host.Unique}";
        Directory.CreateDirectory(vol);
        _host.Defer($"rm -r {vol}", () => Directory.Delete(vol, recursive: true));
        string d = Path.Combine(vol, "d");
        Directory.CreateDirectory(d);
        string secret = $"secret-{_host.Unique}";
        File.WriteAllText(Path.Combine(d, "f"), secret + "\n");
        File.SetUnixFileMode(Path.Combine(d, "f"), (UnixFileMode)0b110_100_100);
        EscapeHost.Exec("chown", "-R", $"{ForeignUid}:{ForeignUid}", d);
        File.SetUnixFileMode(d, (UnixFileMode)0b111_000_000);
        var v = new Verdict();

        var c = await EscapeHost.Try("unshare", "-Urm", "sh", "-c",
            $"touch /tmp/srt-lookupperm-{_host.Unique}; mount --bind {d}/f /tmp/srt-lookupperm-{_host.Unique}; echo bind=$?");
        File.Delete($"/tmp/srt-lookupperm-{_host.Unique}");
        v.Expect(Value(c.Stdout, "bind") is { Length: > 0 } crc && crc != "0", "kernel",
            $"a user namespace's root cannot resolve the source (control: {c.Stdout.Trim()} {c.Stderr.Trim()})");

        var b = new Bundle("sh", "-c", """
            cat /vol/d/f >/dev/null 2>&1; echo direct=$?
            touch /tmp/f && mount --bind /vol/d/f /tmp/f; echo bind=$?
            echo read=$(cat /tmp/f 2>/dev/null)
            """);
        _owned.Add(b);
        var caps = b.Spec.Process!.Capabilities!;
        caps.Bounding = [.. caps.Bounding ?? [], "CAP_SYS_ADMIN"];
        caps.Effective = [.. caps.Effective ?? [], "CAP_SYS_ADMIN"];
        caps.Permitted = [.. caps.Permitted ?? [], "CAP_SYS_ADMIN"];
        b.Spec.Mounts!.Add(new Mount { Destination = "/vol", Type = "bind", Source = vol, Options = ["rbind", "ro"] });
        b.Spec.Mounts.Add(new Mount { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev"] });
        var rt = new RuntimeCli();
        _owned.Add(rt);
        var r = await rt.Run("run", "--bundle", b.Write(), $"esc-lookupperm-{Guid.NewGuid().ToString("N")[..8]}");
        string output = r.Stdout + r.ContainerOutput;
        v.Expect(Value(output, "direct") is { Length: > 0 } drc && drc != "0", Runtimes.Sandbox, "the container's root cannot read the file directly", r);
        v.Expect(Value(output, "bind") is { Length: > 0 } brc && brc != "0", Runtimes.Sandbox, "the bind through the directory is refused", r);
        v.Expect(!Value(output, "read").Contains(secret), Runtimes.Sandbox, "the file's content stays unread", r);
        v.Done();
    }
}
