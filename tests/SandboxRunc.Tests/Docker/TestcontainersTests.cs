using CliWrap.Buffered;
using DotNet.Testcontainers.Builders;
using DotNet.Testcontainers.Containers;
using DotNet.Testcontainers.Images;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

static class TestcontainersSetup
{
    /// <summary>
    /// Settings Testcontainers reads from the environment, set before its first use so a plain
    /// `dotnet test` works: no Resource Reaper (ryuk), whose image cannot be pulled without a registry
    /// (tests remove their own containers), and the daemon's API version, as Docker.DotNet does not
    /// negotiate down (it sends 1.44; Debian's dockerd 20.10 answers at most 1.41).
    /// </summary>
    public static void Apply()
    {
        Environment.SetEnvironmentVariable("TESTCONTAINERS_RYUK_DISABLED", "true");
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOCKER_API_VERSION")))
        {
            try
            {
                var r = CliWrap.Cli.Wrap("docker").WithArguments(["version", "--format", "{{.Server.APIVersion}}"])
                    .WithValidation(CliWrap.CommandResultValidation.None)
                    .ExecuteBufferedAsync().GetAwaiter().GetResult();
                if (r.ExitCode == 0 && r.StandardOutput.Trim() is { Length: > 0 } v)
                    Environment.SetEnvironmentVariable("DOCKER_API_VERSION", v);
            }
            catch { } // no docker: the tests fail on their own with Testcontainers' message
        }
    }
}

/// <summary>Testcontainers (Docker.DotNet over the API, not the CLI) starting containers with our runtime.</summary>
public sealed class TestcontainersTests : IAsyncLifetime
{
    readonly List<IContainer> _containers = [];
    readonly DockerCli _docker = new();

    static TestcontainersTests() => TestcontainersSetup.Apply();

    /// <summary>HostConfig.Runtime, which Testcontainers has no builder method for.</summary>
    static void UseOurRuntime(global::Docker.DotNet.Models.CreateContainerParameters p) =>
        (p.HostConfig ??= new global::Docker.DotNet.Models.HostConfig()).Runtime = DockerCli.Runtime;

    IContainer Build(params string[] command)
    {
        var container = new ContainerBuilder(DockerCli.Image)
            .WithImagePullPolicy(PullPolicy.Never) // local image only
            .WithCreateParameterModifier(UseOurRuntime)
            .WithName(_docker.Name("tc"))
            .WithCommand(command)
            .WithCleanUp(true)
            .Build();
        _containers.Add(container);
        return container;
    }

    [IntegrationFact]
    public async Task ContainerThatEchoesAndExitsGivesLogsAndExitCode()
    {
        var container = Build("sh", "-c", "echo hello from testcontainers; echo to stderr >&2; exit 7");
        using var cts = new CancellationTokenSource(Patience.Command);
        await container.StartAsync(cts.Token);
        Assert.Equal(7, await container.GetExitCodeAsync(cts.Token));
        var (stdout, stderr) = await container.GetLogsAsync(timestampsEnabled: false, ct: cts.Token);
        Assert.Equal("hello from testcontainers\n", stdout);
        Assert.Equal("to stderr\n", stderr);
        Assert.Equal(DockerCli.Runtime, await _docker.Inspect(container.Id, "{{.HostConfig.Runtime}}"));
    }

    [IntegrationFact]
    public async Task LongRunningContainerWaitsForItsLogAndStops()
    {
        var container = new ContainerBuilder(DockerCli.Image)
            .WithImagePullPolicy(PullPolicy.Never)
            .WithCreateParameterModifier(UseOurRuntime)
            .WithName(_docker.Name("tc"))
            .WithCommand("sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")
            .WithWaitStrategy(Wait.ForUnixContainer().UntilMessageIsLogged("ready"))
            .Build();
        _containers.Add(container);
        using var cts = new CancellationTokenSource(Patience.Command);
        await container.StartAsync(cts.Token);
        Assert.Equal(TestcontainersStates.Running, container.State);
        await container.StopAsync(cts.Token);
        Assert.Equal(0, await container.GetExitCodeAsync(cts.Token));
        var (stdout, _) = await container.GetLogsAsync(timestampsEnabled: false, ct: cts.Token);
        Assert.Equal("ready\nbye\n", stdout);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var c in _containers)
            try { await c.DisposeAsync(); } catch { }
        _docker.Dispose();
    }
}
