using CliWrap;
using SandboxRunc.Install;
using SandboxRunc.Tests.TestSupport;
using Tomlyn;
using Tomlyn.Model;
using Xunit;

namespace SandboxRunc.Tests.Install;

/// <summary>
/// What `install --containerd` writes, read back by a TOML parser (Tomlyn) rather than by our own text search:
/// the CRI plugin's runtime table that makes sandbox-runc a Kubernetes RuntimeClass handler
/// (handler: sandbox-runc), with containerd's runc shim (runtime_type io.containerd.runc.v2) running our binary.
/// </summary>
public class ContainerdTomlParseTests
{
    const string Bin = "/usr/local/bin/sandbox-runc";

    const string Existing = """
        version = 2

        [plugins."io.containerd.grpc.v1.cri".containerd]
          default_runtime_name = "runc"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
        """;

    static TomlTable Parse(string text) => TomlSerializer.Deserialize<TomlTable>(text)!;

    static TomlTable Runtimes(TomlTable root) =>
        (TomlTable)((TomlTable)((TomlTable)((TomlTable)root["plugins"])["io.containerd.grpc.v1.cri"])["containerd"])["runtimes"];

    static void AssertHandler(TomlTable root, string binary)
    {
        var ours = (TomlTable)Runtimes(root)["sandbox-runc"];
        Assert.Equal("io.containerd.runc.v2", ours["runtime_type"]);
        Assert.Equal(binary, ((TomlTable)ours["options"])["BinaryName"]);
    }

    [Fact]
    public void IntoNoFile_AVersion2ConfigWithTheHandler()
    {
        var root = Parse(ContainerdToml.Install(null, "c.toml", "sandbox-runc", Bin).NewText!);
        Assert.Equal(2L, root["version"]);
        AssertHandler(root, Bin);
    }

    [Fact]
    public void IntoAConfigWithoutRunc_RuncIsDefinedToo()
    {
        // containerd's CRI replaces its built-in runtimes by the file's: with ours alone, no "runc" for its default.
        string text = ContainerdToml.Install("version = 2\n", "c.toml", "sandbox-runc", Bin).NewText!;
        var runtimes = Runtimes(Parse(text));
        Assert.Equal("io.containerd.runc.v2", ((TomlTable)runtimes["runc"])["runtime_type"]);
        Assert.Equal("version = 2\n", ContainerdToml.Uninstall(text, "c.toml", "sandbox-runc").NewText);
        // Installed again over its own block: the same file (runc is ours, not "defined elsewhere").
        Assert.Null(ContainerdToml.Install(text, "c.toml", "sandbox-runc", Bin).NewText);
    }

    [Fact]
    public void IntoAnExistingConfig_KeepsItsRuntimesAndDefault()
    {
        var root = Parse(ContainerdToml.Install(Existing, "c.toml", "sandbox-runc", Bin).NewText!);
        AssertHandler(root, Bin);
        var runtimes = Runtimes(root);
        Assert.Equal("io.containerd.runc.v2", ((TomlTable)runtimes["runc"])["runtime_type"]);
        Assert.Equal("runc", ((TomlTable)((TomlTable)((TomlTable)root["plugins"])["io.containerd.grpc.v1.cri"])["containerd"])["default_runtime_name"]);
        Assert.Equal(Existing.TrimEnd() + "\n", ContainerdToml.Uninstall(ContainerdToml.Install(Existing, "c.toml", "sandbox-runc", Bin).NewText, "c.toml", "sandbox-runc").NewText);
    }

    [Theory]
    [InlineData("/opt/sand box/sandbox-runc")]
    [InlineData("/opt/we\"ird\\dir/sandbox-runc")]
    [InlineData("/opt/tab\there/sandbox-runc")]
    public void OddBinaryPaths_ReadBackExactly(string binary) =>
        AssertHandler(Parse(ContainerdToml.Install(null, "c.toml", "sandbox-runc", binary).NewText!), binary);

    [IntegrationFact]
    public async Task TheBinary_WritesAConfigThatParses()
    {
        string dir = Directory.CreateTempSubdirectory("srt-ctoml-").FullName;
        try
        {
            string config = Path.Combine(dir, "config.toml");
            File.WriteAllText(config, Existing);
            var r = await CliWrap.Cli.Wrap(Repo.Binary)
                .WithArguments(["install", "--no-docker", "--containerd", "--containerd-config", config, "--path", Repo.Binary])
                .WithValidation(CommandResultValidation.None).ExecuteAsync();
            Assert.Equal(0, r.ExitCode);
            AssertHandler(Parse(File.ReadAllText(config)), SandboxRunc.Interop.HostPath.Resolve(Repo.Binary));
        }
        finally { Directory.Delete(dir, true); }
    }
}
