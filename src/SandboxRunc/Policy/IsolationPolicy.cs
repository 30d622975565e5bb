using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>Facts about the host the policy needs, gathered once per create (kept out of the pure functions).</summary>
public sealed record HostFacts(Func<string, bool> IsHostNamespace)
{
    /// <summary>Compares the namespace behind a path (a /proc/PID/ns link or a bind-mounted nsfs file) with PID 1's.</summary>
    public static HostFacts Current { get; } = new(path =>
        Interop.FileId.Of(path) is { } id && HostNamespaces.Any(h => Interop.FileId.Of(h) == id));

    static readonly string[] HostNamespaces =
        ["/proc/1/ns/user", "/proc/1/ns/net", "/proc/1/ns/pid", "/proc/1/ns/ipc", "/proc/1/ns/uts", "/proc/1/ns/mnt", "/proc/1/ns/cgroup"];
}

/// <summary>
/// The isolation policy step of `create`, before anything is made: <see cref="Decide"/> refuses (a
/// <see cref="PolicyException"/>) or says what the spec needs, <see cref="Rewrite"/> returns the spec
/// to run. Both are pure functions over the OCI model, unit-tested without root.
/// </summary>
public static class IsolationPolicy
{
    public static UserNamespaceDecision Decide(Spec spec, HostFacts facts) =>
        UserNamespacePolicy.Decide(spec, facts.IsHostNamespace);

    /// <param name="range">The range allocated for <see cref="UserNamespaceDecision.AllocateRange"/>, else null.</param>
    public static Spec Rewrite(Spec spec, IdRange? range)
    {
        if (range is not null) UserNamespacePolicy.WithSysctlsInRange(UserNamespacePolicy.WithRange(spec, range), range.Size);
        return UserNamespacePolicy.WithSafeDevices(spec);
    }
}
