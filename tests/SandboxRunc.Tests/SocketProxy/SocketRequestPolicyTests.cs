using System.Text;
using System.Text.Json.Nodes;
using SandboxRunc.Policy;
using SandboxRunc.Tests.Unit;
using Xunit;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>
/// What a container may ask the engine through its mounted socket, beyond the command list: create bodies judged by
/// the isolation policy (over fake facts, as the policy fixtures do: no root, no host), then rewritten; update,
/// start, build; the path and the API version.
/// </summary>
public class SocketRequestPolicyTests
{
    const string SettingsPath = "/etc/sandbox-runc/admin-settings.json";
    const string AllowedImageId = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const string OtherImageId = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    static readonly AdminSettings Settings = AdminSettings.Parse("""
        {"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": false, "locked": false,
          "dockerSocketMount": {"imageList": {"images": ["docker:cli"]}, "commandList": {"type": "deny", "commands": ["push"]}}}}
        """, SettingsPath);

    /// <summary>The create request judged as the proxy judges it: parsed, checked, its spec decided by the isolation policy.</summary>
    static string Judge(string body)
    {
        try
        {
            var json = SocketRequestPolicy.ParseObject(Encoding.UTF8.GetBytes(body), "container create");
            SocketRequestPolicy.CheckCreate(json);
            var spec = SocketRequestPolicy.CreateSpec(json);
            string? image = SocketRequestPolicy.CreateImage(json);
            var doc = new JsonObject
            {
                ["spec"] = new JsonObject
                {
                    ["mounts"] = new JsonArray(spec.Mounts!.Select(m => (JsonNode)new JsonObject
                    {
                        ["destination"] = m.Destination, ["type"] = m.Type, ["source"] = m.Source,
                        ["options"] = new JsonArray(m.Options!.Select(o => (JsonNode)JsonValue.Create(o)).ToArray()),
                    }).ToArray()),
                },
                ["image"] = new JsonObject { ["name"] = image, ["id"] = image == "docker:cli" ? AllowedImageId : OtherImageId },
                ["tags"] = new JsonObject { ["docker:cli"] = AllowedImageId, ["debian:12"] = OtherImageId },
            };
            IsolationPolicy.Decide(spec, Settings, PolicyFixtureTests.Facts(doc));
            return "allowed";
        }
        catch (PolicyException e) { return e.Message; }
    }

