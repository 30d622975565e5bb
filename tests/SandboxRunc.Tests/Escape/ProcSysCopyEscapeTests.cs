using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using Xunit;

namespace SandboxRunc.Tests.Escape;

/// <summary>
/// Issue 11, item 2, where the effect is a host sysctl: the emulated (sandbox-runc) or read-only (runc)
/// /proc/sys covers the kernel's. Taking the cover off in a copy of /proc, or moving it away with pivot_root,
/// must be refused; under runc both attempts write the host's kernel.core_pattern (restored after).
/// kernel.core_pattern is a mirrored entry (read-only through the emulation, never "max wins"), so a value
/// that changes on the host can only have come through the real procfs.
/// </summary>
[Collection(HostGlobalSettings.Name)]
[SupportedOSPlatform("linux")]
public sealed class ProcSysCopyEscapeTests : IDisposable
{
    const string CorePattern = "/proc/sys/kernel/core_pattern";
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static string Value(DockerCli.Result r, string key) =>
        Regex.Match(r.Stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    async Task Attempt(string[] sandboxOptions, Func<string, string> script, string refusedKey)
    {
        string before = _host.Remember(CorePattern);
        var v = new Verdict();
        foreach (var runtime in new[] { Runtimes.Sandbox, Runtimes.Runc })
        {
            string value = $"srt-core-{Guid.NewGuid().ToString("N")[..8]}";
            var r = await _docker.Sh(runtime, runtime == Runtimes.Sandbox ? sandboxOptions : Runtimes.RuncMountPrivileges, script(value));
            string after = File.ReadAllText(CorePattern).Trim();
            if (after != before) File.WriteAllText(CorePattern, before);
            if (runtime == Runtimes.Sandbox)
            {
                v.Expect(Value(r, refusedKey) is { Length: > 0 } rc && rc != "0", runtime, $"{refusedKey} refused", r);
                v.Expect(after == before, runtime, $"host kernel.core_pattern unchanged (\"{before}\", now \"{after}\")", r);
            }
            else
                v.Expect(after == value, runtime, $"host kernel.core_pattern written through the uncovered /proc/sys (\"{after}\")", r);
        }
        v.Done();
    }

    [EscapeFact]
    public Task RbindOfProc_RealProcSysCannotBeUncovered() =>
        Attempt(["--cap-add", "SYS_ADMIN"], value => $"""
            mkdir /tmp/x && mount --rbind /proc /tmp/x || exit 9
            umount /tmp/x/sys; echo umount=$?
            echo {value} > /tmp/x/sys/kernel/core_pattern; echo write=$?
            """, "umount");

    /// <summary>pivot_root into the /proc/sys cover, with the old root under it: the cover leaves its place.</summary>
    [EscapeFact]
    public Task PivotRoot_IntoProcSys_IsRefused() =>
        Attempt(["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined"], value => $"""
            unshare -m sh -c 'cd /proc/sys && pivot_root . fs; echo pivot=$?
            echo {value} > /fs/proc/sys/kernel/core_pattern; echo write=$?'
            """, "pivot");
}
