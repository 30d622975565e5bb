using SandboxRunc.Namespaces;
using Xunit;
using C = SandboxRunc.Namespaces.NamespaceCapability;

namespace SandboxRunc.Tests.Notify;

/// <summary>The capability walk of <see cref="NamespaceCapability"/> over hand-built user namespace trees (no root).</summary>
public class NamespaceCapabilityTests
{
    sealed class Ns(ulong inode, uint owner, Ns? parent)
    {
        public ulong Inode { get; } = inode;
        public uint Owner { get; } = owner;
        public Ns? Parent { get; } = parent;
    }

    // host (1, owned by 0) <- container (2, made by host root for the range 100000..) <- nested (3, `unshare -U -r` by container root)
    static readonly Ns Host = new(1, 0, null), Container = new(2, 0, Host), Nested = new(3, 100000, Container);
    const ulong All = ulong.MaxValue, None = 0, SysAdmin = 1UL << C.CAP_SYS_ADMIN;

    static bool Has(C.Caller caller, Ns target, int cap = C.CAP_SYS_ADMIN) =>
        C.Has(caller, cap, target, n => new C.UserNs(n.Inode, n.Owner), n => n.Parent);

    [Fact] public void ContainerRootWithTheCapabilityHasItOverTheContainer() => Assert.True(Has(new(2, 100000, SysAdmin), Container));
    [Fact] public void ContainerRootWithoutItHasNot() => Assert.False(Has(new(2, 100000, None), Container));
    [Fact] public void ANestedUserNamespaceReadingAFullCapEffHasNothingOverTheContainer() => Assert.False(Has(new(3, 100000, All), Container));
    [Fact] public void NorOverTheHost() => Assert.False(Has(new(3, 100000, All), Host));
    [Fact] public void ItDoesOverItsOwnNamespace() => Assert.True(Has(new(3, 100000, All), Nested));
    [Fact] public void TheCreatorOwnsAChildNamespaceWithoutCapabilities() => Assert.True(Has(new(2, 100000, None), Nested));
    [Fact] public void AnotherUserOfTheParentDoesNotOwnIt() => Assert.False(Has(new(2, 101000, None), Nested));
    [Fact] public void HostRootHasEverythingBelow() => Assert.True(Has(new(1, 0, SysAdmin), Nested));
    [Fact] public void ASiblingContainerHasNothing() => Assert.False(Has(new(4, 165536, All), Container));

    [Fact]
    public void StatusGivesEuidAndCapEff()
    {
        const string status = "Name:\tsh\nUid:\t100000\t100001\t100002\t100003\nGid:\t100000\t100000\t100000\t100000\nCapEff:\t00000000a80425fb\n";
        Assert.Equal((100001u, 0xa80425fbUL), C.FromStatus(status));
        Assert.Null(C.FromStatus("Name:\tsh\n"));
    }
}
