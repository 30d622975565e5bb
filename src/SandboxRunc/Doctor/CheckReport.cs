using System.Text;
using System.Text.Json.Serialization;

namespace SandboxRunc.Doctor;

/// <summary>
/// How a line of `sandbox-runc check` came out. <see cref="Missing"/> (✗) is something isolation needs and the
/// exit status fails on it; <see cref="Advice"/> (!) is something an admin may want (the default runtime, the
/// lock) that is not in force; <see cref="Info"/> (·) only says what is there.
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<Mark>))]
public enum Mark
{
    [JsonStringEnumMemberName("ok")] Ok,
    [JsonStringEnumMemberName("missing")] Missing,
    [JsonStringEnumMemberName("advice")] Advice,
    [JsonStringEnumMemberName("info")] Info,
}

/// <summary>One checked feature: what was found, what it enables, and (when not ✓) what to do.</summary>
public sealed record CheckLine(string Section, string Name, Mark Mark, string Found, string Enables, string? Advice = null);

/// <summary>A running container of some engine, and whether this runtime isolates it.</summary>
/// <param name="Runtime">the runtime its engine names (docker's HostConfig.Runtime, containerd's runtime, podman's OCIRuntime).</param>
/// <param name="Isolated">a sandbox-runc supervisor serves it and its init is not in the host's user namespace.</param>
public sealed record ContainerLine(string Engine, string Id, string Name, string Image, string Runtime, int Pid, bool Isolated, string Found);

/// <summary>Everything `check` found; <see cref="Passed"/> is what the exit status says.</summary>
public sealed record CheckReport(string Version, IReadOnlyList<CheckLine> Checks, IReadOnlyList<ContainerLine> Containers)
{
    public bool Passed => Checks.All(c => c.Mark != Mark.Missing) && Containers.All(c => c.Isolated);

    /// <summary>0 when nothing needed is missing and every running container is isolated, else 1.</summary>
    public int ExitStatus => Passed ? 0 : 1;

    static string Symbol(Mark m) => m switch { Mark.Ok => "✓", Mark.Missing => "✗", Mark.Advice => "!", _ => "·" };

    /// <summary>The table for people: one row per check, the advice under each ✗ or !, then the containers not under isolation.</summary>
    public string Table()
    {
        var sb = new StringBuilder();
        int nameWidth = Math.Max(20, Checks.Select(c => c.Name.Length).DefaultIfEmpty(0).Max() + 2);
        foreach (var section in Checks.GroupBy(c => c.Section))
        {
            sb.Append(section.Key.ToUpperInvariant()).Append('\n');
            foreach (var c in section)
            {
                sb.Append("  ").Append(Symbol(c.Mark)).Append(' ').Append(c.Name.PadRight(nameWidth)).Append(c.Found).Append('\n');
                if (c.Mark is Mark.Missing or Mark.Advice)
                {
                    sb.Append("      for: ").Append(c.Enables).Append('\n');
                    if (c.Advice is { } advice) sb.Append("      -> ").Append(advice).Append('\n');
                }
            }
        }
        var bare = Containers.Where(c => !c.Isolated).ToList();
        sb.Append($"CONTAINERS ({Containers.Count} running, {bare.Count} not under isolation)\n");
        foreach (var c in bare)
            sb.Append($"  ✗ {c.Engine,-10} {Short(c.Id),-12}  {c.Name,-24} {c.Image,-30} runtime {c.Runtime}: {c.Found}\n");
        if (bare.Count > 0)
            sb.Append("      -> recreate them with --runtime=sandbox-runc (or after `sandbox-runc install --lock`): a container keeps the runtime it was started with\n");
        sb.Append(Passed ? "check: isolation is in force\n"
            : $"check: isolation is NOT in force ({Checks.Count(c => c.Mark == Mark.Missing)} needed feature(s) missing, {bare.Count} container(s) not under isolation)\n");
        return sb.ToString();
    }

    static string Short(string id) => id.Length > 12 ? id[..12] : id;
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(CheckReport))]
internal sealed partial class CheckJson : JsonSerializerContext
{
}
