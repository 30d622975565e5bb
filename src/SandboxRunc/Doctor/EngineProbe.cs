using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxRunc.Install;
using SandboxRunc.Interop;
using SandboxRunc.Policy;

namespace SandboxRunc.Doctor;

/// <summary>
/// The impure half of `check` for engines: their configuration files, what the running dockerd says
/// (`docker info`), and every running container of docker, containerd and podman, through their own CLIs (each
/// with a time limit; an engine that does not answer is reported, never waited on for ever). JSON is read with
/// System.Text.Json.Nodes (no reflection).
/// </summary>
public static class EngineProbe
{
    static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);
    const string ContainerdSocket = "/run/containerd/containerd.sock";

    public static string DockerRoot(string daemonJson)
    {
        var root = ReadJson(daemonJson, out _);
        return root?["data-root"] is JsonValue v && v.TryGetValue(out string? s) && s.Length > 0 ? HostPath.Resolve(s) : "/var/lib/docker";
    }

    public static DockerEngineFacts Docker(string daemonJson, string pidFile)
    {
        bool installed = File.Exists(daemonJson) || OnPath("dockerd") is not null;
        var root = ReadJson(daemonJson, out string? configError);
        string? path = root?["runtimes"]?[EngineConfig.RuntimeName]?["path"] is JsonValue p && p.TryGetValue(out string? ps) ? ps : null;
        string? def = root?["default-runtime"] is JsonValue d && d.TryGetValue(out string? ds) ? ds : null;

        List<string>? loaded = null;
        string? loadedDefault = null;
        if (DockerdRunning(pidFile) && Run("docker", "info", "--format", "{{json .}}") is { Exit: 0 } info)
        {
            try
            {
                var doc = JsonNode.Parse(info.Out);
                loaded = doc?["Runtimes"] is JsonObject rts ? rts.Select(kv => kv.Key).Order().ToList() : null;
                loadedDefault = doc?["DefaultRuntime"] is JsonValue dv && dv.TryGetValue(out string? dd) ? dd : null;
            }
            catch (JsonException) { }
        }

        string? runc = null;
        foreach (var dir in RuncTakeover.DockerdPath(pidFile).Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "runc");
            if (File.Exists(candidate)) { runc = HostPath.Resolve(candidate); break; }
        }
        return new DockerEngineFacts(installed, daemonJson, configError, path, def, loaded, loadedDefault, runc);
    }

    static bool DockerdRunning(string pidFile) =>
        int.TryParse(HostProbe.ReadTrimmed(pidFile), out int pid) && HostProbe.ReadTrimmed($"/proc/{pid}/comm") == "dockerd";

    /// <summary>containerd: its config.toml has a runtime table named sandbox-runc (install --containerd writes one).</summary>
    public static OtherEngineFacts Containerd(string configToml)
    {
        bool installed = OnPath("containerd") is not null || File.Exists(configToml);
        string text = HostProbe.ReadTrimmed(configToml) ?? "";
        return new OtherEngineFacts("containerd", installed, configToml, HasTable(text, "runtimes", EngineConfig.RuntimeName));
    }

    /// <summary>podman: a sandbox-runc key in [engine.runtimes] of containers.conf (the admin's or the user's copy).</summary>
    public static OtherEngineFacts Podman(string containersConf)
    {
        bool installed = OnPath("podman") is not null;
        bool known = false;
        string? section = null;
        foreach (var raw in (HostProbe.ReadTrimmed(containersConf) ?? "").Split('\n'))
        {
            string line = raw.Trim();
            if (line.StartsWith('[')) { section = line.Replace(" ", ""); continue; }
            if (section == "[engine.runtimes]" && (line.StartsWith(EngineConfig.RuntimeName + " ", StringComparison.Ordinal)
                || line.StartsWith(EngineConfig.RuntimeName + "=", StringComparison.Ordinal) || line.StartsWith($"\"{EngineConfig.RuntimeName}\"", StringComparison.Ordinal)))
                known = true;
        }
        return new OtherEngineFacts("podman", installed, containersConf, known);
    }

    /// <summary>A TOML table header [... .PARENT.NAME] or [... .PARENT."NAME"] (spaces ignored).</summary>
    internal static bool HasTable(string toml, string parent, string name) =>
        toml.Split('\n').Select(l => l.Trim().Replace(" ", "").Replace("\t", ""))
            .Any(l => l.StartsWith('[') && (l.EndsWith($"{parent}.{name}]") || l.EndsWith($"{parent}.\"{name}\"]")));

    public static SettingsFacts Settings(string path)
    {
        bool exists = File.Exists(path);
        try
        {
            var s = AdminSettings.Load(path);
            return new SettingsFacts(path, exists, null, s.Value, s.Locked);
        }
        catch (SandboxRuncException e) { return new SettingsFacts(path, exists, e.Message, false, false); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return new SettingsFacts(path, exists, e.Message, false, false); }
    }

    /// <summary>Every running container of docker, containerd (all namespaces, docker's own "moby" ones once) and podman.</summary>
    public static List<RunningContainer> Containers(List<string> notes)
    {
        var supervised = Container.Supervisor.AllRunning().Select(s => s.Id).ToHashSet(StringComparer.Ordinal);
        var found = new List<RunningContainer>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Add(string engine, string id, string name, string image, string runtime, int pid)
        {
            if (!seen.Add(id)) return;
            string? map = pid > 0 ? HostProbe.ReadTrimmed($"/proc/{pid}/uid_map") : null;
            found.Add(new RunningContainer(engine, id, name, image, runtime, pid, map, supervised.Contains(id)));
        }

        if (OnPath("docker") is not null && DockerdRunning(EngineConfig.DefaultDockerPidFile))
        {
            var ps = Run("docker", "ps", "-q", "--no-trunc");
            if (ps is not { Exit: 0 }) notes.Add($"docker ps failed: {string.Join("; ", Lines(ps?.Err ?? "cannot run docker"))}");
            else if (Lines(ps.Out) is { Count: > 0 } ids)
            {
                if (Run("docker", ["inspect", .. ids]) is { Exit: 0 } inspect && Parse(inspect.Out) is JsonArray array)
                    foreach (var c in array)
                        if (c?["State"]?["Running"]?.GetValueKind() == JsonValueKind.True)
                            Add("docker", Str(c["Id"]), Str(c["Name"]).TrimStart('/'), Str(c["Config"]?["Image"]), Str(c["HostConfig"]?["Runtime"]), Int(c["State"]?["Pid"]));
                else notes.Add("docker inspect failed");
            }
        }

        // A containerd of its own (dockerd's private one, under /run/docker, holds docker's containers: listed above).
        if (OnPath("ctr") is not null && File.Exists(ContainerdSocket) && Run("ctr", "namespaces", "ls", "-q") is { Exit: 0 } nss)
            foreach (var ns in Lines(nss.Out))
            {
                if (Run("ctr", "-n", ns, "tasks", "ls") is not { Exit: 0 } tasks) { notes.Add($"ctr -n {ns} tasks ls failed"); continue; }
                foreach (var row in Lines(tasks.Out).Skip(1))
                {
                    var cols = row.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (cols.Length < 3 || cols[2] != "RUNNING" || seen.Contains(cols[0])) continue;
                    var info = Run("ctr", "-n", ns, "containers", "info", cols[0]) is { Exit: 0 } i ? Parse(i.Out) : null;
                    string name = Str(info?["Labels"]?["io.kubernetes.container.name"]) is { Length: > 0 } k ? k : $"{ns}/{cols[0]}";
                    Add(ns == "moby" ? "docker" : "containerd", cols[0], name, Str(info?["Image"]), Str(info?["Runtime"]?["Name"]), int.TryParse(cols[1], out int pid) ? pid : 0);
                }
            }

        if (OnPath("podman") is not null && Run("podman", "ps", "-q", "--no-trunc") is { Exit: 0 } pps && Lines(pps.Out) is { Count: > 0 } pids)
        {
            if (Run("podman", ["inspect", .. pids]) is { Exit: 0 } inspect && Parse(inspect.Out) is JsonArray array)
                foreach (var c in array)
                    Add("podman", Str(c?["Id"]), Str(c?["Name"]), Str(c?["ImageName"]), Str(c?["OCIRuntime"]), Int(c?["State"]?["Pid"]));
            else notes.Add("podman inspect failed");
        }
        return found;
    }

    static JsonNode? Parse(string text)
    {
        try { return JsonNode.Parse(text); }
        catch (JsonException) { return null; }
    }

    static string Str(JsonNode? n) => n is JsonValue v && v.TryGetValue(out string? s) ? s : "";

    static int Int(JsonNode? n) => n is JsonValue v && v.TryGetValue(out int i) ? i : 0;

    static List<string> Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    static JsonObject? ReadJson(string path, out string? error)
    {
        error = null;
        string? text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { error = $"{path}: cannot read it: {e.Message}"; return null; }
        if (string.IsNullOrWhiteSpace(text)) return null;
        try
        {
            if (JsonNode.Parse(text) is JsonObject o) return o;
            error = $"{path}: the top level is not a JSON object";
        }
        catch (JsonException e) { error = $"{path}: not valid JSON ({e.Message.Split(" Path:")[0].TrimEnd('.')})"; }
        return null;
    }

    internal static string? OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? RuncTakeover.DefaultPath).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);

    sealed record Output(int Exit, string Out, string Err);

    static Output? Run(string program, params string[] args)
    {
        if (OnPath(program) is not { } exe) return null;
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(Limit))
            {
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                return new Output(-1, "", $"{program} did not answer within {Limit.TotalSeconds} s");
            }
            return new Output(p.ExitCode, stdout.Result, stderr.Result);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or InvalidOperationException)
        {
            return new Output(-1, "", e.Message);
        }
    }
}
