using SandboxRunc.Seccomp.Notify;
using Xunit;
using D = SandboxRunc.Seccomp.Notify.MountDecision;
using F = SandboxRunc.Seccomp.Notify.MountFlags;

namespace SandboxRunc.Tests.Notify;

/// <summary>The pure decision table of <see cref="MountRules"/>: no root, no kernel.</summary>
public class NotifyMountRulesTests
{
    const ulong RDONLY = 1, NOSUID = 2, NODEV = 4, NOEXEC = 8, REMOUNT = 32, BIND = 4096, MOVE = 8192, REC = 16384,
        PRIVATE = 1 << 18, SHARED = 1 << 20, MGC = 0xC0ED0000;
    const int EPERM = 1, EINVAL = 22;

    // The container as created: docker run -v $HOME:/mnt:ro -v /srv/data:/data ...
    const string InitMountInfo = """
        100 90 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
        101 100 0:60 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
        102 101 0:70 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
        103 101 0:60 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
        104 100 0:80 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
        105 100 8:1 /home/u /mnt ro,relatime - ext4 /dev/sda1 rw
        106 100 8:1 /srv/data /data rw,nosuid,relatime - ext4 /dev/sda1 rw
        107 100 0:70 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
        108 107 0:90 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
        """;

    static readonly MountRules Rules = MountRules.FromMountInfo("c1", InitMountInfo, ["/proc/kcore", "/proc/sys"]);
    static readonly List<MountEntry> Table = MountInfo.Parse(InitMountInfo);

    static MountEntry At(string mountPoint) => Table.Last(m => m.MountPoint == mountPoint);
    static MountEntry Entry(string line) => MountInfo.ParseLine(line);

    static D Mount(ulong flags, MountEntry? target, MountEntry? source = null, string? fstype = null, string? data = null,
        bool cap = true, bool targetIsRoot = true, IReadOnlyList<MountEntry>? table = null, bool samePidNs = true) =>
        Rules.Decide(new MountCall(MountSyscall.Mount, flags, source?.MountPoint ?? "none", target?.MountPoint ?? "/x", fstype, data),
            new CallerFacts(cap, target is null ? null : new PathFacts(target, targetIsRoot),
                source is null ? null : new PathFacts(source, true), table ?? Table, samePidNs));

    static D Umount(MountEntry target, int flags = 0, bool protectAll = false, bool isRoot = true)
    {
        var rules = protectAll ? MountRules.FromMountInfo("c1", InitMountInfo, ["/proc/kcore", "/proc/sys"], true) : Rules;
        return rules.Decide(new MountCall(MountSyscall.Umount2, (ulong)flags, null, target.MountPoint),
            new CallerFacts(true, new PathFacts(target, isRoot), null, Table));
    }

    static void Refused(D d, int errno = EPERM, bool policy = true)
    {
        var r = Assert.IsType<D.Refuse>(d);
        Assert.Equal(errno, r.Errno);
        Assert.Equal(policy, r.Policy);
    }

    static D.SetFlags Flags(D d, F set)
    {
        var s = Assert.IsType<D.SetFlags>(d);
        Assert.Equal(set, s.Set);
        Assert.Equal(F.All & ~set, s.Clear);
        return s;
    }

    [Fact] public void WithoutCapSysAdminEverythingIsRefused() => Refused(Mount(REMOUNT | BIND | RDONLY, At("/mnt"), cap: false));
    [Fact] public void WithoutCapSysAdminUmountIsRefused() =>
        Refused(Rules.Decide(new MountCall(MountSyscall.Umount2, 0, null, "/x"), new CallerFacts(false, null, null, [])));

