using System.Text.Json.Nodes;
using SandboxRunc.Container;
using SandboxRunc.Install;
using Xunit;

namespace SandboxRunc.Tests.Install;

/// <summary>`sandbox-runc install` / `uninstall` on temp files (no root, no reload of any daemon).</summary>
public sealed class EngineConfigTests : IDisposable
{
    const string Bin = "/usr/local/bin/sandbox-runc";
    readonly string _dir = Path.Combine(Path.GetTempPath(), "sr-install-" + Guid.NewGuid().ToString("N")[..8]);

    public EngineConfigTests() => Directory.CreateDirectory(_dir);
    public void Dispose() { try { Directory.Delete(_dir, true); } catch { } }

    string DaemonJsonPath => Path.Combine(_dir, "docker", "daemon.json");
    string TomlPath => Path.Combine(_dir, "containerd", "config.toml");

    string Run(bool uninstall, bool setDefault = false, bool containerd = false, bool docker = true)
    {
        var w = new StringWriter();
        EngineConfig.Run(new EngineConfigOptions(uninstall, Bin, setDefault, docker, containerd, DaemonJsonPath, TomlPath, Reload: false), w);
        return w.ToString();
    }

    const string Unusual = """
        {
          "log-driver": "json-file",
          "log-opts": { "max-size": "10m", "labels": "a,b" },
          "registry-mirrors": ["https://mirror.example/<path>+x"],
          "default-ulimits": { "nofile": { "Name": "nofile", "Hard": 64000, "Soft": 1.0e3 } },
          "weird key \u00e9": [null, true, false, -0.50, {"deep": [[]]}],
          "runtimes": { "other": { "path": "/opt/other", "runtimeArgs": ["--x"] } },
          "empty": {}
        }
        """;

    static void AssertSameExcept(string before, string after, params string[] ignoredKeys)
    {
        var a = JsonNode.Parse(before)!.AsObject();
        var b = JsonNode.Parse(after)!.AsObject();
        foreach (var k in ignoredKeys) { a.Remove(k); b.Remove(k); }
        Assert.Equal(a.ToJsonString(), b.ToJsonString());
    }

