using System.Diagnostics;
using SandboxRunc.Seccomp.Notify;
using Xunit;

namespace SandboxRunc.Tests.Notify;

/// <summary>
/// The cheap privilege answer (NamespaceCache.SameOwner: stat of ns/mnt and ns/user, capget) is used only when the
/// caller's user namespace owns its mount namespace; a process in a nested user namespace whose mount namespace
/// its parent's namespace owns (unshare -U, which reads a full CapEff) must go the general way.
/// </summary>
public sealed class NotifyNamespaceCacheTests
{
    static Process Start(params string[] args)
    {
        var p = Process.Start(new ProcessStartInfo("unshare", args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        // unshare execs sleep in the new namespaces: wait until the namespace it is in differs from ours.
        // Under load that can take seconds (seen: over 2 s in a full run beside a VM): wait up to 60 s, and say so.
        var ours = File.ResolveLinkTarget("/proc/self/ns/user", false)!.FullName;
        var end = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (File.ResolveLinkTarget($"/proc/{p.Id}/ns/user", false)?.FullName == ours && DateTime.UtcNow < end) Thread.Sleep(10);
        Assert.True(File.ResolveLinkTarget($"/proc/{p.Id}/ns/user", false)?.FullName != ours,
            $"unshare {string.Join(' ', args)} (pid {p.Id}) was not in a user namespace of its own within 60 s");
        return p;
    }

    [Fact]
    public void SameOwnerOnlyWhereTheCallersUserNamespaceOwnsItsMountNamespace()
    {
        using var cache = new NamespaceCache();
        Assert.True(cache.SameOwner($"/proc/{Environment.ProcessId}"));
        Assert.True(cache.SameOwner($"/proc/{Environment.ProcessId}")); // from the cache now

        using var nested = Start("-U", "--map-root-user", "sleep", "30");
        using var nestedWithMounts = Start("-U", "-m", "--map-root-user", "sleep", "30");
        try
        {
            Assert.False(cache.SameOwner($"/proc/{nested.Id}"));
            Assert.True(cache.SameOwner($"/proc/{nestedWithMounts.Id}"));
            Assert.True(cache.SameOwner($"/proc/{nestedWithMounts.Id}"));
            Assert.False(cache.SameOwner($"/proc/{nested.Id}"));
        }
        finally
        {
            nested.Kill();
            nestedWithMounts.Kill();
        }
    }
}
