using System.Runtime.InteropServices;
using System.Text;
using SandboxRunc.Container;

namespace SandboxRunc.Install;

/// <summary>What `sandbox-runc install` / `uninstall` were asked to do.</summary>
public sealed record EngineConfigOptions(
    bool Uninstall,
    string Binary,
    bool SetDefault = false,
    bool Docker = true,
    bool Containerd = false,
    string DockerConfig = EngineConfig.DefaultDockerConfig,
    string ContainerdConfig = EngineConfig.DefaultContainerdConfig,
    bool Reload = true,
    string DockerPidFile = EngineConfig.DefaultDockerPidFile,
    bool Lock = false);

/// <summary>
/// `sandbox-runc install` / `uninstall`: registers this executable as a runtime with dockerd
/// (daemon.json, then SIGHUP) and optionally with containerd's CRI plugin (config.toml; containerd
/// must be restarted by the admin). Files are replaced atomically: temp file in the same directory,
/// fsync, rename. One output line per change.
/// </summary>
public static partial class EngineConfig
{
    public const string RuntimeName = "sandbox-runc";
    public const string DefaultDockerConfig = "/etc/docker/daemon.json";
    public const string DefaultContainerdConfig = "/etc/containerd/config.toml";
    public const string DefaultDockerPidFile = "/var/run/docker.pid";

    public static int Run(EngineConfigOptions o, TextWriter output)
    {
        if (!o.Docker && !o.Containerd)
            throw new RuntimeException("nothing to do: --no-docker without --containerd");
        // Compute every edit before writing any file: a malformed second file must not leave the first one changed.
        DaemonJson.Edit? docker = null, containerd = null;
        string dockerPath = RealFile(o.DockerConfig), ctrdPath = RealFile(o.ContainerdConfig);
        if (o.Docker)
        {
            string? text = ReadOrNull(dockerPath);
            docker = o.Uninstall
                ? DaemonJson.Uninstall(text, o.DockerConfig, RuntimeName)
                : DaemonJson.Install(text, o.DockerConfig, RuntimeName, o.Binary, o.SetDefault || o.Lock);
        }
        if (o.Containerd)
        {
            string? text = ReadOrNull(ctrdPath);
            containerd = o.Uninstall
                ? ContainerdToml.Uninstall(text, o.ContainerdConfig, RuntimeName)
                : ContainerdToml.Install(text, o.ContainerdConfig, RuntimeName, o.Binary);
        }

        if (o.Lock)
        {
            // Before reloading dockerd: from then on, no runtime name it offers runs an unisolated container.
            string path = RuncTakeover.DockerdPath(o.DockerPidFile);
            output.WriteLine(o.Uninstall ? RuncTakeover.Unlock(path, o.Binary) : RuncTakeover.Lock(path, o.Binary));
        }
        if (docker is not null)
        {
            Report(output, o.DockerConfig, docker);
            if (docker.Changed)
            {
                WriteAtomic(dockerPath, docker.NewText!);
                if (!o.Reload) output.WriteLine("dockerd: not reloaded (--no-reload); send it SIGHUP or restart it to apply");
                else
                {
                    output.WriteLine(ReloadDockerd(o.DockerPidFile));
                    if (o.Uninstall && docker.Changes.Any(c => c.Contains("default-runtime")))
                        output.WriteLine("dockerd: a reload does not undo a removed default-runtime; restart dockerd (or set \"default-runtime\": \"runc\") to make runc the default again");
                }
            }
        }
        if (containerd is not null)
        {
            Report(output, o.ContainerdConfig, containerd);
            if (containerd.Changed)
            {
                WriteAtomic(ctrdPath, containerd.NewText!);
                output.WriteLine("containerd: restart containerd to pick this up (sandbox-runc does not restart it)");
            }
        }
        return 0;
    }

    static void Report(TextWriter output, string file, DaemonJson.Edit edit)
    {
        if (!edit.Changed) output.WriteLine($"{file}: no change");
        foreach (var c in edit.Changes) output.WriteLine($"{file}: {c}");
    }

    /// <summary>This executable's real path (symlinks resolved), the path engines should run.</summary>
    public static string SelfPath()
    {
        string p = Environment.ProcessPath ?? throw new RuntimeException("cannot tell the path of the sandbox-runc executable; pass --path");
        return Interop.HostPath.Resolve(p);
    }

    /// <summary>A symlinked config file is edited where it points, so the link stays a link.</summary>
    static string RealFile(string path) => File.Exists(path) ? Interop.HostPath.Resolve(path) : Path.GetFullPath(path);

    static string? ReadOrNull(string path)
    {
        if (Directory.Exists(path)) throw new RuntimeException($"{path}: is a directory, not a configuration file");
        try { return File.ReadAllText(path); }
        catch (FileNotFoundException) { return null; }
        catch (DirectoryNotFoundException) { return null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"{path}: cannot read it: {Interop.UserFile.Reason(e)}");
        }
    }

    /// <summary>Temp file in the same directory, fsync, rename over the target, fsync the directory.</summary>
    public static void WriteAtomic(string path, string text)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path) ?? "/");
            bool existed = File.Exists(path);
            Interop.AtomicFile.Write(path, text, durable: true);
            if (!existed)
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"{path}: cannot write it: {Interop.UserFile.Reason(e)}");
        }
    }

    /// <summary>SIGHUP to the dockerd named by its pid file; says what happened.</summary>
    public static string ReloadDockerd(string pidFile)
    {
        string? text = ReadOrNull(pidFile);
        if (text is null || !int.TryParse(text.Trim(), out int pid) || pid <= 0)
            return $"dockerd: not running (no {pidFile}); it reads the new configuration when it starts";
        string comm;
        try { comm = File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return $"dockerd: not running (stale {pidFile}: no process {pid}); it reads the new configuration when it starts"; }
        if (comm != "dockerd")
            return $"dockerd: not running ({pidFile} names pid {pid}, which is {comm}); it reads the new configuration when it starts";
        if (Interop.Libc.kill(pid, 1) != 0)
            throw new RuntimeException($"dockerd (pid {pid}): SIGHUP failed: {Marshal.GetLastPInvokeErrorMessage()}");
        return $"dockerd (pid {pid}): sent SIGHUP to reload its configuration";
    }
}
