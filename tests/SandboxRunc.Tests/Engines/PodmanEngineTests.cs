using SandboxRunc.Tests.Integration;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using static SandboxRunc.Tests.Engines.EngineShell;

namespace SandboxRunc.Tests.Engines;

/// <summary>
/// podman with its own storage (--root, --runroot, --tmpdir under a temp dir) holding the test image,
/// removed at the end. The options this VM needs: cgroupfs (no systemd), file events (no journald),
/// no network (no netavark/iptables set-up), and ulimits below the host's hard RLIMIT_NOFILE (20000:
/// podman's default of 1048576 cannot be set here).
/// </summary>
public sealed class PodmanStore : IAsyncLifetime
{
    public string Dir { get; } = "/tmp/pm-test-" + Guid.NewGuid().ToString("N")[..8];
    public const string Image = "localhost/sandbox-runc-test:latest";
    bool _ready;

    string[] Global => ["--root", $"{Dir}/root", "--runroot", $"{Dir}/run", "--tmpdir", $"{Dir}/tmp",
        "--cgroup-manager", "cgroupfs", "--events-backend", "file"];

    public static string[] RunOptions => ["--runtime", Runtime, "--network", "none",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

    public Task<Result> Podman(params string[] args) => Run("podman", [.. Global, .. args]);
    public Task<Result> PodmanOk(params string[] args) => Ok("podman", [.. Global, .. args], 120);

    public async Task InitializeAsync()
    {
        if (Environment.UserName != "root") return;
        Directory.CreateDirectory(Dir);
        string tar = Path.Combine(Dir, "image.tar");
        await SaveImage(tar);
        await PodmanOk("load", "-i", tar);
        File.Delete(tar);
        _ready = true;
    }

    public async Task DisposeAsync()
    {
        if (!Directory.Exists(Dir)) return;
        if (_ready)
        {
            try { await Podman("rm", "-af", "-t", "0"); } catch { }
            try { await Podman("rmi", "-af"); } catch { }
        }
        RemoveTree(Dir);
    }
}

/// <summary>sandbox-runc as podman's --runtime: run, stop, exec.</summary>
public sealed class PodmanEngineTests(PodmanStore podman) : IClassFixture<PodmanStore>
{
    static string NewName(string what) => $"srpm-{what}-{Guid.NewGuid().ToString("N")[..6]}";

    [IntegrationFact]
    public async Task Podman_Run_ContainerGetsItsOwnUserNamespace()
    {
        string name = NewName("run");
        try
        {
            var r = await podman.PodmanOk(["run", "--rm", "--name", name, .. PodmanStore.RunOptions, PodmanStore.Image, "cat", "/proc/self/uid_map"]);
            var (b, size) = UserNs.ParseMap(r.Stdout);
            Assert.Equal(65536, size);
            Assert.True(b >= 100000, $"uid_map base {b}");
        }
        finally { await podman.Podman("rm", "-f", "-t", "0", name); }
    }

    [IntegrationFact]
    public async Task Podman_Stop_EndsTheContainerWithSigterm()
    {
        string name = NewName("stop");
        try
        {
            await podman.PodmanOk(["run", "-d", "--name", name, .. PodmanStore.RunOptions, PodmanStore.Image,
                "sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done"]);
            int pid = int.Parse((await podman.PodmanOk("inspect", "-f", "{{.State.Pid}}", name)).Stdout.Trim());
            Assert.True(UserNs.ParseMap(File.ReadAllText($"/proc/{pid}/uid_map")).Base >= 100000);
            await Eventually.Holds(() => podman.Podman("logs", name), l => l.Stdout.Contains("ready"), "the container to set its trap (\"ready\" in its logs)");

            // Exit 0 is the trap's: the SIGKILL path, after the grace period, would give 137.
            await podman.PodmanOk("stop", "-t", "60", name);
            Assert.Equal("exited", (await podman.PodmanOk("inspect", "-f", "{{.State.Status}}", name)).Stdout.Trim());
            Assert.Equal("0", (await podman.PodmanOk("inspect", "-f", "{{.State.ExitCode}}", name)).Stdout.Trim());
            Assert.True(await Procs.WaitGone(pid), $"init {pid} still alive: {Procs.Describe(pid)}");
            await podman.PodmanOk("rm", name);
        }
        finally { await podman.Podman("rm", "-f", "-t", "0", name); }
    }

    [IntegrationFact]
    public async Task Podman_Exec_JoinsTheContainersUserNamespace()
    {
        string name = NewName("exec");
        try
        {
            await podman.PodmanOk(["run", "-d", "--name", name, .. PodmanStore.RunOptions, PodmanStore.Image, "sleep", "300"]);
            int pid = int.Parse((await podman.PodmanOk("inspect", "-f", "{{.State.Pid}}", name)).Stdout.Trim());
            string initMap = File.ReadAllText($"/proc/{pid}/uid_map");
            var r = await podman.PodmanOk("exec", name, "cat", "/proc/self/uid_map");
            Assert.Equal(UserNs.ParseMap(initMap), UserNs.ParseMap(r.Stdout));
        }
        finally { await podman.Podman("rm", "-f", "-t", "0", name); }
    }
}
