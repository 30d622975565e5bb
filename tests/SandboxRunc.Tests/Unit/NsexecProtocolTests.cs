using CliWrap;
using CliWrap.Buffered;
using SandboxRunc.Namespaces;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Unit;

/// <summary>
/// nsexec.c and NsexecProtocol.cs describe one wire format twice. This compiles the C file into a tiny
/// program that prints its struct layout and compares it with the C# constants, so they cannot drift.
/// </summary>
public class NsexecProtocolTests
{
    [Fact]
    public async Task CAndCSharpAgreeOnTheLayout()
    {
        string dir = Directory.CreateTempSubdirectory("sr-nsexec").FullName;
        try
        {
            string main = Path.Combine(dir, "main.c");
            File.WriteAllText(main, $$"""
                #include "{{Path.Combine(Repo.Root, "src/SandboxRunc/Namespaces/nsexec.c")}}"
                #include <sched.h>
                int main(void) {
                    printf("%d %d %d %d %d %d %d %d %d %d\n", nsexec_layout(0), nsexec_layout(1), nsexec_layout(2), nsexec_layout(3),
                        NSEXEC_MAX_JOIN, NSEXEC_PATH_MAX, CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWCGROUP);
                    return 0;
                }
                """);
            var cc = await CliWrap.Cli.Wrap("cc").WithArguments(["-o", Path.Combine(dir, "layout"), main])
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
            Assert.True(cc.ExitCode == 0, cc.StandardError);
            var run = await CliWrap.Cli.Wrap(Path.Combine(dir, "layout")).ExecuteBufferedAsync();
            var v = run.StandardOutput.Trim().Split(' ').Select(long.Parse).ToArray();
            Assert.Equal(NsexecProtocol.MessageSize, v[0]);
            Assert.Equal(NsexecProtocol.BootstrapSize, v[1]);
            Assert.Equal(NsexecProtocol.PayloadOffset, v[2]);
            Assert.Equal(20, v[3]);
            Assert.Equal(NsexecProtocol.MaxJoin, v[4]);
            Assert.Equal(NsexecProtocol.PathMax, v[5]);
            Assert.Equal(NsexecProtocol.CLONE_NEWUSER, (uint)v[6]);
            Assert.Equal(NsexecProtocol.CLONE_NEWNS, (uint)v[7]);
            Assert.Equal(NsexecProtocol.CLONE_NEWPID, (uint)v[8]);
            Assert.Equal(NsexecProtocol.CLONE_NEWCGROUP, (uint)v[9]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BootstrapEncodesJoinsAndFlags()
    {
        var msg = NsexecProtocol.EncodeBootstrap(NsexecProtocol.CLONE_NEWNS | NsexecProtocol.CLONE_NEWPID,
            [(NsexecProtocol.CLONE_NEWNET, "/proc/7/ns/net")], oomScoreAdj: -500);
        Assert.Equal(NsexecProtocol.MessageSize, msg.Length);
        Assert.Equal(NsexecProtocol.Bootstrap, BitConverter.ToUInt32(msg, 0));
        Assert.Equal(NsexecProtocol.CLONE_NEWNS | NsexecProtocol.CLONE_NEWPID, BitConverter.ToUInt32(msg, 12));
        Assert.Equal(1u, BitConverter.ToUInt32(msg, 16));
        Assert.Equal(-500, BitConverter.ToInt32(msg, 20));
        Assert.Equal(NsexecProtocol.CLONE_NEWNET, BitConverter.ToUInt32(msg, 28));
        Assert.Equal("/proc/7/ns/net", System.Text.Encoding.UTF8.GetString(msg, 32, 14));
    }

    [Fact]
    public void ErrorTextIsDecoded()
    {
        var msg = NsexecProtocol.Encode(NsexecProtocol.Error, 1);
        System.Text.Encoding.UTF8.GetBytes("setns: Operation not permitted").CopyTo(msg, NsexecProtocol.PayloadOffset);
        var (type, value, text) = NsexecProtocol.Decode(msg);
        Assert.Equal((NsexecProtocol.Error, 1, "setns: Operation not permitted"), (type, value, text));
    }

    [Fact]
    public void TooManyJoinsAreRefused() =>
        Assert.Throws<RuntimeException>(() => NsexecProtocol.EncodeBootstrap(0,
            Enumerable.Range(0, NsexecProtocol.MaxJoin + 1).Select(i => (NsexecProtocol.CLONE_NEWNET, "/x")).ToList(), null));

    [Fact]
    public void TooLongJoinPathIsRefusedByName() =>
        Assert.Contains("namespace path too long", Assert.Throws<RuntimeException>(() => NsexecProtocol.EncodeBootstrap(0,
            [(NsexecProtocol.CLONE_NEWNET, "/" + new string('n', 5000))], null)).Message);
}
