using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Docker;

/// <summary>`docker run -it`: an interactive shell, driven through a real pseudo-terminal (script(1)).</summary>
public sealed class DockerInteractiveTests : IDisposable
{
    readonly DockerCli _docker = new();

    [IntegrationFact]
    public async Task InteractiveShellShowsItsPromptAndRunsWhatIsTyped()
    {
        string name = _docker.Name("it");
        using var cts = new CancellationTokenSource(Patience.Command);
        var r = await CliWrap.Cli.Wrap("script")
            .WithArguments(["-qec", $"docker run --rm -it --name {name} --runtime={DockerCli.Runtime} {DockerCli.Image} sh", "/dev/null"])
            .WithStandardInputPipe(PipeSource.FromString("tty; cat /proc/self/uid_map; echo typed-$((6*7)); exit 5\n"))
            .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cts.Token);
        Assert.True(r.ExitCode == 5, $"exit {r.ExitCode}\nstdout: {r.StandardOutput}\nstderr: {r.StandardError}");
        Assert.Contains("/ # ", r.StandardOutput);
        Assert.Contains("/dev/pts/0", r.StandardOutput);
        Assert.Contains("typed-42", r.StandardOutput);
        Assert.DoesNotContain(" 0          0 4294967295", r.StandardOutput);
    }

    public void Dispose() => _docker.Dispose();
}
