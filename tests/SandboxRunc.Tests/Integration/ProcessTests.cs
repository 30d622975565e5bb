using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>process.* and hostname, as the program inside sees them.</summary>
public sealed class ProcessTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [IntegrationFact]
    public async Task HostnameEnvAndCwd()
    {
        using var b = new Bundle("sh", "-c", "hostname; echo \"$GREETING\"; pwd").WritableRootfs();
        b.Spec.Hostname = "box-under-test";
        b.Spec.Process!.Env = [.. b.Spec.Process.Env!, "GREETING=hello there"];
        b.Spec.Process.Cwd = "/does/not/exist/yet";
        string output = await _rt.RunOk(b.Write(), "penv");
        Assert.Equal("box-under-test\nhello there\n/does/not/exist/yet\n", output);
        Assert.True(Directory.Exists(Path.Combine(b.Dir, "rootfs", "does", "not", "exist", "yet")));
    }

    [IntegrationFact]
    public async Task UserGroupsAndUmask()
    {
        using var b = new Bundle("sh", "-c", "id; umask");
        b.Spec.Process!.User = new User { Uid = 1000, Gid = 1000, AdditionalGids = [10, 65534], Umask = 0x3f /* 077 */ };
        string output = await _rt.RunOk(b.Write(), "puser");
        var lines = output.Split('\n');
        Assert.StartsWith("uid=1000(tester) gid=1000(tester) groups=", lines[0]);
        Assert.Contains("10", lines[0][lines[0].IndexOf("groups=")..]);
        Assert.Contains("65534(nogroup)", lines[0]);
        Assert.Equal("0077", lines[1]);
    }

    [IntegrationFact]
    public async Task Rlimits()
    {
        using var b = new Bundle("sh", "-c", "ulimit -n; ulimit -Hn");
        b.Spec.Process!.Rlimits = [new Rlimit { Type = "RLIMIT_NOFILE", Soft = 321, Hard = 654 }];
        Assert.Equal("321\n654\n", await _rt.RunOk(b.Write(), "prlimit"));
    }

    [IntegrationFact]
    public async Task CapabilitiesMatchTheSpec()
    {
        using var b = new Bundle("grep", "^Cap", "/proc/self/status");
        string[] caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        b.Spec.Process!.Capabilities = new Capabilities { Bounding = [.. caps], Effective = [.. caps], Permitted = [.. caps] };
        string output = await _rt.RunOk(b.Write(), "pcaps");
        // CAP_CHOWN = 0, CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10.
        const string mask = "0000000000000421";
        Assert.Contains($"CapEff:\t{mask}\n", output);
        Assert.Contains($"CapPrm:\t{mask}\n", output);
        Assert.Contains($"CapBnd:\t{mask}\n", output);
        Assert.Contains("CapInh:\t0000000000000000\n", output);
    }

    [IntegrationFact]
    public async Task NoNewPrivilegesAndOomScoreAdj()
    {
        using var b = new Bundle("sh", "-c", "grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj");
        b.Spec.Process!.NoNewPrivileges = true;
        b.Spec.Process.OomScoreAdj = 432;
        Assert.Equal("NoNewPrivs:\t1\n432\n", await _rt.RunOk(b.Write(), "pnnp"));
    }

    [IntegrationFact]
    public async Task WithoutNoNewPrivilegesTheFlagIsClear()
    {
        using var b = new Bundle("grep", "NoNewPrivs", "/proc/self/status");
        b.Spec.Process!.NoNewPrivileges = false;
        Assert.Equal("NoNewPrivs:\t0\n", await _rt.RunOk(b.Write(), "pnnp0"));
    }

    public void Dispose() => _rt.Dispose();
}
