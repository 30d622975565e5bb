using System.Runtime.Versioning;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// Every command fed malformed arguments: missing and extra positional arguments, unknown flags, flags
/// without their value, bad, huge and empty numbers, empty and very long strings (a 200-byte console
/// socket path), missing and garbage files. Each must be refused as <see cref="BadInput.AssertCleanRefusal"/>
/// says, naming what is wrong, and must not hurt a running container ("T" in the cases) nor leave anything.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class BadCommandLineTests : IClassFixture<BadCommandLineTests.Target>
{
    /// <summary>One running container the cases aim at, and the files they name, made on first use.</summary>
    public sealed class Target : IDisposable
    {
        public const string Id = "bad-cli-target";
        RuntimeCli? _rt;
        Bundle? _bundle, _other;
        public string Dir { get; } = Directory.CreateTempSubdirectory("sr-bad-cli").FullName;

        public async Task<RuntimeCli> Runtime()
        {
            if (_rt is not null) return _rt;
            _rt = new RuntimeCli();
            _bundle = new Bundle("sleep", "1000");
            await _rt.Create(_bundle.Write(), Id);
            await _rt.Ok("start", Id);
            // The bundle the create cases use: a cgroup of its own, not the running target's.
            _other = new Bundle("true");
            _other.Write();
            File.WriteAllBytes(Path.Combine(Dir, "garbage"), [0x7b, 0xff, 0x00, 0x22, 0x5b, 0x0a, 0x80]);
            File.WriteAllText(Path.Combine(Dir, "null-items.json"), """{"args": ["true", null], "memory": null, "blockIO": {"weightDevice": [null]}}""");
            File.WriteAllText(Path.Combine(Dir, "daemon.json"), """{"runtimes": {"sandbox-runc": 7}}""");
            Directory.CreateDirectory(Path.Combine(Dir, "garbage-bundle"));
            File.WriteAllText(Path.Combine(Dir, "garbage-bundle", "config.json"), "{\"ociVersion\": \"1.0.2\", \"process\": ");
            Directory.CreateDirectory(Path.Combine(Dir, "has-config"));
            File.WriteAllText(Path.Combine(Dir, "has-config", "config.json"), "{}");
            return _rt;
        }

        public string BundleDir => _other!.Dir;
        public string BundleCgroup => _other!.Spec.Linux!.CgroupsPath!;

        public void Dispose()
        {
            _rt?.Dispose();
            _bundle?.Dispose();
            _other?.Dispose();
            try { Directory.Delete(Dir, true); } catch (IOException) { }
        }
    }

    readonly Target _target;
    public BadCommandLineTests(Target target) => _target = target;

    static readonly string LongSocket = "/tmp/" + new string('s', 195);
    static readonly string LongId = new('i', 5000);

    /// <summary>
    /// (what, args, a fragment the one error line must contain). In args: T is the running container, {dir} a
    /// temp dir with garbage, null-items.json, a bad daemon.json, garbage-bundle/ (bad config.json),
    /// has-config/ (an existing config.json); {bundle} a valid bundle (with a cgroup of its own).
    /// </summary>
    public static TheoryData<string, string[], string> Cases() => new()
    {
        // Global flags and commands.
        { "unknown global flag", ["--bogus", "state", "T"], "flag provided but not defined: -bogus" },
        { "global flag without value", ["--root"], "flag needs an argument: -root" },
        { "empty --root", ["--root", "", "list"], "--root" },
        { "unknown log format", ["--log-format", "xml", "state", "T"], "--log-format" },
        { "unknown command", ["bogus"], "unknown command \"bogus\"" },
        { "init by hand", ["init"], "init is started by sandbox-runc itself" },
        { "supervise by hand", ["supervise", "T"], "started by sandbox-runc itself" },
        { "emulate by hand", ["emulate", "T"], "started by sandbox-runc itself" },

        // create / run
        { "create without id", ["create"], "requires exactly 1 argument" },
        { "create with two ids", ["create", "a", "b"], "requires exactly 1 argument" },
        { "create with unknown flag", ["create", "--bogus", "x"], "flag provided but not defined: -bogus" },
        { "create --bundle without value", ["create", "--bundle"], "flag needs an argument: -bundle" },
        { "create bad --preserve-fds", ["create", "--preserve-fds", "abc", "x"], "--preserve-fds" },
        { "create negative --preserve-fds", ["create", "--preserve-fds", "-1", "x"], "--preserve-fds" },
        { "create huge --preserve-fds", ["create", "--preserve-fds", "99999999999999999999", "x"], "--preserve-fds" },
        { "create empty id", ["create", "--bundle", "{bundle}", ""], "container id cannot be empty" },
        { "create id with slash", ["create", "--bundle", "{bundle}", "../x"], "invalid container id" },
        { "create 5000-byte id", ["create", "--bundle", "{bundle}", LongId], "invalid container id" },
        { "create missing bundle", ["create", "--bundle", "/nonexistent-sr-bundle", "x"], "/nonexistent-sr-bundle: no such directory" },
        { "create garbage config.json", ["create", "--bundle", "{dir}/garbage-bundle", "x"], "invalid JSON" },
        { "create bundle is a file", ["create", "--bundle", "{dir}/garbage", "x"], "no such directory" },
        { "create 200-byte console socket", ["create", "--bundle", "{bundle}", "--console-socket", LongSocket, "x"], "the path is too long" },
        { "create missing console socket", ["create", "--bundle", "{bundle}", "--console-socket", "/nonexistent-sr/sock", "x"], "/nonexistent-sr" },
        { "create pid file in missing dir", ["create", "--bundle", "{bundle}", "--pid-file", "/nonexistent-sr/dir/pid", "x"], "--pid-file /nonexistent-sr/dir/pid" },
        { "create taken id", ["create", "--bundle", "{bundle}", "T"], "container with id exists" },
        { "run without id", ["run"], "requires exactly 1 argument" },
        { "run missing bundle", ["run", "--bundle", "/nonexistent-sr-bundle", "x"], "no such directory" },
        { "run 200-byte console socket", ["run", "-d", "--bundle", "{bundle}", "--console-socket", LongSocket, "x"], "the path is too long" },

        // start, state, kill, delete, list
        { "start without id", ["start"], "requires exactly 1 argument" },
        { "start two ids", ["start", "a", "b"], "requires exactly 1 argument" },
        { "start missing", ["start", "nope"], "container does not exist: nope" },
        { "start running", ["start", "T"], "cannot start an already running container" },
        { "start unknown flag", ["start", "--bogus", "T"], "flag provided but not defined" },
        { "state without id", ["state"], "requires exactly 1 argument" },
        { "state empty id", ["state", ""], "container id cannot be empty" },
        { "state 5000-byte id", ["state", LongId], "invalid container id" },
        { "state dotdot", ["state", "../../etc"], "invalid container id" },
        { "state missing", ["state", "nope"], "container does not exist: nope" },
        { "kill without id", ["kill"], "requires 1 or 2 arguments" },
        { "kill unknown signal", ["kill", "T", "SIGBOGUS"], "unknown signal \"SIGBOGUS\"" },
        { "kill huge signal", ["kill", "T", "99999999999"], "99999999999" },
        { "kill signal 0", ["kill", "T", "0"], "invalid signal number 0" },
        { "kill RTMIN overflow", ["kill", "T", "RTMIN+2147483647"], "unknown signal" },
        { "kill empty signal", ["kill", "T", ""], "unknown signal" },
        { "kill extra argument", ["kill", "T", "KILL", "extra"], "requires 1 or 2 arguments" },
        { "kill missing", ["kill", "nope", "KILL"], "container does not exist: nope" },
        { "delete without id", ["delete"], "requires exactly 1 argument" },
        { "delete missing", ["delete", "nope"], "container does not exist: nope" },
        { "delete running", ["delete", "T"], "that is not stopped" },
        { "delete bad --force value", ["delete", "--force=maybe", "T"], "invalid boolean value" },
        { "list bad format", ["list", "--format", "xml"], "invalid format option \"xml\"" },
        { "list --format without value", ["list", "--format"], "flag needs an argument" },

        // spec, features
        { "spec extra argument", ["spec", "x"], "\"spec\" takes no arguments" },
        { "spec missing dir", ["spec", "--bundle", "/nonexistent-sr/dir"], "/nonexistent-sr/dir/config.json" },
        { "spec existing config", ["spec", "--bundle", "{dir}/has-config"], "exists" },
        { "features extra argument", ["features", "x"], "\"features\" takes no arguments" },
        { "features unknown flag", ["features", "--bogus"], "flag provided but not defined" },

        // pause, resume, ps
        { "pause without id", ["pause"], "requires exactly 1 argument" },
        { "pause missing", ["pause", "nope"], "container does not exist: nope" },
        { "resume without id", ["resume"], "requires exactly 1 argument" },
        { "resume running", ["resume", "T"], "container not paused" },
        { "ps without id", ["ps"], "requires at least 1 argument" },
        { "ps missing", ["ps", "nope"], "container does not exist: nope" },
        { "ps bad format", ["ps", "--format", "xml", "T"], "invalid format option \"xml\"" },

        // update
        { "update without id", ["update"], "requires exactly 1 argument" },
        { "update bad memory", ["update", "--memory", "abc", "T"], "--memory" },
        { "update huge memory", ["update", "--memory", "99999999999999999999999", "T"], "--memory: too large" },
        { "update huge cpu quota", ["update", "--cpu-quota", "99999999999999999999", "T"], "--cpu-quota" },
        { "update empty cpu shares", ["update", "--cpu-share", "", "T"], "--cpu-share" },
        { "update blkio weight out of range", ["update", "--blkio-weight", "5", "T"], "--blkio-weight" },
        { "update bad pids limit", ["update", "--pids-limit", "x", "T"], "--pids-limit" },
        { "update garbage cpuset", ["update", "--cpuset-cpus", "garbage", "T"], "cpuset.cpus" },
        { "update missing resources file", ["update", "--resources", "/nonexistent-sr.json", "T"], "--resources /nonexistent-sr.json" },
        { "update garbage resources file", ["update", "--resources", "{dir}/garbage", "T"], "invalid JSON" },
        { "update resources with null items", ["update", "--resources", "{dir}/null-items.json", "T"], "a list item cannot be null" },
        { "update resources is a directory", ["update", "--resources", "{dir}", "T"], "is a directory" },
        { "update missing container", ["update", "--memory", "1m", "nope"], "container does not exist: nope" },

        // events
        { "events without id", ["events"], "requires exactly 1 argument" },
        { "events bad interval", ["events", "--interval", "abc", "T"], "--interval" },
        { "events huge interval", ["events", "--interval", "99999999999999h", "T"], "--interval: too large" },
        { "events zero interval", ["events", "--interval", "0", "T"], "--interval must be greater than 0" },
        { "events NaN interval", ["events", "--interval", "NaN", "T"], "--interval" },
        { "events missing", ["events", "--stats", "nope"], "container does not exist: nope" },

        // install / uninstall, only ever on files of this test, never reloading dockerd
        { "install garbage daemon.json", ["install", "--no-reload", "--docker-config", "{dir}/garbage"], "{dir}/garbage" },
        { "install wrong daemon.json types", ["install", "--no-reload", "--docker-config", "{dir}/daemon.json"], "runtimes" },
        { "install extra argument", ["install", "--no-reload", "--docker-config", "{dir}/daemon.json", "x"], "takes no arguments" },
        { "install empty docker config", ["install", "--no-reload", "--docker-config", ""], "--docker-config" },
        { "install missing binary", ["install", "--no-reload", "--docker-config", "{dir}/new.json", "--path", "/nonexistent-sr/bin"], "/nonexistent-sr/bin does not exist" },
        { "install containerd config is a directory", ["install", "--no-reload", "--no-docker", "--containerd", "--containerd-config", "{dir}"], "{dir}" },
        { "install nothing to do", ["install", "--no-docker", "--no-reload"], "nothing to do" },
        { "uninstall garbage daemon.json", ["uninstall", "--no-reload", "--docker-config", "{dir}/garbage"], "{dir}/garbage" },
        { "uninstall unknown flag", ["uninstall", "--bogus"], "flag provided but not defined" },

        // policy check
        { "policy without subcommand", ["policy"], "usage: sandbox-runc policy check" },
        { "policy unknown subcommand", ["policy", "bogus", "{bundle}"], "usage: sandbox-runc policy check" },
        { "policy check without bundle", ["policy", "check"], "usage: sandbox-runc policy check" },
        { "policy check empty bundle", ["policy", "check", ""], "usage: sandbox-runc policy check" },
        { "policy check two bundles", ["policy", "check", "a", "b"], "usage: sandbox-runc policy check" },
        { "policy check --id without value", ["policy", "check", "{bundle}", "--id"], "flag needs an argument" },
        { "policy check missing bundle", ["policy", "check", "/nonexistent-sr-bundle"], "no such directory" },
        { "policy check garbage bundle", ["policy", "check", "{dir}/garbage-bundle"], "invalid JSON" },
    };

    [IntegrationTheory]
    [MemberData(nameof(Cases))]
    public async Task RefusedInOneLine(string what, string[] args, string names)
    {
        var rt = await _target.Runtime();
        string[] Fill(IEnumerable<string> a) => a.Select(x => x == "T" ? Target.Id
            : x.Replace("{dir}", _target.Dir).Replace("{bundle}", _target.BundleDir)).ToArray();
        var argv = Fill(args);
        bool creates = argv.Length > 0 && argv[0] is "create" or "run";
        var r = creates ? await rt.Detached(argv) : await rt.Run(argv);
        BadInput.AssertCleanRefusal(r, what, Fill([names])[0]);
        if (creates && argv[^1] is "x")
            await BadInput.AssertNothingLeft(rt, "x", _target.BundleCgroup, what);
        // A refused command never touches the container it names.
        Assert.Equal("running", await rt.Status(Target.Id));
    }

    /// <summary>exec: usage errors exit 1 as runc's; a failure to run the process is "exec failed: ..." and 255.</summary>
    public static TheoryData<string, string[], string> ExecCases() => new()
    {
        { "exec without anything", ["exec"], "requires the container id" },
        { "exec without command", ["exec", "T"], "exec needs a command" },
        { "exec unknown flag", ["exec", "--bogus", "T", "true"], "flag provided but not defined" },
        { "exec --cwd without value", ["exec", "--cwd"], "flag needs an argument: -cwd" },
        { "exec bad user", ["exec", "-u", "abc", "T", "true"], "--user \"abc\"" },
        { "exec huge user", ["exec", "-u", "99999999999", "T", "true"], "--user" },
        { "exec bad gid", ["exec", "-u", "5:abc", "T", "true"], "--user" },
        { "exec bad additional gid", ["exec", "-g", "x", "T", "true"], "--additional-gids" },
        { "exec unknown capability", ["exec", "--cap", "CAP_BOGUS", "T", "true"], "CAP_BOGUS" },
        { "exec bad preserve-fds", ["exec", "--preserve-fds", "abc", "T", "true"], "--preserve-fds" },
        { "exec missing container", ["exec", "nope", "true"], "exec failed: container does not exist: nope" },
        { "exec missing process file", ["exec", "--process", "/nonexistent-sr.json", "T"], "exec failed: --process /nonexistent-sr.json" },
        { "exec garbage process file", ["exec", "--process", "{dir}/garbage", "T"], "invalid JSON" },
        { "exec process with null items", ["exec", "--process", "{dir}/null-items.json", "T"], "a list item cannot be null" },
        { "exec process is a directory", ["exec", "--process", "{dir}", "T"], "is a directory" },
        { "exec 200-byte console socket", ["exec", "--console-socket", LongSocket, "T", "true"], "the path is too long" },
        { "exec pid file in missing dir", ["exec", "-d", "--pid-file", "/nonexistent-sr/dir/pid", "T", "true"], "--pid-file /nonexistent-sr/dir/pid" },
        { "exec missing program", ["exec", "T", "/nonexistent-program"], "/nonexistent-program" },
    };

    [IntegrationTheory]
    [MemberData(nameof(ExecCases))]
    public async Task ExecRefusedInOneLine(string what, string[] args, string names)
    {
        var rt = await _target.Runtime();
        var argv = args.Select(x => x == "T" ? Target.Id : x.Replace("{dir}", _target.Dir)).ToArray();
        var r = await rt.Run(argv);
        BadInput.AssertCleanRefusal(r, what, names.Length == 0 ? null : names.Replace("{dir}", _target.Dir), exec: true);
        Assert.Equal("running", await rt.Status(Target.Id));
    }
}