    // --- remount of initial mounts ---
    [Fact] public void ReadOnlyInitialMountCannotBeRemountedReadWrite() => Refused(Mount(REMOUNT | BIND, At("/mnt")));
    [Fact] public void ReadOnlyInitialMountCannotBeRemountedReadWriteWithoutBind() => Refused(Mount(REMOUNT, At("/mnt")));
    [Fact] public void TheMagicNumberIsIgnoredAsTheKernelDoes() => Refused(Mount(MGC | REMOUNT | BIND, At("/mnt")));
    [Fact] public void ReadOnlyInitialMountMayBeRemountedReadOnly() => Flags(Mount(REMOUNT | BIND | RDONLY, At("/mnt")), F.ReadOnly);
    [Fact] public void ReadWriteInitialMountMayBecomeReadOnlyAndKeepsItsFlags() => Flags(Mount(REMOUNT | BIND | RDONLY, At("/data")), F.ReadOnly | F.NoSuid);
    [Fact] public void OmittedFlagsOfAnInitialMountAreKept() => Flags(Mount(REMOUNT | BIND, At("/data")), F.NoSuid);
    [Fact] public void AddingAFlagTheInitialMountLackedIsRefused() => Refused(Mount(REMOUNT | BIND | NOEXEC, At("/data")));
    [Fact] public void RepeatingTheInitialFlagsIsFine() => Flags(Mount(REMOUNT | BIND | NOSUID | NODEV | NOEXEC, At("/dev/shm")), F.NoSuid | F.NoDev | F.NoExec);
    [Fact] public void ReadOnlySysStaysReadOnly() => Refused(Mount(REMOUNT | BIND | NOSUID | NODEV | NOEXEC, At("/sys")));
    [Fact] public void ReadOnlyPathStaysReadOnly() => Refused(Mount(REMOUNT | BIND | NOSUID | NODEV | NOEXEC, At("/proc/sys")));
    [Fact] public void RemountOfANonMountRootIsTheKernelsEinval() => Refused(Mount(REMOUNT | BIND, At("/mnt"), targetIsRoot: false), EINVAL, policy: false);
    [Fact] public void MissingTargetIsNotAPolicyRefusal() => Refused(Mount(REMOUNT | BIND, null), 2, policy: false);

    // --- copies: binds elsewhere and new mount namespaces ---
    [Fact] public void ACopyInANewMountNamespaceStaysReadOnly() =>
        Refused(Mount(REMOUNT | BIND, Entry("500 400 8:1 /home/u /mnt ro,relatime - ext4 /dev/sda1 rw")));
    [Fact] public void ABindElsewhereStaysReadOnly() =>
        Refused(Mount(REMOUNT | BIND, Entry("501 100 8:1 /home/u /tmp/x ro - ext4 /dev/sda1 rw")));
    [Fact] public void ABindOfASubdirectoryStaysReadOnly() =>
        Refused(Mount(REMOUNT | BIND, Entry("502 100 8:1 /home/u/docs /tmp/d ro - ext4 /dev/sda1 rw")));
    [Fact] public void ASiblingDirectoryWithACommonPrefixDoesNotDerive() =>
        Flags(Mount(REMOUNT | BIND, Entry("503 100 8:1 /home/user /tmp/y ro - ext4 /dev/sda1 rw")), F.None);
    [Fact]
    public void AnyReadOnlyAncestorWins()
    {
        var rules = MountRules.FromMountInfo("c", InitMountInfo + "\n109 100 8:1 /srv/data/x /ro ro - ext4 /dev/sda1 rw", []);
        var copy = Entry("504 100 8:1 /srv/data/x/y /tmp/z ro - ext4 /dev/sda1 rw");
        Refused(rules.Decide(new MountCall(MountSyscall.Mount, REMOUNT | BIND | NOSUID, null, "/tmp/z"),
            new CallerFacts(true, new PathFacts(copy, true), null, Table)));
    }

    // --- the container's own mounts ---
    static readonly MountEntry Mine = Entry("600 100 0:99 / /tmp/mine rw,relatime - tmpfs tmpfs rw,size=1024k");
    [Fact] public void OwnMountsRemountFreely() => Flags(Mount(REMOUNT | RDONLY | NOEXEC, Mine), F.ReadOnly | F.NoExec);
    [Fact] public void OwnMountsBackToReadWrite() => Flags(Mount(REMOUNT, Mine), F.None);
    [Fact] public void SuperblockOptionsGoToTheSuperblockWithoutTheFlagWords()
    {
        var s = Flags(Mount(REMOUNT | RDONLY, Mine, data: "ro,size=2m,nosuid,mode=700"), F.ReadOnly);
        Assert.Equal(["size=2m", "mode=700"], s.SuperblockOptions);
    }
    [Fact] public void BindRemountIgnoresTheData() => Assert.Empty(Flags(Mount(REMOUNT | BIND, Mine, data: "size=2m"), F.None).SuperblockOptions);

