using SandboxRunc.Policy;
using Xunit;

namespace SandboxRunc.Tests.SocketProxy;

/// <summary>The command list over the route table: deny and allow lists, names, aliases and group wildcards.</summary>
public class CommandListPolicyTests
{
    static bool Allows(string type, string commands, string method, string path) =>
        CommandListPolicy.Allows(new CommandList(type, commands.Split(' ')), DockerApiRoutes.Match(method, path));

    [Theory]
    // ECI's example, and the deny test: push, build and every volume command are blocked.
    [InlineData("POST", "/v1.41/images/myimage/push", false)]
    [InlineData("POST", "/v1.41/build", false)]
    [InlineData("POST", "/v1.41/session", false)]       // BuildKit's build is build as well
    [InlineData("POST", "/v1.41/grpc", false)]
    [InlineData("GET", "/v1.41/volumes", false)]
    [InlineData("POST", "/v1.41/volumes/create", false)]
    [InlineData("DELETE", "/v1.41/volumes/data", false)]
    // ... and the rest goes through.
    [InlineData("GET", "/v1.41/containers/json", true)]
    [InlineData("POST", "/v1.41/containers/create", true)]
    [InlineData("POST", "/v1.41/containers/c/attach", true)]
    [InlineData("POST", "/v1.41/containers/c/start", true)]
    [InlineData("GET", "/v1.41/containers/c/logs", true)]
    [InlineData("POST", "/v1.41/containers/c/exec", true)]
    [InlineData("POST", "/v1.41/exec/e/start", true)]
    [InlineData("GET", "/v1.41/images/json", true)]
    [InlineData("POST", "/v1.41/images/create", true)]
    [InlineData("POST", "/v1.41/build/prune", true)]    // `docker builder prune` is not `docker build`
    [InlineData("GET", "/v1.41/whatever/dockerd/adds", true)] // a deny list lets unknown requests reach dockerd (its 404)
    [InlineData("HEAD", "/_ping", true)]
    public void DenyPushBuildVolumes(string method, string path, bool allowed) =>
        Assert.Equal(allowed, Allows("deny", "push build volume*", method, path));

    [Theory]
    // The allow test: docker ps works, docker images does not.
    [InlineData("GET", "/v1.41/containers/json", true)]
    [InlineData("GET", "/v1.41/images/json", false)]
    [InlineData("POST", "/v1.41/containers/create", true)]
    [InlineData("POST", "/v1.41/containers/c/start", true)]
    [InlineData("POST", "/v1.41/exec/e/start", true)]
    [InlineData("POST", "/v1.41/images/create", true)]   // docker run pulls a missing image: needed by container run
    [InlineData("GET", "/v1.41/images/x/json", true)]    // needed by container run
    [InlineData("GET", "/v1.41/info", true)]             // needed by container run
    [InlineData("POST", "/v1.41/images/x/push", false)]
    [InlineData("GET", "/v1.41/volumes", false)]
    [InlineData("GET", "/v1.41/version", false)]
    [InlineData("GET", "/v1.41/whatever/dockerd/adds", false)] // an allow list refuses what it does not know
    [InlineData("GET", "/_ping", true)]
    public void AllowPsAndContainers(string method, string path, bool allowed) =>
        Assert.Equal(allowed, Allows("allow", "ps container*", method, path));

    [Theory]
    // An allow entry also lets through what that command needs first (docker logs inspects the container).
    [InlineData("logs", "GET", "/v1.41/containers/c/json", true)]
    [InlineData("logs", "GET", "/v1.41/containers/c/logs", true)]
    [InlineData("logs", "POST", "/v1.41/containers/c/kill", false)]
    [InlineData("ps", "GET", "/v1.41/containers/c/logs", false)]
    [InlineData("exec", "POST", "/v1.41/containers/c/exec", true)]
    [InlineData("exec", "POST", "/v1.41/exec/e/start", true)]
    [InlineData("exec", "GET", "/v1.41/containers/c/json", true)]
    [InlineData("image*", "GET", "/v1.41/images/json", true)]
    [InlineData("image*", "POST", "/v1.41/build", true)]       // docker image build
    [InlineData("images", "POST", "/v1.41/build", false)]
    [InlineData("*", "POST", "/v1.41/swarm/init", true)]
    [InlineData("volume", "GET", "/v1.41/volumes", true)]      // a group's name alone is the whole group
    [InlineData("system*", "GET", "/v1.41/events", true)]
    [InlineData("events", "GET", "/v1.41/events", true)]
    public void AllowEntries(string entry, string method, string path, bool allowed) =>
        Assert.Equal(allowed, Allows("allow", entry, method, path));

    [Theory]
    [InlineData("container*", "GET", "/v1.41/containers/json", false)]
    [InlineData("container*", "POST", "/v1.41/commit", false)]
    [InlineData("container*", "GET", "/v1.41/images/json", true)]
    [InlineData("network*", "POST", "/v1.41/networks/n/connect", false)]
    [InlineData("network*", "GET", "/v1.41/volumes", true)]
    [InlineData("build*", "POST", "/v1.41/build/prune", false)] // build* is build and the builder group
    [InlineData("image*", "POST", "/v1.41/images/x/tag", false)]
    [InlineData("images", "POST", "/v1.41/images/x/tag", true)]
    [InlineData("ps", "GET", "/v1.41/containers/json", false)]
    [InlineData("ps", "GET", "/v1.41/containers/c/json", true)] // deny blocks what a command owns, not what it needs
    [InlineData("exec", "POST", "/v1.41/exec/e/start", false)]
    [InlineData("system*", "GET", "/v1.41/info", false)]
    public void DenyEntries(string entry, string method, string path, bool allowed) =>
        Assert.Equal(allowed, Allows("deny", entry, method, path));

    [Fact]
    public void NoList_AllowsEverything() =>
        Assert.True(CommandListPolicy.Allows(null, DockerApiRoutes.Match("POST", "/images/x/push")));

    [Fact]
    public void BlockedMessage_IsEcisWithTheTargetAsSent()
    {
        string message = CommandListPolicy.BlockedMessage("/v1.41/images/myimage/push?tag=latest", "/etc/sandbox-runc/admin-settings.json");
        Assert.StartsWith("docker command \"/v1.41/images/myimage/push?tag=latest\" is blocked", message);
        Assert.Contains("commandList", message);
    }

    [Theory]
    [InlineData("push")]
    [InlineData("ps")]
    [InlineData("container*")]
    [InlineData("image*")]
    [InlineData("volume*")]
    [InlineData("network*")]
    [InlineData("build*")]
    [InlineData("system*")]
    [InlineData("plugin*")]
    [InlineData("volume")]
    [InlineData("compose")] // no requests of its own: accepted, names nothing
    [InlineData("*")]
    public void KnownNames(string entry) => Assert.Null(DockerCommands.Unknown(entry));

    [Theory]
    [InlineData("pusj")]
    [InlineData("containers*")]
    [InlineData("dockerd")]
    public void UnknownNames_AreSaidToBe(string entry)
    {
        Assert.Contains("is not a docker command name", DockerCommands.Unknown(entry));
        // ... and a settings file with one is refused: a typo must not deny nothing silently.
        string json = """{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "dockerSocketMount": """ +
                      """{"commandList": {"type": "deny", "commands": ["push", """ + $"\"{entry}\"" + "]}}}}";
        var e = Assert.Throws<PolicyException>(() => AdminSettings.Parse(json, "/etc/sandbox-runc/admin-settings.json"));
        Assert.Contains("commandList.commands[1]", e.Message);
    }
}
