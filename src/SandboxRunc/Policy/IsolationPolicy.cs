using SandboxRunc.Oci;

namespace SandboxRunc.Policy;

/// <summary>
/// The isolation policy step of `create`: a pure function from the spec to "refuse with a reason"
/// (an exception) or a rewritten spec, applied before anything is made. The core runtime passes the
/// spec through unchanged; the user-namespace and restriction rules plug in here.
/// </summary>
public static class IsolationPolicy
{
    public static Spec Apply(Spec spec) => spec;
}
