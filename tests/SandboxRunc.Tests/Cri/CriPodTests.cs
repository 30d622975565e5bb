using System.Net.Sockets;
using Grpc.Net.Client;
using SandboxRunc.Tests.Engines;
using SandboxRunc.Tests.TestSupport;
using Xunit;
using V1 = SandboxRunc.Tests.Cri.V1;
using static SandboxRunc.Tests.Engines.EngineShell;

namespace SandboxRunc.Tests.Cri;

/// <summary>
/// A standalone containerd with its CRI plugin on (own root, state, socket and CNI config under a temp dir), the
/// RuntimeClass handler block written by `sandbox-runc install --containerd`, and what a kubelet would need
/// that this machine has no registry for: a sandbox ("pause") image, made here as the test image with a
/// `sleep` for its command, and the test image, both imported into CRI's namespace k8s.io.
///
/// Pod networking: containerd's CRI refuses a pod without an address on eth0 from CNI, and a pod on the
/// node's network shares the host's network namespace, which this runtime refuses: eth0 comes from a CNI
/// plugin of the test's own (<see cref="PodInterfacePlugin"/>).
/// </summary>
public sealed class CriContainerd : IAsyncLifetime
{
    public const string PauseImage = "docker.io/library/srt-cri-pause:latest";
    public const string Image = "docker.io/library/sandbox-runc-test:latest";
    public string Dir { get; } = "/tmp/cri-test-" + Guid.NewGuid().ToString("N")[..8];
    public string Socket => Path.Combine(Dir, "containerd.sock");
    /// <summary>Why the CRI tests cannot run here, or null.</summary>
    public string? Missing { get; private set; }
    System.Diagnostics.Process? _daemon;
    readonly System.Text.StringBuilder _log = new();

    public string Log { get { lock (_log) return _log.ToString(); } }

    public async Task InitializeAsync()
    {
        if (Environment.UserName != "root") { Missing = "needs root"; return; }
        if (!File.Exists("/usr/lib/cni/loopback"))
        { Missing = "needs the CNI plugin loopback in /usr/lib/cni (apt-get install containernetworking-plugins)"; return; }
        // CNI: loopback, and eth0 from a plugin of the test's own (see PodInterfacePlugin).
        string bin = Path.Combine(Dir, "cni-bin");
        Directory.CreateDirectory(bin);
        File.CreateSymbolicLink(Path.Combine(bin, "loopback"), "/usr/lib/cni/loopback");
        File.WriteAllText(Path.Combine(bin, "srt-eth0"), PodInterfacePlugin);
        File.SetUnixFileMode(Path.Combine(bin, "srt-eth0"), (UnixFileMode)0x1ED);
        Directory.CreateDirectory(Path.Combine(Dir, "cni"));
        File.WriteAllText(Path.Combine(Dir, "cni", "10-srt.conflist"),
            """{"cniVersion": "0.4.0", "name": "srt-cri", "plugins": [{"type": "srt-eth0"}]}""");
        string config = Path.Combine(Dir, "config.toml");
        File.WriteAllText(config, $"""
            version = 2
            root = "{Dir}/root"
            state = "{Dir}/state"

            [grpc]
              address = "{Socket}"
            [ttrpc]
              address = "{Socket}.ttrpc"
            [debug]
              address = "{Dir}/debug.sock"
            [plugins]
              [plugins."io.containerd.internal.v1.opt"]
                path = "{Dir}/opt"
              [plugins."io.containerd.grpc.v1.cri"]
                sandbox_image = "{PauseImage}"
                # CRI sets a sandbox's oom_score_adj to -998, which needs CAP_SYS_RESOURCE (absent from some hosts'
                # bounding set, and then runc fails too): keep it at containerd's own.
                restrict_oom_score_adj = true
                [plugins."io.containerd.grpc.v1.cri".cni]
                  bin_dir = "{bin}"
                  conf_dir = "{Dir}/cni"

            """);
        // The runtime's own installer adds the RuntimeClass handler "sandbox-runc" (runc v2 shim, BinaryName).
        await Ok(Runtime, ["install", "--no-docker", "--containerd", "--containerd-config", config, "--path", Runtime]);
        var psi = new System.Diagnostics.ProcessStartInfo("containerd", ["--config", config, "--log-level", "warn"])
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        _daemon = System.Diagnostics.Process.Start(psi)!;
        _daemon.ErrorDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _daemon.OutputDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _daemon.BeginErrorReadLine();
        _daemon.BeginOutputReadLine();
        var daemon = _daemon;
        await Eventually.True(async () =>
            daemon.HasExited ? throw new Xunit.Sdk.XunitException($"containerd exited with {daemon.ExitCode}: {Log}")
                : File.Exists(Socket) && (await Ctr("version")).ExitCode == 0,
            $"containerd to answer on {Socket}", Patience.Command);
        var plugins = await Ctr("plugins", "ls");
        if (!plugins.Stdout.Split('\n').Any(l => l.Contains("io.containerd.grpc.v1") && l.Contains(" cri ") && l.TrimEnd().EndsWith("ok")))
        {
            Missing = $"containerd's CRI plugin did not load:\n{plugins.Stdout}\n{Log}";
            return;
        }

        // The sandbox image: the test image, its command a long sleep (committed from a container that never starts).
        string holder = "srt-cri-pause-" + Path.GetFileName(Dir);
        await Ok("docker", ["create", "--name", holder, Docker.DockerCli.Image]);
        try
        {
            await Ok("docker", ["commit", "--change", "CMD [\"sleep\", \"2147483647\"]", holder, "srt-cri-pause:latest"]);
            string tar = Path.Combine(Dir, "images.tar");
            await Ok("docker", ["save", "-o", tar, "srt-cri-pause:latest", Docker.DockerCli.Image]);
            await Ok("ctr", ["-a", Socket, "-n", "k8s.io", "images", "import", tar], 120);
            File.Delete(tar);
        }
        finally
        {
            await Run("docker", ["rm", "-f", holder]);
            await Run("docker", ["rmi", "srt-cri-pause:latest"]);
        }
    }

