using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// Every config in spec-fixtures/configs: valid ones load and validate; each invalid one fails with the
/// message in its .expect file, which names the file and the field (and line/column for bad JSON).
/// </summary>
public class SpecLoaderTests
{
    static string Dir(string kind) => Path.Combine(Repo.Fixtures, "configs", kind);

    public static TheoryData<string> Valid() => new(Directory.GetFiles(Dir("valid"), "*.json").Select(Path.GetFileName)!);
    public static TheoryData<string> Invalid() => new(Directory.GetFiles(Dir("invalid"), "*.json").Select(Path.GetFileName)!);

    [Theory]
    [MemberData(nameof(Valid))]
    public void ValidConfigLoads(string name)
    {
        string path = Path.Combine(Dir("valid"), name);
        var spec = SpecLoader.Parse(File.ReadAllBytes(path), path);
        SpecLoader.Validate(spec, path, bundle: null);
        Assert.NotEmpty(spec.Process!.Args!);
    }

    [Theory]
    [MemberData(nameof(Invalid))]
    public void InvalidConfigIsRefusedNamingFileAndField(string name)
    {
        string path = Path.Combine(Dir("invalid"), name);
        string expect = File.ReadAllText(Path.ChangeExtension(path, ".expect")).Trim();
        var e = Assert.Throws<SpecException>(() =>
        {
            var spec = SpecLoader.Parse(File.ReadAllBytes(path), path);
            SpecLoader.Validate(spec, path, bundle: null);
        });
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void EveryInvalidFixtureSaysWhatItExpects()
    {
        foreach (var f in Directory.GetFiles(Dir("invalid"), "*.json"))
            Assert.True(File.Exists(Path.ChangeExtension(f, ".expect")), $"{f} has no .expect file");
    }

    [Fact]
    public void DockerConfigKeepsWhatTheRuntimeNeeds()
    {
        string path = Path.Combine(Dir("valid"), "docker-20.10-default.json");
        var spec = SpecLoader.Parse(File.ReadAllBytes(path), path);
        Assert.Equal("SCMP_ACT_ERRNO", spec.Linux!.Seccomp!.DefaultAction);
        Assert.Contains(spec.Linux.Namespaces!, n => n.Type == "network");
        Assert.StartsWith("/docker/", spec.Linux.CgroupsPath);
        Assert.Contains(spec.Mounts!, m => m.Destination == "/etc/hosts" && m.Options!.Contains("rbind"));
        Assert.NotEmpty(spec.Hooks!.Prestart!);
        Assert.Contains("/proc/kcore", spec.Linux.MaskedPaths!);
    }

    [Fact]
    public void NullMembersMeanAbsentAsForGosDecoder()
    {
        string path = Path.Combine(Dir("valid"), "nulls-as-absent.json");
        var spec = SpecLoader.Parse(File.ReadAllBytes(path), path);
        Assert.Equal(0u, spec.Process!.User.Uid);
        Assert.Equal(["b"], spec.Annotations!.Keys);
        Assert.Equal("", spec.Linux!.Namespaces![0].Path ?? "");
        Assert.Empty(spec.Linux.Seccomp!.Syscalls![0].Names);
    }

    [Theory]
    [InlineData("System.Nullable`1[System.UInt16]", "an unsigned 16-bit number")]
    [InlineData("System.Collections.Generic.List`1[SandboxRunc.Oci.Mount]", "an array")]
    [InlineData("System.Collections.Generic.List`1[System.String]", "an array of strings")]
    [InlineData("SandboxRunc.Oci.Process", "an object")]
    [InlineData("System.Collections.Generic.Dictionary`2[System.String,System.String]", "an object with string values")]
    public void JsonErrorsNameJsonShapesNotDotnetTypes(string type, string shown) =>
        Assert.Equal($"The JSON value could not be converted to {shown}.",
            SpecLoader.FirstSentence($"The JSON value could not be converted to {type}. Path: $.x | LineNumber: 0 | BytePositionInLine: 3."));

    [Fact]
    public void MissingBundleAndRootfsAreNamed()
    {
        var e = Assert.Throws<SpecException>(() => SpecLoader.LoadBundle("/nonexistent-bundle"));
        Assert.Contains("/nonexistent-bundle", e.Message);
        string dir = Directory.CreateTempSubdirectory("sr-bundle").FullName;
        try
        {
            e = Assert.Throws<SpecException>(() => SpecLoader.LoadBundle(dir));
            Assert.Contains("config.json: no such file", e.Message);
            File.Copy(Path.Combine(Dir("valid"), "minimal.json"), Path.Combine(dir, "config.json"));
            e = Assert.Throws<SpecException>(() => SpecLoader.LoadBundle(dir));
            Assert.Contains($"rootfs {dir}/rootfs does not exist", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
