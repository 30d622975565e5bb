using System.Globalization;
using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Oci;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.Integration;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Escape attempts made with a bundle (the published binary, Repo.Binary, and Debian's /usr/sbin/runc on the
/// same bundle):
/// <list type="bullet">
/// <item>Issue 11, item 6: a spec's own ID mappings that take the range a running container holds (a docker
///   container's, another bundle's, part of one) or a range of the pool would let two containers share host
///   IDs: refused, and the bundle's process never runs (it would create a file owned by the other container's
///   root). runc runs the same bundle: the bundle itself is fine.</item>
/// <item>Items 2 and 5 with the annotation io.sandbox-runc.protect-initial-mounts=true: a read-only bind
///   over a read-write bind stays in place in an rbind copy; under runc the copy is taken apart and the
///   host file under it written.</item>
/// </list>
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class BundleEscapeTests : IDisposable
{
    const string Runc = "/usr/sbin/runc";
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();
    readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_owned)) d.Dispose();
        _docker.Dispose();
        _host.Dispose();
    }

    T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    static long MapStart(string uidMap) =>
        long.Parse(uidMap.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    static string Id(string what) => $"esc-{what}-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>
    /// Runs a bundle that maps container 0..65535 to HOSTSTART.. and writes /home/was-here (a 0777 host dir),
    /// under sandbox-runc (refused, nothing written) and runc (written, owned by HOSTSTART).
    /// </summary>
    async Task OwnMappingsAttempt(long hostStart, string takes)
    {
        string dir = _host.TempDir("idr", (UnixFileMode)0b111_111_111);
        string file = Path.Combine(dir, "was-here");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var b = Own(new Bundle("sh", "-c", "touch /home/was-here; cat /proc/self/uid_map"));
            b.Spec.Linux!.Namespaces!.Add(new Namespace { Type = "user" });
            b.Spec.Linux.UidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)hostStart, Size = 65536 }];
            b.Spec.Linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = (uint)hostStart, Size = 65536 }];
            // /home: a mount point that exists in the shared read-only rootfs (runc cannot create one there).
            b.Spec.Mounts!.Add(new Mount { Destination = "/home", Type = "bind", Source = dir, Options = ["rbind", "rw"] });
            var rt = Own(runtime == Runtimes.Sandbox ? new RuntimeCli() : new RuntimeCli(Runc));
            var r = await rt.Run("run", "--bundle", b.Write(), Id("own"));
            string owner = File.Exists(file) ? await UserNs.Owner(file) : "";
            File.Delete(file);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode != 0 && !r.Stderr.Contains("Unhandled exception"), runtime, $"create refused: the mapping {hostStart}+65536 takes {takes}", r);
                v.Expect(owner == "", runtime, $"the bundle's process never ran (it wrote a file owned by {owner} in {dir})", r);
            }
            else
                v.Expect(r.ExitCode == 0 && owner == $"{hostStart}:{hostStart}", runtime, $"runc runs the bundle: its root is host uid {hostStart} (file owned by \"{owner}\")", r);
        }
        v.Done();
    }

    [EscapeFact]
    public async Task OwnMappings_TakingADockerContainersRange_AreRefused()
    {
        string name = await _docker.RunDetached("held", Runtimes.Sandbox, [], "sleep", "300");
        long held = MapStart((await _docker.Ok("exec", name, "cat", "/proc/self/uid_map")).Stdout);
        await OwnMappingsAttempt(held, $"the range docker container {name} holds");
    }

    [EscapeFact]
    public async Task OwnMappings_OverlappingHalfOfADockerContainersRange_AreRefused()
    {
        string name = await _docker.RunDetached("held", Runtimes.Sandbox, [], "sleep", "300");
        long held = MapStart((await _docker.Ok("exec", name, "cat", "/proc/self/uid_map")).Stdout);
        await OwnMappingsAttempt(held + 32768, $"half of the range docker container {name} holds ({held}+65536)");
    }

    [EscapeFact]
    public async Task OwnMappings_TakingAnotherBundlesRange_AreRefused()
    {
        var rt = Own(new RuntimeCli());
        var b = Own(new Bundle("sleep", "300"));
        string id = Id("holder");
        await rt.Create(b.Write(), id);
        long held = MapStart(File.ReadAllText($"/proc/{await rt.Pid(id)}/uid_map"));
        await OwnMappingsAttempt(held, $"the range bundle {id} holds");
    }

    /// <summary>The issue: "refused when they overlap a held range or the pool". The pool's last range, held or not.</summary>
    [EscapeFact]
    public async Task OwnMappings_InsideThePool_AreRefused()
    {
        var entry = File.ReadAllLines("/etc/subuid").Select(l => l.Split(':')).Single(f => f.Length == 3 && f[0] == "sandbox-runc");
        long start = long.Parse(entry[1], CultureInfo.InvariantCulture), count = long.Parse(entry[2], CultureInfo.InvariantCulture);
        await OwnMappingsAttempt(start + count - 65536, $"the last range of the pool {start}+{count}");
    }

    /// <summary>The annotation form of item 2's layered read-only bind.</summary>
    [EscapeFact]
    public async Task ProtectInitialMountsAnnotation_ReadOnlyLayerStaysInEveryCopy()
    {
        string dir = _host.TempDir("blayer", (UnixFileMode)0b111_111_111);
        Directory.CreateDirectory(Path.Combine(dir, "tester"));
        File.SetUnixFileMode(Path.Combine(dir, "tester"), (UnixFileMode)0b111_111_111);
        string hostFile = Path.Combine(dir, "tester", "f");
        // Mount points that exist in the shared read-only rootfs: /home, /home/tester, /tmp.
        const string script = """
            mkdir -p /tmp/y && mount --rbind /home /tmp/y || exit 9
            umount /tmp/y/tester 2>/dev/null; echo copy.umount=$?
            echo x > /tmp/y/tester/f 2>/dev/null; echo copy.write=$?
            umount /home/tester 2>/dev/null; echo umount=$?
            """;
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var b = Own(new Bundle("sh", "-c", script));
            b.Spec.Annotations = new() { ["io.sandbox-runc.protect-initial-mounts"] = "true" };
            b.Spec.Mounts!.Add(new Mount { Destination = "/home", Type = "bind", Source = dir, Options = ["rbind", "rw"] });
            b.Spec.Mounts.Add(new Mount { Destination = "/home/tester", Type = "bind", Source = Path.Combine(dir, "tester"), Options = ["bind", "ro"] });
            b.Spec.Mounts.Add(new Mount { Destination = "/tmp", Type = "tmpfs", Source = "tmpfs", Options = ["nosuid", "nodev", "size=1m"] });
            var caps = b.Spec.Process!.Capabilities!;
            foreach (var set in new[] { caps.Bounding!, caps.Effective!, caps.Permitted! }) set.Add("CAP_SYS_ADMIN");
            var rt = Own(runtime == Runtimes.Sandbox ? new RuntimeCli() : new RuntimeCli(Runc));
            var r = await rt.Run("run", "--bundle", b.Write(), Id("layer"));
            bool written = File.Exists(hostFile);
            File.Delete(hostFile);
            string Value(string key) => Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value : "";
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(r.ExitCode == 0 && Value("umount") is { Length: > 0 } u && u != "0" && Value("copy.umount") is { Length: > 0 } c && c != "0",
                    runtime, "umount of the read-only layer and of its copy refused", r);
                v.Expect(!written, runtime, $"host {hostFile} not written", r);
            }
            else
                v.Expect(written && Value("copy.umount") == "0", runtime, $"the copy is taken apart and host {hostFile} written", r);
        }
        v.Done();
    }
}
