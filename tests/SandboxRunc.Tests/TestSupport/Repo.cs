namespace SandboxRunc.Tests.TestSupport;

/// <summary>Where the repository, its fixtures and the built artifacts are (env vars from build.sh win).</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SandboxRunc.sln")))
                return dir.FullName;
        throw new InvalidOperationException($"no SandboxRunc.sln above {AppContext.BaseDirectory}");
    }

    public static string Fixtures => Path.Combine(Root, "spec-fixtures");

    /// <summary>The published native executable under test.</summary>
    public static string Binary =>
        Environment.GetEnvironmentVariable("SANDBOX_RUNC_BIN") is { Length: > 0 } b ? b : Path.Combine(Root, "artifacts", "sandbox-runc");

    /// <summary>The test image's root filesystem, exported by build.sh (busybox, /etc/passwd with uid 1000 "tester").</summary>
    public static string Rootfs =>
        Environment.GetEnvironmentVariable("SANDBOX_RUNC_ROOTFS") is { Length: > 0 } r ? r : Path.Combine(Root, "artifacts", "rootfs");

    public static string TestImage =>
        Environment.GetEnvironmentVariable("SANDBOX_RUNC_TEST_IMAGE") is { Length: > 0 } i ? i : "sandbox-runc-test:latest";
}
