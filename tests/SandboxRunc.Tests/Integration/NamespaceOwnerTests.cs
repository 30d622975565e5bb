using System.Diagnostics;
using System.Runtime.Versioning;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// Joining namespaces by path: those of another sandbox-runc container (owned by its user namespace) work;
/// ipc, pid, uts, mount and cgroup namespaces owned by the host's user namespace are refused up front by the
/// policy (they failed half-way, with EPERM at "mount mqueue"); a network namespace made on the host for
/// the container (podman, CNI, docker) stays allowed.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class NamespaceOwnerTests : IDisposable
{
    readonly RuntimeCli _rt = new();
    readonly List<Process> _helpers = [];

    /// <summary>A host process in namespaces of its own, still owned by the host's user namespace (as `unshare` makes them).</summary>
    int HostOwnedProcess()
    {
        var p = Process.Start(new ProcessStartInfo("unshare", ["--ipc", "--uts", "sleep", "60"]))!;
        _helpers.Add(p);
        // unshare execs sleep in the same process once the namespaces exist.
        for (int i = 0; i < 200 && File.ReadAllText($"/proc/{p.Id}/comm").Trim() != "sleep"; i++) Thread.Sleep(10);
        return p.Id;
    }

    [IntegrationTheory]
    [InlineData("ipc")]
    [InlineData("uts")]
    public async Task HostOwnedNamespaceIsRefusedUpFront(string type)
    {
        int pid = HostOwnedProcess();
        using var b = new Bundle("true");
        b.Spec.Linux!.Namespaces!.Single(n => n.Type == type).Path = $"/proc/{pid}/ns/{type}";
        var check = await _rt.Run("policy", "check", b.Write());
        Assert.StartsWith($"refused: can't join the {type} namespace /proc/{pid}/ns/{type}: it belongs to the host's user namespace", check.Stdout);

        var r = await _rt.Detached("create", "--bundle", b.Dir, "hostowned");
        BadInput.AssertCleanRefusal(r, "create", "sandbox-runc containers can only join namespaces of other sandbox-runc containers");
        await BadInput.AssertNothingLeft(_rt, "hostowned", b.Spec.Linux.CgroupsPath, "create");
    }

    [IntegrationFact]
    public async Task AnotherContainersNamespacesCanBeJoined()
    {
        using var a = new Bundle("sleep", "100");
        await _rt.Create(a.Write(), "owner");
        await _rt.Ok("start", "owner");
        int pid = await _rt.Pid("owner");
        using var b = new Bundle("sh", "-c", "readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts");
        b.Spec.Linux!.Namespaces!.Single(n => n.Type == "ipc").Path = $"/proc/{pid}/ns/ipc";
        b.Spec.Linux.Namespaces!.Single(n => n.Type == "uts").Path = $"/proc/{pid}/ns/uts";
        string output = await _rt.RunOk(b.Write(), "joiner");
        Assert.Contains(new FileInfo($"/proc/{pid}/ns/ipc").LinkTarget!, output);
        Assert.Contains(new FileInfo($"/proc/{pid}/ns/uts").LinkTarget!, output);
    }

    /// <summary>What podman/CNI and docker do: a network namespace made on the host (ip netns add) for the container.</summary>
    [IntegrationFact]
    public async Task HostMadeNetworkNamespaceStaysAllowed()
    {
        string name = "sr-owner-" + Guid.NewGuid().ToString("N")[..6];
        Assert.Equal(0, await Sh($"ip netns add {name}"));
        try
        {
            using var b = new Bundle("sh", "-c", "readlink /proc/self/ns/net");
            b.Spec.Linux!.Namespaces!.Single(n => n.Type == "network").Path = $"/run/netns/{name}";
            var check = await _rt.Run("policy", "check", b.Write());
            Assert.StartsWith("allowed", check.Stdout);
            string output = await _rt.RunOk(b.Dir, "hostnetns");
            Assert.Contains($"net:[{Inode($"/run/netns/{name}")}]", output);
        }
        finally { await Sh($"ip netns del {name}"); }
    }

    static ulong Inode(string path) => SandboxRunc.Interop.FileId.Of(path)!.Value.Inode;

    static async Task<int> Sh(string command)
    {
        var p = Process.Start("/bin/sh", ["-c", command])!;
        await p.WaitForExitAsync();
        return p.ExitCode;
    }

    public void Dispose()
    {
        foreach (var p in _helpers) { try { p.Kill(); p.WaitForExit(); } catch (InvalidOperationException) { } }
        _rt.Dispose();
    }
}