    [Fact]
    public void Install_CreatesMissingFileAndDirectory()
    {
        string out1 = Run(uninstall: false);
        Assert.Contains("daemon.json: added runtimes.sandbox-runc", out1);
        var doc = JsonNode.Parse(File.ReadAllText(DaemonJsonPath))!;
        Assert.Equal(Bin, (string?)doc["runtimes"]!["sandbox-runc"]!["path"]);
        Assert.Null(doc["default-runtime"]);
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(DaemonJsonPath)!, ".*")); // no temp file left
    }

    /// <summary>One line about the reload: what was done with dockerd, or that --no-reload left it alone, never both.</summary>
    [Fact]
    public void Install_SaysEitherWhatTheReloadDidOrThatThereWasNone()
    {
        var w = new StringWriter();
        EngineConfig.Run(new EngineConfigOptions(false, Bin, DockerConfig: DaemonJsonPath, Reload: true,
            DockerPidFile: Path.Combine(_dir, "no-such-docker.pid")), w);
        Assert.Contains("dockerd: not running (no ", w.ToString());
        Assert.DoesNotContain("--no-reload", w.ToString());

        File.Delete(DaemonJsonPath);
        string noReload = Run(uninstall: false);
        Assert.Contains("not reloaded (--no-reload)", noReload);
        Assert.DoesNotContain("not running", noReload);
    }

    [Fact]
    public void Install_KeepsEveryOtherKeyAsWritten()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, Unusual);
        Run(uninstall: false);
        string after = File.ReadAllText(DaemonJsonPath);
        // Values keep their spelling (1.0e3, -0.50, '+', '<', é), keys their order.
        Assert.Contains("1.0e3", after);
        Assert.Contains("-0.50", after);
        Assert.Contains("https://mirror.example/<path>+x", after);
        Assert.Contains("weird key é", after);
        var doc = JsonNode.Parse(after)!.AsObject();
        Assert.Equal(["log-driver", "log-opts", "registry-mirrors", "default-ulimits", "weird key é", "runtimes", "empty"],
            doc.Select(kv => kv.Key).ToArray());
        Assert.Equal("/opt/other", (string?)doc["runtimes"]!["other"]!["path"]);
        Assert.Equal(Bin, (string?)doc["runtimes"]!["sandbox-runc"]!["path"]);
        var orig = JsonNode.Parse(Unusual)!.AsObject();
        ((JsonObject)orig["runtimes"]!)["sandbox-runc"] = new JsonObject { ["path"] = Bin };
        Assert.True(JsonNode.DeepEquals(orig, doc), after);
    }

    [Fact]
    public void Install_SecondRunIsNoChangeAndLeavesTheFileAlone()
    {
        Run(uninstall: false, setDefault: true);
        var before = File.GetLastWriteTimeUtc(DaemonJsonPath);
        string text = File.ReadAllText(DaemonJsonPath);
        Thread.Sleep(20);
        string out2 = Run(uninstall: false, setDefault: true);
        Assert.Contains("daemon.json: no change", out2);
        Assert.DoesNotContain("added", out2);
        Assert.Equal(text, File.ReadAllText(DaemonJsonPath));
        Assert.Equal(before, File.GetLastWriteTimeUtc(DaemonJsonPath));
    }

    [Fact]
    public void Install_UpdatesAStalePathAndKeepsTheEntrysOtherKeys()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, """{"runtimes":{"sandbox-runc":{"path":"/old/sandbox-runc","runtimeArgs":["--debug"]}}}""");
        string o = Run(uninstall: false);
        Assert.Contains("changed runtimes.sandbox-runc.path from /old/sandbox-runc to " + Bin, o);
        var doc = JsonNode.Parse(File.ReadAllText(DaemonJsonPath))!;
        Assert.Equal("--debug", (string?)doc["runtimes"]!["sandbox-runc"]!["runtimeArgs"]![0]);
    }

    [Fact]
    public void Default_SetsDefaultRuntime_UninstallRemovesItOnlyWhenItIsOurs()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, """{"default-runtime":"runc","debug":true}""");
        string o = Run(uninstall: false, setDefault: true);
        Assert.Contains("changed default-runtime from runc to sandbox-runc", o);
        Assert.Equal("sandbox-runc", (string?)JsonNode.Parse(File.ReadAllText(DaemonJsonPath))!["default-runtime"]);
        string u = Run(uninstall: true);
        Assert.Contains("removed default-runtime", u);
        Assert.Contains("removed runtimes.sandbox-runc", u);
        var doc = JsonNode.Parse(File.ReadAllText(DaemonJsonPath))!.AsObject();
        Assert.Null(doc["default-runtime"]);
        Assert.Equal(true, (bool?)doc["debug"]);

        // Someone else's default stays.
        File.WriteAllText(DaemonJsonPath, """{"default-runtime":"crun","runtimes":{"crun":{"path":"/usr/bin/crun"}}}""");
        Run(uninstall: false);
        Run(uninstall: true);
        Assert.Equal("crun", (string?)JsonNode.Parse(File.ReadAllText(DaemonJsonPath))!["default-runtime"]);
    }

    [Fact]
    public void Uninstall_RestoresTheOriginalDocument()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, Unusual);
        Run(uninstall: false, setDefault: true);
        Run(uninstall: true);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(Unusual), JsonNode.Parse(File.ReadAllText(DaemonJsonPath))));

        // A file without "runtimes" gets no empty "runtimes" back.
        File.WriteAllText(DaemonJsonPath, """{"iptables":false}""");
        Run(uninstall: false);
        Run(uninstall: true);
        AssertSameExcept("""{"iptables":false}""", File.ReadAllText(DaemonJsonPath));
        Assert.DoesNotContain("runtimes", File.ReadAllText(DaemonJsonPath));
        Assert.Contains("no change", Run(uninstall: true));
    }

    [Theory]
    [InlineData("{\n  \"debug\": true,\n  \"runtimes\": {\n}", 4)]            // unterminated
    [InlineData("{\n  \"debug\": true,\n}\n", 3)]                              // trailing comma (dockerd refuses it too)
    [InlineData("{\n  // comment\n  \"debug\": true\n}\n", 2)]
    [InlineData("{\"a\": 1,\n \"a\": 2}", 2)]                                  // duplicate key
    public void MalformedJson_IsRefusedWithFileAndLine_FileUntouched(string text, int line)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, text);
        var e = Assert.Throws<RuntimeException>(() => Run(uninstall: false));
        Assert.Contains(DaemonJsonPath, e.Message);
        Assert.Contains($"line {line}", e.Message);
        Assert.Contains("left unchanged", e.Message);
        Assert.Equal(text, File.ReadAllText(DaemonJsonPath));
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(DaemonJsonPath)!));
        Assert.Throws<RuntimeException>(() => Run(uninstall: true));
        Assert.Equal(text, File.ReadAllText(DaemonJsonPath));
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("{\"runtimes\": []}")]
    [InlineData("{\"runtimes\": {\"sandbox-runc\": \"/x\"}}")]
    [InlineData("{\"default-runtime\": 3}")]
    public void WrongShapes_AreRefused_FileUntouched(string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, text);
        Assert.Throws<RuntimeException>(() => Run(uninstall: false, setDefault: true));
        Assert.Equal(text, File.ReadAllText(DaemonJsonPath));
    }

    [Fact]
    public void MalformedDaemonJson_LeavesContainerdConfigUntouchedToo()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.WriteAllText(DaemonJsonPath, "{");
        Assert.Throws<RuntimeException>(() => Run(uninstall: false, containerd: true));
        Assert.False(File.Exists(TomlPath));
    }

    [Fact]
    public void SymlinkedDaemonJson_IsEditedWhereItPoints()
    {
        string real = Path.Combine(_dir, "real.json");
        File.WriteAllText(real, "{}");
        Directory.CreateDirectory(Path.GetDirectoryName(DaemonJsonPath)!);
        File.CreateSymbolicLink(DaemonJsonPath, real);
        Run(uninstall: false);
        Assert.NotNull(new FileInfo(DaemonJsonPath).LinkTarget);
        Assert.Contains("sandbox-runc", File.ReadAllText(real));
    }

    const string Toml = """
        version = 2
        root = "/var/lib/containerd"

        [plugins]
          [plugins."io.containerd.grpc.v1.cri"]
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"

        """;

    [Fact]
    public void Toml_AddIsIdempotent_RemoveRestoresExactly()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(TomlPath)!);
        File.WriteAllText(TomlPath, Toml);
        string o1 = Run(uninstall: false, containerd: true, docker: false);
        Assert.Contains("config.toml: added the sandbox-runc runtime", o1);
        Assert.Contains("restart containerd", o1);
        Assert.False(File.Exists(DaemonJsonPath));
        string after = File.ReadAllText(TomlPath);
        Assert.StartsWith(Toml, after);
        Assert.Contains("\n# sandbox-runc: begin", after);
        Assert.Contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", after);
        Assert.Contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc.options]\n  BinaryName = \"" + Bin + "\"\n# sandbox-runc: end\n", after);

        string o2 = Run(uninstall: false, containerd: true, docker: false);
        Assert.Contains("config.toml: no change", o2);
        Assert.DoesNotContain("restart", o2);
        Assert.Equal(after, File.ReadAllText(TomlPath));

        // The admin adds settings after our block: uninstall removes exactly the block.
        File.AppendAllText(TomlPath, "[grpc]\n  address = \"/run/x.sock\"\n");
        Assert.Contains("removed the sandbox-runc runtime block", Run(uninstall: true, containerd: true, docker: false));
        Assert.Equal(Toml + "[grpc]\n  address = \"/run/x.sock\"\n", File.ReadAllText(TomlPath));
        Assert.Contains("config.toml: no change", Run(uninstall: true, containerd: true, docker: false));
    }

    [Fact]
    public void Toml_StaleBlockIsReplacedInPlace()
    {
        string stale = Toml + ContainerdToml.Block("sandbox-runc", "/old/path") + "[grpc]\n";
        var e = ContainerdToml.Install(stale, "c.toml", "sandbox-runc", Bin);
        Assert.Equal(Toml + ContainerdToml.Block("sandbox-runc", Bin) + "[grpc]\n", e.NewText);
        Assert.Contains("updated", e.Changes[0]);
    }

    [Fact]
    public void Toml_MissingFileGetsVersion2_NoTrailingNewlineIsHandled()
    {
        var e = ContainerdToml.Install(null, "c.toml", "sandbox-runc", Bin);
        Assert.StartsWith("version = 2\n\n# sandbox-runc: begin", e.NewText);
        var e2 = ContainerdToml.Install("version = 2", "c.toml", "sandbox-runc", Bin);
        Assert.StartsWith("version = 2\n# sandbox-runc: begin", e2.NewText);
    }

    [Theory]
    [InlineData("version = 2\n# sandbox-runc: begin\n[x]\n")]                                           // no end marker
    [InlineData("version = 2\n# sandbox-runc: end\n")]                                                  // no begin marker
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandbox-runc]\n")]          // defined by hand
    [InlineData("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"sandbox-runc\".options]\n")]
    public void Toml_AmbiguousFilesAreRefused(string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(TomlPath)!);
        File.WriteAllText(TomlPath, text);
        Assert.Throws<RuntimeException>(() => Run(uninstall: false, containerd: true, docker: false));
        Assert.Equal(text, File.ReadAllText(TomlPath));
    }
}
