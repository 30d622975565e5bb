using SandboxRunc.Oci;
using SandboxRunc.Policy;

namespace SandboxRunc.Cli;

/// <summary>
/// `sandbox-runc policy check BUNDLE [--id ID]`: the whole policy step of create (admin settings, engine
/// facts, decision, rewrites) without creating anything. Prints "allowed" or "refused: MESSAGE", then one
/// line per rewrite and note. Exit 0 when allowed, 1 when refused. ID defaults to the bundle's directory
/// name (docker's bundles are named after the container id).
/// </summary>
public static class PolicyCheck
{
    public static int Run(string bundle, string? id, string stateRoot, TextWriter output)
    {
        bundle = Path.GetFullPath(bundle);
        var spec = SpecLoader.LoadBundle(bundle);
        id ??= Path.GetFileName(bundle.TrimEnd('/'));
        PolicyDecision decision;
        try
        {
            using var pinned = new PinnedSources();
            decision = PolicyStep.Decide(spec, id, stateRoot, bundle, pinned);
        }
        catch (PolicyException e)
        {
            output.WriteLine($"refused: {e.Message}");
            return 1;
        }
        // A spec's own mappings are checked against the pool and the ranges held now, as create will.
        if (new IdRangeAllocator(IdPoolConfig.FromEnvironment()).Refusal(IdClaim.Of(decision.UserNamespace, spec, null)) is { } refusal)
        {
            output.WriteLine($"refused: {refusal}");
            return 1;
        }
        output.WriteLine("allowed");
        foreach (var line in Describe(spec, decision)) output.WriteLine(line);
        return 0;
    }

    /// <summary>The rewrites create would make (with a stand-in range: the real one is allocated at create) and the notes.</summary>
    public static IEnumerable<string> Describe(Spec spec, PolicyDecision decision)
    {
        var lines = new List<string>();
        lines.Add(decision.UserNamespace switch
        {
            UserNamespaceDecision.AllocateRange =>
                (spec.Linux?.Namespaces?.Any(n => n.Type == "user") == true ? "rewrite: user namespace" : "rewrite: add a user namespace") +
                $" mapping container IDs 0-{IdRangeAllocator.RangeSize - 1} onto a range of the pool (allocated at create)",
            UserNamespaceDecision.KeepSpecMappings => "user namespace: the spec's own mappings are kept",
            _ => "user namespace: joins an existing one (not the host's)",
        });
        var devicesBefore = spec.Linux?.Devices?.Select(d => (d.Type, d.Path, d.Major, d.Minor)).ToList() ?? [];
        var sysctlBefore = spec.Linux?.Sysctl is { } s ? new Dictionary<string, string>(s) : [];
        var range = decision.UserNamespace == UserNamespaceDecision.AllocateRange
            ? new IdRange(IdRangeAllocator.RangeSize, IdRangeAllocator.RangeSize, IdRangeAllocator.RangeSize) : null;
        var rewritten = IsolationPolicy.Rewrite(spec, range);
        var devicesAfter = rewritten.Linux?.Devices?.Select(d => (d.Type, d.Path, d.Major, d.Minor)).ToHashSet() ?? [];
        foreach (var d in devicesBefore.Where(d => !devicesAfter.Contains(d)))
            lines.Add($"rewrite: drop device {d.Path} ({d.Type} {d.Major}:{d.Minor})");
        foreach (var (key, before) in sysctlBefore)
            if (rewritten.Linux?.Sysctl?.GetValueOrDefault(key) is { } after && after != before)
                lines.Add($"rewrite: sysctl {key} \"{before}\" -> \"{after}\"");
        lines.AddRange(decision.Notes.Select(n => "note: " + n));
        return lines;
    }
}
