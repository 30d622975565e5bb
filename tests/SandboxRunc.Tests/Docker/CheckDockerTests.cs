using System.Text;
using System.Text.Json;
using CliWrap;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>
/// `sandbox-runc check --format json` on this machine, against what the test finds itself (the kernel's files,
/// findmnt, docker info, the containers' /proc/PID/uid_map): never through check's own code paths. A container
/// started with --runtime=runc is listed as not isolated (unless the lock makes "runc" sandbox-runc, which the
/// test tells from the container's uid_map) and the exit status says so.
/// </summary>
public sealed class CheckDockerTests : IDisposable
{
    readonly DockerCli _docker = new();

    public void Dispose() => _docker.Dispose();

    static async Task<(int Exit, string Out, string Err)> Sh(string program, params string[] args)
    {
        var o = new StringBuilder();
        var e = new StringBuilder();
        using var cts = new CancellationTokenSource(Patience.Command);
        var r = await CliWrap.Cli.Wrap(program).WithArguments(args).WithValidation(CommandResultValidation.None)
            .WithStandardOutputPipe(PipeTarget.ToStringBuilder(o)).WithStandardErrorPipe(PipeTarget.ToStringBuilder(e)).ExecuteAsync(cts.Token);
        return (r.ExitCode, o.ToString(), e.ToString());
    }

    static JsonElement Check(JsonElement report, string name)
    {
        foreach (var c in report.GetProperty("checks").EnumerateArray())
            if (c.GetProperty("name").GetString() == name) return c;
        throw new Xunit.Sdk.XunitException($"check has no line \"{name}\": {report}");
    }

    static string Mark(JsonElement line) => line.GetProperty("mark").GetString()!;

