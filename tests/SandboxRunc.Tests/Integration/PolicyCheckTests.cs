using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// `sandbox-runc policy check` and `create` with the real host facts and a private settings file
/// (SANDBOX_RUNC_ADMIN_SETTINGS): the decision and rewrites printed, refusals leave nothing behind.
/// </summary>
public sealed class PolicyCheckTests : IDisposable
{
    readonly string _settings = Path.Combine(Path.GetTempPath(), $"srp-settings-{Guid.NewGuid():N}.json");
    readonly RuntimeCli _rt;

    public PolicyCheckTests() =>
        _rt = new RuntimeCli(environment: new Dictionary<string, string> { ["SANDBOX_RUNC_ADMIN_SETTINGS"] = _settings });

    [IntegrationFact]
    public async Task PolicyCheck_PrintsTheDecisionAndTheRewrites()
    {
        using var b = new Bundle();
        b.Spec.Linux!.Devices = [new Device { Type = "b", Path = "/dev/sda", Major = 8, Minor = 0 }];
        var r = await _rt.Run("policy", "check", b.Write());
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.Stdout.Split('\n');
        Assert.Equal("allowed", lines[0]);
        Assert.Contains(lines, l => l.StartsWith("rewrite: add a user namespace mapping container IDs 0-65535"));
        Assert.Contains("rewrite: drop device /dev/sda (b 8:0)", lines);
    }

    [IntegrationFact]
    public async Task PolicyCheck_RefusesTheHostNetworkAndASymlinkToDockersConfig()
    {
        using var b = new Bundle();
        b.Spec.Linux!.Namespaces!.First(n => n.Type == "network").Path = "/proc/1/ns/net";
        var r = await _rt.Run("policy", "check", b.Write());
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("refused: sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)\n", r.Stdout);

        using var c = new Bundle();
        string link = Path.Combine(c.Dir, "innocent");
        File.CreateSymbolicLink(link, "/etc/docker/../docker");
        c.Spec.Mounts!.Add(new Mount { Destination = "/mnt", Type = "bind", Source = link + "/", Options = ["rbind"] });
        r = await _rt.Run("policy", "check", c.Write());
        Assert.Equal($"refused: can't mount {link}/ because it's configured as a restricted host mount\n", r.Stdout);
    }

    [IntegrationFact]
    public async Task PolicyCheck_MalformedOrWritableSettingsFailCreateAndLeaveNothing()
    {
        File.WriteAllText(_settings, """{ "configurationFileVersion": 3 }""");
        File.SetUnixFileMode(_settings, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        using var b = new Bundle();
        var r = await _rt.Run("create", "--bundle", b.Write(), "badsettings");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"admin settings {_settings}: configurationFileVersion must be 2 (found 3)", r.Stderr);
        Assert.False(Directory.Exists(Path.Combine(_rt.StateRoot, "badsettings")), "a refused create left its state dir");

        File.WriteAllText(_settings, """{ "configurationFileVersion": 2 }""");
        File.SetUnixFileMode(_settings, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead);
        r = await _rt.Run("policy", "check", b.Dir);
        Assert.Equal($"refused: admin settings {_settings} must be owned by root and not writable by group or others (owner uid 0, mode 0664): refusing to start containers\n", r.Stdout);
    }

    /// <summary>Flags anywhere, as runc's commands take them: `policy check --id p1 BUNDLE` printed the usage.</summary>
    [IntegrationFact]
    public async Task PolicyCheck_TakesTheIdBeforeOrAfterTheBundle()
    {
        using var b = new Bundle();
        b.Write();
        Assert.StartsWith("allowed\n", (await _rt.Ok("policy", "check", "--id", "p1", b.Dir)).Stdout);
        Assert.StartsWith("allowed\n", (await _rt.Ok("policy", "check", b.Dir, "--id", "p1")).Stdout);
    }

    /// <summary>
    /// Sysctls as runc validates them: a global one (it would change the host) and a missing key are refused by
    /// the policy, before anything is made; one that exists in the container's network namespace read-only (a
    /// global net.* key) passes the policy and fails create with what it means, not a .NET message.
    /// </summary>
    [IntegrationFact]
    public async Task PolicyCheck_SysctlsMustBeTheContainersOwn()
    {
        using var b = new Bundle("true");
        b.Spec.Linux!.Sysctl = new() { ["vm.swappiness"] = "10" };
        var r = await _rt.Run("policy", "check", b.Write());
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("refused: sysctl \"vm.swappiness=10\" is not in a separate kernel namespace: setting it would change the host.", r.Stdout);

        b.Spec.Linux.Sysctl = new() { ["net.ipv4.no_such_key"] = "1" };
        r = await _rt.Run("policy", "check", b.Write());
        Assert.Equal("refused: sysctl \"net.ipv4.no_such_key=1\": there is no such sysctl on this host (/proc/sys/net/ipv4/no_such_key)\n", r.Stdout);

        b.Spec.Linux.Sysctl = new() { ["net.ipv4.tcp_allowed_congestion_control"] = "reno", ["kernel.domainname"] = "example.org" };
        r = await _rt.Run("policy", "check", b.Write());
        Assert.StartsWith("allowed\n", r.Stdout);
        var c = await _rt.Detached("create", "--bundle", b.Dir, "globalnet");
        BadInput.AssertCleanRefusal(c, "create", "sysctl net.ipv4.tcp_allowed_congestion_control=reno: cannot be set in the container's network namespace: " +
            "Permission denied; it is read-only there: the key is global to the host");
        await BadInput.AssertNothingLeft(_rt, "globalnet", b.Spec.Linux.CgroupsPath, "create");

        // The container's own keys are set.
        b.Spec.Linux.Sysctl = new() { ["kernel.domainname"] = "example.org", ["net.ipv4.ip_forward"] = "1" };
        b.Spec.Process!.Args = ["sh", "-c", "cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward"];
        Assert.Equal("example.org\n1\n", await _rt.RunOk(b.Write(), "ownsysctls"));
    }

    public void Dispose()
    {
        _rt.Dispose();
        File.Delete(_settings);
    }
}
