using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using SandboxRunc.Container;
using SandboxRunc.Interop;
using SandboxRunc.Namespaces;
using SandboxRunc.Oci;

namespace SandboxRunc.Cli;

/// <summary>
/// The runc command line. Wiring only: each command parses its flags and calls one operation in
/// Container/. Errors become one line on stderr (and in --log), and exit status 1.
/// </summary>
public static class CommandLine
{
    public const string Version = "0.1.0";
    public const string DefaultRoot = "/run/sandbox-runc";

    static readonly ArgParser Global = new ArgParser()
        .Flag("root", true).Flag("log", true).Flag("log-format", true).Flag("debug")
        .Flag("systemd-cgroup").Flag("rootless", true).Flag("criu", true)
        .Flag("version|v").Flag("help|h");

    static readonly ArgParser CreateFlags = new ArgParser()
        .Flag("bundle|b", true).Flag("pid-file", true).Flag("console-socket", true).Flag("no-pivot")
        .Flag("no-new-keyring").Flag("preserve-fds", true).Flag("detach|d").Flag("keep").Flag("no-subreaper");

    public static int Run(string[] args)
    {
        AppDomain.CurrentDomain.UnhandledException += (_, e) => ExitOnUnhandled(e.ExceptionObject);
        string command = "";
        try
        {
            var g = Global.Parse(args, stopAtPositional: true);
            if (g.Get("log-format") is { } format && format is not ("text" or "json"))
                throw new UsageException($"--log-format: unknown format \"{format}\" (text or json)");
            Log.Configure(g.Get("log"), g.Get("log-format") ?? "text", g.Has("debug"));
            if (g.Has("version")) { PrintVersion(); return 0; }
            if (g.Positional.Count == 0 || g.Has("help")) { PrintUsage(); return g.Has("help") ? 0 : 1; }
            command = g.Positional[0];
            Diagnostics.PhaseTrace.Begin(command, g.Has("debug"));
            s_systemdCgroup = g.Has("systemd-cgroup");
            if (g.Get("root") is "") throw new UsageException("--root: the state directory cannot be empty");
            var store = new StateStore(g.Get("root") ?? DefaultRoot);
            try { return Dispatch(command, store, args, args.Length - g.Positional.Count + 1); }
            finally { Diagnostics.PhaseTrace.Mark("done"); }
        }
        catch (UsageException e)
        {
            // runc's exec exits 1 for its usage errors too: only a failure to run the process is "exec failed".
            Log.Error(command == "" ? $"sandbox-runc: {e.Message}" : e.Message);
            return 1;
        }
        catch (SandboxRuncException e)
        {
            // exec: as runc's, "exec failed: ..." and 255 (docker shows it after "OCI runtime exec failed:").
            if (command == "exec")
            {
                Log.Error($"exec failed: {e.Message}");
                return 255;
            }
            Log.Error(e.Message);
            return 1;
        }
        catch (Exception e)
        {
            // A bug: still one line and a clean exit, never a crash dump that an engine shows as "signal: aborted".
            Log.Error(InternalError(e));
            Log.Debug(e.ToString());
            return 1;
        }
    }

    static int Dispatch(string command, StateStore store, string[] args, int rest) => command switch
    {
        "create" => Create(store, args, rest),
        "run" => RunCommand(store, args, rest),
        "start" => Start(store, args, rest),
        "exec" => Exec(store, args, rest),
        "supervise" => Supervisor.Run(store, OneId(new ArgParser().Parse(args, rest), Helper(command))),
        "emulate" => EmulationServer.Run(OneId(new ArgParser().Parse(args, rest), Helper(command))),
        "socket-proxy" => SocketProxy.SocketProxyService.Run(OneId(new ArgParser().Parse(args, rest), Helper(command))),
        "state" => State(store, args, rest),
        "kill" => Kill(store, args, rest),
        "delete" => Delete(store, args, rest),
        "list" or "ls" => List(store, args, rest),
        "spec" => SpecCommand(args, rest),
        "features" => FeaturesCommand(args, rest),
        "pause" => Pause(store, args, rest),
        "resume" => Resume(store, args, rest),
        "ps" => Ps(store, args, rest),
        "update" => Update(store, args, rest),
        "events" => Events(store, args, rest),
        "install" or "uninstall" => InstallCommand(command == "uninstall", args, rest),
        "policy" => PolicyCommand(store, args, rest),
        "ranges" => Ranges(store, args, rest),
        "check" => CheckCommand(args, rest),
        "init" => throw new RuntimeException("init is started by sandbox-runc itself, not by users"),
        _ => throw new UsageException($"unknown command \"{command}\" (see sandbox-runc --help)"),
    };

