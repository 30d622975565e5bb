using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using Xunit;
using C = SandboxRunc.Namespaces.NamespaceCapability;

namespace SandboxRunc.Tests.Notify;

/// <summary>The capability decision of <see cref="NamespaceCapability"/> over hand-built user namespace chains (no root).</summary>
public class NamespaceCapabilityTests
{
    static UserNamespaceFacts Ns(ulong inode, uint owner) => new(new FileId(4, inode), owner);
    // host (1, owned by 0) <- container (2, made by host root for the range 100000..) <- nested (3, `unshare -U -r` by container root)
    static readonly UserNamespaceFacts Host = Ns(1, 0), Container = Ns(2, 0), Nested = Ns(3, 100000), Sibling = Ns(4, 0);
    static UserNamespaceChain Chain(params UserNamespaceFacts[] nearestFirst) => new(nearestFirst);
    static readonly UserNamespaceChain HostNs = Chain(Host), ContainerNs = Chain(Container, Host), NestedNs = Chain(Nested, Container, Host),
        SiblingNs = Chain(Sibling, Host);
    const ulong All = ulong.MaxValue, None = 0, SysAdmin = 1UL << C.CAP_SYS_ADMIN;

    static bool Has(UserNamespaceChain callerNs, uint euid, ulong capEff, UserNamespaceChain target) =>
        C.Holds(new CallerCredentials(callerNs, euid, capEff), target, C.CAP_SYS_ADMIN);

    [Fact] public void ContainerRootWithTheCapabilityHasItOverTheContainer() => Assert.True(Has(ContainerNs, 100000, SysAdmin, ContainerNs));
    [Fact] public void ContainerRootWithoutItHasNot() => Assert.False(Has(ContainerNs, 100000, None, ContainerNs));
    [Fact] public void ANestedUserNamespaceReadingAFullCapEffHasNothingOverTheContainer() => Assert.False(Has(NestedNs, 100000, All, ContainerNs));
    [Fact] public void NorOverTheHost() => Assert.False(Has(NestedNs, 100000, All, HostNs));
    [Fact] public void ItDoesOverItsOwnNamespace() => Assert.True(Has(NestedNs, 100000, All, NestedNs));
    [Fact] public void TheCreatorOwnsAChildNamespaceWithoutCapabilities() => Assert.True(Has(ContainerNs, 100000, None, NestedNs));
    [Fact] public void AnotherUserOfTheParentDoesNotOwnIt() => Assert.False(Has(ContainerNs, 101000, None, NestedNs));
    [Fact] public void HostRootHasEverythingBelow() => Assert.True(Has(HostNs, 0, SysAdmin, NestedNs));
    [Fact] public void ASiblingContainerHasNothing() => Assert.False(Has(SiblingNs, 0, All, ContainerNs));

    [Fact]
    public void StatusGivesEuidAndCapEff()
    {
        const string status = "Name:\tsh\nUid:\t100000\t100001\t100002\t100003\nGid:\t100000\t100000\t100000\t100000\nCapEff:\t00000000a80425fb\n";
        Assert.Equal((100001u, 0xa80425fbUL), C.FromStatus(status));
        Assert.Null(C.FromStatus("Name:\tsh\n"));
    }
}
