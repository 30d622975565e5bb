using System.Text.RegularExpressions;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.Escape;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SystemContainers;

/// <summary>
/// The escape suite's privileged attempts (Escape/PrivilegedEscapeTests), made from inside an inner container that the
/// inner engine of a Docker-in-Docker container started as privileged as it can: each fails, and the host's values
/// are unchanged. (The runc halves that show each attempt works are in PrivilegedEscapeTests: an outer runc container
/// that could run an engine needs --privileged, which fails on this host's bounding set.) In the host-global
/// collection: a hole would change host settings, which are restored afterwards.
/// </summary>
[Trait("Category", "SystemContainers")]
[Collection(HostGlobalSettings.Name)]
public sealed class InnerContainerEscapeTests : IDisposable
{
    readonly DockerCli _docker = new();
    readonly HostScope _host = new();

    public void Dispose()
    {
        _docker.Dispose();
        _host.Dispose();
    }

    static string Value(string stdout, string key) =>
        Regex.Match(stdout, $"^{Regex.Escape(key)}=(.*)$", RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value.Trim() : "";

    [IntegrationFact]
    public async Task PrivilegedAttemptsFromAnInnerContainerAllFail()
    {
        string name = await DockerInDockerTests.StartDind(_docker, "innerescape");
        await DockerInDockerTests.LoadTestImage(_docker, name);

        string core = _host.Remember("/proc/sys/kernel/core_pattern");
        string swappiness = _host.Remember("/proc/sys/vm/swappiness");
        const string ksm = "/sys/kernel/mm/ksm/sleep_millisecs";
        string? ksmBefore = File.Exists(ksm) ? _host.Remember(ksm) : null;
        var agents = Directory.GetDirectories("/sys/fs/cgroup").Select(d => Path.Combine(d, "release_agent")).Where(File.Exists)
            .ToDictionary(p => p, p => File.ReadAllText(p));
        var dev = EscapeHost.RootDevice();
        string? marker = dev is null ? null : _host.Marker("/");
        string newCore = $"srt-core-{_host.Unique}";
        string newSwappiness = ((int.Parse(swappiness) + 1) % 100).ToString();

        string script = $"""
            grep CapEff /proc/self/status
            echo {newCore} > /proc/sys/kernel/core_pattern; echo core=$?
            echo {newSwappiness} > /proc/sys/vm/swappiness; echo swappiness=$?
            echo 1234 > {ksm}; echo ksm=$?
            mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s && echo 1234 > /tmp/s/kernel/mm/ksm/sleep_millisecs; echo ksm.newsysfs=$?
            mkdir -p /tmp/cg && mount -t cgroup -o none,name=srtx cgroup /tmp/cg && echo /tmp/agent > /tmp/cg/release_agent; echo agent=$?
            for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/release_agent; do [ -e "$f" ] && echo /tmp/agent > "$f" 2>/dev/null && echo "existing=$f"; done
            {(dev is null ? "" : $"mknod /tmp/b b {dev.Major} {dev.Minor}; mkdir -p /tmp/m && mount -t {dev.FsType} /tmp/b /tmp/m; echo rootdev=$?; echo t > /tmp/m/{Path.GetFileName(marker!)}")}
            true
            """;
        var missing = DockerInDockerTests.MissingFromHostBoundingSet();
        string[] privileged = missing.Count == 0 ? ["--privileged"]
            : ["--cap-add", "ALL", .. missing.SelectMany(c => new[] { "--cap-drop", c }), "--security-opt", "seccomp=unconfined",
               "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined"];
        var r = await _docker.Run(["exec", name, "docker", "run", "--rm", .. privileged, "--network=none", DockerCli.Image, "sh", "-c", script]);
        string o = r.Stdout;

        var v = new Verdict();
        const string who = "inner container";
        // Without CAP_SYS_ADMIN in its (nested) user namespace the attempts would prove nothing.
        ulong capEff = o.Split('\n').FirstOrDefault(l => l.StartsWith("CapEff:")) is { } line ? Convert.ToUInt64(line[7..].Trim(), 16) : 0;
        v.Expect((capEff >> 21 & 1) == 1, who, "runs with CAP_SYS_ADMIN (in its user namespace)", r);
        v.Expect(File.ReadAllText("/proc/sys/kernel/core_pattern").Trim() == core, who, "host kernel.core_pattern unchanged", r);
        v.Expect(File.ReadAllText("/proc/sys/vm/swappiness").Trim() == swappiness, who, "host vm.swappiness unchanged", r);
        if (ksmBefore is not null)
            v.Expect(File.ReadAllText(ksm).Trim() == ksmBefore, who, $"host {ksm} unchanged", r);
        v.Expect(Value(o, "agent") is { Length: > 0 } a && a != "0", who, "no cgroup v1 hierarchy mounted for a release_agent", r);
        v.Expect(Value(o, "existing") == "", who, "no release_agent written", r);
        foreach (var (path, before) in agents)
            v.Expect(File.ReadAllText(path) == before, who, $"host {path} unchanged", r);
        if (marker is not null)
        {
            bool written = File.Exists(marker);
            File.Delete(marker);
            v.Expect(Value(o, "rootdev") is { Length: > 0 } m && m != "0", who, "the host's root device is not mounted", r);
            v.Expect(!written, who, $"nothing written to the host's / ({marker})", r);
        }
        v.Done();
    }
}
