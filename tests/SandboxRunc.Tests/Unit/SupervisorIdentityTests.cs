using SandboxRunc.Container;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// Which process `delete` may treat as a container's supervisor: after pid reuse, supervisor.pid can name
/// any process, e.g. one whose command line merely contains "supervise" (which was once enough).
/// </summary>
public sealed class SupervisorIdentityTests
{
    [Theory]
    [InlineData(new[] { "sandbox-runc", "--root", "/run/x", "supervise", "c1" }, true)]
    [InlineData(new[] { "sandbox-runc", "--root", "/run/x", "supervise", "c2" }, false)]
    [InlineData(new[] { "sandbox-runc", "--root", "/run/y", "supervise", "c1" }, false)]
    [InlineData(new[] { "sandbox-runc", "--root", "/run/x", "emulate", "c1" }, false)]
    [InlineData(new[] { "sh", "-c", "sleep 60", "supervise" }, false)]
    [InlineData(new[] { "sandbox-runc", "--root", "/run/x", "supervise", "c1", "extra" }, false)]
    public void OnlyThisContainersSupervisorCommandLineIdentifiesIt(string[] argv, bool match) =>
        Assert.Equal(match, Supervisor.IsSupervisorCommand(argv, "/run/x", "c1"));
}
