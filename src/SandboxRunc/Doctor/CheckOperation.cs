using System.Text.Json;
using SandboxRunc.Install;

namespace SandboxRunc.Doctor;

/// <summary>
/// `sandbox-runc check [--format table|json]`: a doctor for the host and for what runs on it. Gathers facts
/// (<see cref="HostProbe"/>, <see cref="EngineProbe"/>), turns them into verdicts (<see cref="CheckVerdicts"/>, pure)
/// and prints them. Exit status 1 when a needed feature is missing or a running container is not under isolation.
/// </summary>
public static class CheckOperation
{
    public const string ContainersConf = "/etc/containers/containers.conf";

    public static CheckReport Gather(string self)
    {
        string dockerRoot = EngineProbe.DockerRoot(EngineConfig.DefaultDockerConfig);
        var checks = CheckVerdicts.HostLines(HostProbe.Gather(dockerRoot));
        checks.AddRange(CheckVerdicts.EngineLines(
            EngineProbe.Docker(EngineConfig.DefaultDockerConfig, EngineConfig.DefaultDockerPidFile),
            [EngineProbe.Containerd(EngineConfig.DefaultContainerdConfig), EngineProbe.Podman(ContainersConf)],
            EngineProbe.Settings(Policy.AdminSettings.PathFromEnvironment()), self));
        var notes = new List<string>();
        var containers = EngineProbe.Containers(notes).Select(CheckVerdicts.Judge).ToList();
        foreach (var note in notes)
            checks.Add(new CheckLine(CheckVerdicts.Engines, "containers", Mark.Missing, note, "listing the containers that run without isolation",
                "make the engine answer (is it running?), then check again"));
        return new CheckReport(Cli.CommandLine.Version, checks, containers);
    }

    public static int Run(string format, TextWriter output)
    {
        // As another user every probe fails for want of privilege, and the advice would send the admin after the wrong cause.
        if (!Environment.IsPrivilegedProcess)
            throw new RuntimeException("check must run as root: it tries what create does (a user namespace, ID-mapped mounts) and asks every engine for its containers");
        var report = Gather(EngineConfig.SelfPath());
        output.Write(format == "json" ? JsonSerializer.Serialize(report, CheckJson.Default.CheckReport) + "\n" : report.Table());
        return report.ExitStatus;
    }
}
