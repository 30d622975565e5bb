using SandboxRunc.Tests.Integration;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using static SandboxRunc.Tests.Engines.EngineShell;

namespace SandboxRunc.Tests.Engines;

/// <summary>
/// A standalone containerd (own config, root, state and socket under a temp dir; the CRI plugin off),
/// its config.toml written with `sandbox-runc install --containerd`, the test image imported. Killed
/// and removed at the end, with whatever the tests left.
/// </summary>
public sealed class StandaloneContainerd : IAsyncLifetime
{
    public const string Namespace = "test";
    public const string Image = "docker.io/library/sandbox-runc-test:latest";
    public string Dir { get; } = "/tmp/ctrd-test-" + Guid.NewGuid().ToString("N")[..8];
    public string Socket => Path.Combine(Dir, "containerd.sock");
    System.Diagnostics.Process? _daemon;

    public async Task InitializeAsync()
    {
        if (Environment.UserName != "root") return;
        Directory.CreateDirectory(Dir);
        string config = Path.Combine(Dir, "config.toml");
        File.WriteAllText(config, $"""
            version = 2
            root = "{Dir}/root"
            state = "{Dir}/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]

            [grpc]
              address = "{Socket}"
            [ttrpc]
              address = "{Socket}.ttrpc"
            [debug]
              address = "{Dir}/debug.sock"
            [plugins]
              [plugins."io.containerd.internal.v1.opt"]
                path = "{Dir}/opt"

            """);
        // The runtime's own installer adds its CRI block: containerd must accept the file it writes.
        await Ok(Runtime, ["install", "--no-docker", "--containerd", "--containerd-config", config]);
        var psi = new System.Diagnostics.ProcessStartInfo("containerd", ["--config", config, "--log-level", "warn"])
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        _daemon = System.Diagnostics.Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        _daemon.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        _daemon.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        _daemon.BeginErrorReadLine();
        _daemon.BeginOutputReadLine();
        var daemon = _daemon;
        await Eventually.True(async () =>
            daemon.HasExited ? throw new Xunit.Sdk.XunitException($"containerd exited with {daemon.ExitCode}: {log}")
                : File.Exists(Socket) && (await Ctr("version")).ExitCode == 0,
            $"containerd to answer on {Socket}", Patience.Command);
        string tar = Path.Combine(Dir, "image.tar");
        await SaveImage(tar);
        await CtrOk("images", "import", tar);
        File.Delete(tar);
    }

    public Task<Result> Ctr(params string[] args) => Run("ctr", ["-a", Socket, "-n", Namespace, .. args]);
    public Task<Result> CtrOk(params string[] args) => Ok("ctr", ["-a", Socket, "-n", Namespace, .. args], 120);

    /// <summary>Kills and deletes a container's task and the container, whatever state they are in.</summary>
    public async Task Remove(string id)
    {
        await Ctr("task", "kill", "-s", "SIGKILL", id);
        for (int i = 0; i < 50 && (await Ctr("task", "delete", id)).ExitCode != 0; i++)
        {
            if (!(await Ctr("task", "ls", "-q")).Stdout.Split('\n').Contains(id)) break;
            await Task.Delay(100);
        }
        await Ctr("container", "delete", id);
    }

    public async Task DisposeAsync()
    {
        if (_daemon is null)
        {
            if (Directory.Exists(Dir)) RemoveTree(Dir); // set-up failed before containerd started
            return;
        }
        try
        {
            foreach (var id in (await Ctr("container", "ls", "-q")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                await Remove(id);
        }
        catch { }
        try
        {
            _daemon.Kill();
            await _daemon.WaitForExitAsync(new CancellationTokenSource(10000).Token);
        }
        catch { }
        RemoveTree(Dir);
    }
}

/// <summary>sandbox-runc under containerd (ctr run --runc-binary), through the runc v2 shim.</summary>
public sealed class ContainerdEngineTests(StandaloneContainerd ctrd) : IClassFixture<StandaloneContainerd>
{
    static string NewId(string what) => $"srct-{what}-{Guid.NewGuid().ToString("N")[..6]}";

    string[] RunArgs(bool detach, string id, params string[] cmd) =>
        ["run", .. (detach ? new[] { "-d" } : new[] { "--rm" }), "--runc-binary", Runtime, StandaloneContainerd.Image, id, .. cmd];

    async Task<int> TaskPid(string id)
    {
        var ls = await ctrd.CtrOk("task", "ls");
        var line = ls.Stdout.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .FirstOrDefault(f => f.Length >= 3 && f[0] == id) ?? throw new Xunit.Sdk.XunitException($"no task {id}: {ls}");
        return int.Parse(line[1]);
    }

    async Task<string> TaskStatus(string id)
    {
        var ls = await ctrd.CtrOk("task", "ls");
        return ls.Stdout.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .FirstOrDefault(f => f.Length >= 3 && f[0] == id)?[2] ?? "(gone)";
    }

    [IntegrationFact]
    public async Task Containerd_Run_ContainerGetsItsOwnUserNamespace()
    {
        string id = NewId("run");
        try
        {
            var r = await ctrd.CtrOk(RunArgs(false, id, "sh", "-c", "cat /proc/self/uid_map"));
            var (b, size) = UserNs.ParseMap(r.Stdout);
            Assert.Equal(65536, size);
            Assert.True(b >= 100000, $"uid_map base {b}");
        }
        finally { await ctrd.Remove(id); }
    }

    [IntegrationFact]
    public async Task Containerd_Detached_KilledAndDeleted()
    {
        string id = NewId("det");
        try
        {
            await ctrd.CtrOk(RunArgs(true, id, "sleep", "300"));
            int pid = await TaskPid(id);
            Assert.Equal("RUNNING", await TaskStatus(id));
            Assert.True(Procs.Alive(pid));
            Assert.True(UserNs.ParseMap(File.ReadAllText($"/proc/{pid}/uid_map")).Base >= 100000);

            await ctrd.CtrOk("task", "kill", "-s", "SIGKILL", id);
            await Eventually.Holds(() => TaskStatus(id), s => s == "STOPPED", $"task {id} to be STOPPED after SIGKILL");
            Assert.True(await Procs.WaitGone(pid), $"init {pid} still alive: {Procs.Describe(pid)}");
            await ctrd.CtrOk("task", "delete", id);
            await ctrd.CtrOk("container", "delete", id);
            Assert.DoesNotContain(id, (await ctrd.CtrOk("container", "ls", "-q")).Stdout.Split('\n'));
        }
        finally { await ctrd.Remove(id); }
    }

    [IntegrationFact]
    public async Task Containerd_Exec_JoinsTheContainersUserNamespace()
    {
        string id = NewId("exec");
        try
        {
            await ctrd.CtrOk(RunArgs(true, id, "sleep", "300"));
            int pid = await TaskPid(id);
            string initMap = File.ReadAllText($"/proc/{pid}/uid_map");
            var r = await ctrd.CtrOk("task", "exec", "--exec-id", "e1", id, "cat", "/proc/self/uid_map");
            Assert.Equal(UserNs.ParseMap(initMap), UserNs.ParseMap(r.Stdout));
        }
        finally { await ctrd.Remove(id); }
    }
}
