using System.Diagnostics;
using SandboxRunc.Tests.Docker;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.SystemContainers;

/// <summary>
/// The Debian 12 system-container image (docker.io, containerd, runc, systemd-sysv) of tests/sysimage/, in the daemon
/// the docker CLI talks to. `./build.sh` (setup) builds and loads it; when a test finds it missing it runs
/// tests/sysimage/build-image.sh itself (a cached tarball makes that a few seconds, a cold build a few minutes).
/// </summary>
public sealed class SystemImage
{
    static readonly SemaphoreSlim Once = new(1, 1);
    static string? _tag;

    /// <summary>sandbox-runc-system:HASH, loaded.</summary>
    public static async Task<string> Tag()
    {
        await Once.WaitAsync();
        try
        {
            if (_tag is not null) return _tag;
            string script = Path.Combine(Repo.Root, "tests", "sysimage", "build-image.sh");
            string tag = (await Sh(script, "--tag-only", TimeSpan.FromSeconds(30))).Trim();
            using var docker = new DockerCli();
            if ((await docker.Run("image", "inspect", tag)).ExitCode != 0)
                await Sh(script, null, TimeSpan.FromMinutes(15));
            return _tag = tag;
        }
        finally { Once.Release(); }
    }

    static async Task<string> Sh(string script, string? arg, TimeSpan within)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(script);
        if (arg is not null) psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(within);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{script} {arg} did not finish within {within.TotalMinutes:0} min");
        }
        if (p.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{script} {arg} failed ({p.ExitCode}):\n{await stdout}\n{await stderr}");
        return await stdout;
    }
}

/// <summary>What a container left on the host, found from docker's id: state dir, staging dir, storage dir, cgroups.</summary>
public sealed record HostTraces(string StateDir, string StagingDir, string StorageDir, IReadOnlyList<string> CgroupDirs)
{
    /// <summary>Finds the runtime's state dir under any docker exec root (the machine's, a private dockerd's).</summary>
    public static async Task<HostTraces> Of(DockerCli docker, string name)
    {
        string id = await docker.Inspect(name, "{{.Id}}");
        var roots = new List<string>();
        foreach (var top in Directory.EnumerateDirectories("/run").Concat(Directory.EnumerateDirectories("/var/run")))
            foreach (var exec in new[] { top, Path.Combine(top, "exec") })
                if (Directory.Exists(exec))
                    roots.AddRange(Directory.EnumerateDirectories(exec, "runtime-*").Select(r => Path.Combine(r, "moby")));
        // The runtime keys its dirs by the state root as the engine spelled it (dockerd says /var/run/docker/..., a
        // symlink to /run/docker/...): every spelling that holds the state is tried, the one whose dirs exist wins.
        var stateDirs = roots.Select(r => Path.Combine(r, id)).Where(d => File.Exists(Path.Combine(d, "state.json"))).ToList();
        if (stateDirs.Count == 0)
            throw new Xunit.Sdk.XunitException($"no state dir for container {name} ({id}) under {string.Join(", ", roots)}");
        string KeyOf(string dir) => SandboxRunc.Container.CreateOperation.StagingKey(new SandboxRunc.Container.StateStore(Path.GetDirectoryName(dir)!), id);
        string stateDir = stateDirs.FirstOrDefault(d => Directory.Exists(SandboxRunc.Rootfs.EngineStorage.DirOf(KeyOf(d)))
            || Directory.Exists(Path.Combine(SandboxRunc.Rootfs.IdmappedStaging.StagingRoot, KeyOf(d)))) ?? stateDirs[0];
        string key = KeyOf(stateDir);
        using var state = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(stateDir, "state.json")));
        var cgroups = state.RootElement.TryGetProperty("cgroupPaths", out var cp)
            ? cp.EnumerateObject().Select(p => p.Value.GetString()!).Distinct().ToList() : [];
        return new HostTraces(stateDir, Path.Combine(SandboxRunc.Rootfs.IdmappedStaging.StagingRoot, key),
            SandboxRunc.Rootfs.EngineStorage.DirOf(key), cgroups);
    }

    /// <summary>What is still there (empty: nothing).</summary>
    public IReadOnlyList<string> Left()
    {
        var left = new List<string>();
        foreach (var dir in new[] { StateDir, StagingDir, StorageDir }.Concat(CgroupDirs))
            if (Directory.Exists(dir)) left.Add(dir);
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            if (line.Contains(StagingDir, StringComparison.Ordinal) || line.Contains(StorageDir, StringComparison.Ordinal))
                left.Add("mount: " + line);
        return left;
    }
}

/// <summary>Host-side looks at processes of inner containers.</summary>
public static class HostProcs
{
    /// <summary>The pid of a host process whose command line is exactly this (NUL-separated), or 0.</summary>
    public static int Find(string cmdline)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try { if (File.ReadAllText(Path.Combine(dir, "cmdline")).TrimEnd('\0') == cmdline) return pid; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return 0;
    }

    public static bool InHostUserNamespace(int pid) =>
        new FileInfo($"/proc/{pid}/ns/user").LinkTarget == new FileInfo("/proc/1/ns/user").LinkTarget;
}
