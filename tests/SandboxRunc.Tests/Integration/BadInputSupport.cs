using System.Runtime.Versioning;
using SandboxRunc.Container;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// What every refused command must look like to its caller (an engine shows our stderr or log line as is):
/// a non-zero exit below 128 (255 for exec, as runc's), never a signal; exactly one line on stderr that names
/// the problem; no "Unhandled exception" and no "internal error" (the last-resort line: a bug we did not
/// turn into a proper error at its source).
/// </summary>
[SupportedOSPlatform("linux")]
public static class BadInput
{
    public static void AssertCleanRefusal(RuntimeCli.Result r, string what, string? names, bool exec = false)
    {
        string shown = $"{what}\n{r}";
        Assert.True(r.ExitCode != 0, $"should have failed: {shown}");
        Assert.True(r.ExitCode < 128 || (exec && r.ExitCode == 255), $"ended with {r.ExitCode} (a signal or a crash): {shown}");
        Assert.DoesNotContain("Unhandled exception", r.Stderr);
        Assert.DoesNotContain("internal error", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr: {shown}");
        if (names is not null) Assert.True(lines[0].Contains(names, StringComparison.Ordinal), $"the error should name \"{names}\": {shown}");
    }

    /// <summary>
    /// A failed create left nothing behind: no state dir, no ID-mapped staging dir or mount, no supervisor
    /// socket or helper process of this container, no cgroup dir under <paramref name="cgroupsPath"/>.
    /// </summary>
    public static async Task AssertNothingLeft(RuntimeCli rt, string id, string? cgroupsPath, string what)
    {
        Assert.False(Directory.Exists(Path.Combine(rt.StateRoot, id)), $"{what}: state dir left behind");
        string key = CreateOperation.StagingKey(new StateStore(rt.StateRoot), id);
        Assert.False(Directory.Exists(Path.Combine(Rootfs.IdmappedStaging.StagingRoot, key)), $"{what}: staging dir {key} left behind");
        Assert.DoesNotContain(key, File.ReadAllText("/proc/self/mountinfo"));
        Assert.False(File.Exists(Path.Combine(Supervisor.SocketDir, key + ".sock")), $"{what}: supervisor socket left behind");
        for (var end = DateTime.UtcNow.AddSeconds(5); HelperOf(rt, id) is not null && DateTime.UtcNow < end;) await Task.Delay(20);
        Assert.True(HelperOf(rt, id) is null, $"{what}: helper process {HelperOf(rt, id)} of {id} left behind");
        if (cgroupsPath is null) return;
        foreach (var hierarchy in Directory.GetDirectories("/sys/fs/cgroup").Append("/sys/fs/cgroup"))
        {
            string dir = Path.Combine(hierarchy, cgroupsPath.TrimStart('/'));
            Assert.False(Directory.Exists(dir), $"{what}: cgroup {dir} left behind");
        }
    }

    /// <summary>A `supervise ID` or `emulate ID` process of this state root, by its command line.</summary>
    static string? HelperOf(RuntimeCli rt, string id)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out _) || !Procs.Alive(int.Parse(Path.GetFileName(dir)))) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); }
            catch (IOException) { continue; }
            if (argv.Contains(rt.StateRoot) && argv.Length >= 2 && argv[^2] == id && argv.Any(a => a is "supervise" or "emulate"))
                return $"{Path.GetFileName(dir)}: {string.Join(' ', argv)}";
        }
        return null;
    }
}
