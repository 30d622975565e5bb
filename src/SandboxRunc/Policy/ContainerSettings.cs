namespace SandboxRunc.Policy;

/// <summary>
/// What one container asks of this runtime, from the one place that reads it: the OCI annotations of its
/// spec and, for docker (whose CLI of this era has no --annotation), the labels of dockerd's record of the
/// container. An annotation wins over a label of the same key. Every component (the policy, the syscall
/// vetting, ...) takes its per-container settings from here, so a label and an annotation always mean the
/// same thing everywhere. A value that is not understood is refused, never ignored.
/// </summary>
public sealed record ContainerSettings(string? Isolation, bool ProtectInitialMounts, bool? SystemContainer = null)
{
    /// <summary>"off" asks to lift the restrictions (host namespaces, restricted mounts, socket): see IsolationPolicy.</summary>
    public const string IsolationKey = "io.sandbox-runc.isolation";
    /// <summary>"true": no mount made at creation may be unmounted (by default only the protected ones).</summary>
    public const string ProtectInitialMountsKey = "io.sandbox-runc.protect-initial-mounts";
    /// <summary>"true"/"false": a system container or not (default: by its command, see SystemContainerPolicy).</summary>
    public const string SystemContainerKey = "io.sandbox-runc.system-container";
    /// <summary>Label and annotation keys this runtime reads.</summary>
    public const string Prefix = "io.sandbox-runc.";

    public static ContainerSettings From(IReadOnlyDictionary<string, string>? annotations, IReadOnlyDictionary<string, string>? labels)
    {
        (string? Value, string From) Get(string key) =>
            annotations?.GetValueOrDefault(key) is { } a ? (a, "annotation") : labels?.GetValueOrDefault(key) is { } l ? (l, "label") : (null, "");

        var (isolation, isolationFrom) = Get(IsolationKey);
        if (isolation is not (null or "on" or "off"))
            throw new PolicyException($"{IsolationKey}=\"{isolation}\" ({isolationFrom}): the value must be \"on\" or \"off\"");
        var (protect, protectFrom) = Get(ProtectInitialMountsKey);
        bool protectAll = protect switch
        {
            null or "false" or "0" => false,
            "true" or "1" => true,
            _ => throw new PolicyException($"{ProtectInitialMountsKey}=\"{protect}\" ({protectFrom}): the value must be \"true\" or \"false\""),
        };
        var (system, systemFrom) = Get(SystemContainerKey);
        bool? systemContainer = system switch
        {
            null => null,
            "false" or "0" => false,
            "true" or "1" => true,
            _ => throw new PolicyException($"{SystemContainerKey}=\"{system}\" ({systemFrom}): the value must be \"true\" or \"false\""),
        };
        return new ContainerSettings(isolation, protectAll, systemContainer);
    }
}