    /// <summary>
    /// A CNI plugin (CNI 0.4.0, as a script): eth0 in the pod's network namespace is a bridge device with no port
    /// and the address 198.51.100.77/32. The kernel here has no veth, macvlan, ipvlan or dummy links (no pod
    /// network with the usual plugins, and dockerd's docker0 is gone), and containerd's CRI refuses a pod without
    /// an address on eth0; this one lives in the pod's namespace only and changes nothing on the host.
    /// </summary>
    const string PodInterfacePlugin = """
        #!/bin/sh
        case "$CNI_COMMAND" in
        ADD)
          nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type bridge || exit 1
          nsenter --net="$CNI_NETNS" ip addr add 198.51.100.77/32 dev "$CNI_IFNAME" || exit 1
          nsenter --net="$CNI_NETNS" ip link set "$CNI_IFNAME" up || exit 1
          printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"198.51.100.77/32","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS"
          ;;
        DEL|CHECK) ;;
        VERSION) printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
        esac
        exit 0
        """;

    public Task<Result> Ctr(params string[] args) => Run("ctr", ["-a", Socket, "-n", "k8s.io", .. args]);

    /// <summary>A CRI client on the socket (HTTP/2 without TLS over the unix socket).</summary>
    public GrpcChannel Channel() => GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await s.ConnectAsync(new UnixDomainSocketEndPoint(Socket), ct);
                return new NetworkStream(s, ownsSocket: true);
            },
        },
    });

    public async Task DisposeAsync()
    {
        if (_daemon is not null)
        {
            try
            {
                foreach (var id in (await Ctr("containers", "ls", "-q")).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    await Ctr("task", "kill", "-s", "SIGKILL", id);
                    await Ctr("task", "delete", id);
                }
            }
            catch { }
            try
            {
                _daemon.Kill();
                await _daemon.WaitForExitAsync(new CancellationTokenSource(10000).Token);
            }
            catch { }
        }
        if (Directory.Exists(Dir)) RemoveTree(Dir);
    }
}

