using System.Runtime.Versioning;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// `create` fed malformed bundles: config.json that is garbage, empty, a directory or a FIFO; every invalid
/// fixture of spec-fixtures/configs and spec-fixtures/seccomp; a wrong JSON type in every field of a real
/// spec; and specs that parse but cannot run (they fail in the policy, the cgroup, nsexec, the init or a
/// hook). Each is refused as <see cref="BadInput.AssertCleanRefusal"/> says and leaves nothing behind.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class BadBundleTests : IDisposable
{
    readonly RuntimeCli _rt = new();
    const string Id = "bad-bundle";

    async Task CreateRefused(string bundleDir, string what, string? names, string? cgroupsPath = null)
    {
        var r = await _rt.Detached("create", "--bundle", bundleDir, Id);
        BadInput.AssertCleanRefusal(r, what, names);
        await BadInput.AssertNothingLeft(_rt, Id, cgroupsPath, what);
    }

    public static TheoryData<string, string, string> ConfigFiles() => new()
    {
        { "garbage bytes", "garbage", "invalid JSON" },
        { "empty file", "empty", "invalid JSON" },
        { "JSON null", "null", "the document is null" },
        { "JSON array", "array", "could not be converted to an object" },
        { "JSON string", "string", "could not be converted to an object" },
        { "deeply nested", "nested", "invalid JSON" },
        { "a directory", "directory", "is a directory" },
        { "a FIFO", "fifo", "is not a regular file" },
    };

    [IntegrationTheory]
    [MemberData(nameof(ConfigFiles))]
    public async Task ConfigJsonThatIsNoSpec(string what, string kind, string names)
    {
        using var b = new Bundle("true");
        string config = Path.Combine(b.Dir, "config.json");
        switch (kind)
        {
            case "garbage": File.WriteAllBytes(config, [0x7b, 0xff, 0xfe, 0x00, 0x22, 0x0a, 0x5d]); break;
            case "empty": File.WriteAllText(config, ""); break;
            case "null": File.WriteAllText(config, "null"); break;
            case "array": File.WriteAllText(config, "[]"); break;
            case "string": File.WriteAllText(config, "\"config\""); break;
            case "nested": File.WriteAllText(config, new string('[', 100_000)); break;
            case "directory": Directory.CreateDirectory(config); break;
            case "fifo": Assert.Equal(0, Mkfifo(config)); break;
        }
        await CreateRefused(b.Dir, what, names);
    }

    static int Mkfifo(string path) => System.Diagnostics.Process.Start("mkfifo", [path]) is { } p && p.WaitForExit(5000) ? p.ExitCode : -1;

    public static TheoryData<string> InvalidConfigFixtures() =>
        new(Directory.GetFiles(Path.Combine(Repo.Fixtures, "configs", "invalid"), "*.json").Select(Path.GetFileNameWithoutExtension).Order()!);

    /// <summary>Each hostile fixture as a bundle (its "rootfs" is the test rootfs): refused with the message its .expect names.</summary>
    [IntegrationTheory]
    [MemberData(nameof(InvalidConfigFixtures))]
    public async Task InvalidConfigFixture(string name)
    {
        string dir = Directory.CreateTempSubdirectory("sr-bad-fixture").FullName;
        try
        {
            File.Copy(Path.Combine(Repo.Fixtures, "configs", "invalid", name + ".json"), Path.Combine(dir, "config.json"));
            File.CreateSymbolicLink(Path.Combine(dir, "rootfs"), Repo.Rootfs);
            string expect = File.ReadAllText(Path.Combine(Repo.Fixtures, "configs", "invalid", name + ".expect")).Trim();
            await CreateRefused(dir, name, expect);
        }
        finally { Directory.Delete(dir, true); }
    }

    public static TheoryData<string> InvalidSeccompFixtures() =>
        new(Directory.GetFiles(Path.Combine(Repo.Fixtures, "seccomp", "invalid"), "*.json").Select(Path.GetFileNameWithoutExtension).Order()!);

    [IntegrationTheory]
    [MemberData(nameof(InvalidSeccompFixtures))]
    public async Task InvalidSeccompProfile(string name)
    {
        using var b = new Bundle("true");
        b.Spec.Linux!.Seccomp = JsonSerializer.Deserialize(File.ReadAllBytes(Path.Combine(Repo.Fixtures, "seccomp", "invalid", name + ".json")),
            OciJson.Default.Seccomp);
        await CreateRefused(b.Write(), name, "seccomp", b.Spec.Linux.CgroupsPath);
    }

    /// <summary>Every member of a real spec, one at a time, given a value of the wrong JSON type: refused naming that member.</summary>
    [IntegrationFact]
    public async Task WrongJsonTypeInEveryField()
    {
        using var b = new Bundle("true");
        b.Spec.Hooks = new Oci.Hooks { Prestart = [new Hook { Path = "/bin/true", Args = ["true"], Timeout = 5 }] };
        b.Spec.Linux!.Sysctl = new() { ["net.ipv4.ip_forward"] = "1" };
        b.Spec.Linux.Resources = new Resources { Memory = new MemoryResources { Limit = 100_000_000 }, Pids = new PidsResources { Limit = 100 } };
        b.Spec.Process!.Rlimits = [new Rlimit { Type = "RLIMIT_NOFILE", Soft = 1024, Hard = 1024 }];
        var doc = JsonNode.Parse(JsonSerializer.Serialize(b.Spec, OciJson.Default.Spec))!;
        var paths = Nodes(doc).Skip(1).Select(n => (Path: n.GetPath(), Node: n)).ToList();
        Assert.True(paths.Count > 80, $"only {paths.Count} fields");
        int refused = 0;
        foreach (var (path, node) in paths)
        {
            // A value of another JSON type: objects get an array, arrays and scalars an object, strings a number.
            JsonNode wrong = node switch
            {
                JsonObject => new JsonArray(1),
                JsonValue v when v.GetValueKind() == JsonValueKind.String => JsonValue.Create(7),
                _ => new JsonObject(),
            };
            var copy = JsonNode.Parse(doc.ToJsonString())!;
            Replace(copy, path, wrong);
            File.WriteAllText(Path.Combine(b.Dir, "config.json"), copy.ToJsonString());
            await CreateRefused(b.Dir, $"{path} = {wrong.ToJsonString()}", $"(field {path})", b.Spec.Linux.CgroupsPath);
            refused++;
        }
        Assert.Equal(paths.Count, refused);
    }

    static void Replace(JsonNode root, string path, JsonNode value)
    {
        var node = root.Root;
        foreach (var n in Nodes(root)) if (n.GetPath() == path) { node = n; break; }
        switch (node.Parent)
        {
            case JsonObject o: o[node.GetPropertyName()] = value; break;
            case JsonArray a: a[node.GetElementIndex()] = value; break;
        }
    }

    static IEnumerable<JsonNode> Nodes(JsonNode n)
    {
        yield return n;
        var children = n switch { JsonObject o => o.Select(kv => kv.Value), JsonArray a => a.AsEnumerable(), _ => [] };
        foreach (var c in children) if (c is not null) foreach (var d in Nodes(c)) yield return d;
    }

    /// <summary>(what, a fragment the error must name): specs that parse but cannot run, each failing at another stage.</summary>
    public static TheoryData<string, string> Unrunnable() => new()
    {
        { "hostname of 5000 bytes", "sethostname" },
        { "program missing", "/nonexistent-program" },
        { "bind source missing", "/nonexistent-sr-source" },
        { "rlimit soft above hard", "RLIMIT_NOFILE" },
        { "memory limit of 1 byte", "container init exited" },
        { "unknown seccomp action", "SCMP_ACT_BOGUS" },
        { "join missing namespace path", "/nonexistent-sr/ns" },
        { "join a regular file as namespace", "/etc/hostname" },
        { "join path of 5000 bytes", "namespace path too long" },
        { "prestart hook missing", "/nonexistent-sr-hook" },
        { "createRuntime hook fails", "exited with status 1" },
        { "unknown rootfsPropagation", "rootfsPropagation" },
        { "own mappings with host root", "host ID 0" },
        { "bad isolation annotation", "io.sandbox-runc.isolation" },
        { "rootfs is a file", "/etc/hostname" },
        { "terminal without console socket", "--console-socket" },
        { "systemd cgroupsPath", "cgroupsPath" },
        { "oomScoreAdj out of range", "oom_score_adj" },
        { "unknown mount type", "bogusfs" },
        { "bad tmpfs option", "size=abc" },
        { "bad device cgroup rule", "devices" },
        { "unknown sysctl", "kernel.bogus" },
        { "host-wide sysctl", "vm.swappiness" },
    };

    static void Make(Spec s, string what)
    {
        var linux = s.Linux!;
        switch (what)
        {
            case "hostname of 5000 bytes": s.Hostname = new string('h', 5000); break;
            case "program missing": s.Process!.Args = ["/nonexistent-program"]; break;
            case "bind source missing": s.Mounts!.Add(new Mount { Destination = "/mnt", Type = "bind", Source = "/nonexistent-sr-source", Options = ["bind"] }); break;
            case "rlimit soft above hard": s.Process!.Rlimits = [new Rlimit { Type = "RLIMIT_NOFILE", Soft = 2048, Hard = 1024 }]; break;
            case "memory limit of 1 byte": linux.Resources = new Resources { Memory = new MemoryResources { Limit = 1 } }; break;
            case "unknown seccomp action": linux.Seccomp = new Oci.Seccomp { DefaultAction = "SCMP_ACT_BOGUS" }; break;
            case "join missing namespace path": linux.Namespaces![0] = new Namespace { Type = "pid", Path = "/nonexistent-sr/ns" }; break;
            case "join a regular file as namespace": linux.Namespaces![0] = new Namespace { Type = "pid", Path = "/etc/hostname" }; break;
            case "join path of 5000 bytes": linux.Namespaces![0] = new Namespace { Type = "pid", Path = "/" + new string('n', 5000) }; break;
            case "prestart hook missing": s.Hooks = new Oci.Hooks { Prestart = [new Hook { Path = "/nonexistent-sr-hook" }] }; break;
            case "createRuntime hook fails": s.Hooks = new Oci.Hooks { CreateRuntime = [new Hook { Path = "/bin/false" }] }; break;
            case "unknown rootfsPropagation": linux.RootfsPropagation = "bogus"; break;
            case "own mappings with host root":
                linux.Namespaces!.Add(new Namespace { Type = "user" });
                linux.UidMappings = [new IdMapping { ContainerId = 0, HostId = 0, Size = 65536 }];
                linux.GidMappings = [new IdMapping { ContainerId = 0, HostId = 0, Size = 65536 }];
                break;
            case "bad isolation annotation": s.Annotations = new() { ["io.sandbox-runc.isolation"] = "bogus" }; break;
            case "rootfs is a file": s.Root!.Path = "/etc/hostname"; break;
            case "terminal without console socket": s.Process!.Terminal = true; break;
            case "systemd cgroupsPath": linux.CgroupsPath = "system.slice:sandbox-runc:bad"; break;
            case "oomScoreAdj out of range": s.Process!.OomScoreAdj = 99999; break;
            case "unknown mount type": s.Mounts!.Add(new Mount { Destination = "/mnt", Type = "bogusfs", Source = "x" }); break;
            case "bad tmpfs option": s.Mounts!.Add(new Mount { Destination = "/mnt", Type = "tmpfs", Source = "tmpfs", Options = ["size=abc"] }); break;
            case "bad device cgroup rule": linux.Resources = new Resources { Devices = [new DeviceCgroup { Allow = true, Type = "z", Access = "q" }] }; break;
            case "unknown sysctl": linux.Sysctl = new() { ["kernel.bogus"] = "1" }; break;
            case "host-wide sysctl": linux.Sysctl = new() { ["vm.swappiness"] = "1" }; break;
            default: throw new ArgumentException(what);
        }
    }

    [IntegrationTheory]
    [MemberData(nameof(Unrunnable))]
    public async Task SpecThatCannotRun(string what, string names)
    {
        using var b = new Bundle("true");
        Make(b.Spec, what);
        string? cgroups = b.Spec.Linux!.CgroupsPath is { } p && p.StartsWith('/') ? p : null;
        await CreateRefused(b.Write(), what, names, cgroups);
    }

    public void Dispose() => _rt.Dispose();
}