    /// <summary>The per-container helpers are started by create (and the supervisor) only: by hand they would serve nobody.</summary>
    static string Helper(string command) => Supervisor.StartedByParent() ? command
        : throw new RuntimeException($"{command} is started by sandbox-runc itself for each container, not by users");

    static string InternalError(object? e) => e is Exception x
        ? $"sandbox-runc: internal error: {x.GetType().Name}: {x.Message}"
        : $"sandbox-runc: internal error: {e}";

    /// <summary>
    /// An exception nobody caught on some thread (a notify worker or FUSE thread of a helper, a thread of
    /// create): one logged line and exit 1, instead of the runtime's abort (SIGABRT, a core, a stack dump on
    /// stderr). Helpers fail closed when they exit: the kernel answers trapped syscalls with ENOSYS and FUSE
    /// reads with ENOTCONN.
    /// </summary>
    static void ExitOnUnhandled(object? exception)
    {
        try { Log.Error(InternalError(exception)); } catch { /* nothing left to tell it to */ }
        Environment.Exit(1);
    }

    static string OneId(ArgParser.Result r, string command)
    {
        if (r.Positional.Count != 1)
            throw new UsageException($"\"{command}\" requires exactly 1 argument: the container id");
        return r.Positional[0];
    }

    /// <summary>The global --systemd-cgroup: create's cgroup is a systemd scope (cgroupsPath "slice:prefix:name").</summary>
    static bool s_systemdCgroup;

    static CreateOptions ParseCreate(ArgParser.Result r, string command)
    {
        string id = OneId(r, command);
        int preserve = 0;
        if (r.Get("preserve-fds") is { } p && (!int.TryParse(p, out preserve) || preserve < 0))
            throw new UsageException($"--preserve-fds: \"{p}\" is not a non-negative number");
        // As runc's: an empty --bundle is the current directory, an empty --pid-file or --console-socket none.
        return new CreateOptions(id, Given(r, "bundle") ?? Directory.GetCurrentDirectory(), Given(r, "pid-file"),
            Given(r, "console-socket"), r.Has("no-pivot"), r.Has("no-new-keyring"), preserve, s_systemdCgroup);
    }

    /// <summary>A flag's value, or null when it is missing or empty.</summary>
    static string? Given(ArgParser.Result r, string flag) => r.Get(flag) is { Length: > 0 } v ? v : null;

    static int Create(StateStore store, string[] args, int start)
    {
        CreateOperation.Run(store, ParseCreate(CreateFlags.Parse(args, start), "create"));
        return 0;
    }

    static int RunCommand(StateStore store, string[] args, int start)
    {
        var r = CreateFlags.Parse(args, start);
        var o = ParseCreate(r, "run");
        // runc's default spec asks for a terminal: in the foreground without an engine, we are the console.
        StateStore.ValidateId(o.Id);
        var spec = SpecLoader.LoadBundle(Path.GetFullPath(o.Bundle));
        using var terminal = o.ConsoleSocket is null && !r.Has("detach") && spec.Process?.Terminal == true
            ? new ForegroundTerminal() : null;
        if (terminal is not null) o = o with { ConsoleSocket = terminal.SocketPath };
        var record = CreateOperation.Run(store, o, spec);
        terminal?.Attach();
        try
        {
            StartOperation.Run(store, o.Id);
        }
        catch
        {
            DeleteOperation.Run(store, o.Id, force: true);
            throw;
        }
        if (r.Has("detach")) return 0;

        // Foreground: the init is our child (CLONE_PARENT in nsexec.c). Forward the usual signals, wait, clean up.
        int status = WaitForwardingSignals(record.Pid);
        if (!r.Has("keep")) DeleteOperation.Run(store, o.Id, force: true);
        return status;
    }

