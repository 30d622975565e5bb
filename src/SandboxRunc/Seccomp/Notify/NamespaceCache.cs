using SandboxRunc.Interop;
using SandboxRunc.Namespaces;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>
/// What a supervisor learns once about the namespaces its container's callers are in, kept for the next calls: the
/// chains of user namespaces (<see cref="UserNamespaceCache"/>). Thread-safe.
/// </summary>
public sealed class NamespaceCache : IDisposable
{
    /// <summary>The chains of user namespaces, for the general case.</summary>
    public UserNamespaceCache Users { get; } = new();

    public void Dispose() => Users.Dispose();
}
