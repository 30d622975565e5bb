using SandboxRunc.Cli;
using Xunit;

namespace SandboxRunc.Tests.Unit;

public class CommandLineTests
{
    static readonly ArgParser Create = new ArgParser()
        .Flag("bundle|b", true).Flag("pid-file", true).Flag("console-socket", true).Flag("detach|d").Flag("preserve-fds", true);

    [Theory]
    [InlineData("--bundle", "/b", "id")]
    [InlineData("-b", "/b", "id")]
    [InlineData("-bundle", "/b", "id")]
    [InlineData("--bundle=/b", "id")]
    [InlineData("-b=/b", "id")]
    public void FlagSpellingsOfUrfaveCli(params string[] args)
    {
        var r = Create.Parse(args);
        Assert.Equal("/b", r.Get("bundle"));
        Assert.Equal(["id"], r.Positional);
    }

    [Fact]
    public void ContainerdStyleCreateLine()
    {
        string[] args = ["--root", "/run/containerd/runc/moby", "--log", "/x/log.json", "--log-format", "json",
            "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--console-socket", "/tmp/pty.sock", "abc"];
        var global = new ArgParser().Flag("root", true).Flag("log", true).Flag("log-format", true).Parse(args, stopAtPositional: true);
        Assert.Equal("/run/containerd/runc/moby", global.Get("root"));
        Assert.Equal("json", global.Get("log-format"));
        Assert.Equal("create", global.Positional[0]);
        var create = Create.Parse(args, args.Length - global.Positional.Count + 1);
        Assert.Equal("/b/init.pid", create.Get("pid-file"));
        Assert.Equal("/tmp/pty.sock", create.Get("console-socket"));
        Assert.Equal(["abc"], create.Positional);
    }

    [Fact]
    public void FlagsMayFollowPositionalsAsUrfaveCliReordersThem()
    {
        var r = new ArgParser().Flag("all|a").Parse(["id", "KILL", "--all"]);
        Assert.True(r.Has("all"));
        Assert.Equal(["id", "KILL"], r.Positional);
        var p = new ArgParser().Flag("id", true).Parse(["check", "--id", "p1", "/b"]);
        Assert.Equal("p1", p.Get("id"));
        Assert.Equal(["check", "/b"], p.Positional);
        // A negative number is an argument, not a flag.
        Assert.Equal(["id", "-3"], new ArgParser().Flag("all|a").Parse(["id", "-3"]).Positional);
        // "--" ends the flags wherever it is.
        Assert.Equal(["id", "--all"], new ArgParser().Flag("all|a").Parse(["id", "--", "--all"]).Positional);
    }

    [Fact]
    public void StopAtPositionalKeepsTheCommandsOwnFlags()
    {
        // exec ID CMD ARGS and ps ID PS-OPTIONS: what follows the id belongs to the command, as in runc (SkipArgReorder).
        var r = new ArgParser().Flag("detach|d").Parse(["-d", "id", "ls", "-d"], stopAtPositional: true);
        Assert.True(r.Has("detach"));
        Assert.Equal(["id", "ls", "-d"], r.Positional);
    }

    [Fact]
    public void UnknownFlagAndMissingValueAreUsageErrors()
    {
        Assert.Contains("flag provided but not defined: -nope", Assert.Throws<UsageException>(() => Create.Parse(["--nope", "id"])).Message);
        Assert.Contains("flag needs an argument: -bundle", Assert.Throws<UsageException>(() => Create.Parse(["--bundle"])).Message);
        Assert.Contains("invalid boolean", Assert.Throws<UsageException>(() => Create.Parse(["--detach=maybe", "id"])).Message);
    }

    [Theory]
    [InlineData("9", 9)]
    [InlineData("KILL", 9)]
    [InlineData("SIGKILL", 9)]
    [InlineData("sigterm", 15)]
    [InlineData("TERM", 15)]
    [InlineData("USR1", 10)]
    [InlineData("SIGWINCH", 28)]
    [InlineData("RTMIN", 34)]
    [InlineData("SIGRTMIN+3", 37)]
    [InlineData("RTMAX", 64)]
    [InlineData("RTMAX-1", 63)]
    public void SignalsByNameAndNumber(string text, int expected) => Assert.Equal(expected, Signals.Parse(text));

    [Theory]
    [InlineData("0")]
    [InlineData("65")]
    [InlineData("-1")]
    [InlineData("SIGFOO")]
    [InlineData("RTMIN+40")]
    [InlineData("RTMIN+2147483647")]
    [InlineData("RTMAX-2147483647")]
    [InlineData("RTMAX-99999999999")]
    [InlineData("99999999999")]
    [InlineData("")]
    public void BadSignalsAreRefused(string text) =>
        Assert.Throws<UsageException>(() => Signals.Parse(text));
}
