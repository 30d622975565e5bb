using System.Text;
using System.Text.Json.Nodes;
using SandboxRunc.Cli;
using SandboxRunc.Interop;
using SandboxRunc.Oci;
using SandboxRunc.Policy;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// The isolation policy as a table: spec-fixtures/policy/NAME.json holds a small spec and the facts
/// (container id, image name/ID/label, tag store, image parents and layers, symlinks, same-inode paths,
/// host namespace paths, paths of namespaces owned by the host's user namespace (hostOwnedNamespaces), sysctls
/// the host lacks (sysctlsMissing), a settings file from settings/ with its owner and mode); NAME.expect holds
/// "allowed" or the exact refusal on its first line, and lines the `policy check` report must contain
/// after it. Everything runs through the pure IsolationPolicy.Decide with fake facts: no root, no host paths.
/// </summary>
public class PolicyFixtureTests
{
    const string SettingsPath = "/etc/sandbox-runc/admin-settings.json";
    static string Dir => Path.Combine(Repo.Fixtures, "policy");

    static List<string> FixtureNames() =>
        Directory.GetFiles(Dir, "*.json").Order().Select(f => Path.GetFileNameWithoutExtension(f)).ToList();

    public static TheoryData<string> Names() => new(FixtureNames());

    [Fact]
    public void PolicyFixtures_AtLeastFortyWithExpectations()
    {
        var names = FixtureNames();
        Assert.True(names.Count >= 40, $"{names.Count} fixtures");
        Assert.All(names, n => Assert.True(File.Exists(Path.Combine(Dir, n + ".expect")), $"{n}.expect missing"));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void PolicyFixture(string name)
    {
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, name + ".json")))!.AsObject();
        var expect = File.ReadAllLines(Path.Combine(Dir, name + ".expect")).Where(l => l.Length > 0).ToList();
        var (outcome, report) = Evaluate(doc);
        Assert.Equal(expect[0], outcome);
        foreach (var line in expect.Skip(1))
            Assert.True(report.Any(r => r.StartsWith(line)), $"report lacks \"{line}\":\n{string.Join('\n', report)}");
    }

    static (string Outcome, List<string> Report) Evaluate(JsonObject doc)
    {
        var spec = SpecLoader.Parse(Encoding.UTF8.GetBytes(doc["spec"]!.ToJsonString()), "fixture");
        spec.Linux ??= new Linux();
        spec.Linux.Namespaces ??= new[] { "pid", "ipc", "uts", "mount", "network" }.Select(t => new Namespace { Type = t }).ToList();
        try
        {
            var settings = Settings(doc);
            var decision = IsolationPolicy.Decide(spec, settings, Facts(doc));
            return ("allowed", PolicyCheck.Describe(spec, decision).ToList());
        }
        catch (PolicyException e)
        {
            return (e.Message, new List<string>());
        }
    }

    static AdminSettings Settings(JsonObject doc)
    {
        if (doc["settings"]?.GetValue<string>() is not { } file) return AdminSettings.Defaults($"{SettingsPath} (missing: defaults)");
        uint owner = doc["settingsOwner"]?.GetValue<uint>() ?? 0;
        uint mode = Convert.ToUInt32(doc["settingsMode"]?.GetValue<string>() ?? "0644", 8);
        AdminSettings.CheckOwnership(SettingsPath, owner, mode);
        return AdminSettings.Parse(File.ReadAllText(Path.Combine(Dir, "settings", file)), SettingsPath);
    }

    static Dictionary<string, string> Map(JsonNode? n) =>
        n is JsonObject o ? o.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<string>()) : [];

    public static EngineFacts Facts(JsonObject doc)
    {
        var links = new Dictionary<string, string>(Map(doc["symlinks"])) { ["/var/run"] = "/run" };
        string Real(string path) => FakeRealPath.Resolve(path, links);
        var sameInode = Map(doc["sameInode"]).ToDictionary(kv => Real(kv.Key), kv => Real(kv.Value));
        FileId? Identify(string path)
        {
            string real = Real(path);
            real = sameInode.GetValueOrDefault(real, real);
            return new FileId(1, (ulong)real.GetHashCode() & 0xffffffff);
        }
        var hostNs = doc["hostNamespaces"] is JsonArray a ? a.Select(x => x!.GetValue<string>()).ToHashSet() : [];
        var hostOwned = doc["hostOwnedNamespaces"] is JsonArray ho ? ho.Select(x => x!.GetValue<string>()).ToHashSet() : [];
        var missingSysctls = doc["sysctlsMissing"] is JsonArray sm ? sm.Select(x => x!.GetValue<string>()).ToHashSet() : [];
        var image = doc["image"] is JsonObject i
            ? new ContainerImage(i["name"]?.GetValue<string>(), i["id"]?.GetValue<string>(),
                (i["label"]?.GetValue<string>() is { } label ? new Dictionary<string, string> { [ContainerSettings.IsolationKey] = label } : [])
                .Concat(Map(i["labels"])).ToDictionary())
            : null;
        var tags = EngineFactsGatherer.ParseTags(new JsonObject { ["Repositories"] = new JsonObject { ["all"] = doc["tags"]?.DeepClone() } });
        var images = doc["images"] is JsonObject im
            ? im.ToDictionary(kv => kv.Key, kv => new StoredImage(kv.Value!["parent"]?.GetValue<string>(),
                kv.Value["layers"] is JsonArray l ? l.Select(x => x!.GetValue<string>()).ToList() : []))
            : [];
        // The fake host's mount table: one ext4 root, the kernel filesystems, /run on tmpfs, plus the
        // fixture's own lines ("mounts": mountinfo lines, e.g. a volume's _data bound from /etc).
        var table = SandboxRunc.Seccomp.Notify.MountInfo.Parse(DefaultMounts +
            (doc["mounts"] is JsonArray extra ? "\n" + string.Join('\n', extra.Select(x => x!.GetValue<string>())) : ""));
        var missing = doc["missing"] is JsonArray gone ? gone.Select(x => Real(x!.GetValue<string>())).ToHashSet() : [];
        FsPlace? PlaceOf(string path)
        {
            string real = Real(path);
            return missing.Contains(real) ? null : HostPlaces.Place(real, null, table);
        }
        var spec = doc["spec"] is JsonObject so ? SpecLoader.Parse(Encoding.UTF8.GetBytes(so.ToJsonString()), "fixture") : new Spec();
        return new EngineFacts(
            doc["containerId"]?.GetValue<string>() ?? "c0ffee",
            p => p.StartsWith("/proc/1/ns/") || hostNs.Contains(p),
            Real, Identify,
            ["/run/docker.sock"], "/var/lib/docker", "/usr/local/bin/sandbox-runc", "/run/sandbox-runc",
            image, tags, id => images.GetValueOrDefault(id),
            table, PlaceOf, EngineFactsGatherer.DescribeBinds(spec, Real, p => Identify(p), table))
        {
            OwnedByHostUserNamespace = hostOwned.Contains,
            SysctlExists = key => !missingSysctls.Contains(key),
            Rootfs = doc["rootfs"]?.GetValue<string>() is { } rootfs ? (rootfs, Real(rootfs), PlaceOf(rootfs)) : null,
        };
    }

    const string DefaultMounts = """
        20 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
        21 20 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw
        22 20 0:22 / /sys rw,nosuid,nodev,noexec - sysfs sysfs rw
        23 20 0:6 / /dev rw,nosuid - devtmpfs udev rw
        24 20 0:25 / /run rw,nosuid,nodev - tmpfs tmpfs rw
        """;
}

/// <summary>realpath(3) over a table of symlinks instead of the host: components, ".", "..", trailing slashes.</summary>
public static class FakeRealPath
{
    public static string Resolve(string path, IReadOnlyDictionary<string, string> links)
    {
        var parts = new List<string>();
        var todo = new Stack<string>(path.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        int hops = 0;
        while (todo.Count > 0)
        {
            string c = todo.Pop();
            if (c == ".") continue;
            if (c == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            string candidate = "/" + string.Join('/', parts.Append(c));
            if (links.TryGetValue(candidate, out var target))
            {
                if (++hops > 40) throw new InvalidOperationException("symlink loop");
                if (target.StartsWith('/')) parts.Clear();
                foreach (var t in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse()) todo.Push(t);
                continue;
            }
            parts.Add(c);
        }
        return "/" + string.Join('/', parts);
    }
}
