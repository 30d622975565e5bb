using SandboxRunc.Seccomp.Notify;
using Xunit;

namespace SandboxRunc.Tests.Notify;

public class NotifyMountInfoTests
{
    [Fact]
    public void ParsesAllFieldsWithOptionalFields()
    {
        var m = MountInfo.ParseLine("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue");
        Assert.Equal(new MountEntry(36, 35, 98, 0, "/mnt1", "/mnt2", MountFlags.None, "ext3", "/dev/root", "rw,errors=continue"), m);
    }

    [Fact]
    public void ParsesWithoutOptionalFields()
    {
        var m = MountInfo.ParseLine("102 101 0:70 /null /proc/kcore ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=65536k");
        Assert.Equal(MountFlags.All, m.Flags);
        Assert.True(m.ReadOnly);
        Assert.Equal("/null", m.Root);
        Assert.Equal("tmpfs", m.FsType);
    }

    [Fact]
    public void UnescapesOctalSequences()
    {
        var m = MountInfo.ParseLine(@"40 1 8:1 /a\040b /mnt/with\040space\011tab\134 rw - ext4 /dev/sd\040a rw");
        Assert.Equal("/a b", m.Root);
        Assert.Equal("/mnt/with space\ttab\\", m.MountPoint);
        Assert.Equal("/dev/sd a", m.Source);
    }

    [Fact]
    public void ParsesTheRunningKernelsTable()
    {
        var all = MountInfo.Parse(File.ReadAllText("/proc/self/mountinfo"));
        Assert.Contains(all, m => m.MountPoint == "/");
        Assert.Contains(all, m => m.FsType == "proc");
    }

    [Fact]
    public void RejectsAMalformedLine() => Assert.Throws<FormatException>(() => MountInfo.ParseLine("1 2 3:4 / /"));

    [Fact]
    public void InitialMountsComeFromTheInitsTable()
    {
        var rules = MountRules.FromMountInfo("c", "1 0 8:1 /x /mnt ro,nodev - ext4 /dev/sda1 rw\n", ["/mnt/"]);
        Assert.Equal(new InitialMount(8, 1, "/x", "/mnt", MountFlags.ReadOnly | MountFlags.NoDev), Assert.Single(rules.Initial));
        Assert.Contains("/mnt", rules.Protected);
        Assert.Contains("/proc", rules.Protected);
    }
}
