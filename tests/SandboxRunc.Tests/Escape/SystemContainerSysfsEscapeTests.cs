using System.Runtime.Versioning;
using SandboxRunc.Policy;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// A system container gets /sys read-write (SystemContainerPolicy), so the emulation's binds over /sys/kernel and
/// /sys/module/nf_conntrack/parameters are read-write too. Nothing of the host's may become writable by that: every
/// sysfs file is opened for writing (O_APPEND, nothing written) from inside, and the only ones that open are its own
/// network devices' attributes (its network namespace's, chowned to its root by the kernel) and the emulated files,
/// whose writes the emulation answers itself: /sys/kernel refused, nf_conntrack's hashsize a per-container value
/// (the host's stays). /sys/fs/cgroup is left out: its own mounts, delegated (CgroupDelegationEscapeTests).
///
/// The runc half: host root in a read-write /sys opens host files for writing, so the sweep finds what it looks for.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class SystemContainerSysfsEscapeTests : IDisposable
{
    const string Runc = "/usr/sbin/runc";
    const string Hashsize = "/sys/module/nf_conntrack/parameters/hashsize";
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

    /// <summary>Every regular file below /sys that opens for writing, one "W path" line each.</summary>
    const string Sweep = """
        find /sys -path /sys/fs/cgroup -prune -o -type f -print 2>/dev/null | while read f; do
            ( : >> "$f" ) 2>/dev/null && echo "W $f"
        done
        echo done=1
        """;

    /// <summary>Writes the emulation answers (never run under runc: there they would change the host's values).</summary>
    const string EmulatedWrites = """
        echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null; echo ksm=$?
        [ -e /sys/module/nf_conntrack ] && {
            echo 1024 > /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null; echo hashsize=$?
            echo 1 > /sys/module/nf_conntrack/parameters/acct 2>/dev/null; echo acct=$?
        }
        """;

    /// <summary>
    /// Its own network devices' attributes, and the emulated files (owned by the container's root as the emulation
    /// shows them, so its root opens them; what a write does is the emulation's answer, checked below).
    /// </summary>
    static bool OwnOrEmulated(string path) =>
        path.StartsWith("/sys/devices/virtual/net/", StringComparison.Ordinal)
        || path.StartsWith("/sys/module/nf_conntrack/parameters/", StringComparison.Ordinal)
        || path.StartsWith("/sys/kernel/", StringComparison.Ordinal);

    [EscapeFact(NeedsPath = "/sys/kernel/mm/ksm/run")]
    public async Task ASystemContainersReadWriteSys_OpensNoHostFileForWriting()
    {
        string? hostHashsize = File.Exists(Hashsize) ? File.ReadAllText(Hashsize) : null;
        string hostKsm = File.ReadAllText("/sys/kernel/mm/ksm/run");
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            var b = Own(new Bundle("sh", "-c", runtime == Runtimes.Sandbox ? Sweep + "\n" + EmulatedWrites : Sweep));
            (b.Spec.Annotations ??= [])[ContainerSettings.SystemContainerKey] = "true";
            if (runtime == Runtimes.Runc)
                foreach (var m in b.Spec.Mounts!.Where(m => m.Type == "sysfs"))
                    m.Options = [.. (m.Options ?? []).Where(o => o != "ro"), "rw"];
            var rt = Own(runtime == Runtimes.Sandbox ? new RuntimeCli() : new RuntimeCli(Runc));
            var r = await rt.Run("run", "--bundle", b.Write(), $"esc-sysfs-{Guid.NewGuid().ToString("N")[..8]}");
            var lines = r.Stdout.Split('\n', StringSplitOptions.TrimEntries);
            var writable = lines.Where(l => l.StartsWith("W ", StringComparison.Ordinal)).Select(l => l[2..]).ToList();
            v.Expect(lines.Contains("done=1"), runtime, "the sweep ran to its end", r);
            if (runtime == Runtimes.Sandbox)
            {
                var host = writable.Where(p => !OwnOrEmulated(p)).ToList();
                v.Expect(host.Count == 0, runtime, $"no host sysfs file opens for writing (opened: {string.Join(", ", host.Take(20))})", r);
                v.Expect(writable.Any(p => p.StartsWith("/sys/devices/virtual/net/lo/", StringComparison.Ordinal)), runtime,
                    "its own loopback device's attributes open for writing (/sys is read-write, the sweep is not blind)", r);
                v.Expect(lines.Contains("ksm=1"), runtime, "the emulated /sys/kernel/mm/ksm/run refuses the write", r);
                if (hostHashsize is not null)
                {
                    v.Expect(lines.Contains("hashsize=0"), runtime, "nf_conntrack's hashsize takes a per-container value", r);
                    v.Expect(lines.Contains("acct=1"), runtime, "the emulated nf_conntrack acct refuses the write", r);
                }
            }
            else
                v.Expect(writable.Contains("/sys/kernel/mm/ksm/run"), runtime, "host root opens the host's KSM knob for writing", r);
            v.Expect(File.ReadAllText("/sys/kernel/mm/ksm/run") == hostKsm, runtime, "the host's KSM knob is unchanged", r);
            if (hostHashsize is not null)
                v.Expect(File.ReadAllText(Hashsize) == hostHashsize, runtime, $"the host's nf_conntrack hashsize is unchanged ({hostHashsize.Trim()})", r);
        }
        v.Done();
    }
}
