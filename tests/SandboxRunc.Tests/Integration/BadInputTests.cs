using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>Bundles that cannot run: each create exits non-zero with a message that says why, and leaves no state.</summary>
public sealed class BadInputTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    async Task<RuntimeCli.Result> CreateFails(string bundleDir, string id = "bad")
    {
        var r = await _rt.Detached("create", "--bundle", bundleDir, id);
        Assert.True(r.ExitCode != 0, $"create should have failed: {r}");
        Assert.Empty(_rt.StateDirs());
        return r;
    }

    [IntegrationFact]
    public async Task MissingBundle()
    {
        string dir = Path.Combine(Path.GetTempPath(), "sr-no-such-bundle-" + Guid.NewGuid().ToString("N")[..8]);
        var r = await CreateFails(dir);
        Assert.Contains(dir, r.Stderr);
        Assert.Contains("no such directory", r.Stderr);
    }

    [IntegrationFact]
    public async Task MissingConfigJson()
    {
        using var b = new Bundle("true");
        var r = await CreateFails(b.Dir);
        Assert.Contains("config.json: no such file", r.Stderr);
    }

    [IntegrationFact]
    public async Task MissingRootfs()
    {
        using var b = new Bundle("true");
        b.Spec.Root!.Path = "no-rootfs-here";
        var r = await CreateFails(b.Write());
        Assert.Contains("root.path", r.Stderr);
        Assert.Contains("no-rootfs-here does not exist", r.Stderr);
    }

    [IntegrationTheory]
    [InlineData("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\"args\": [\"true\"] x\n}}\n", "line 3, column 32", "'x' is invalid after a value")]
    [InlineData("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\"args\": [\"true\"]\n}\n", "line 5, column 1", "open JSON object or array that should be closed")]
    [InlineData("{\"ociVersion\": \"1.0.2\", \"process\": {\"args\": \"true\"}}", "line 1, column", "process.args")]
    public async Task InvalidJsonNamesLineAndColumn(string json, string where, string what)
    {
        using var b = new Bundle("true");
        File.WriteAllText(Path.Combine(b.Dir, "config.json"), json);
        var r = await CreateFails(b.Dir);
        Assert.Contains("config.json: invalid JSON", r.Stderr);
        Assert.Contains(where, r.Stderr);
        Assert.Contains(what, r.Stderr);
        // Not a bare System.Text.Json resource key: the framework's own explanation reaches the user.
        Assert.DoesNotMatch(@": [A-Z][a-z]+[A-Z]\w+,", r.Stderr);
    }

    [IntegrationFact]
    public async Task UnsupportedOciVersion()
    {
        using var b = new Bundle("true");
        b.Spec.OciVersion = "2.0.0";
        var r = await CreateFails(b.Write());
        Assert.Contains("ociVersion", r.Stderr);
        Assert.Contains("2.0.0", r.Stderr);
    }

    [IntegrationFact]
    public async Task DuplicateId()
    {
        using var b = new Bundle("sleep", "100");
        await _rt.Create(b.Write(), "dup");
        var r = await _rt.Detached("create", "--bundle", b.Dir, "dup");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("exists", r.Stderr);
        // The first container is untouched.
        Assert.Equal("created", await _rt.Status("dup"));
        Assert.Single(_rt.StateDirs());
    }

    [IntegrationFact]
    public async Task UnknownNamespaceType()
    {
        using var b = new Bundle("true");
        b.Spec.Linux!.Namespaces!.Add(new SandboxRunc.Oci.Namespace { Type = "bogus" });
        var r = await CreateFails(b.Write());
        Assert.Contains("unknown namespace type \"bogus\"", r.Stderr);
    }

    [IntegrationFact]
    public async Task ProgramNotInPath()
    {
        using var b = new Bundle("nope");
        var r = await CreateFails(b.Write());
        Assert.Contains("exec: \"nope\": executable file not found in $PATH", r.Stderr);
    }

    [IntegrationFact]
    public async Task RunOfAMissingProgramFailsToo()
    {
        using var b = new Bundle("/bin/nope");
        var r = await _rt.Run("run", "--bundle", b.Write(), "bad");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("/bin/nope", r.Stderr);
        Assert.Empty(_rt.StateDirs());
    }

    public void Dispose() => _rt.Dispose();
}
