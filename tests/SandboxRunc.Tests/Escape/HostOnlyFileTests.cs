using System.Runtime.Versioning;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 7: files that only host root may read (mode 0600/0400, owned by host root) stay unreadable
/// through the /proc/sys and /sys/kernel mirror, for container root with default capabilities, with
/// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, and with --privileged: container root is not host root. Files
/// all may read (0444) still read, with the host's content.
///
/// The runc half: runc's container root is host root, so it reads them: this shows that each file is
/// readable where the caller is host root (the attempt is not refused for another reason). Net sysctls
/// (tcp_fastopen_key...) are per network namespace and the container's own: not in the list.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class HostOnlyFileTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    /// <summary>Root-only files under /proc/sys (not net) and /sys/kernel that host root can read (up to 12).</summary>
    static List<string> RootOnlyFiles()
    {
        var found = new List<string>();
        void Scan(string root, Func<string, bool> skip, int limit)
        {
            int n = 0;
            foreach (var f in new DirectoryInfo(root).EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, MaxRecursionDepth = 4 }))
            {
                if (n >= limit) break;
                if (skip(f.FullName)) continue;
                var mode = f.UnixFileMode;
                if ((mode & UnixFileMode.UserRead) == 0 || (mode & (UnixFileMode)0b000_111_111) != 0) continue;
                try
                {
                    using var s = f.OpenRead();
                    if (s.Read(new byte[64]) <= 0) continue;
                }
                catch (Exception) { continue; }
                found.Add(f.FullName);
                n++;
            }
        }
        if (File.Exists("/proc/sys/vm/mmap_rnd_bits")) found.Add("/proc/sys/vm/mmap_rnd_bits"); // the issue's example
        Scan("/proc/sys", p => p.StartsWith("/proc/sys/net/", StringComparison.Ordinal) || found.Contains(p), 6);
        Scan("/sys/kernel", p => p.StartsWith("/sys/kernel/debug/", StringComparison.Ordinal) || p.StartsWith("/sys/kernel/tracing/", StringComparison.Ordinal), 6);
        return found;
    }

    static string Script(IEnumerable<string> files) => string.Join("\n", files.Select(f =>
        $"if [ ! -e {f} ]; then echo 'missing {f}'; elif head -c 64 {f} >/dev/null 2>&1; then echo 'read {f}'; else echo 'denied {f}'; fi"));

    [EscapeFact]
    public async Task HostRootOnlyFiles_StayUnreadable()
    {
        var files = RootOnlyFiles();
        Assert.True(files.Any(f => f.StartsWith("/proc/sys/", StringComparison.Ordinal)) && files.Any(f => f.StartsWith("/sys/kernel/", StringComparison.Ordinal)),
            $"this host has no host-root-only file under both /proc/sys and /sys/kernel: [{string.Join(", ", files)}]");
        string script = Script(files);
        var v = new Verdict();
        foreach (var options in new[] { Array.Empty<string>(), ["--cap-add", "DAC_OVERRIDE", "--cap-add", "DAC_READ_SEARCH"], ["--privileged"] })
        {
            var r = await _docker.Sh(Runtimes.Sandbox, options, script);
            string label = options.Length == 0 ? "default capabilities" : string.Join(' ', options);
            foreach (var f in files)
                v.Expect(r.Stdout.Contains($"denied {f}\n"), Runtimes.Sandbox, $"{label}: host-root-only {f} is unreadable", r);
        }
        var rc = await _docker.Sh(Runtimes.Runc, [], script);
        foreach (var f in files)
            v.Expect(rc.Stdout.Contains($"read {f}\n"), Runtimes.Runc, $"host root reads {f}", rc);
        v.Done();
    }

    /// <summary>Control: world-readable mirrored files still read, with the host's content.</summary>
    [EscapeFact]
    public async Task WorldReadableMirroredFiles_StillRead()
    {
        string osrelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        string btf = File.Exists("/sys/kernel/btf/vmlinux") ? "/sys/kernel/btf/vmlinux" : "/sys/kernel/mm/transparent_hugepage/enabled";
        byte[] head = new byte[4];
        using (var s = File.OpenRead(btf)) s.ReadExactly(head);
        string hex = Convert.ToHexString(head).ToLowerInvariant();
        var v = new Verdict();
        foreach (var options in new[] { Array.Empty<string>(), ["--privileged"] })
        {
            var r = await _docker.Sh(Runtimes.Sandbox, options, $"cat /proc/sys/kernel/osrelease; od -An -tx1 -N4 {btf} | tr -d ' '");
            v.Expect(r.ExitCode == 0 && r.Stdout == $"{osrelease}\n{hex}\n", Runtimes.Sandbox, $"{string.Join(' ', options)}: osrelease and {btf} read as on the host ({osrelease}, {hex})", r);
        }
        v.Done();
    }
}
