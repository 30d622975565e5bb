using System.Text.Json;
using SandboxRunc.Cgroups;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>What `exec` was asked to run: an OCI process (from --process or built from flags), and how.</summary>
public sealed record ExecOptions(
    string Id,
    Oci.Process Process,
    bool Detach = false,
    string? PidFile = null,
    string? ConsoleSocket = null,
    int PreserveFds = 0);

/// <summary>
/// `exec`: start one more process in a running container. The same machinery as create, with joins
/// instead of new namespaces: a stage0 in the container's cgroups joins every namespace of its init
/// (user namespace last, see nsexec.c) and clones the process into its PID namespace; that process
/// gets the container's seccomp filter and the requested identity and capabilities, then execs.
/// </summary>
public static class ExecOperation
{
    /// <summary>Starts the process; returns its host pid.</summary>
    public static int Start(StateStore store, ExecOptions o)
    {
        var r = store.Load(o.Id);
        var containerSpec = store.LoadSpec(o.Id);
        string status = store.StatusOf(r);
        if (status == ContainerStatus.Stopped)
            throw new RuntimeException($"cannot exec in a stopped container: {o.Id}");
        if (status == ContainerStatus.Paused)
            throw new RuntimeException($"cannot exec in a paused container: {o.Id} (resume it first)");

        // The container's spec, with this process in place of the init's: the init reads only process, hooks none.
        var spec = new Spec
        {
            OciVersion = containerSpec.OciVersion,
            Process = Policy.SystemContainerPolicy.ForExec(o.Process, containerSpec),
            Root = containerSpec.Root,
            Linux = new Linux
            {
                Namespaces = JoinAll(r, containerSpec),
                UidMappings = containerSpec.Linux?.UidMappings,
                GidMappings = containerSpec.Linux?.GidMappings,
            },
        };
        var cgroup = r.Cgroup();
        using var console = o.ConsoleSocket is { } cs ? UnixSocket.Connect(cs) : null;

        var init = InitLauncher.Launch(new InitLauncher.Request(spec, o.PreserveFds, console?.Fd ?? -1, -1,
            pid => cgroup.AddExecProcess(pid, r.Pid, r.PidStartTime), SealedCopy: r.IdRange is null));
        try
        {
            Rlimits.Apply(init.Pid, o.Process.Rlimits);
            var config = new InitConfig
            {
                Kind = InitConfig.KindExec,
                Id = o.Id,
                Bundle = r.Bundle,
                Rootfs = "/",
                Spec = spec,
                PreserveFds = o.PreserveFds,
                ConsoleSocketFd = console is null ? -1 : 3 + o.PreserveFds + 1,
                SeccompProgram = r.SeccompProgram,
                SeccompFlags = r.SeccompFlags,
                // Every process of a vetted container is vetted: a new filter chain, a listener of its own.
                NotifyProgram = r.IdRange is not null || r.IdMappings is not null ? Seccomp.Notify.NotifyFilter.Program() : null,
                UserNamespace = true,
                State = store.ToOci(r, status),
            };
            init.Channel.Send(new InitMessage { Kind = InitMessage.Config, Config_ = config });
            using (var listener = init.Channel.Expect(InitMessage.Ready, "preparing the process").Fd)
            {
                // The process waits on no answer: until the supervisor takes its listener, a mount it makes
                // blocks; if the supervisor is gone, the listener closes here and such calls fail (ENOSYS).
                if (listener is not null)
                {
                    try { Supervisor.Send(store, o.Id, new SupervisorRequest { Kind = SupervisorRequest.Exec, Pid = init.Pid }, listener.Fd); }
                    catch (RuntimeException e) { Cli.Log.Warn($"exec {o.Id}: {e.Message}: mount and umount2 will fail (ENOSYS) in this process"); }
                }
            }
            // The channel ends when execve closes it; an Error before that is why the program could not be started.
            if (init.Channel.Receive() is { Kind: InitMessage.Error } failed)
                throw new InitFailedException(failed.Text ?? "the process failed before exec");
            init.Channel.Dispose();
        }
        catch
        {
            Libc.kill(init.Pid, 9);
            init.Channel.Dispose();
            Spawn.Wait(init.Pid);
            throw;
        }
        if (o.PidFile is { } pidFile) PidFile.Write(pidFile, init.Pid);
        return init.Pid;
    }