/// <summary>
/// Kubernetes' way in (issue 16): a pod sandbox and a container in it, asked of containerd's CRI API as a kubelet
/// would with `runtimeClassName: sandbox-runc`, run under this runtime with a range of their own; the default
/// handler (runc) gives the identity map. containerd 1.6 has no pod user namespaces (hostUsers: false needs
/// containerd 1.7 or 2.0): the range here is this runtime's own, whatever the pod asks.
/// </summary>
[Trait("Category", "Cri")]
public sealed class CriPodTests(CriContainerd ctrd) : IClassFixture<CriContainerd>
{
    [CriFact]
    public async Task PodUnderTheSandboxRuncHandlerHasItsOwnRange()
    {
        if (ctrd.Missing is { } why) throw new Xunit.Sdk.XunitException($"CRI test set-up: {why}");
        using var channel = ctrd.Channel();
        var cri = new V1.RuntimeService.RuntimeServiceClient(channel);
        var version = await cri.VersionAsync(new V1.VersionRequest { Version = "v1" });
        Assert.Equal("containerd", version.RuntimeName);

        Assert.Equal("0 0 4294967295", await UidMapInPod(cri, "")); // containerd's default handler: runc
        string sandboxRunc = await UidMapInPod(cri, "sandbox-runc");
        var map = sandboxRunc.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(map.Length == 3 && map[0] == "0" && long.Parse(map[1]) >= 65536 && map[2] == "65536",
            $"a container of a pod under the handler sandbox-runc: uid_map '{sandboxRunc}'");
    }

    /// <summary>Runs a pod with the handler (empty: containerd's default, runc) and a sleeping container in it; its uid_map.</summary>
    async Task<string> UidMapInPod(V1.RuntimeService.RuntimeServiceClient cri, string handler)
    {
        string name = "srt-pod-" + Guid.NewGuid().ToString("N")[..8];
        var pod = new V1.PodSandboxConfig
        {
            Metadata = new V1.PodSandboxMetadata { Name = name, Uid = Guid.NewGuid().ToString(), Namespace = "default" },
            Hostname = name,
            LogDirectory = Path.Combine(ctrd.Dir, "logs", name),
            Linux = new V1.LinuxPodSandboxConfig
            {
                SecurityContext = new V1.LinuxSandboxSecurityContext
                {
                    NamespaceOptions = new V1.NamespaceOption { Network = V1.NamespaceMode.Pod, Pid = V1.NamespaceMode.Container, Ipc = V1.NamespaceMode.Pod },
                },
            },
        };
        string podId;
        try
        {
            podId = (await cri.RunPodSandboxAsync(new V1.RunPodSandboxRequest { Config = pod, RuntimeHandler = handler })).PodSandboxId;
        }
        catch (Grpc.Core.RpcException e)
        {
            throw new Xunit.Sdk.XunitException($"RunPodSandbox (handler '{handler}'): {e.Status}\n{ctrd.Log}");
        }
        try
        {
            var container = new V1.ContainerConfig
            {
                Metadata = new V1.ContainerMetadata { Name = "main" },
                Image = new V1.ImageSpec { Image = CriContainerd.Image },
                Command = { "sleep", "600" },
                LogPath = "main.log",
            };
            string id = (await cri.CreateContainerAsync(new V1.CreateContainerRequest { PodSandboxId = podId, Config = container, SandboxConfig = pod })).ContainerId;
            await cri.StartContainerAsync(new V1.StartContainerRequest { ContainerId = id });
            var exec = await cri.ExecSyncAsync(new V1.ExecSyncRequest { ContainerId = id, Cmd = { "cat", "/proc/self/uid_map" }, Timeout = 60 });
            Assert.True(exec.ExitCode == 0, $"cat /proc/self/uid_map in the pod: exit {exec.ExitCode}: {exec.Stderr.ToStringUtf8()}");
            return string.Join(' ', exec.Stdout.ToStringUtf8().Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries));
        }
        finally
        {
            try { await cri.StopPodSandboxAsync(new V1.StopPodSandboxRequest { PodSandboxId = podId }); } catch { }
            try { await cri.RemovePodSandboxAsync(new V1.RemovePodSandboxRequest { PodSandboxId = podId }); } catch { }
        }
    }
}

/// <summary>Needs root, containerd (with its CRI plugin, which Debian's has), the CNI loopback plugin, nsenter and ip.</summary>
public sealed class CriFactAttribute : FactAttribute
{
    public CriFactAttribute()
    {
        if (Environment.UserName != "root")
            Skip = "needs root: runs a containerd of its own";
        else if (OnPath("containerd") is null || OnPath("ctr") is null)
            Skip = "needs containerd and ctr (apt-get install containerd)";
        else if (!File.Exists("/usr/lib/cni/loopback"))
            Skip = "needs the CNI plugin loopback in /usr/lib/cni (apt-get install containernetworking-plugins)";
        else if (OnPath("nsenter") is null || OnPath("ip") is null)
            Skip = "needs nsenter and ip (util-linux, iproute2) for the pod's eth0";
    }

    static string? OnPath(string name) => (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin")
        .Split(':', StringSplitOptions.RemoveEmptyEntries).Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
}
