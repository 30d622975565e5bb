using SandboxRunc.Namespaces;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// Every bundle container runs in its own user namespace over a 65536-ID range of the pool: what the
/// container and the host see of it (maps, process owners, files on disk, binds, --privileged).
/// </summary>
public sealed class UserNamespaceTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    [IntegrationFact]
    public async Task UserNamespace_MapsARangeOfThePool()
    {
        using var b = new Bundle("sh", "-c", "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; sleep 30");
        await _rt.Create(b.Write(), "usermaps");
        await _rt.Ok("start", "usermaps");
        long poolStart = UserNs.PoolStart("/etc/subuid"), gidPoolStart = UserNs.PoolStart("/etc/subgid");
        var state = await UserNs.StateMappings(_rt, "usermaps");

        string uidMap = File.ReadAllText($"/proc/{await _rt.Pid("usermaps")}/uid_map");
        var (uidBase, uidSize) = UserNs.ParseMap(uidMap);
        var (gidBase, gidSize) = UserNs.ParseMap(File.ReadAllText($"/proc/{await _rt.Pid("usermaps")}/gid_map"));
        Assert.Equal(65536, uidSize);
        Assert.Equal(65536, gidSize);
        Assert.True(uidBase >= 100000 && gidBase >= 100000, $"bases {uidBase}/{gidBase} below 100000");
        Assert.Equal(0, (uidBase - poolStart) % 65536);
        Assert.Equal(0, (gidBase - gidPoolStart) % 65536);
        Assert.Equal($"0 {uidBase} 65536", state.Uid);
        Assert.Equal($"0 {gidBase} 65536", state.Gid);

        // What the container itself printed.
        string seen = "";
        for (int i = 0; i < 100 && !seen.Contains("--\n"); i++, await Task.Delay(20))
            seen = File.ReadAllText(Directory.GetFiles(_rt.StateRoot, "out-*.out").Single());
        var parts = (seen + "\n").Split("--\n");
        Assert.Equal((uidBase, 65536L), UserNs.ParseMap(parts[0]));
        for (int i = 0; i < 100 && parts[1].Trim().Length == 0; i++, await Task.Delay(20))
            parts = File.ReadAllText(Directory.GetFiles(_rt.StateRoot, "out-*.out").Single()).Split("--\n");
        Assert.Equal((gidBase, 65536L), UserNs.ParseMap(parts[1]));
    }

    [IntegrationFact]
    public async Task UserNamespace_ContainerRootIsTheRangeBaseOnTheHost()
    {
        using var b = new Bundle("sh", "-c", "id; sleep 30");
        var created = await _rt.Create(b.Write(), "userpid");
        await _rt.Ok("start", "userpid");
        var (uidBase, _) = UserNs.ParseMap((await UserNs.StateMappings(_rt, "userpid")).Uid);
        int pid = await _rt.Pid("userpid");
        Assert.Equal([uidBase, uidBase, uidBase, uidBase], UserNs.HostUids(pid));
        Assert.NotEqual(0, uidBase);

        string id = "";
        for (int i = 0; i < 100 && !id.Contains('\n'); i++, await Task.Delay(20)) id = created.ContainerOutput;
        Assert.StartsWith("uid=0(root) gid=0(root)", id);
        // `ps` on the host says the same as /proc/PID/status.
        var ps = await CliWrap.Buffered.BufferedCommandExtensions.ExecuteBufferedAsync(
            CliWrap.Cli.Wrap("ps").WithArguments(["-o", "uid=", "-p", pid.ToString()]));
        Assert.Equal(uidBase.ToString(), ps.StandardOutput.Trim());
    }

    [IntegrationFact]
    public async Task UserNamespace_WritableRootfsCopyKeepsHostOwners()
    {
        using var b = new Bundle("sh", "-c", "touch /etc/x && chown 1000 /etc/x && rm /bin/ls && ls -ln /etc/x && echo ok").WritableRootfs();
        // `spec`'s default capabilities (runc's) have no CAP_CHOWN; Docker's have.
        var caps = b.Spec.Process!.Capabilities!;
        foreach (var set in new[] { caps.Bounding!, caps.Effective!, caps.Permitted! }) set.Add("CAP_CHOWN");
        string output = await _rt.RunOk(b.Write(), "userrootfs");
        Assert.Contains("ok", output);
        Assert.Matches(@"-rw\S+\s+1 1000\s+0 ", output); // inside: uid 1000, gid 0
        string rootfs = Path.Combine(b.Dir, "rootfs");
        Assert.Equal("1000:0", await UserNs.Owner(Path.Combine(rootfs, "etc", "x")));
        Assert.False(File.Exists(Path.Combine(rootfs, "bin", "ls")), "bin/ls is still on the host");
        Assert.Equal("0:0", await UserNs.Owner(Path.Combine(rootfs, "etc", "passwd")));
    }

    [IntegrationTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UserNamespace_BindMountShowsHostRootAsRoot(bool readOnly)
    {
        string host = Path.Combine(Path.GetTempPath(), "sr-bind-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(host);
        try
        {
            File.WriteAllText(Path.Combine(host, "f"), "host\n");
            Assert.Equal("0:0", await UserNs.Owner(Path.Combine(host, "f")));
            using var b = new Bundle("sh", "-c", "stat -c owner=%u:%g /home/f; echo inside > /home/new && echo wrote; true");
            b.Spec.Mounts!.Add(new Mount { Destination = "/home", Type = "bind", Source = host, Options = ["rbind", readOnly ? "ro" : "rw"] });
            var r = await _rt.Run("run", "--bundle", b.Write(), readOnly ? "userbindro" : "userbindrw");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("owner=0:0", r.Stdout);
            if (readOnly)
            {
                Assert.DoesNotContain("wrote", r.Stdout);
                Assert.Contains("Read-only file system", r.Stderr);
                Assert.False(File.Exists(Path.Combine(host, "new")));
            }
            else
            {
                Assert.Contains("wrote", r.Stdout);
                Assert.Equal("0:0", await UserNs.Owner(Path.Combine(host, "new")));
            }
        }
        finally { Directory.Delete(host, true); }
    }

    [IntegrationFact]
    public async Task UserNamespace_SpecMappingIsHonoured()
    {
        using var b = new Bundle("cat", "/proc/self/uid_map", "/proc/self/gid_map");
        b.Spec.Linux!.Namespaces!.Add(new Namespace { Type = "user" });
        // Outside the host's pool (100000 up, 268435456 IDs): a mapping inside it is refused.
        b.Spec.Linux.UidMappings = [new IdMapping { ContainerId = 0, HostId = 320000000, Size = 65536 }];
        b.Spec.Linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = 320000000, Size = 65536 }];
        string output = await _rt.RunOk(b.Write(), "userspecmap");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => string.Join(' ', l.Split(' ', StringSplitOptions.RemoveEmptyEntries)));
        Assert.Equal(["0 320000000 65536", "0 320000000 65536"], lines);
    }

    public static TheoryData<string, uint[], string> BadMappings => new()
    {
        { "two ranges", [0, 300000, 65536, 65536, 400000, 65536], "exactly one contiguous range" },
        { "too small", [0, 300000, 1000], "at least 65536 IDs" },
        { "host root", [0, 0, 65536], "must not contain host ID 0" },
        { "container id 1", [1, 300000, 65536], "must start at container ID 0" },
    };

    [IntegrationTheory]
    [MemberData(nameof(BadMappings))]
    public async Task UserNamespace_InvalidSpecMappingIsRefused(string what, uint[] triples, string why)
    {
        using var b = new Bundle("true");
        b.Spec.Linux!.Namespaces!.Add(new Namespace { Type = "user" });
        var maps = triples.Chunk(3).Select(t => new IdMapping { ContainerId = t[0], HostId = t[1], Size = t[2] }).ToList();
        b.Spec.Linux.UidMappings = maps;
        b.Spec.Linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = 300000, Size = 65536 }];
        var r = await _rt.Run("run", "--bundle", b.Write(), "userbad");
        Assert.True(r.ExitCode != 0, $"{what}: accepted\n{r}");
        Assert.Contains("user namespace mapping refused", r.Stderr);
        Assert.Contains(why, r.Stderr);
        Assert.Empty(_rt.StateDirs());
        Assert.False(Directory.Exists(b.CgroupDir("memory")), $"{what}: cgroup left behind");
        Assert.False(Directory.Exists(UserNs.StagingDir(Path.Combine(_rt.StateRoot, "userbad"))));
    }

    [IntegrationFact]
    public async Task UserNamespace_PrivilegedSpecStaysContained()
    {
        string script =
            "ls /dev/vda >/dev/null 2>&1 && echo has-vda || echo no-vda; " +
            "test -c /dev/null && echo has-null; " +
            "ls /dev/console >/dev/null 2>&1 && echo has-console || echo no-console; " +
            "(echo 13 > /proc/sys/kernel/panic) 2>&1 && echo panic=$(cat /proc/sys/kernel/panic); " +
            "(echo /bin/x > /proc/sys/kernel/modprobe) 2>&1 && echo modprobe-written || echo modprobe-refused; " +
            "grep CapEff /proc/self/status; " +
            "ip link add v0 type veth && ip link show v0 >/dev/null && echo veth-ok"; // busybox ip ignores "peer name"
        using var b = new Bundle("sh", "-c", script);
        var all = CapabilityNames.All.ToList();
        b.Spec.Process!.Capabilities = new Capabilities { Bounding = all, Effective = all, Permitted = all };
        b.Spec.Linux!.MaskedPaths = [];
        b.Spec.Linux.ReadonlyPaths = [];
        b.Spec.Linux.Devices =
        [
            new Device { Type = "b", Path = "/dev/vda", Major = 254, Minor = 0, FileMode = 0x1b0 },
            new Device { Type = "c", Path = "/dev/console", Major = 5, Minor = 1, FileMode = 0x180 },
            new Device { Type = "c", Path = "/dev/null", Major = 1, Minor = 3, FileMode = 0x1b6 },
        ];
        string panicBefore = File.ReadAllText("/proc/sys/kernel/panic");
        string output = await _rt.RunOk(b.Write(), "userpriv");
        Assert.Contains("no-vda", output);
        Assert.Contains("has-null", output);
        Assert.Contains("no-console", output);
        // kernel.panic is emulated per container: the write lands in the container's own value, never the
        // host's; a global entry that is not emulated (kernel.modprobe) stays the host's and refuses writes.
        Assert.Contains("panic=13", output);
        Assert.Contains("modprobe-refused", output);
        Assert.Matches(@"(Permission denied|Read-only file system|Operation not permitted)", output);
        Assert.Contains($"CapEff:\t{UserNs.FullCapMask()}", output);
        Assert.Contains("veth-ok", output);
        Assert.Equal(panicBefore, File.ReadAllText("/proc/sys/kernel/panic"));
    }

    public void Dispose() => _rt.Dispose();
}
