using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Tests.TestSupport;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// A private ID pool for one test: its own subuid/subgid files ("sandbox-runc:START:COUNT") and
/// allocation table, handed to the runtime through the SANDBOX_RUNC_* environment overrides.
/// </summary>
public sealed class PrivateIdPool : IDisposable
{
    public string Dir { get; }
    public string SubUid => Path.Combine(Dir, "subuid");
    public string SubGid => Path.Combine(Dir, "subgid");
    public string Table => Path.Combine(Dir, "id-ranges.json");
    public long Start { get; }

    public PrivateIdPool(long start, long count)
    {
        Start = start;
        Dir = Path.Combine(Path.GetTempPath(), "sr-pool-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Dir);
        File.WriteAllText(SubUid, $"someone:10000:5000\nsandbox-runc:{start}:{count}\n");
        File.WriteAllText(SubGid, $"sandbox-runc:{start}:{count}\n");
    }

    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string>
    {
        ["SANDBOX_RUNC_SUBUID"] = SubUid,
        ["SANDBOX_RUNC_SUBGID"] = SubGid,
        ["SANDBOX_RUNC_ID_STATE"] = Table,
    };

    /// <summary>The table as stored on disk (no reclaiming): (index, id) of every holder.</summary>
    public List<(long Index, string Id)> Holders() => UserNs.ReadTable(Table);

    public void Dispose()
    {
        try { Directory.Delete(Dir, true); } catch { }
    }
}

public static class UserNs
{
    public const long RangeSize = 65536;

    /// <summary>(index, id) of every holder; index -1 for a range that is not the pool's (a spec's own, a joined one), id "" for a "live" one.</summary>
    public static List<(long Index, string Id)> ReadTable(string path)
    {
        if (!File.Exists(path)) return [];
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.GetProperty("holders").EnumerateArray()
            .Select(h => (h.TryGetProperty("index", out var i) ? i.GetInt64() : -1, h.TryGetProperty("id", out var id) ? id.GetString()! : "")).ToList();
    }

    /// <summary>The start of the "sandbox-runc" entry in a subuid/subgid file.</summary>
    public static long PoolStart(string subIdFile) =>
        File.ReadAllLines(subIdFile).Select(l => l.Split(':')).Where(f => f.Length == 3 && f[0] == "sandbox-runc")
            .Select(f => long.Parse(f[1])).Single();

    /// <summary>Parses one "0 BASE SIZE" map line; fails unless it is exactly one line starting at container ID 0.</summary>
    public static (long Base, long Size) ParseMap(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Xunit.Assert.Single(lines);
        var f = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Xunit.Assert.Equal(3, f.Length);
        Xunit.Assert.Equal("0", f[0]);
        return (long.Parse(f[1]), long.Parse(f[2]));
    }

    /// <summary>`state`'s idMappings (uidMap, gidMap).</summary>
    public static async Task<(string Uid, string Gid)> StateMappings(RuntimeCli rt, string id)
    {
        var r = await rt.Ok("state", id);
        using var doc = JsonDocument.Parse(r.Stdout);
        var m = doc.RootElement.GetProperty("idMappings");
        return (m.GetProperty("uidMap").GetString()!, m.GetProperty("gidMap").GetString()!);
    }

    /// <summary>"uid:gid" of a host path (stat -c, as the host sees it).</summary>
    public static async Task<string> Owner(string path)
    {
        var r = await CliWrap.Cli.Wrap("stat").WithArguments(["-c", "%u:%g", path]).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"stat {path}: {r.StandardError}");
        return r.StandardOutput.Trim();
    }

    /// <summary>The Uid line of /proc/PID/status: real, effective, saved, fs.</summary>
    public static long[] HostUids(int pid) =>
        File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:"))["Uid:".Length..]
            .Split('\t', ' ').Where(s => s.Length > 0).Select(long.Parse).ToArray();

    /// <summary>The staging dir create makes for a container of this state dir (CreateOperation.StagingKey).</summary>
    public static string StagingDir(string stateDir) =>
        Path.Combine("/run/sandbox-runc/mnt",
            Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(stateDir)))[..16]);

    /// <summary>The full capability mask of this kernel (bits 0..cap_last_cap), as /proc/PID/status prints it.</summary>
    public static string FullCapMask()
    {
        int last = int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim());
        return ((1UL << (last + 1)) - 1).ToString("x16");
    }

    /// <summary>Mount points under a directory, from the host's mountinfo.</summary>
    public static string[] MountsUnder(string dir) =>
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4])
            .Where(m => m == dir || m.StartsWith(dir + "/")).ToArray();
}
