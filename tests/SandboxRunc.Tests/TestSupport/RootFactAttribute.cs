// xunit 2 cannot skip a test from inside its body, so tests that need root and a writable cgroupfs use
// this attribute: it sets Skip up front (with the reason) when the process is not root or there is no
// /sys/fs/cgroup. Reusable by any test class that needs real kernel state.
using Xunit;

namespace SandboxRunc.Tests.TestSupport;

public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (Environment.UserName != "root" || !Directory.Exists("/sys/fs/cgroup"))
            Skip = "needs root and a writable cgroupfs";
    }
}