    static readonly ArgParser ExecFlags = new ArgParser()
        .Flag("process|p", true).Flag("detach|d").Flag("pid-file", true).Flag("console-socket", true).Flag("tty|t")
        .Flag("cwd", true).Flag("env|e", true).Flag("user|u", true).Flag("additional-gids|g", true).Flag("cap|c", true)
        .Flag("no-new-privs").Flag("preserve-fds", true).Flag("apparmor", true).Flag("process-label", true)
        .Flag("ignore-paused").Flag("cgroup", true);

    /// <summary>`exec`: errors other than usage ones say "exec failed: ..." and exit 255, as runc's (see <see cref="Run"/>).</summary>
    static int Exec(StateStore store, string[] args, int start)
    {
        var r = ExecFlags.Parse(args, start, stopAtPositional: true);
        if (r.Positional.Count < 1) throw new UsageException("\"exec\" requires the container id and, without --process, a command");
        string id = r.Positional[0];
        int preserve = 0;
        if (r.Get("preserve-fds") is { } pf && (!int.TryParse(pf, out preserve) || preserve < 0))
            throw new UsageException($"--preserve-fds: \"{pf}\" is not a non-negative number");
        var process = Given(r, "process") is { } file
            ? ExecOperation.FromFile(file)
            : ExecOperation.FromFlags(store.LoadSpec(id).Process ?? new Oci.Process(), r.Positional.Skip(1).ToList(), r.Get("cwd"),
                r.All("env"), r.Has("tty"), r.Get("user"), r.All("cap"), r.Has("no-new-privs"), r.All("additional-gids"), r.Get("apparmor"));
        bool detach = r.Has("detach");
        using var terminal = Given(r, "console-socket") is null && !detach && process.Terminal ? new ForegroundTerminal() : null;
        int pid = ExecOperation.Start(store, new ExecOptions(id, process, detach, Given(r, "pid-file"),
            terminal?.SocketPath ?? Given(r, "console-socket"), preserve));
        if (detach) return 0;
        terminal?.Attach();
        return WaitForwardingSignals(pid);
    }

