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