    [IntegrationFact]
    public async Task Check_MatchesWhatTheHostHas_AndListsARuncContainerAsNotIsolated()
    {
        string bare = _docker.Name("check-runc");
        var run = await _docker.Run("run", "-d", "--runtime=runc", "--name", bare, DockerCli.Image, "sleep", "600");
        Assert.True(run.ExitCode == 0, run.ToString());
        string bareId = run.Stdout.Trim();
        string isolated = _docker.Name("check-iso");
        var iso = await _docker.Run("run", "-d", "--runtime=" + DockerCli.Runtime, "--name", isolated, DockerCli.Image, "sleep", "600");
        Assert.True(iso.ExitCode == 0, iso.ToString());
        string isoId = iso.Stdout.Trim();

        var runningBefore = (await Sh("docker", "ps", "-q", "--no-trunc")).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var r = await Sh(Repo.Binary, "check", "--format", "json");
        using var doc = JsonDocument.Parse(r.Out);
        var report = doc.RootElement;

        // Host, as the test reads it.
        string release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        Assert.StartsWith(release + " ", Check(report, "kernel").GetProperty("found").GetString());
        Assert.Equal(File.Exists("/dev/fuse") ? "ok" : "missing", Mark(Check(report, "/dev/fuse")));
        Assert.Equal(long.Parse(File.ReadAllText("/proc/sys/user/max_user_namespaces").Trim()) > 0 ? "ok" : "missing", Mark(Check(report, "user namespaces")));
        string cgroups = Check(report, "cgroups").GetProperty("found").GetString()!;
        var mounts = File.ReadAllLines("/proc/self/mounts").Select(l => l.Split(' ')).ToList();
        string expectedMode = mounts.Any(m => m[1] == "/sys/fs/cgroup" && m[2] == "cgroup2") ? "v2"
            : mounts.Any(m => m[2] == "cgroup2") ? "hybrid" : "v1";
        Assert.StartsWith(expectedMode, cgroups);
        string dataRoot = (await Sh("docker", "info", "--format", "{{.DockerRootDir}}")).Out.Trim();
        string fsType = (await Sh("findmnt", "-n", "-o", "FSTYPE", "-T", dataRoot)).Out.Trim();
        Assert.StartsWith(fsType + ": ", Check(report, "ID-mapped mounts " + dataRoot).GetProperty("found").GetString());
        // An isolated container is running, so the data root can be ID-mapped here.
        Assert.Equal("ok", Mark(Check(report, "ID-mapped mounts " + dataRoot)));

        Assert.Equal(File.ReadAllText("/proc/sys/kernel/seccomp/actions_avail").Split(' ').Contains("user_notif") ? "ok" : "missing",
            Mark(Check(report, "seccomp user notify")));
        bool apparmor = File.Exists("/sys/module/apparmor/parameters/enabled") && File.ReadAllText("/sys/module/apparmor/parameters/enabled").Trim() == "Y";
        Assert.Equal(apparmor ? "enabled" : "not enabled", Check(report, "AppArmor").GetProperty("found").GetString());
        Assert.Equal(File.Exists("/sys/fs/selinux/enforce"), Check(report, "SELinux").GetProperty("found").GetString() != "not enabled");

        // Engines, as docker info tells it.
        string runtimes = (await Sh("docker", "info", "--format", "{{json .Runtimes}}")).Out;
        Assert.Equal(runtimes.Contains($"\"{DockerCli.Runtime}\"") ? "ok" : "missing", Mark(Check(report, "dockerd knows it")));
        string defaultRuntime = (await Sh("docker", "info", "--format", "{{.DefaultRuntime}}")).Out.Trim();
        Assert.Equal(defaultRuntime == DockerCli.Runtime ? "ok" : "advice", Mark(Check(report, "dockerd default")));

        // The lock: the first runc in the running dockerd's PATH is this runtime (or not).
        int dockerd = int.Parse(File.ReadAllText("/var/run/docker.pid").Trim());
        string path = File.ReadAllText($"/proc/{dockerd}/environ").Split('\0').First(e => e.StartsWith("PATH="))[5..];
        string? runc = path.Split(':').Select(d => Path.Combine(d, "runc")).FirstOrDefault(File.Exists);
        bool locked = runc is not null && (await Sh("readlink", "-f", runc)).Out.Trim() == (await Sh("readlink", "-f", Repo.Binary)).Out.Trim();
        Assert.Equal(locked ? "ok" : "advice", Mark(Check(report, "dockerd lock")));
        string containerdConfig = File.Exists("/etc/containerd/config.toml") ? File.ReadAllText("/etc/containerd/config.toml") : "";
        if (File.Exists("/usr/bin/containerd"))
            Assert.Equal(containerdConfig.Contains(".runtimes.sandbox-runc]") ? "ok" : "advice", Mark(Check(report, "containerd knows it")));
        Assert.Equal(File.Exists("/etc/sandbox-runc/admin-settings.json") && Environment.GetEnvironmentVariable("SANDBOX_RUNC_ADMIN_SETTINGS") is null or "",
            Check(report, "admin settings").GetProperty("found").GetString()!.EndsWith(" parses"));

        // Containers: every docker container running before and after check is listed; each judged by what its init is.
        var listed = report.GetProperty("containers").EnumerateArray().ToDictionary(c => c.GetProperty("id").GetString()!);
        var runningAfter = (await Sh("docker", "ps", "-q", "--no-trunc")).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        foreach (var id in runningBefore.Intersect(runningAfter))
            Assert.True(listed.ContainsKey(id), $"running container {id} is not listed: {r.Out}");
        var bareLine = listed[bareId];
        Assert.Equal(bare, bareLine.GetProperty("name").GetString());
        Assert.Equal(DockerCli.Image, bareLine.GetProperty("image").GetString());
        Assert.Equal("runc", bareLine.GetProperty("runtime").GetString());
        bool bareInHostUserns = HostUidMap(bareLine.GetProperty("pid").GetInt32());
        Assert.Equal(!bareInHostUserns, bareLine.GetProperty("isolated").GetBoolean());
        Assert.False(HostUidMap(listed[isoId].GetProperty("pid").GetInt32()));
        Assert.True(listed[isoId].GetProperty("isolated").GetBoolean(), listed[isoId].ToString());

        if (bareInHostUserns)
        {
            Assert.Equal(1, r.Exit);
            Assert.False(report.GetProperty("passed").GetBoolean());
            var table = await Sh(Repo.Binary, "check");
            Assert.Equal(1, table.Exit);
            Assert.Contains($"✗ docker     {bareId[..12]}  {bare}", table.Out);
            Assert.DoesNotContain(isoId[..12], table.Out);
        }

        Assert.Equal(0, (await _docker.Run("rm", "-f", bare)).ExitCode);
        var after = await Sh(Repo.Binary, "check", "--format", "json");
        using var afterDoc = JsonDocument.Parse(after.Out);
        Assert.DoesNotContain(afterDoc.RootElement.GetProperty("containers").EnumerateArray(), c => c.GetProperty("id").GetString() == bareId);
    }

    static bool HostUidMap(int pid) =>
        File.ReadAllText($"/proc/{pid}/uid_map").Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries) is ["0", "0", "4294967295"];
}
