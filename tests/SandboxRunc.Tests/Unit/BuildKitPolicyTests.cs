using System.Text;
using System.Text.Json.Nodes;
using SandboxRunc.Oci;
using SandboxRunc.Policy;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// How a BuildKit step's binds are made (the refusals are in spec-fixtures/policy/buildkit-*): every bind of a
/// step is ID-mapped, so the step's root owns its cache mounts, secrets and context as under runc; the same
/// secret's tmpfs in an ordinary container is refused.
/// </summary>
public class BuildKitPolicyTests
{
    static PolicyDecision Decide(string fixture, Action<JsonObject>? change = null)
    {
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(Repo.Fixtures, "policy", fixture + ".json")))!.AsObject();
        change?.Invoke(doc);
        var spec = SpecLoader.Parse(Encoding.UTF8.GetBytes(doc["spec"]!.ToJsonString()), "fixture");
        spec.Linux ??= new Linux();
        spec.Linux.Namespaces ??= new[] { "pid", "ipc", "uts", "mount", "network" }.Select(t => new Namespace { Type = t }).ToList();
        return IsolationPolicy.Decide(spec, AdminSettings.Defaults("(defaults)"), PolicyFixtureTests.Facts(doc));
    }

    const string SecretTmpfs = "60 20 0:359 / /var/lib/docker/tmp/buildkit-secrets1207532282 rw,nosuid,nodev,noexec - tmpfs tmpfs rw";

    [Fact]
    public void BuildKitStep_EveryBindIsIdmapped()
    {
        var decision = Decide("buildkit-step-own-binds", doc => doc["mounts"]!.AsArray().Add(SecretTmpfs));
        Assert.Equal(5, decision.Binds.Count);
        Assert.All(decision.Binds.Values, v => Assert.True(v.Idmap, $"{v.Source} is not ID-mapped"));
    }

    [Fact]
    public void BuildKitStep_HostPathBind_StaysAPlainBind()
    {
        // Only BuildKit's own places are ID-mapped in a step: a host path (which no Dockerfile can name, but an
        // engine bug or another client of the runtime could) is judged like any container's bind.
        var decision = Decide("buildkit-step-own-binds", doc =>
            doc["spec"]!["mounts"]!.AsArray().Add(JsonNode.Parse("""{"destination": "/s", "type": "bind", "source": "/usr/share", "options": ["rbind"]}""")));
        Assert.False(decision.Binds.Values.Single(v => v.Source == "/usr/share").Idmap);
    }

    [Fact]
    public void BuildKitStep_TmpfsMountedElsewhere_StaysAPlainBind()
    {
        var decision = Decide("buildkit-step-own-binds", doc =>
        {
            doc["mounts"]!.AsArray().Add("61 20 0:360 / /srv/buildkit-secrets1 rw - tmpfs tmpfs rw");
            doc["spec"]!["mounts"]!.AsArray().Add(JsonNode.Parse("""{"destination": "/s", "type": "bind", "source": "/srv/buildkit-secrets1/x", "options": ["rbind"]}"""));
        });
        Assert.False(decision.Binds.Values.Single(v => v.Source == "/srv/buildkit-secrets1/x").Idmap);
    }

    [Fact]
    public void SecretTmpfs_OutsideAStep_IsRefused()
    {
        // A tmpfs mounted inside the data root is inside it, whatever its device: only a BuildKit step may bind it.
        var e = Assert.Throws<PolicyException>(() => Decide("buildkit-bind-secret-outside-a-step", doc => doc["mounts"]!.AsArray().Add(SecretTmpfs)));
        Assert.Contains("because it's configured as a restricted host mount", e.Message);
    }
}
