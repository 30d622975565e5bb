using Xunit;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// A test that runs the real sandbox-runc executable against the kernel: needs root. When root but the
/// binary or the test rootfs is missing, the test runs and fails (CI must not silently skip it).
/// </summary>
public sealed class IntegrationFactAttribute : FactAttribute
{
    public IntegrationFactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs containers with the real sandbox-runc binary";
    }
}

/// <summary>As <see cref="IntegrationFactAttribute"/>, for theories.</summary>
public sealed class IntegrationTheoryAttribute : TheoryAttribute
{
    public IntegrationTheoryAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs containers with the real sandbox-runc binary";
    }
}

/// <summary>
/// As <see cref="IntegrationFactAttribute"/>, for behaviour that rests on the emulation helper lowering its OOM
/// score (oom_score_adj -999, which needs CAP_SYS_RESOURCE): without it a container that meets its memory limit
/// may have the kernel pick the helper (the largest process in the cgroup by RSS) instead of its own process.
/// </summary>
public sealed class OomScoreFactAttribute : FactAttribute
{
    public OomScoreFactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs containers with the real sandbox-runc binary";
        else if (!BoundingSetHas(24 /* CAP_SYS_RESOURCE */))
            Skip = "this host's bounding set lacks CAP_SYS_RESOURCE: the emulation helper cannot lower its OOM score, so at its "
                 + "memory limit a container may lose its helper instead of its own process (README: what bounds the emulation helper)";
    }

    internal static bool BoundingSetHas(int cap)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("CapBnd:", StringComparison.Ordinal))
                return (Convert.ToUInt64(line[7..].Trim(), 16) >> cap & 1) == 1;
        return false;
    }
}

/// <summary>
/// As <see cref="IntegrationFactAttribute"/>, for an inner `docker run --privileged` whose inner runc asks for every
/// capability the kernel knows and fails on one the host's bounding set lacks (as runc's own --privileged does there).
/// </summary>
public sealed class FullBoundingSetFactAttribute : FactAttribute
{
    public FullBoundingSetFactAttribute()
    {
        if (Environment.UserName != "root")
        {
            Skip = "needs root: runs containers with the real sandbox-runc binary";
            return;
        }
        int last = int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim());
        var missing = Enumerable.Range(0, last + 1).Where(c => !OomScoreFactAttribute.BoundingSetHas(c))
            .Select(c => SandboxRunc.Namespaces.CapabilityNames.All[c]).ToList();
        if (missing.Count > 0)
            Skip = $"this host's bounding set lacks {string.Join(", ", missing)}: an inner `docker run --privileged` asks for every "
                 + "capability and fails without them, as runc's own --privileged does on this host";
    }
}