    [Theory]
    [InlineData("""{"Image":"debian:12"}""")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Runtime":"runc","Privileged":true}}""")] // privileged, but isolated
    [InlineData("""{"Image":"debian:12","HostConfig":{"Binds":["data:/data","/tmp/work:/work:ro"]}}""")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Mounts":[{"Type":"volume","Source":"data","Target":"/data"},{"Type":"tmpfs","Target":"/t"}]}}""")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"UsernsMode":"host"}}""")] // every container gets its own user namespace anyway
    [InlineData("""{"Image":"docker:cli","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}""")] // allowed image: gets its own proxy
    [InlineData("""{"Image":"debian:12","Labels":{"io.sandbox-runc.isolation":"on"}}""")]
    public void Creates_Allowed(string body) => Assert.Equal("allowed", Judge(body));

    [Theory]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Runtime":"runc","Privileged":true,"PidMode":"host"}}""",
        "sandbox-runc containers can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"IpcMode":"host","UTSMode":"host"}}""",
        "sandbox-runc containers can't share namespaces [ipc uts] with the host (because they use the linux user-namespace for isolation)")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"NetworkMode":"host"}}""",
        "sandbox-runc containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)")]
    // Go's encoding/json matches names without regard to case: so does the policy.
    [InlineData("""{"Image":"debian:12","hostconfig":{"pidmode":"host"}}""",
        "sandbox-runc containers can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)")]
    // The host's root shows the socket (/run/docker.sock is in it): judged as the socket first, as `create` does.
    [InlineData("""{"Image":"debian:12","HostConfig":{"Binds":["/:/host"]}}""",
        "docker socket mount denied for container with image \"docker.io/library/debian\"; image is not in the allowed list")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Binds":["/etc:/x:ro"]}}""",
        "can't mount /etc because it's configured as a restricted host mount")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Mounts":[{"type":"bind","source":"/var/lib/docker/overlay2","target":"/x"}]}}""",
        "can't mount /var/lib/docker/overlay2 because it's configured as a restricted host mount")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}""",
        "docker socket mount denied for container with image \"docker.io/library/debian\"; image is not in the allowed list")]
    [InlineData("""{"Image":"debian:12","HostConfig":{"Mounts":[{"Type":"bind","Source":"/run/docker.sock","Target":"/s"}]}}""",
        "docker socket mount denied for container with image \"docker.io/library/debian\"; image is not in the allowed list")]
    [InlineData("""{"Image":"debian:12","Labels":{"io.sandbox-runc.isolation":"off"},"HostConfig":{"PidMode":"host"}}""",
        "io.sandbox-runc.isolation=off refused for a container created through a mounted docker socket: containers created from inside an isolated container are isolated too")]
    [InlineData("""{"Image":"debian:12","HostConfig":{},"hostConfig":{"PidMode":"host"}}""",
        "container create: the body has the field \"hostConfig\" twice (names differing only in case)")]
    [InlineData("""[1]""", "container create: the body is not a JSON object")]
    public void Creates_Refused_WithThePolicysMessage(string body, string message) => Assert.Equal(message, Judge(body));

    [Fact]
    public void Create_DuplicateOrHugeBodies_AreRefused()
    {
        // The same name twice: Go's decoder takes the last, so "judge the first" would be a bypass.
        Assert.StartsWith("container create: the body is not valid JSON",
            Judge("""{"Image":"debian:12","HostConfig":{"PidMode":"","PidMode":"host"}}"""));
        Assert.StartsWith("container create: the body is not valid JSON",
            Judge("""{"Image":"debian:12","Labels":{"io.sandbox-runc.isolation":"on","io.sandbox-runc.isolation":"off"}}"""));
        string deep = string.Concat(Enumerable.Repeat("[", 200)) + string.Concat(Enumerable.Repeat("]", 200));
        Assert.StartsWith("container create: the body is not valid JSON", Judge($$"""{"Image":"debian:12","Env":{{deep}}}"""));
        Assert.StartsWith("container create: the body is not valid JSON", Judge("""{"Image":"""));
    }

    [Fact]
    public void Create_IsForwardedUnderThisRuntime_AndIsolated()
    {
        var json = SocketRequestPolicy.ParseObject(Encoding.UTF8.GetBytes(
            """{"Image":"debian:12","labels":{"io.sandbox-runc.isolation":"on","app":"x"},"hostconfig":{"runtime":"runc","Privileged":true}}"""), "container create");
        var sent = JsonNode.Parse(SocketRequestPolicy.Isolated(json, "sandbox-runc"))!.AsObject();
        // One HostConfig and one Runtime (no second spelling for dockerd to prefer), ours.
        Assert.Equal(["Image", "Labels", "HostConfig"], sent.Select(p => p.Key));
        Assert.Equal("sandbox-runc", sent["HostConfig"]!["Runtime"]!.GetValue<string>());
        Assert.Single(sent["HostConfig"]!.AsObject(), p => p.Key.Equals("runtime", StringComparison.OrdinalIgnoreCase));
        Assert.True(sent["HostConfig"]!["Privileged"]!.GetValue<bool>());
        Assert.Equal("on", sent["Labels"]!["io.sandbox-runc.isolation"]!.GetValue<string>());
        Assert.Equal("x", sent["Labels"]!["app"]!.GetValue<string>());

        // A body without HostConfig or Labels gets both: an image's opt-out label is overridden by the request's.
        var bare = JsonNode.Parse(SocketRequestPolicy.Isolated(SocketRequestPolicy.ParseObject("{}"u8.ToArray(), "c"), "sbx"))!;
        Assert.Equal("sbx", bare["HostConfig"]!["Runtime"]!.GetValue<string>());
        Assert.Equal("on", bare["Labels"]!["io.sandbox-runc.isolation"]!.GetValue<string>());
    }

    [Fact]
    public void Update_OfDevices_IsRefused()
    {
        SocketRequestPolicy.CheckUpdate(SocketRequestPolicy.ParseObject("""{"Memory":1073741824,"RestartPolicy":{"Name":"always"}}"""u8.ToArray(), "u"));
        var e = Assert.Throws<PolicyException>(() => SocketRequestPolicy.CheckUpdate(
            SocketRequestPolicy.ParseObject("""{"devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]}"""u8.ToArray(), "u")));
        Assert.Equal("docker update of Devices is refused through a mounted socket: devices are fixed when a container is created", e.Message);
    }

    [Theory]
    [InlineData("t=x&networkmode=host", true)]
    [InlineData("networkmode=HOST", true)]
    [InlineData("networkmode=%68ost", true)]
    [InlineData("networkmode=default&networkmode=host", true)]
    [InlineData("networkmode=default", false)]
    [InlineData("t=host", false)]
    public void Build_OnTheHostsNetwork_IsRefused(string query, bool refused)
    {
        var e = Record.Exception(() => SocketRequestPolicy.CheckBuild(query));
        Assert.Equal(refused, e is PolicyException);
    }

    [Theory]
    [InlineData(0, false, false)]
    [InlineData(2, false, false)]  // "{}" or "null": nothing to replace
    [InlineData(300, false, true)] // a host configuration (API < 1.24 would apply it)
    [InlineData(0, true, true)]
    public void Start_WithABody_IsRefused(long length, bool chunked, bool refused)
    {
        var e = Record.Exception(() => SocketRequestPolicy.CheckStartBody(length, chunked));
        Assert.Equal(refused, e is PolicyException);
    }

    [Theory]
    [InlineData(null, true)]
    [InlineData("1.41", true)]
    [InlineData("1.24", true)]
    [InlineData("1.23", false)]
    [InlineData("1", false)]
    [InlineData(".", false)]
    public void ApiVersions_BelowTheMinimum_AreRefused(string? version, bool ok)
    {
        var e = Record.Exception(() => SocketRequestPolicy.CheckVersion(version));
        Assert.Equal(ok, e is null);
    }

    [Theory]
    [InlineData("/v1.41/images/myimage/push", "/v1.41/images/myimage/push")]
    [InlineData("/v1.41/images/my%2Fimage/push", "/v1.41/images/my/image/push")] // judged as dockerd routes it
    [InlineData("/v1.41/images/%6dyimage/%70ush", "/v1.41/images/myimage/push")]
    [InlineData("/v1.41/containers/caf%C3%A9/json", "/v1.41/containers/café/json")]
    public void Paths_AreDecodedAsDockerdDecodesThem(string raw, string decoded) =>
        Assert.Equal(decoded, SocketRequestPolicy.DecodePath(raw));

    [Theory]
    [InlineData("/v1.41/images/x/../y/push")]
    [InlineData("/v1.41/images/x/%2e%2e/push")]
    [InlineData("/v1.41//images/x/push")]
    [InlineData("/v1.41/images/x%2F%2Fy/push")]
    [InlineData("/v1.41/./images/x/push")]
    [InlineData("/v1.41/images/x%00/push")]
    [InlineData("/v1.41/images/x%zz/push")]
    [InlineData("/v1.41/images/x%c3/push")]
    [InlineData("/v1.41/images/x%")]
    public void UncleanPaths_AreRefused(string raw) =>
        Assert.Throws<PolicyException>(() => SocketRequestPolicy.DecodePath(raw));
}
