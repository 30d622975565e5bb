using SandboxRunc.Seccomp;
using Xunit;
using static SandboxRunc.Tests.Seccomp.SeccompTestSupport;

namespace SandboxRunc.Tests.Seccomp;

/// <summary>Compiling profiles: what must succeed, and that every bad profile says what is wrong.</summary>
public class SeccompCompilerTests
{
    [Fact]
    public void DockerDefaultProfileCompilesToWholeInstructions()
    {
        var compiled = Compile("docker-default.json");
        Assert.NotEmpty(compiled.Program);
        Assert.Equal(0, compiled.Program.Length % 8);
        Assert.Equal(0u, compiled.Flags);
        Assert.False(compiled.UsesNotify);
    }

    [Theory]
    [InlineData("errno-getppid.json")]
    [InlineData("masked-eq.json")]
    [InlineData("same-arg-twice.json")]
    [InlineData("two-args-and.json")]
    [InlineData("unknown-syscall.json")]
    [InlineData("flags.json")]
    public void HandWrittenProfilesCompile(string file)
    {
        var compiled = Compile(file);
        Assert.NotEmpty(compiled.Program);
        Assert.Equal(0, compiled.Program.Length % 8);
    }

    [Fact]
    public void FlagsBecomeFilterFlagBits()
    {
        var compiled = Compile("flags.json");
        Assert.Equal(SeccompCompiler.SECCOMP_FILTER_FLAG_LOG | SeccompCompiler.SECCOMP_FILTER_FLAG_SPEC_ALLOW, compiled.Flags);

        var tsync = new Oci.Seccomp { DefaultAction = "SCMP_ACT_ALLOW", Flags = ["SECCOMP_FILTER_FLAG_TSYNC"] };
        Assert.Equal(SeccompCompiler.SECCOMP_FILTER_FLAG_TSYNC, SeccompCompiler.Compile(tsync).Flags);
    }

    [Fact]
    public void NotifyRulesAreReported()
    {
        var profile = new Oci.Seccomp
        {
            DefaultAction = "SCMP_ACT_ALLOW",
            Syscalls = [new() { Names = ["getppid"], Action = "SCMP_ACT_NOTIFY" }],
        };
        Assert.True(SeccompCompiler.Compile(profile).UsesNotify);
    }

    [Fact]
    public void RuleWithTheDefaultActionIsSkipped()
    {
        var withRedundantRule = new Oci.Seccomp
        {
            DefaultAction = "SCMP_ACT_ERRNO",
            DefaultErrnoRet = 1,
            Syscalls = [new() { Names = ["getppid"], Action = "SCMP_ACT_ERRNO" }, new() { Names = ["getpid"], Action = "SCMP_ACT_ALLOW" }],
        };
        var without = new Oci.Seccomp
        {
            DefaultAction = "SCMP_ACT_ERRNO",
            Syscalls = [new() { Names = ["getpid"], Action = "SCMP_ACT_ALLOW" }],
        };
        Assert.Equal(SeccompCompiler.Compile(without).Program, SeccompCompiler.Compile(withRedundantRule).Program);
    }

    /// <summary>For each hostile fixture: the values its error message must name.</summary>
    static readonly Dictionary<string, string[]> Expected = new()
    {
        ["unknown-action.json"] = ["\"getppid\"", "unknown action \"SCMP_ACT_BOGUS\""],
        ["unknown-default-action.json"] = ["defaultAction", "\"SCMP_ACT_DENY_EVERYTHING\""],
        ["unknown-operator.json"] = ["\"getpgid\"", "unknown operator \"SCMP_CMP_ALMOST_EQ\""],
        ["unknown-arch.json"] = ["architectures", "\"SCMP_ARCH_Z80\""],
        ["bad-flag.json"] = ["flags", "\"SECCOMP_FILTER_FLAG_BOGUS\""],
        ["arg-index-out-of-range.json"] = ["\"getpgid\"", "index 6"],
        ["notify-default.json"] = ["defaultAction", "SCMP_ACT_NOTIFY"],
        ["errno-out-of-range.json"] = ["\"getppid\"", "errnoRet 70000"],
        ["notify-write.json"] = ["\"write\"", "SCMP_ACT_NOTIFY"],
        ["empty-syscall-name.json"] = ["syscalls", "empty string"],
    };

    public static IEnumerable<object[]> InvalidFixtures() =>
        Directory.GetFiles(Path.Combine(FixtureDir, "invalid"), "*.json").Order().Select(f => new object[] { Path.GetFileName(f) });

    [Theory]
    [MemberData(nameof(InvalidFixtures))]
    public void InvalidProfileFailsNamingTheValue(string file)
    {
        Assert.True(Expected.TryGetValue(file, out var mustName), $"add the expected message parts for invalid/{file} to the test");
        var e = Assert.Throws<SeccompException>(() => Compile(Path.Combine("invalid", file)));
        Assert.StartsWith("seccomp: ", e.Message);
        foreach (var part in mustName)
            Assert.Contains(part, e.Message);
    }

    [Fact]
    public void EveryInvalidFixtureIsCovered() =>
        Assert.Equal(Expected.Keys.Order(), InvalidFixtures().Select(f => (string)f[0]));
}