    /// <summary>Waits for a child of ours (an init or exec'd process cloned with CLONE_PARENT), passing on the usual signals.</summary>
    static int WaitForwardingSignals(int pid)
    {
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; Libc.kill(pid, 15); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; Libc.kill(pid, 2); });
        using var quit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, c => { c.Cancel = true; Libc.kill(pid, 3); });
        using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => { c.Cancel = true; Libc.kill(pid, 1); });
        return Spawn.Wait(pid) ?? 255;
    }

    static int Start(StateStore store, string[] args, int start)
    {
        StartOperation.Run(store, OneId(new ArgParser().Parse(args, start), "start"));
        return 0;
    }

    static int State(StateStore store, string[] args, int start)
    {
        string id = OneId(new ArgParser().Parse(args, start), "state");
        var r = store.Load(id);
        var state = store.ToOci(r, store.StatusOf(r));
        state.SupervisorRunning = Supervisor.IsRunning(store, id);
        Console.Out.WriteLine(JsonSerializer.Serialize(state, OciJsonIndented.Default.OciState));
        return 0;
    }

    static int Kill(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("all|a").Parse(args, start);
        if (r.Positional.Count is < 1 or > 2)
            throw new UsageException("\"kill\" requires 1 or 2 arguments: the container id and an optional signal (default SIGTERM)");
        int signal = r.Positional.Count == 2 ? Signals.Parse(r.Positional[1]) : 15;
        KillOperation.Run(store, r.Positional[0], signal, r.Has("all"));
        return 0;
    }

    static int Delete(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("force|f").Parse(args, start);
        DeleteOperation.Run(store, OneId(r, "delete"), r.Has("force"));
        return 0;
    }

    static int List(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("format|f", true).Flag("quiet|q").Parse(args, start);
        var states = store.Ids().Select(id =>
        {
            try { var rec = store.Load(id); return store.ToOci(rec, store.StatusOf(rec)); }
            catch (RuntimeException) { return null; }
        }).Where(s => s is not null).Select(s => s!).ToList();
        if (r.Has("quiet"))
        {
            foreach (var s in states) Console.Out.WriteLine(s.Id);
            return 0;
        }
        string format = r.Get("format") ?? "table";
        if (format == "json")
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(states, OciJson.Default.ListOciState));
            return 0;
        }
        if (format != "table") throw new UsageException($"invalid format option \"{format}\" (table or json)");
        Console.Out.WriteLine($"{"ID",-20} {"PID",-8} {"STATUS",-10} {"BUNDLE",-40} {"CREATED",-30} OWNER");
        foreach (var s in states)
            Console.Out.WriteLine($"{s.Id,-20} {s.Pid,-8} {s.Status,-10} {s.Bundle,-40} {s.Created:O} root");
        return 0;
    }

    static int SpecCommand(string[] args, int start)
    {
        var r = new ArgParser().Flag("bundle|b", true).Flag("rootless").Parse(args, start);
        if (r.Positional.Count != 0) throw new UsageException("\"spec\" takes no arguments (the bundle is --bundle DIR)");
        string bundle = Given(r, "bundle") ?? Directory.GetCurrentDirectory();
        string path = Path.Combine(bundle, "config.json");
        if (File.Exists(path)) throw new RuntimeException($"File {path} exists. Remove it first");
        try { File.WriteAllText(path, JsonSerializer.Serialize(DefaultSpec.Create(), OciJsonIndented.Default.Spec) + "\n"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"spec: cannot write {path}: {Interop.UserFile.Reason(e)}");
        }
        return 0;
    }

    static int PolicyCommand(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("id", true).Parse(args, start);
        if (r.Positional is not ["check", { Length: > 0 } bundle] || r.Get("id") is "")
            throw new UsageException("usage: sandbox-runc policy check BUNDLE [--id ID]");
        return PolicyCheck.Run(bundle, r.Get("id"), store.Root, Console.Out);
    }

    static int Ranges(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("rebuild").Parse(args, start);
        if (r.Positional.Count != 0) throw new UsageException("usage: sandbox-runc ranges [--rebuild]");
        var allocator = new Policy.IdRangeAllocator(Policy.IdPoolConfig.FromEnvironment());
        return r.Has("rebuild") ? RangesOperation.Rebuild(store, allocator, Console.Out) : RangesOperation.List(allocator, Console.Out);
    }

    static int CheckCommand(string[] args, int start)
    {
        var r = new ArgParser().Flag("format|f", true).Parse(args, start);
        if (r.Positional.Count != 0) throw new UsageException("usage: sandbox-runc check [--format table|json]");
        string format = r.Get("format") ?? "table";
        if (format is not ("table" or "json")) throw new UsageException($"invalid format option \"{format}\" (table or json)");
        return Doctor.CheckOperation.Run(format, Console.Out);
    }

    static int FeaturesCommand(string[] args, int start)
    {
        if (new ArgParser().Parse(args, start).Positional.Count != 0) throw new UsageException("\"features\" takes no arguments");
        Console.Out.WriteLine(JsonSerializer.Serialize(FeaturesDocument.Create(), OciJsonIndented.Default.Features));
        return 0;
    }

    static int Pause(StateStore store, string[] args, int start)
    {
        PauseOperation.Pause(store, OneId(new ArgParser().Parse(args, start), "pause"));
        return 0;
    }

    static int Resume(StateStore store, string[] args, int start)
    {
        PauseOperation.Resume(store, OneId(new ArgParser().Parse(args, start), "resume"));
        return 0;
    }

    static int Ps(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("format|f", true).Parse(args, start, stopAtPositional: true);
        if (r.Positional.Count < 1) throw new UsageException("\"ps\" requires at least 1 argument: the container id, then ps options");
        string format = r.Get("format") ?? "table";
        if (format is not ("table" or "json")) throw new UsageException($"invalid format option \"{format}\" (table or json)");
        var pids = PsOperation.Pids(store, r.Positional[0]);
        Console.Out.Write(format == "json" ? PsOperation.Json(pids) + "\n" : PsOperation.Table(pids, r.Positional.Skip(1).ToList()));
        return 0;
    }

    static int Update(StateStore store, string[] args, int start)
    {
        var parser = new ArgParser();
        foreach (var f in UpdateOperation.ValueFlags) parser.Flag(f, true);
        var r = parser.Parse(args, start);
        string id = OneId(r, "update");
        UpdateOperation.Run(store, id, UpdateOperation.FromFlags(r.Get));
        return 0;
    }

    static int Events(StateStore store, string[] args, int start)
    {
        var r = new ArgParser().Flag("stats").Flag("interval", true).Parse(args, start);
        var interval = r.Get("interval") is { } i ? Durations.Parse("interval", i) : TimeSpan.FromSeconds(5);
        EventsOperation.Run(store, OneId(r, "events"), r.Has("stats"), interval, Console.Out);
        return 0;
    }

    static int InstallCommand(bool uninstall, string[] args, int start)
    {
        var r = new ArgParser().Flag("default").Flag("lock").Flag("containerd").Flag("no-docker").Flag("no-reload")
            .Flag("docker-config", true).Flag("containerd-config", true).Flag("path", true).Parse(args, start);
        if (r.Positional.Count != 0) throw new UsageException($"\"{(uninstall ? "uninstall" : "install")}\" takes no arguments");
        foreach (var flag in new[] { "path", "docker-config", "containerd-config" })
            if (r.Get(flag) is "") throw new UsageException($"--{flag}: the path cannot be empty");
        string binary = r.Get("path") is { } p ? Interop.HostPath.Resolve(p) : Install.EngineConfig.SelfPath();
        if (!uninstall && !File.Exists(binary)) throw new UsageException($"--path: {binary} does not exist");
        return Install.EngineConfig.Run(new Install.EngineConfigOptions(uninstall, binary, r.Has("default"), !r.Has("no-docker"),
            r.Has("containerd"), r.Get("docker-config") ?? Install.EngineConfig.DefaultDockerConfig,
            r.Get("containerd-config") ?? Install.EngineConfig.DefaultContainerdConfig, !r.Has("no-reload"), Lock: r.Has("lock")), Console.Out);
    }

    static void PrintVersion()
    {
        string commit = typeof(CommandLine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "";
        int plus = commit.IndexOf('+');
        Console.Out.WriteLine($"sandbox-runc version {Version}");
        Console.Out.WriteLine($"commit: {(plus >= 0 ? commit[(plus + 1)..] : "unknown")}");
        Console.Out.WriteLine($"spec: {SpecVersion.Current}");
    }

    static void PrintUsage()
    {
        Console.Out.WriteLine("""
            sandbox-runc: an OCI runtime that runs every container in its own user namespace

            usage: sandbox-runc [global options] command [command options] [arguments...]

            commands:
              create    create a container (--bundle, --pid-file, --console-socket, --no-pivot, --no-new-keyring, --preserve-fds)
              start     run the program of a created container
              run       create and start a container (--detach and the create options)
              exec      run a process in a running container (--process FILE, -d, -t, -e, -u, --cwd, --cap, ...)
              state     print the state of a container
              kill      send a signal to a container's init (--all: to every process)
              delete    delete a container (--force: kill it first)
              list      list containers (--format table|json, --quiet)
              spec      write a default config.json (--bundle)
              features  print the OCI features document
              pause     freeze every process of a container (resume: thaw them)
              ps        list a container's processes (--format table|json; then ps options, default -ef)
              update    change a running container's resources (--resources FILE|-, --memory, --cpu-quota, ...)
              events    print resource usage and OOM events (--stats: once; --interval, default 5s)
              install   register with dockerd (/etc/docker/daemon.json, then SIGHUP); --default: make it the
                        default runtime; --containerd: also add a CRI runtime to /etc/containerd/config.toml;
                        --docker-config FILE, --containerd-config FILE, --no-docker, --no-reload,
                        --path BINARY (default: this executable)
                        --lock: also the default runtime, and the "runc" that dockerd's shims find in its PATH
                        is a link to sandbox-runc, so --runtime=runc is isolated too
              uninstall undo install (same flags); default-runtime is removed only if it names sandbox-runc
              policy    policy check BUNDLE [--id ID]: run the isolation policy on a bundle, create nothing
              check     a doctor: host features (user namespaces, ID-mapped mounts, seccomp notify, /dev/fuse, cgroups,
                        ID ranges), engines (dockerd/containerd/podman know it, default, lock, admin settings) and
                        every running container not under isolation; --format table|json; exit 1 when isolation
                        is not in force
              ranges    list who holds which host IDs (/run/sandbox-runc/id-ranges.json); --rebuild: rebuild that
                        table from the containers' state and the live user namespaces (when it cannot be read)

            global options: --root DIR (default /run/sandbox-runc), --log FILE, --log-format text|json,
                            --debug, --systemd-cgroup, --version
            """);
    }
}
