using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>state, list, spec, features, --version: what scripts and engines parse.</summary>
public sealed class CommandTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [IntegrationFact]
    public async Task StateHasTheOciFields()
    {
        using var b = new Bundle("sleep", "100");
        string bundle = b.Write();
        await _rt.Create(bundle, "st1");
        var r = await _rt.Ok("state", "st1");
        using var doc = JsonDocument.Parse(r.Stdout);
        var s = doc.RootElement;
        Assert.Matches(@"^1\.\d+\.\d+", s.GetProperty("ociVersion").GetString());
        Assert.Equal("st1", s.GetProperty("id").GetString());
        Assert.Equal("created", s.GetProperty("status").GetString());
        Assert.Equal(bundle, s.GetProperty("bundle").GetString());
        int pid = s.GetProperty("pid").GetInt32();
        Assert.True(Procs.Alive(pid));
    }

    [IntegrationFact]
    public async Task ListTableJsonAndQuiet()
    {
        using var b1 = new Bundle("sleep", "100");
        using var b2 = new Bundle("sleep", "100");
        await _rt.Create(b1.Write(), "lsa");
        await _rt.Create(b2.Write(), "lsb");
        await _rt.Ok("start", "lsb");

        var table = (await _rt.Ok("list")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^ID\s+PID\s+STATUS\s+BUNDLE\s+CREATED\s+OWNER", table[0]);
        Assert.Equal(3, table.Length);
        Assert.Matches($@"^lsa\s+{await _rt.Pid("lsa")}\s+created\s+{Regex.Escape(b1.Dir)}\s", table.Single(l => l.StartsWith("lsa")));
        Assert.Matches($@"^lsb\s+{await _rt.Pid("lsb")}\s+running\s+{Regex.Escape(b2.Dir)}\s", table.Single(l => l.StartsWith("lsb")));

        using var json = JsonDocument.Parse((await _rt.Ok("list", "--format", "json")).Stdout);
        var byId = json.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("id").GetString()!, e => e.GetProperty("status").GetString());
        Assert.Equal(new Dictionary<string, string?> { ["lsa"] = "created", ["lsb"] = "running" }, byId);

        var quiet = (await _rt.Ok("list", "-q")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["lsa", "lsb"], quiet.Order());

        var bad = await _rt.Run("list", "--format", "yaml");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("yaml", bad.Stderr);
    }

    [IntegrationFact]
    public async Task ListOfAnEmptyRootIsJustTheHeader()
    {
        var table = (await _rt.Ok("list")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(table);
        Assert.Equal("[]", (await _rt.Ok("list", "--format", "json")).Stdout.Trim());
    }

    [IntegrationFact]
    public async Task SpecWritesAConfigThatRunAccepts()
    {
        using var b = new Bundle("true");
        await _rt.Ok("spec", "--bundle", b.Dir);
        string path = Path.Combine(b.Dir, "config.json");
        var spec = JsonSerializer.Deserialize(File.ReadAllText(path), OciJson.Default.Spec)!;
        Assert.True(spec.Process!.Terminal);
        Assert.Equal("rootfs", spec.Root!.Path);
        // A second spec refuses to overwrite.
        var again = await _rt.Run("spec", "--bundle", b.Dir);
        Assert.NotEqual(0, again.ExitCode);
        Assert.Contains("exists", again.Stderr);

        // As a user would: link the rootfs, turn the terminal off, give it a command.
        File.CreateSymbolicLink(Path.Combine(b.Dir, "rootfs"), Repo.Rootfs);
        spec.Process.Terminal = false;
        spec.Process.Args = ["sh", "-c", "echo from-spec; hostname"];
        spec.Linux!.CgroupsPath = b.Spec.Linux!.CgroupsPath;
        File.WriteAllText(path, JsonSerializer.Serialize(spec, OciJson.Default.Spec));
        Assert.Equal("from-spec\nsandbox-runc\n", await _rt.RunOk(b.Dir, "fromspec"));
    }

    [IntegrationFact]
    public async Task FeaturesIsOciJson()
    {
        var r = await _rt.Ok("features");
        using var doc = JsonDocument.Parse(r.Stdout);
        var f = doc.RootElement;
        foreach (var key in new[] { "ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux" })
            Assert.True(f.TryGetProperty(key, out _), $"features has no \"{key}\": {r.Stdout}");
        var hooks = f.GetProperty("hooks").EnumerateArray().Select(h => h.GetString()).ToList();
        foreach (var h in new[] { "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop" })
            Assert.Contains(h, hooks);
        var ns = f.GetProperty("linux").GetProperty("namespaces").EnumerateArray().Select(n => n.GetString()).ToList();
        Assert.Contains("pid", ns);
        Assert.Contains("user", ns);
    }

    [IntegrationFact]
    public async Task VersionHasVersionCommitAndSpecLines()
    {
        var r = await _rt.Ok("--version");
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.Matches(@"^sandbox-runc version \d+\.\d+\.\d+", lines[0]);
        Assert.Matches(@"^commit: \S+", lines[1]);
        Assert.Matches(@"^spec: 1\.\d+\.\d+", lines[2]);
    }

    [IntegrationFact]
    public async Task UnknownCommandIsAnError()
    {
        var r = await _rt.Run("frobnicate");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("unknown command \"frobnicate\"", r.Stderr);
    }

    public void Dispose() => _rt.Dispose();
}
