// xunit 2 cannot skip a test from inside its body, so tests that need root and a writable cgroupfs use
// this attribute: it sets Skip up front (with the reason) when the process is not root or there is no
// /sys/fs/cgroup. Reusable by any test class that needs real kernel state.
using Xunit;

namespace SandboxRunc.Tests.TestSupport;

public sealed class RootFactAttribute : FactAttribute
{
    /// <param name="needsV1">the test works on cgroup v1 hierarchies (memory, cpuset): skipped on a v2-only host.</param>
    public RootFactAttribute(bool needsV1 = false)
    {
        if (Environment.UserName != "root" || !Directory.Exists("/sys/fs/cgroup"))
            Skip = "needs root and a writable cgroupfs";
        else if (needsV1 && !(File.Exists("/sys/fs/cgroup/memory/memory.limit_in_bytes") && File.Exists("/sys/fs/cgroup/cpuset/cpuset.cpus")))
            Skip = "needs cgroup v1 memory and cpuset hierarchies (a v2-only host is covered by the fixture tests)";
    }
}