    // --- umount2 ---
    [Fact] public void RootCannotBeUnmounted() => Refused(Umount(At("/")));
    [Fact] public void ProcCannotBeUnmounted() => Refused(Umount(At("/proc")));
    [Fact] public void SysCannotBeUnmounted() => Refused(Umount(At("/sys")));
    [Fact] public void MaskedPathCannotBeUnmounted() => Refused(Umount(At("/proc/kcore"), flags: 2));
    [Fact] public void ReadOnlyPathCannotBeUnmounted() => Refused(Umount(At("/proc/sys")));
    [Fact] public void ProcCopyInANewMountNamespaceCannotBeUnmounted() => Refused(Umount(Entry("700 600 0:60 / /proc rw - proc proc rw")));
    [Fact] public void OtherInitialMountsMayBeUnmounted() => Assert.IsType<D.Unmount>(Umount(At("/mnt")));
    [Fact] public void UnlessAllInitialMountsAreProtected() => Refused(Umount(At("/mnt"), protectAll: true));
    [Fact] public void OwnMountsMayBeUnmounted() => Assert.Equal(new D.Unmount(8), Umount(Mine, flags: 8));
    [Fact] public void SomethingMountedOverProcMayBeUnmounted() => Assert.IsType<D.Unmount>(Umount(Entry("701 101 0:99 / /proc rw - tmpfs t rw")));
    [Fact] public void UmountOfANonMountRootIsTheKernelsEinval() => Refused(Umount(Mine, isRoot: false), EINVAL, policy: false);

    // --- bind and move ---
    [Fact] public void BindOfAReadOnlyInitialMountIsMadeReadOnly() => Assert.Equal(new D.Bind(false, true), Mount(BIND, Mine, source: At("/mnt")));
    [Fact] public void BindOfACopyOfAReadOnlyMountIsMadeReadOnly() =>
        Assert.Equal(new D.Bind(true, true), Mount(BIND | REC, Mine, source: Entry("502 100 8:1 /home/u/docs /tmp/d ro - ext4 /dev/sda1 rw")));
    [Fact] public void BindOfAReadWriteMountStaysAsItIs() => Assert.Equal(new D.Bind(false, false), Mount(BIND, Mine, source: At("/data")));
    [Fact] public void PlainBindOfProcIsMadeRecursiveSoMasksStay() => Assert.Equal(new D.Bind(true, false), Mount(BIND, Mine, source: At("/proc")));
    [Fact] public void PlainBindOfRootIsMadeRecursive() => Assert.Equal(new D.Bind(true, false), Mount(BIND, Mine, source: At("/")));
    [Fact] public void ProtectedMountCannotBeMoved() => Refused(Mount(MOVE, Mine, source: At("/proc")));
    [Fact]
    public void MountAboveProtectedOnesCannotBeMoved()
    {
        var rules = MountRules.FromMountInfo("c", InitMountInfo, ["/dev/shm"]);
        Refused(rules.Decide(new MountCall(MountSyscall.Mount, MOVE, "/dev", "/tmp/mine"),
            new CallerFacts(true, new PathFacts(Mine, true), new PathFacts(At("/dev"), true), Table)));
    }
    [Fact] public void OwnMountsMove() => Assert.IsType<D.Move>(Mount(MOVE, At("/data"), source: Mine));

    // --- propagation and new filesystems ---
    [Fact] public void PropagationOnlyContinues() => Assert.IsType<D.Continue>(Mount(PRIVATE | REC, At("/proc")));
    [Fact] public void SharedContinues() => Assert.IsType<D.Continue>(Mount(SHARED, At("/mnt")));
    [Fact] public void RemountWinsOverPropagationAsInTheKernel() => Refused(Mount(REMOUNT | BIND | PRIVATE, At("/mnt")));
    [Fact] public void NewTmpfsContinues() => Assert.IsType<D.Continue>(Mount(0, Mine, fstype: "tmpfs"));
    [Fact] public void NewProcIsABindOfTheContainersProc() =>
        Assert.Equal(new D.BindKernelFs("/proc", F.NoSuid | F.NoDev | F.NoExec), Mount(NOSUID | NODEV | NOEXEC, Mine, fstype: "proc"));
    [Fact] public void NewSysfsIsABindOfTheContainersSys() => Assert.Equal(new D.BindKernelFs("/sys", F.ReadOnly), Mount(RDONLY, Mine, fstype: "sysfs"));
    [Fact] public void NewProcOfAnotherPidNamespaceIsLeftToTheKernel() => Assert.IsType<D.Continue>(Mount(0, Mine, fstype: "proc", samePidNs: false));

    [Fact]
    public void DecisionsWithoutLookupAgreeWithDecide()
    {
        Assert.IsType<D.Continue>(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Mount, 0, "t", "/x", "tmpfs"), true));
        Assert.IsType<D.Continue>(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Mount, PRIVATE, null, "/x"), true));
        Assert.IsType<D.Refuse>(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Umount2, 0, null, "/x"), false));
        Assert.Null(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Mount, 0, "proc", "/x", "proc"), true));
        Assert.Null(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Mount, REMOUNT, null, "/x"), true));
        Assert.Null(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Mount, MOVE, "/a", "/x"), true));
        Assert.Null(Rules.DecideWithoutLookup(new MountCall(MountSyscall.Umount2, 0, null, "/x"), true));
    }
}
