using SandboxRunc.Seccomp.Notify;
using Xunit;
using D = SandboxRunc.Seccomp.Notify.MountDecision;

namespace SandboxRunc.Tests.Notify;

/// <summary>An overlay's data string read as the kernel reads it, and every layer judged by what it resolved to.</summary>
public class NotifyOverlayRulesTests
{
    const int EPERM = 1;

    const string InitMountInfo = """
        100 90 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
        101 100 0:60 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
        102 101 0:70 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
        103 101 0:60 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
        104 100 0:80 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
        105 100 8:1 /srv/data /data rw,relatime - ext4 /dev/sda1 rw
        106 105 8:1 /srv/data/sub /data/sub ro,relatime - ext4 /dev/sda1 rw
        107 100 0:90 / /tmp/mine rw,relatime - tmpfs tmpfs rw
        108 104 0:95 / /sys/kernel/mm rw,relatime - fuse.sandbox-emulate emulate rw
        """;

    static readonly List<MountEntry> Table = MountInfo.Parse(InitMountInfo);
    static readonly MountRules Rules = MountRules.FromMountInfo("c1", InitMountInfo, ["/proc/kcore", "/proc/sys", "/sys/kernel/mm", "/data/sub"]);
    static MountEntry At(string mountPoint) => Table.Last(m => m.MountPoint == mountPoint);

    /// <summary>Each layer of the data string, resolved to (mount point, path) as given here.</summary>
    static D Overlay(string data, params (string Mount, string Path, bool Root)[] resolved)
    {
        var options = OverlayOptions.Parse(data);
        Assert.Equal(options.Layers.Count, resolved.Length);
        var layers = options.Layers.Select((l, i) => new LayerFacts(l, new PathFacts(At(resolved[i].Mount), resolved[i].Root), resolved[i].Path)).ToList();
        return Rules.Decide(new MountCall(MountSyscall.Mount, 0, "overlay", "/tmp/m", "overlay", data),
            new CallerFacts(true, new PathFacts(At("/tmp/mine"), false), null, Table, Layers: layers));
    }

    static void Refused(D d) => Assert.Equal(EPERM, Assert.IsType<D.Refuse>(d).Errno);

    [Fact]
    public void TheDataStringIsSplitAsTheKernelSplitsIt()
    {
        var o = OverlayOptions.Parse(@"index=off,lowerdir=/a\:b:/c\,d:/e\\f::/g,upperdir=/u\,1,workdir=/w,lowerdir+=/x\y,userxattr");
        Assert.Equal(
            [("lowerdir+", "/a:b"), ("lowerdir+", "/c,d"), ("lowerdir+", @"/e\f"), ("datadir+", "/g"), ("upperdir", "/u,1"), ("workdir", "/w"), ("lowerdir+", @"/x\y")],
            o.Layers.Select(l => (l.Key, l.Path)));
        Assert.Equal(["index=off", "userxattr"], o.Others);
    }

    [Fact]
    public void ALaterLowerdirReplacesTheEarlierLayers() =>
        Assert.Equal(["/b"], OverlayOptions.Parse("lowerdir=/a,lowerdir=/b").Layers.Select(l => l.Path));

    [Fact]
    public void OrdinaryDirectoriesMakeAnOverlay()
    {
        var d = Assert.IsType<D.Overlay>(Overlay("lowerdir=/tmp/mine/l,upperdir=/tmp/mine/u,workdir=/tmp/mine/w,index=off",
            ("/tmp/mine", "/tmp/mine/l", false), ("/tmp/mine", "/tmp/mine/u", false), ("/tmp/mine", "/tmp/mine/w", false)));
        Assert.Equal(["source=overlay", "index=off"], d.Options);
        Assert.Equal(3, d.Layers.Count);
    }

    [Fact] public void ALayerOnProcIsRefused() => Refused(Overlay("lowerdir=/proc", ("/proc", "/proc", true)));
    [Fact] public void ALayerInsideSysIsRefused() => Refused(Overlay("lowerdir=/sys/kernel", ("/sys", "/sys/kernel", false)));
    [Fact] public void AnEmulatedMountAsALayerIsRefused() => Refused(Overlay("lowerdir=/sys/kernel/mm", ("/sys/kernel/mm", "/sys/kernel/mm", true)));
    [Fact] public void AProtectedMountAsALayerIsRefused() => Refused(Overlay("lowerdir=/data/sub", ("/data/sub", "/data/sub", true)));
    [Fact] public void ALayerWithAProtectedMountBelowIsRefused() => Refused(Overlay("lowerdir=/data", ("/data", "/data", true)));
    [Fact] public void TheRootWithProcBelowIsRefused() => Refused(Overlay("lowerdir=/", ("/", "/", true)));
    [Fact]
    public void AnyLayerCounts_TheSecondLowerTheUpperTheWork()
    {
        Refused(Overlay("lowerdir=/tmp/mine/l:/proc", ("/tmp/mine", "/tmp/mine/l", false), ("/proc", "/proc", true)));
        Refused(Overlay("lowerdir=/tmp/mine/l,upperdir=/data", ("/tmp/mine", "/tmp/mine/l", false), ("/data", "/data", true)));
        Refused(Overlay("lowerdir=/tmp/mine/l,lowerdir+=/sys", ("/tmp/mine", "/tmp/mine/l", false), ("/sys", "/sys", true)));
    }
    [Fact]
    public void AnUnresolvedLayerIsTheKernelsError()
    {
        var layer = new OverlayLayer("lowerdir+", "/nope");
        var r = Assert.IsType<D.Refuse>(Rules.Decide(new MountCall(MountSyscall.Mount, 0, "overlay", "/tmp/m", "overlay", "lowerdir=/nope"),
            new CallerFacts(true, new PathFacts(At("/tmp/mine"), false), null, Table, Layers: [new LayerFacts(layer, null, null, 2)])));
        Assert.Equal((2, false), (r.Errno, r.Policy));
    }
}