    /// <summary>Every namespace the container's init is in, by its /proc/PID/ns link.</summary>
    static List<Namespace> JoinAll(ContainerRecord r, Spec spec)
    {
        var list = new List<Namespace>();
        foreach (var type in (spec.Linux?.Namespaces ?? []).Select(n => n.Type).Distinct())
        {
            string file = type switch { "network" => "net", "mount" => "mnt", _ => type };
            list.Add(new Namespace { Type = type, Path = $"/proc/{r.Pid}/ns/{file}" });
        }
        return list;
    }

    /// <summary>
    /// The process to run when `exec` gets no --process file: the container's own process (env,
    /// capabilities, user, rlimits, ...) with the command and the flags' changes, as runc builds it.
    /// </summary>
    public static Oci.Process FromFlags(Oci.Process container, IReadOnlyList<string> args, string? cwd, IReadOnlyList<string> env,
        bool tty, string? user, IReadOnlyList<string> addCaps, bool noNewPrivs, IReadOnlyList<string> additionalGids, string? apparmor)
    {
        var p = JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(container, OciJson.Default.Process), OciJson.Default.Process)!;
        if (args.Count == 0) throw new Cli.UsageException("exec needs a command to run (or --process FILE)");
        p.Args = [.. args];
        p.Terminal = tty;
        p.ConsoleSize = null;
        if (cwd is not null) p.Cwd = cwd;
        if (env.Count > 0) p.Env = [.. (p.Env ?? []), .. env];
        if (apparmor is not null) p.ApparmorProfile = apparmor;
        if (noNewPrivs) p.NoNewPrivileges = true;
        if (user is not null)
        {
            var parts = user.Split(':', 2);
            if (!uint.TryParse(parts[0], out var uid) || (parts.Length == 2 && !uint.TryParse(parts[1], out _)))
                throw new Cli.UsageException($"--user \"{user}\": expected uid[:gid] as numbers");
            p.User = new User { Uid = uid, Gid = parts.Length == 2 ? uint.Parse(parts[1]) : 0, Umask = p.User.Umask };
        }
        if (additionalGids.Count > 0)
            p.User.AdditionalGids = additionalGids.Select(g => uint.TryParse(g, out var v) ? v : throw new Cli.UsageException($"--additional-gids \"{g}\" is not a number")).ToList();
        if (addCaps.Count > 0)
        {
            p.Capabilities ??= new Oci.Capabilities();
            foreach (var cap in addCaps)
            {
                if (!CapabilityNames.TryParse(cap, out int n)) throw new Cli.UsageException($"--cap \"{cap}\": unknown capability");
                string name = CapabilityNames.All[n];
                foreach (var set in new[] { p.Capabilities.Bounding ??= [], p.Capabilities.Effective ??= [], p.Capabilities.Permitted ??= [] })
                    if (!set.Contains(name)) set.Add(name);
            }
        }
        return p;
    }

    public static Oci.Process FromFile(string path)
    {
        byte[] json = path == "-" ? ReadStdin() : UserFile.ReadAll("--process", path);
        var p = SpecLoader.ParseDocument(json, path == "-" ? "--process stdin" : path, OciJson.Default.Process);
        if (p.Args is not { Count: > 0 }) throw new SpecException($"{path}: field args must name the program to run");
        return p;
    }

    static byte[] ReadStdin()
    {
        using var ms = new MemoryStream();
        Console.OpenStandardInput().CopyTo(ms);
        return ms.ToArray();
    }
}

/// <summary>--pid-file: written atomically (engines poll for it).</summary>
public static class PidFile
{
    public static void Write(string path, int pid)
    {
        if (path.Length == 0) throw new RuntimeException("--pid-file: the path cannot be empty");
        try { AtomicFile.Write(path, pid.ToString()); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"--pid-file {path}: cannot write it: {UserFile.Reason(e)}");
        }
    }
}
