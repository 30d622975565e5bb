using System.Diagnostics;
using System.Text;
using Xunit;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// Checks hand-written C# declarations against the C headers, in the manner of Tmds.LibC: a small C
/// program made of the given preamble (includes, defines) prints every expression of the table, is
/// compiled with the system's cc and run, and each printed value must equal the C# one.
/// </summary>
public static class CHeaderCheck
{
    public static string? FindCc() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "cc")).FirstOrDefault(File.Exists);

    /// <param name="preamble">the program's includes and defines, before main.</param>
    /// <param name="expected">C expression → the value the C# code uses for it.</param>
    public static void AssertMatches(string preamble, IReadOnlyDictionary<string, long> expected)
    {
        var c = new StringBuilder(preamble).AppendLine().AppendLine("int main(void) {");
        foreach (var expr in expected.Keys)
            c.AppendLine($"    printf(\"%s=%lld\\n\", \"{expr}\", (long long)({expr}));");
        c.AppendLine("    return 0;\n}");

        string dir = Directory.CreateTempSubdirectory("abi-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "abi.c"), c.ToString());
            Run(FindCc() ?? "cc", $"-std=gnu11 -Wall -Werror -o {dir}/abi {dir}/abi.c");
            var actual = Run(Path.Combine(dir, "abi"), "")
                .Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => line.Split('=', 2))
                .ToDictionary(p => p[0], p => long.Parse(p[1]));
            var mismatches = expected.Where(kv => actual[kv.Key] != kv.Value)
                .Select(kv => $"{kv.Key}: C says {actual[kv.Key]}, C# says {kv.Value}").ToList();
            Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
            Assert.Equal(expected.Count, actual.Count);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    static string Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} {args} exited with {p.ExitCode}: {stderr}");
        return stdout.Result;
    }
}

/// <summary>A header check, skipped (with the reason) where there is no cc or no header to check against.</summary>
public sealed class FactNeedsCcAttribute : FactAttribute
{
    public FactNeedsCcAttribute(string header = "/usr/include/seccomp.h", string package = "libseccomp-dev")
    {
        if (CHeaderCheck.FindCc() is null)
            Skip = "cc not found on PATH: the ABI check compiles a C program against the system headers";
        else if (!File.Exists(header))
            Skip = $"{header} missing (install {package}): nothing to check the declarations against";
    }
}
