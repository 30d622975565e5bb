using System.Text.Json;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

using Oci = SandboxRunc.Oci;

/// <summary>OCI hooks: every phase gets the state on stdin; failures and timeouts abort create and leave nothing.</summary>
public sealed class HookTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    /// <summary>A script that saves its stdin to DIR/&lt;phase&gt;.json (DIR as seen where the hook runs).</summary>
    static string RecorderScript(string dir) => $"#!/bin/sh\ncat > {dir}/$1.json\n";

    static void WriteExecutable(string path, string text)
    {
        File.WriteAllText(path, text);
        File.SetUnixFileMode(path, (UnixFileMode)0x1ed /* 0755 */);
    }

    static Hook Recorder(string script, string phase) => new() { Path = script, Args = [script, phase] };

    [IntegrationFact]
    public async Task EveryPhaseGetsTheState()
    {
        using var b = new Bundle("sh", "-c", "sleep 0.2").WritableRootfs();
        string outDir = Path.Combine(b.Dir, "hooks-out");
        Directory.CreateDirectory(outDir);
        // createContainer runs in the container's namespaces, as container root: an unprivileged host user.
        File.SetUnixFileMode(outDir, (UnixFileMode)0x1ff);
        string hostScript = Path.Combine(b.Dir, "record.sh");
        WriteExecutable(hostScript, RecorderScript(outDir));
        // startContainer runs inside the container: its script and output dir are in the rootfs.
        WriteExecutable(Path.Combine(b.Dir, "rootfs", "record.sh"), RecorderScript("/tmp"));
        b.Spec.Hooks = new Oci.Hooks
        {
            Prestart = [Recorder(hostScript, "prestart")],
            CreateRuntime = [Recorder(hostScript, "createRuntime")],
            CreateContainer = [Recorder(hostScript, "createContainer")],
            StartContainer = [Recorder("/record.sh", "startContainer")],
            Poststart = [Recorder(hostScript, "poststart")],
            Poststop = [Recorder(hostScript, "poststop")],
        };
        string bundle = b.Write();
        await _rt.Create(bundle, "hooks1");
        int pid = await _rt.Pid("hooks1");
        await _rt.Ok("start", "hooks1");
        await _rt.WaitStatus("hooks1", "stopped");
        await _rt.Ok("delete", "hooks1");

        var files = new Dictionary<string, string>
        {
            ["prestart"] = Path.Combine(outDir, "prestart.json"),
            ["createRuntime"] = Path.Combine(outDir, "createRuntime.json"),
            ["createContainer"] = Path.Combine(outDir, "createContainer.json"),
            ["startContainer"] = Path.Combine(b.Dir, "rootfs", "tmp", "startContainer.json"),
            ["poststart"] = Path.Combine(outDir, "poststart.json"),
            ["poststop"] = Path.Combine(outDir, "poststop.json"),
        };
        foreach (var (phase, file) in files)
        {
            Assert.True(File.Exists(file), $"the {phase} hook did not run (no {file})");
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            var s = doc.RootElement;
            Assert.Equal("hooks1", s.GetProperty("id").GetString());
            Assert.Equal(bundle, s.GetProperty("bundle").GetString());
            Assert.False(string.IsNullOrEmpty(s.GetProperty("ociVersion").GetString()), phase);
            Assert.False(string.IsNullOrEmpty(s.GetProperty("status").GetString()), phase);
            if (phase != "poststop") Assert.Equal(pid, s.GetProperty("pid").GetInt32());
        }
        Assert.Equal("running", Status(files["poststart"]));
        Assert.Equal("stopped", Status(files["poststop"]));
        Assert.Equal("creating", Status(files["createRuntime"]));
    }

    static string Status(string file)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        return doc.RootElement.GetProperty("status").GetString()!;
    }

    [Trait("Category", "CgroupV2")]
    [IntegrationFact]
    public async Task FailingCreateRuntimeHookAbortsCreateAndLeavesNothing()
    {
        using var b = new Bundle("sleep", "100");
        string script = Path.Combine(b.Dir, "fail.sh");
        WriteExecutable(script, $"#!/bin/sh\ncat > {b.Dir}/state.json\necho hook-says-no >&2\nexit 4\n");
        b.Spec.Hooks = new Oci.Hooks { CreateRuntime = [new Hook { Path = script }] };
        var r = await _rt.Detached("create", "--bundle", b.Write(), "hookfail");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("createRuntime", r.Stderr);
        Assert.Contains(script, r.Stderr);
        await AssertNothingLeft(b, Path.Combine(b.Dir, "state.json"));
    }

    [IntegrationFact]
    public async Task HookOverItsTimeoutIsKilled()
    {
        using var b = new Bundle("sleep", "100");
        string script = Path.Combine(b.Dir, "slow.sh");
        string hookPidFile = Path.Combine(b.Dir, "hook.pid");
        // The hook would sleep far longer than the command's hang bound: a create that waited for it fails there.
        WriteExecutable(script, $"#!/bin/sh\ncat > {b.Dir}/state.json\necho $$ > {hookPidFile}\nexec sleep 600\n");
        b.Spec.Hooks = new Oci.Hooks { Prestart = [new Hook { Path = script, Timeout = 1 }] };
        var r = await _rt.Detached("create", "--bundle", b.Write(), "hookslow");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("timed out", r.Stderr);
        int hook = int.Parse(File.ReadAllText(hookPidFile).Trim());
        Assert.True(await Procs.WaitGone(hook), $"the hook survived its timeout: {Procs.Describe(hook)}");
        await AssertNothingLeft(b, Path.Combine(b.Dir, "state.json"));
    }

    async Task AssertNothingLeft(Bundle b, string stateFile)
    {
        Assert.Empty(_rt.StateDirs());
        foreach (var controller in new[] { "memory", "pids", "cpu", "devices" })
            Assert.False(Directory.Exists(b.CgroupDir(controller)), $"cgroup {b.CgroupDir(controller)} left behind");
        using var doc = JsonDocument.Parse(File.ReadAllText(stateFile));
        int pid = doc.RootElement.GetProperty("pid").GetInt32();
        Assert.True(pid > 0);
        Assert.True(await Procs.WaitGone(pid), $"the init {pid} was left running");
    }

    public void Dispose() => _rt.Dispose();
}
