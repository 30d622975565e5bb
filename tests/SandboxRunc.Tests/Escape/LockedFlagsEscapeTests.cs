using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// The flags a container was created with (nosuid, nodev, noexec, ro of its initial mounts and their copies)
/// are locked as the kernel locks a more privileged creator's flags (MNT_LOCK_*): a remount that would clear
/// one fails with EPERM. It must neither clear the flag (a hole) nor answer 0 and keep it (a lie the
/// container cannot tell from success). Under runc the container's root is the mounts' creator: the remount
/// works and a program in the tmpfs then runs, which is what makes the attempt meaningful.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class LockedFlagsEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    /// <summary>busybox copied into the noexec tmpfs as "true": 126 (permission denied) while noexec holds, 0 once it runs.</summary>
    [EscapeTheory]
    [InlineData("remount,exec", "/t")]
    [InlineData("remount,bind,exec", "/t")]
    [InlineData("remount,exec", "/tmp/copy")]          // a bind copy of the tmpfs carries its locks
    [InlineData("remount,rw,exec,suid,dev", "/t")]     // every flag at once
    public async Task RemountClearingNoExec_IsRefusedNotFaked(string options, string target)
    {
        string script = $"""
            cp /bin/busybox /t/true || exit 9
            mkdir -p /tmp/copy && mount --bind /t /tmp/copy || exit 9
            {target}/true; echo exec.before=$?
            mount -o {options} {target}; echo remount=$?
            grep " {target} " /proc/mounts
            {target}/true; echo exec.after=$?
            """;
        string[] tmpfs = ["--tmpfs", "/t:rw,noexec,nosuid,nodev"];
        var v = new Verdict();
        var sr = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", .. tmpfs], script);
        v.Expect(Value(sr, "exec.before") == "126", Runtimes.Sandbox, "noexec holds before the remount", sr);
        v.Expect(Value(sr, "remount") is { Length: > 0 } rc && rc != "0", Runtimes.Sandbox, "the remount fails (EPERM), as the kernel fails it for locked flags", sr);
        v.Expect(sr.Stderr.Contains("permission denied", StringComparison.OrdinalIgnoreCase), Runtimes.Sandbox, "with EPERM (busybox: \"permission denied\")", sr);
        v.Expect(Value(sr, "exec.after") == "126", Runtimes.Sandbox, "noexec still holds", sr);

        var rr = await _docker.Sh(Runtimes.Runc, [.. Runtimes.RuncMountPrivileges, .. tmpfs], script);
        v.Expect(Value(rr, "remount") == "0", Runtimes.Runc, "the remount works (runc's container root made the mount)", rr);
        v.Expect(Value(rr, "exec.after") == "0", Runtimes.Runc, "the program in the tmpfs then runs", rr);
        v.Done();
    }

    /// <summary>nosuid of an initial mount: `remount,suid` is refused, not answered 0 with nosuid kept.</summary>
    [EscapeFact]
    public async Task RemountClearingNoSuid_IsRefused()
    {
        var sr = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", "--tmpfs", "/t:rw,nosuid"],
            "mount -o remount,suid /t; echo remount=$?; grep ' /t ' /proc/mounts");
        var v = new Verdict();
        v.Expect(Value(sr, "remount") is { Length: > 0 } rc && rc != "0", Runtimes.Sandbox, "the remount fails", sr);
        v.Expect(sr.Stdout.Contains("nosuid"), Runtimes.Sandbox, "nosuid kept", sr);
        // Adding a flag is free, and a tmpfs of the container's own remounts freely.
        var own = await _docker.Sh(Runtimes.Sandbox, ["--cap-add", "SYS_ADMIN", "--tmpfs", "/t:rw,nosuid"], """
            mount -o remount,nosuid,noexec /t; echo add=$?
            mkdir /tmp/m && mount -t tmpfs -o noexec t /tmp/m && mount -o remount,exec /tmp/m; echo own=$?
            """);
        v.Expect(Value(own, "add") == "0", Runtimes.Sandbox, "adding noexec works", own);
        v.Expect(Value(own, "own") == "0", Runtimes.Sandbox, "the container's own tmpfs remounts exec", own);
        v.Done();
    }
}
