using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Device nodes the container did not ask for: host root made them (mknod) in a directory that is bound into
/// the container. A container cannot make a device node in its user namespace, so these are the only ones it
/// could open beyond its own /dev; whether they open is the device cgroup's (v1) or device program's (v2)
/// decision, and the rules docker writes allow too much for that (5:1, the host's console, by default;
/// "a *:* rwm" with --privileged; whatever --device-cgroup-rule says). Only what the spec lists and the safe
/// defaults may open. The host-visible effect: a line written to a /dev/kmsg node shows in the host's kernel
/// log. Under runc, a rule for the node is enough for the write to land there.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class DeviceNodeEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    /// <summary>A host dir with device nodes made by host root (mode 0666), removed after.</summary>
    string NodeDir()
    {
        string dir = _host.TempDir("devnodes");
        foreach (var (name, major, minor) in new[] { ("kmsg", 1, 11), ("console", 5, 1), ("mem", 1, 1), ("psaux", 10, 1), ("null", 1, 3) })
        {
            string path = Path.Combine(dir, name);
            EscapeHost.Exec("mknod", "-m", "0666", path, "c", major.ToString(), minor.ToString());
        }
        return dir;
    }

    static bool InKernelLog(string marker) => EscapeHost.Exec("dmesg").Contains(marker);

    [EscapeTheory]
    [InlineData("--privileged")]
    [InlineData("--device-cgroup-rule=c 1:11 rwm")]
    [InlineData("")]
    public async Task KmsgNodeBoundIn_DoesNotReachTheHostsKernelLog(string option)
    {
        string dir = NodeDir();
        var v = new Verdict();
        string sandboxMarker = $"srt-kmsg-{_host.Unique}-s";
        var sr = await _docker.Sh(Runtimes.Sandbox, [.. option.Length > 0 ? new[] { option } : [], "-v", $"{dir}:/d"],
            $"echo {sandboxMarker} > /d/kmsg; echo kmsg=$?; cat /d/null; echo null=$?");
        await Task.Delay(200);
        v.Expect(!InKernelLog(sandboxMarker), Runtimes.Sandbox, "the line is not in the host's kernel log", sr);
        v.Expect(Value(sr, "kmsg") is { Length: > 0 } k && k != "0", Runtimes.Sandbox, "opening the kmsg node fails", sr);
        v.Expect(Value(sr, "null") == "0", Runtimes.Sandbox, "a node of a default device (null) in the same dir opens", sr);

        string runcMarker = $"srt-kmsg-{_host.Unique}-r";
        var rr = await _docker.Sh(Runtimes.Runc, ["--device-cgroup-rule", "c 1:11 w", "-v", $"{dir}:/d"], $"echo {runcMarker} > /d/kmsg; echo kmsg=$?");
        await Task.Delay(200);
        v.Expect(InKernelLog(runcMarker), Runtimes.Runc, "the line is in the host's kernel log", rr);
        v.Done();
    }

    /// <summary>Docker's default rules allow 5:1: under runc a host console node opens; here it must not, nor /dev/mem's or a misc device's.</summary>
    [EscapeFact]
    public async Task HostConsoleNodeBoundIn_DoesNotOpen()
    {
        string dir = NodeDir();
        const string script = "(exec 3>/d/console); echo console=$?; (exec 4</d/psaux); echo psaux=$?; (exec 5</d/mem); echo mem=$?";
        var v = new Verdict();
        foreach (var option in new[] { "", "--privileged" })
        {
            var sr = await _docker.Sh(Runtimes.Sandbox, [.. option.Length > 0 ? new[] { option } : [], "-v", $"{dir}:/d"], script);
            v.Expect(Value(sr, "console") is { Length: > 0 } c && c != "0", Runtimes.Sandbox + " " + option, "the host console node does not open", sr);
            v.Expect(Value(sr, "psaux") is { Length: > 0 } p && p != "0", Runtimes.Sandbox + " " + option, "a misc device node does not open", sr);
            v.Expect(Value(sr, "mem") is { Length: > 0 } m && m != "0", Runtimes.Sandbox + " " + option, "/dev/mem's node does not open", sr);
            v.Expect(sr.Stderr.Contains("not permitted"), Runtimes.Sandbox + " " + option, "refused by the device rules (EPERM)", sr);
        }
        var rr = await _docker.Sh(Runtimes.Runc, ["-v", $"{dir}:/d"], "(exec 3>/d/console); echo console=$?");
        v.Expect(Value(rr, "console") == "0", Runtimes.Runc, "the host console node opens under docker's default rules", rr);
        v.Done();
    }

    /// <summary>What must keep working: the default /dev, --privileged's safe devices, --device /dev/fuse, a console (-t).</summary>
    [EscapeFact(NeedsPath = "/dev/fuse")]
    public async Task ListedAndDefaultDevices_StillOpen()
    {
        const string std = "for d in null zero full random urandom tty ptmx; do (exec 3<>/dev/$d) && echo $d=0 || echo $d=1; done";
        var v = new Verdict();
        var plain = await _docker.Sh(Runtimes.Sandbox, [], std.Replace("tty ptmx", "ptmx"));
        foreach (var d in new[] { "null", "zero", "full", "random", "urandom", "ptmx" })
            v.Expect(Value(plain, d) == "0", Runtimes.Sandbox, $"/dev/{d} opens by default", plain);
        var priv = await _docker.Sh(Runtimes.Sandbox, ["--privileged"], "(exec 3<>/dev/fuse); echo fuse=$?; (exec 3<>/dev/net/tun); echo tun=$?; " + std.Replace("tty ptmx", "ptmx"));
        v.Expect(Value(priv, "fuse") == "0" && Value(priv, "tun") == "0" && Value(priv, "null") == "0", Runtimes.Sandbox + " --privileged", "fuse, tun and null open", priv);
        var fuse = await _docker.Sh(Runtimes.Sandbox, ["--device", "/dev/fuse"], "(exec 3<>/dev/fuse); echo fuse=$?");
        v.Expect(Value(fuse, "fuse") == "0", Runtimes.Sandbox + " --device /dev/fuse", "fuse opens", fuse);
        var tty = await _docker.Sh(Runtimes.Sandbox, ["-t"], "echo hi > /dev/console; echo console=$?; " + std);
        v.Expect(Value(tty, "console") == "0" && Value(tty, "tty") == "0", Runtimes.Sandbox + " -t", "its own console and tty open", tty);
        v.Done();
    }
}
