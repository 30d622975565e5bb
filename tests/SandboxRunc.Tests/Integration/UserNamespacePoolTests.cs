using System.Diagnostics;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// The ID pool through the runtime, each test with a private pool (its own subuid/subgid files and
/// table): exhaustion, concurrent creates, and creates killed half-way.
/// </summary>
public sealed class UserNamespacePoolTests
{
    [IntegrationFact]
    public async Task UserNamespacePool_ExhaustedPoolRefusesAndRecovers()
    {
        using var pool = new PrivateIdPool(100000, 2 * UserNs.RangeSize);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var b = new Bundle("sleep", "30");
        string bundle = b.Write();
        b.Spec.Linux!.CgroupsPath = null;
        await rt.Create(bundle, "poola");
        await rt.Create(bundle, "poolb");
        var bases = new[] { "poola", "poolb" }.Select(id => UserNs.ParseMap(UserNs.StateMappings(rt, id).Result.Uid).Base).ToArray();
        Assert.Equal([100000L, 100000L + UserNs.RangeSize], bases.Order());

        var r = await rt.Detached("create", "--bundle", bundle, "poolc");
        Assert.True(r.ExitCode != 0, $"third create succeeded on a pool of 2 ranges\n{r}");
        Assert.Contains("the ID pool is exhausted", r.Stderr);
        Assert.Equal(["poola", "poolb"], rt.StateDirs().Select(Path.GetFileName).Order());
        Assert.Equal(["poola", "poolb"], pool.Holders().Select(h => h.Id).Order());

        long freed = UserNs.ParseMap((await UserNs.StateMappings(rt, "poola")).Uid).Base;
        await rt.Ok("delete", "--force", "poola");
        Assert.Equal(["poolb"], pool.Holders().Select(h => h.Id));
        await rt.Create(bundle, "poolc");
        Assert.Equal(freed, UserNs.ParseMap((await UserNs.StateMappings(rt, "poolc")).Uid).Base);
    }

    [IntegrationFact]
    public async Task UserNamespacePool_ConcurrentCreatesGetDisjointRanges()
    {
        using var pool = new PrivateIdPool(100000, 32 * UserNs.RangeSize);
        using var rt = new RuntimeCli(environment: pool.Environment);
        using var b = new Bundle("sleep", "30");
        b.Spec.Linux!.CgroupsPath = null; // one cgroup each (named after the id)
        string bundle = b.Write();
        var ids = Enumerable.Range(0, 20).Select(i => $"poolconc{i}").ToArray();
        using var gate = new SemaphoreSlim(5);
        try
        {
            await Task.WhenAll(ids.Select(async id =>
            {
                await gate.WaitAsync();
                try { await rt.Create(bundle, id); }
                finally { gate.Release(); }
            }));
            var bases = new List<long>();
            foreach (var id in ids) bases.Add(UserNs.ParseMap((await UserNs.StateMappings(rt, id)).Uid).Base);
            Assert.Equal(20, bases.Distinct().Count());
            Assert.All(bases, x => Assert.True(x >= 100000 && x < 100000 + 32 * UserNs.RangeSize && (x - 100000) % UserNs.RangeSize == 0, $"base {x}"));
            var held = pool.Holders();
            Assert.Equal(ids.Order(), held.Select(h => h.Id).Order());
            Assert.Equal(20, held.Select(h => h.Index).Distinct().Count());
        }
        finally
        {
            await Task.WhenAll(ids.Select(async id =>
            {
                await gate.WaitAsync();
                try { await rt.Run("delete", "--force", id); }
                finally { gate.Release(); }
            }));
        }
        Assert.Empty(pool.Holders());
        Assert.Empty(rt.StateDirs());
    }

    [IntegrationFact]
    public async Task UserNamespacePool_KilledCreatesLeaveNothingAfterDelete()
    {
        using var pool = new PrivateIdPool(100000, 64 * UserNs.RangeSize);
        using var rt = new RuntimeCli(environment: pool.Environment);
        Directory.CreateDirectory(rt.StateRoot);
        var rnd = new Random();
        var bundles = new List<Bundle>();
        var ids = new List<string>();
        try
        {
            for (int i = 0; i < 20; i++)
            {
                var b = new Bundle("sleep", "30");
                bundles.Add(b);
                string id = $"poolkill{i}";
                ids.Add(id);
                string log = Path.Combine(rt.StateRoot, id + ".log");
                string line = $"exec {RuntimeCli.Quote(rt.Binary)} --root {RuntimeCli.Quote(rt.StateRoot)} create --bundle {RuntimeCli.Quote(b.Write())} {id} >{RuntimeCli.Quote(log)} 2>&1 </dev/null";
                var psi = new ProcessStartInfo("/bin/sh", ["-c", line]) { UseShellExecute = false };
                foreach (var kv in pool.Environment) psi.Environment[kv.Key] = kv.Value;
                using var p = Process.Start(psi)!;
                Thread.Sleep(rnd.Next(0, 41));
                try { p.Kill(); } catch (InvalidOperationException) { } // already done
                p.WaitForExit();
            }
            foreach (var id in ids) await rt.Ok("delete", "--force", id);

            Assert.Empty(rt.StateDirs());
            var leftovers = new List<string>();
            foreach (var (id, held) in pool.Holders()) leftovers.Add($"table still holds range {id} for {held}");
            for (int i = 0; i < ids.Count; i++)
            {
                string staging = UserNs.StagingDir(Path.Combine(rt.StateRoot, ids[i]));
                if (Directory.Exists(staging)) leftovers.Add($"{ids[i]}: staging dir {staging}");
                if (UserNs.MountsUnder(staging).Length > 0) leftovers.Add($"{ids[i]}: mounts under {staging}");
                // name=systemd too: its key holds a '=' that the create note once split at.
                foreach (var controller in new[] { "memory", "pids", "freezer", "systemd" })
                {
                    string cg = bundles[i].CgroupDir(controller);
                    string procs = Path.Combine(cg, "cgroup.procs");
                    if (File.Exists(procs) && File.ReadAllText(procs).Trim().Length > 0)
                        leftovers.Add($"{ids[i]}: processes in {cg}: {File.ReadAllText(procs).Trim().Replace('\n', ' ')}");
                    else if (Directory.Exists(cg)) leftovers.Add($"{ids[i]}: cgroup {cg}");
                }
            }
            Assert.True(leftovers.Count == 0, string.Join("\n", leftovers));
        }
        finally
        {
            foreach (var b in bundles)
            {
                foreach (var controller in new[] { "memory", "pids", "freezer", "cpu", "cpuacct", "devices", "blkio", "cpuset", "net_cls", "perf_event", "hugetlb" })
                {
                    string procs = Path.Combine(b.CgroupDir(controller), "cgroup.procs");
                    if (File.Exists(procs))
                        foreach (var pid in File.ReadAllLines(procs).Where(l => l.Length > 0)) try { Process.GetProcessById(int.Parse(pid)).Kill(); } catch { }
                }
                b.Dispose();
            }
        }
    }
}
