using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>One place turns annotations and docker labels into a container's settings (no root).</summary>
public class ContainerSettingsTests
{
    static Dictionary<string, string> D(params (string K, string V)[] kv) => kv.ToDictionary(x => x.K, x => x.V);

    [Fact] public void NothingAskedIsTheDefault() => Assert.Equal(new ContainerSettings(null, false), ContainerSettings.From(null, null));
    [Fact] public void TheDockerLabelProtectsInitialMounts() =>
        Assert.True(ContainerSettings.From(null, D((ContainerSettings.ProtectInitialMountsKey, "true"))).ProtectInitialMounts);
    [Fact] public void TheAnnotationProtectsInitialMounts() =>
        Assert.True(ContainerSettings.From(D((ContainerSettings.ProtectInitialMountsKey, "1")), null).ProtectInitialMounts);
    [Fact] public void TheAnnotationWinsOverTheLabel() =>
        Assert.False(ContainerSettings.From(D((ContainerSettings.ProtectInitialMountsKey, "false")), D((ContainerSettings.ProtectInitialMountsKey, "true"))).ProtectInitialMounts);
    [Fact] public void TheIsolationLabelIsRead() => Assert.Equal("off", ContainerSettings.From(null, D((ContainerSettings.IsolationKey, "off"))).Isolation);
    [Fact] public void AValueNotUnderstoodIsRefusedNamingKeyAndSource() =>
        Assert.Contains("(label)", Assert.Throws<PolicyException>(() => ContainerSettings.From(null, D((ContainerSettings.ProtectInitialMountsKey, "yes")))).Message);
}
