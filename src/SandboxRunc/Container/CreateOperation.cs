using SandboxRunc.Cgroups;
using SandboxRunc.Diagnostics;
using SandboxRunc.Hooks;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using SandboxRunc.Oci;
using SandboxRunc.Policy;
using SandboxRunc.Rootfs;

namespace SandboxRunc.Container;

public sealed record CreateOptions(
    string Id,
    string Bundle,
    string? PidFile = null,
    string? ConsoleSocket = null,
    bool NoPivot = false,
    bool NoNewKeyring = false,
    int PreserveFds = 0,
    bool SystemdCgroup = false);

/// <summary>
/// `create`, as a short story: load the spec → apply the isolation policy (admin settings + engine facts →
/// refuse, or say what it needs)
/// → state dir → reserve an ID range and rewrite the spec → cgroup → compile seccomp → spawn the init
/// (namespaces; the ID maps and the ID-mapped mounts are made while nsexec waits) → rlimits → send the
/// config → host hooks → wait for ready → save state. Any failure undoes every step taken: no ID range,
/// mount, cgroup, process or state dir is left behind.
/// </summary>
public static class CreateOperation
{
    /// <param name="loaded">the bundle's spec if the caller already loaded it (`run` looks at process.terminal first).</param>
    public static ContainerRecord Run(StateStore store, CreateOptions o, Spec? loaded = null)
    {
        StateStore.ValidateId(o.Id);
        PhaseTrace.Container(o.Id);
        string bundle = Path.GetFullPath(o.Bundle);
        var spec = loaded ?? SpecLoader.LoadBundle(bundle);
        PhaseTrace.Mark("spec loaded");
        // Joining another container's pid/ipc/... namespace means joining its user namespace too (it owns them).
        var sharedWith = SharedUserNamespace.JoinOwner(spec);
        // The policy runs before anything is made: a refused create leaves nothing behind. It opens every
        // bind source once; the container's binds are made from those very fds (what was judged is mounted).
        using var pinned = new PinnedSources();
        var decision = PolicyStep.Decide(spec, o.Id, store.Root, bundle, pinned);
        string rootfs = SpecLoader.RootfsPath(spec, bundle);
        PhaseTrace.Mark("policy");

        string stateDir = store.CreateDir(o.Id);
        var allocator = new IdRangeAllocator(IdPoolConfig.FromEnvironment());
        IdRange? range = null;
        RangeHolder? ids = null; // what the range table records for this container (its own, or the one it joins)
        CgroupManager? cgroup = null;
        InitLauncher.Launched? init = null;
        IdmappedStaging? staging = null;
        string? storageKey = null;
        try
        {
            using var dirLock = store.Lock(o.Id);
            ids = allocator.Reserve(o.Id, stateDir, IdClaim.Of(decision.UserNamespace, spec, sharedWith?.Range));
            range = ids?.AllocatedRange;
            // The IDs the container's root maps to: its own range, or the one of the container whose user namespace it joins.
            IdRange? mapped = range ?? sharedWith?.Range;
            spec = IsolationPolicy.Rewrite(spec, range);
            if (sharedWith is not null) UserNamespacePolicy.WithSysctlsInRange(spec, sharedWith.Range.Size);
            PhaseTrace.Mark("state dir and ID range");
            // System containers (Policy/SystemContainerPolicy): every container with its own user namespace gets a
            // delegated cgroup subtree; one that can run an engine its storage; a system container what an engine
            // or init needs. Before seccomp is compiled: a system container has none but our vetting.
            bool delegate_ = mapped is not null && !decision.RestrictionsOff;
            // v2: an engine's system container runs its init in a child of its cgroup from start on (see
            // CgroupManager.MoveInitToLeaf); an init (systemd) moves itself, a joined cgroup namespace is another's.
            bool initLeaf = false;
            if (delegate_)
            {
                SystemContainerPolicy.WithCgroupDelegation(spec);
                bool system = SystemContainerPolicy.IsSystemContainer(spec, decision.Settings.SystemContainer);
                initLeaf = system && !SystemContainerPolicy.RunsInit(spec)
                    && spec.Linux!.Namespaces!.Any(n => n.Type == "cgroup" && string.IsNullOrEmpty(n.Path));
                if (system) SystemContainerPolicy.WithSystemContainer(spec, CapabilitySets.Get().Permitted);
                if (SystemContainerPolicy.NeedsEngineStorage(spec, system))
                {
                    string key = StagingKey(store, o.Id);
                    var bound = SystemContainerPolicy.WithEngineStorage(spec, p => EngineStorage.HostDirFor(key, p));
                    storageKey = key;
                    EngineStorage.Create(key, bound, (uint)mapped!.UidBase, (uint)mapped.GidBase);
                }
            }
            var compiled = spec.Linux?.Seccomp is { } profile ? Seccomp.SeccompCompiler.Compile(profile) : null;
            // Syscall vetting comes with the container's own user namespace (ECI); an opted-out container runs as runc's would.
            byte[]? notifyProgram = mapped is null ? null : VettingProgram();
            if (spec.Linux is not null) spec.Linux.Seccomp = null; // from here on, the compiled program stands for it
            PhaseTrace.Mark("seccomp compiled");

            cgroup = CgroupManager.ForContainer(o.Id, spec.Linux?.CgroupsPath, o.SystemdCgroup);
            store.NoteCreating(o.Id, cgroup, ids);
            cgroup.Create();
            initLeaf &= cgroup.Paths.IsV2;
            cgroup.Apply(spec.Linux?.Resources);
            NetworkSysctls.WriteForJoinedNetns(spec);
            PhaseTrace.Mark("cgroup");
            // Before the init: its FUSE server must answer while the init bind-mounts the emulated files.
            Supervisor.Start(store, o.Id, emulation: mapped is not null);
            PhaseTrace.Mark("supervisor spawned");

            string fifo = store.FifoPath(o.Id);
            SysException.Check(Libc.mkfifo(fifo, 0x192 /* 0622 */), "mkfifo", fifo);
            // The init reopens it for writing as container root, which is an unprivileged host user in its own user namespace.
            SysException.Check(Libc.chmod(fifo, 0x192), "chmod", fifo);
            if (mapped is not null) SysException.Check(Libc.chown(fifo, (uint)mapped.UidBase, (uint)mapped.GidBase), "chown", fifo);
            using var fifoFd = new SafeFd(SysException.Check(Libc.open(fifo, Libc.O_PATH | Libc.O_CLOEXEC, 0), "open", fifo));
            using var console = o.ConsoleSocket is { } cs ? UnixSocket.Connect(cs) : null;
            PhaseTrace.Mark("exec fifo");

            string initRootfs = rootfs;
            string? emulationDir = null;
            var mountSources = new Dictionary<int, string>();
            (SafeFd Listening, SafeFd Engine)? socketProxy = null;
            // With a new user namespace, called while nsexec waits (the namespace exists, the mount namespace
            // is not copied yet); with a joined one, before the launch. Every bind is staged from the fd the
            // policy judged; ID-mapped where the policy says so (and the container has a range to map onto).
            void StageMounts(int usernsOwner)
            {
                string path = $"/proc/{usernsOwner}/ns/user";
                using var userns = new SafeFd(SysException.Check(Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", path));
                staging = IdmappedStaging.Create(StagingKey(store, o.Id), userns.Fd, mapped);
                if (mapped is not null)
                {
                    initRootfs = staging.StageRootfs(rootfs, EngineMountpoints.Outermost(MountKinds()));
                    PhaseTrace.Mark("ID-mapped rootfs staged");
                    emulationDir = MountEmulation(store, o.Id, staging.Dir, mapped, cgroup!, userns.Fd);
                    PhaseTrace.Mark("FUSE mounted, emulation started");
                }
                var mounts = spec.Mounts ?? [];
                for (int i = 0; i < mounts.Count; i++)
                {
                    var parsed = MountOptions.Parse(mounts[i].Options, mounts[i].Type);
                    if (!parsed.Bind || pinned.Get(i) is not { } source) continue;
                    if (decision.EngineSocket(i))
                    {
                        // The engine socket is never mounted: the container gets the socket proxy's socket there.
                        socketProxy ??= (ProxySocket(staging.Dir, source, spec, mapped), source);
                        mountSources[i] = ProxySocketPath(staging.Dir);
                        continue;
                    }
                    mountSources[i] = staging.StageBind(source, mounts[i].Source ?? "", parsed.Recursive, idmap: mapped is not null && decision.Idmap(i));
                }
                PhaseTrace.Mark("binds staged");
            }

            // Each mount's destination and whether it is a directory (a bind of a file or socket is not), as the init
            // makes it; a bind whose source was not pinned is left to the init.
            List<(string, bool)> MountKinds()
            {
                var kinds = new List<(string, bool)>();
                var mounts = spec.Mounts ?? [];
                for (int i = 0; i < mounts.Count; i++)
                {
                    if (!MountOptions.Parse(mounts[i].Options, mounts[i].Type).Bind) kinds.Add((mounts[i].Destination, true));
                    else if (pinned.Get(i) is { } src) kinds.Add((mounts[i].Destination, IdmappedStaging.IsDirectory(src.Fd)));
                }
                return kinds;
            }

            if (sharedWith is not null) StageMounts(sharedWith.Pid);
            // The cgroup is delegated once it holds the init's first stage (the systemd driver makes it then),
            // before the init unshares its cgroup namespace (nsexec waits for the placement first).
            var placeIn = cgroup;
            void Place(int pid)
            {
                placeIn.AddProcess(pid);
                if (delegate_) placeIn.Delegate((uint)mapped!.UidBase, (uint)mapped.GidBase);
                if (initLeaf) placeIn.MakeInitLeaf((uint)mapped!.UidBase, (uint)mapped.GidBase);
            }
            init = InitLauncher.Launch(new InitLauncher.Request(spec, o.PreserveFds, console?.Fd ?? -1, fifoFd.Fd,
                Place, sharedWith is null && spec.Linux?.Namespaces?.Any(n => n.Type == "user" && string.IsNullOrEmpty(n.Path)) == true ? StageMounts : null,
                SealedCopy: mapped is null));
            PhaseTrace.Mark("init cloned");
            Rlimits.Apply(init.Pid, spec.Process?.Rlimits);
            if (socketProxy is { } proxy)
                using (proxy.Listening)
                    StartSocketProxy(store, o.Id, cgroup, proxy.Listening, proxy.Engine);

            var record = new ContainerRecord
            {
                Id = o.Id,
                Bundle = bundle,
                Rootfs = rootfs,
                Pid = init.Pid,
                PidStartTime = ProcStat.StartTime(init.Pid),
                Created = DateTime.UtcNow,
                CgroupPaths = new Dictionary<string, string>(cgroup.Paths.Map),
                CgroupDriver = cgroup.Driver.ToString(),
                SystemdUnit = cgroup.Unit,
                Annotations = spec.Annotations,
                Poststart = spec.Hooks?.Poststart,
                Poststop = spec.Hooks?.Poststop,
                IdMappings = StateStore.MappingsOf(spec) ?? sharedWith?.Mappings,
                Resources = spec.Linux?.Resources,
                IdRange = range,
                StagingDir = staging?.Dir,
                SeccompProgram = compiled?.Program,
                SeccompFlags = compiled?.Flags ?? 0,
                InitLeaf = initLeaf ? CgroupManager.InitLeafName : null,
            };
            var state = store.ToOci(record, ContainerStatus.Creating);
            VettingSettings? vetting = notifyProgram is null ? null : Vetting(spec, decision.Settings);
            var config = new InitConfig
            {
                Id = o.Id,
                Bundle = bundle,
                Rootfs = initRootfs,
                Spec = spec,
                NoPivot = o.NoPivot,
                NoNewKeyring = o.NoNewKeyring,
                PreserveFds = o.PreserveFds,
                ExecFifoFd = init.FirstFreeFd - 1,
                ConsoleSocketFd = console is null ? -1 : 3 + o.PreserveFds + 1,
                SeccompProgram = compiled?.Program,
                SeccompFlags = compiled?.Flags ?? 0,
                UserNamespace = spec.Linux?.Namespaces?.Any(n => n.Type == "user") == true,
                CgroupMounts = cgroup is CgroupV1Manager v1
                    ? v1.MountSources().Select(m => new CgroupMountSource { Name = m.MountName, HostDir = m.HostDir }).ToList()
                    : [],
                MountSources = mountSources,
                NotifyProgram = notifyProgram,
                EmulationDir = emulationDir,
                State = state,
            };
            PhaseTrace.Mark("init config built");
            init.Channel.Send(new InitMessage { Kind = InitMessage.Config, Config_ = config });
            init.Channel.Expect(InitMessage.RunHooks, "setting up mounts");
            PhaseTrace.Mark("init mounts (emulated binds wait for FUSE INIT)");
            HookRunner.Run("prestart", spec.Hooks?.Prestart, state);
            HookRunner.Run("createRuntime", spec.Hooks?.CreateRuntime, state);
            init.Channel.Send(new InitMessage { Kind = InitMessage.HooksDone });
            using (var ready = init.Channel.Expect(InitMessage.Ready, "preparing the container").Fd)
            {
                PhaseTrace.Mark("init pivot, seccomp, ready");
                init.Channel.Dispose();
                Supervisor.Send(store, o.Id, new SupervisorRequest { Kind = SupervisorRequest.Container, Pid = init.Pid, Vetting = vetting },
                    ready?.Fd ?? -1);
                PhaseTrace.Mark("vetting attached");
            }

            store.SaveSpec(o.Id, spec);
            store.Save(record);
            if (o.PidFile is { } pidFile) PidFile.Write(pidFile, init.Pid);
            PhaseTrace.Mark("state saved");
            return record;
        }
        catch
        {
            if (init is not null)
            {
                Libc.kill(init.Pid, 9);
                init.Channel.Dispose();
                WaitGone(init.Pid);
            }
            try { cgroup?.Destroy(TimeSpan.FromSeconds(5)); } catch (Exception e) { Cli.Log.Warn($"cleanup of cgroup: {e.Message}"); }
            Supervisor.Stop(store, o.Id);
            IdmappedStaging.Remove(staging?.Dir);
            if (storageKey is not null) EngineStorage.Remove(storageKey);
            store.RemoveDir(o.Id);
            if (ids is not null && allocator.Release(stateDir) is { } warning) Cli.Log.Warn(warning);
            throw;
        }
    }

    /// <summary>
    /// Mounts the container's FUSE fs in its staging dir (so the init finds it and nothing else in the host's
    /// mount namespace sees it) and hands the /dev/fuse connection to the supervisor, which serves it from now on,
    /// with the container's user namespace (its capability checks are made against it, pinned by this fd).
    /// </summary>
    static string MountEmulation(StateStore store, string id, string stagingDir, IdRange mapped, CgroupManager cgroup, int userNs)
    {
        string dir = Path.Combine(stagingDir, "emu");
        Directory.CreateDirectory(dir);
        var mount = Fuse.FuseMount.Mount(dir);
        using var device = mount.Device; // ours closes; the mount stays (the staging dir goes with delete)
        Supervisor.Send(store, id, new SupervisorRequest
        {
            Kind = SupervisorRequest.Emulation,
            Emulation_ = new EmulationSettings
            {
                MountDir = dir,
                RootUid = (uint)mapped.UidBase,
                RootGid = (uint)mapped.GidBase,
                StartedBoottimeNs = Emulation.HostClock.BoottimeNs(),
                CgroupPaths = new Dictionary<string, string>(cgroup.Paths.Map),
            },
        }, [device.Fd, userNs]);
        return dir;
    }

    static string ProxySocketPath(string stagingDir) => Path.Combine(stagingDir, "docker.sock");

    /// <summary>
    /// The socket proxy's listening socket, in the container's staging dir (root's, private to the host's mount
    /// namespace), bound by the init at the destination the container asked for. It looks inside as the engine
    /// socket would through an ID-mapped bind (root:docker 0660 as a rule): owned by the host IDs the container's
    /// IDs of the engine socket's owner and group map to, with its permission bits. Made owner-mapped rather than
    /// ID-mapped so that it works where tmpfs cannot be ID-mapped (kernels before 6.3).
    /// </summary>
    static unsafe SafeFd ProxySocket(string stagingDir, SafeFd engine, Spec spec, IdRange? mapped)
    {
        byte* st = stackalloc byte[Libc.StatSize];
        SysException.Check(Libc.fstat(engine.Fd, st), "fstat", "docker socket");
        uint mode = *(uint*)(st + 24) & 0xfff, uid = *(uint*)(st + 28), gid = *(uint*)(st + 32);
        var uidMap = spec.Linux?.UidMappings?.FirstOrDefault();
        var gidMap = spec.Linux?.GidMappings?.FirstOrDefault();
        uint uidBase = mapped is not null ? (uint)mapped.UidBase : uidMap?.HostId ?? 0, gidBase = mapped is not null ? (uint)mapped.GidBase : gidMap?.HostId ?? 0;
        uint uidSize = mapped is not null ? (uint)mapped.Size : uidMap?.Size ?? 0, gidSize = mapped is not null ? (uint)mapped.Size : gidMap?.Size ?? 0;
        if (uidSize == 0 || gidSize == 0) throw new RuntimeException("the docker socket proxy needs the container's user namespace mappings");
        return UnixSocket.ListenStream(ProxySocketPath(stagingDir), uidBase + (uid < uidSize ? uid : 0), gidBase + (gid < gidSize ? gid : 0), mode, backlog: 64);
    }

    /// <summary>Hands the proxy's listening socket and the engine socket to the supervisor, which starts the proxy (SocketProxy/).</summary>
    static void StartSocketProxy(StateStore store, string id, CgroupManager cgroup, SafeFd listening, SafeFd engine)
    {
        var runtimes = EngineFactsGatherer.OurRuntimeNames();
        Supervisor.Send(store, id, new SupervisorRequest
        {
            Kind = SupervisorRequest.SocketProxy,
            SocketProxy_ = new SocketProxySettings
            {
                SettingsPath = Path.GetFullPath(AdminSettings.PathFromEnvironment()),
                Runtime = runtimes[0],
                IsolatedRuntimes = runtimes,
                StateRoot = Path.GetFullPath(store.Root),
                CgroupPaths = new Dictionary<string, string>(cgroup.Paths.Map),
            },
        }, [listening.Fd, engine.Fd]);
    }

    static byte[] VettingProgram() => Seccomp.Notify.NotifyFilter.Program();

    /// <summary>
    /// What the supervisor vets mounts against: the mount points that may never be unmounted (/, /proc,
    /// /sys, the emulated files, the masked and read-only paths) and whether the other initial mounts may
    /// (io.sandbox-runc.protect-initial-mounts, as annotation or docker label: <see cref="ContainerSettings"/>).
    /// </summary>
    static VettingSettings Vetting(Spec spec, ContainerSettings settings)
    {
        var paths = new List<string> { "/", "/proc", "/sys" };
        paths.AddRange(EmulationBinds.Paths.Select(p => "/" + p));
        paths.AddRange(spec.Linux?.MaskedPaths ?? []);
        paths.AddRange(spec.Linux?.ReadonlyPaths ?? []);
        return new VettingSettings { ProtectedPaths = paths.Distinct().ToList(), ProtectAllInitialMounts = settings.ProtectInitialMounts };
    }

    /// <summary>A short name for the container's staging dir, unique across state roots (docker's, containerd's, ...).</summary>
    internal static string StagingKey(StateStore store, string id)
    {
        var hash = Sha256.Hash(System.Text.Encoding.UTF8.GetBytes(store.Dir(id)));
        return Convert.ToHexStringLower(hash)[..16];
    }

    /// <summary>The init is our child (nsexec clones it with CLONE_PARENT): reap it if it is gone.</summary>
    static unsafe void WaitGone(int pid)
    {
        int status;
        for (int i = 0; i < 500; i++)
        {
            int r = Libc.waitpid(pid, &status, Libc.WNOHANG);
            if (r == pid || (r < 0 && Libc.Errno == Libc.ECHILD && ProcStat.Read(pid) is null)) return;
            Thread.Sleep(10);
        }
    }

}

/// <summary>process.rlimits, set from the host on the init (prlimit), as runc does.</summary>
public static unsafe class Rlimits
{
    public static void Apply(int pid, IReadOnlyList<Rlimit>? limits)
    {
        ulong* v = stackalloc ulong[2];
        foreach (var l in limits ?? [])
        {
            if (!RlimitNames.TryGetResource(l.Type, out int resource)) continue;
            v[0] = l.Soft;
            v[1] = l.Hard;
            if (Libc.prlimit(pid, resource, v, null) != 0)
                throw new RuntimeException($"set {l.Type} to soft {l.Soft}, hard {l.Hard}: {new SysException("prlimit", l.Type, Libc.Errno).Message}");
        }
    }
}
