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
    [Fact] public void ReadWriteInitialMountMayBecomeReadOnlyWithItsFlags() => Flags(Mount(REMOUNT | BIND | RDONLY | NOSUID, At("/data")), F.ReadOnly | F.NoSuid);
    // MNT_LOCK_* as the kernel applies it: a flag of the creator cannot be cleared (EPERM, never a quiet success)
    [Fact] public void ClearingALockedFlagIsRefused() => Refused(Mount(REMOUNT | BIND, At("/data")));
    [Fact] public void ClearingNoExecOfAnInitialTmpfsIsRefused() => Refused(Mount(REMOUNT | NOSUID | NODEV, At("/dev/shm")));
    [Fact] public void ClearingNoExecOfACopyIsRefused() =>
        Refused(Mount(REMOUNT | BIND | NOSUID | NODEV, Entry("505 100 0:90 / /tmp/shm rw,nosuid,nodev,noexec - tmpfs shm rw")));
    [Fact] public void ClearingAFlagWithReadOnlyIsRefusedToo() => Refused(Mount(REMOUNT | BIND | RDONLY, At("/data")));
    [Fact] public void AddingAFlagTheInitialMountLackedIsAllowed() => Flags(Mount(REMOUNT | BIND | NOSUID | NOEXEC, At("/data")), F.NoSuid | F.NoExec);
    [Fact] public void AddingAFlagNeverClearsReadOnly() => Refused(Mount(REMOUNT | BIND | NOEXEC, At("/mnt")));
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
    // An inner runc's pivot_root(".", "."): the old root, a copy of the container's "/", stacked on the inner container's
    // new root; its umount2(".") shows only that new root. Its /proc copy stays protected by what it hides.
    static readonly List<MountEntry> PivotTable = MountInfo.Parse("""
        800 780 0:95 / / rw - overlay overlay rw,lowerdir=/il,upperdir=/iu,workdir=/iw
        801 800 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
        802 801 0:60 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
        """);
    [Fact] public void AnOldRootStackedOnAnInnerContainersNewRootMayBeUnmounted() =>
        Assert.IsType<D.Unmount>(UmountIn(PivotTable, PivotTable[1]));
    [Fact] public void ProcUnderAStackedOldRootStaysProtected() => Refused(UmountIn(PivotTable, PivotTable[2]));
    [Fact] public void RootCopyInANewMountNamespaceCannotBeUnmounted() =>
        Refused(UmountIn(MountInfo.Parse("700 600 0:50 / / rw - overlay overlay rw"), Entry("700 600 0:50 / / rw - overlay overlay rw")));
    [Fact] public void OtherInitialMountsMayBeUnmounted() => Assert.IsType<D.Unmount>(Umount(At("/mnt")));
    [Fact] public void UnlessAllInitialMountsAreProtected() => Refused(Umount(At("/mnt"), protectAll: true));
    [Fact] public void OwnMountsMayBeUnmounted() => Assert.Equal(new D.Unmount(8), Umount(Mine, flags: 8));
    [Fact] public void SomethingMountedOverProcMayBeUnmounted() => Assert.IsType<D.Unmount>(Umount(Entry("701 101 0:99 / /proc rw - tmpfs t rw")));
    // MNT_FORCE: the kernel asks for CAP_SYS_ADMIN in the host's user namespace (can_umount), which no container has,
    // and calls the superblock's umount_begin before anything else: FUSE aborts its connection (every mount of it,
    // the host's too), NFS kills its client's calls. We unmount as host root, so the flag is the caller's to lack.
    [Fact] public void ForcedUmountOfAnInitialMountIsRefused() => Refused(Umount(At("/mnt"), flags: 1));
    [Fact] public void ForcedUmountOfOwnMountIsRefused() => Refused(Umount(Mine, flags: 1));
    [Fact] public void ForcedLazyUmountIsRefused() => Refused(Umount(Mine, flags: 1 | 2));
    [Fact] public void ForcedUmountOfANonMountRootIsStillTheKernelsEinval() => Refused(Umount(Mine, flags: 1, isRoot: false), EINVAL, policy: false);
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

    // --- copies of protected mounts: protection follows what a mount hides, not where it stands ---
    // mkdir /tmp/x; mount --rbind /proc /tmp/x (the kernel copies /proc and every mount on it)
    static readonly string CopyOfProc = InitMountInfo + """

        800 100 0:60 / /tmp/x rw,nosuid,nodev,noexec,relatime - proc proc rw
        801 800 0:70 /null /tmp/x/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
        802 800 0:60 /sys /tmp/x/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
        """;
    static readonly List<MountEntry> CopyTable = MountInfo.Parse(CopyOfProc);
    static MountEntry InCopy(string mountPoint) => CopyTable.Last(m => m.MountPoint == mountPoint);

    static D UmountIn(List<MountEntry> table, MountEntry target, MountRules? rules = null) =>
        (rules ?? Rules).Decide(new MountCall(MountSyscall.Umount2, 0, null, target.MountPoint),
            new CallerFacts(true, new PathFacts(target, true), null, table));

    [Fact] public void ACopyOfAMaskCannotBeUnmounted() => Refused(UmountIn(CopyTable, InCopy("/tmp/x/kcore")));
    [Fact] public void ACopyOfAReadOnlyPathCannotBeUnmounted() => Refused(UmountIn(CopyTable, InCopy("/tmp/x/sys")));
    [Fact] public void TheCopyOfProcItselfMayBeUnmountedItOnlyCoversTheContainersOwnRootfs() =>
        Assert.IsType<D.Unmount>(UmountIn(CopyTable, InCopy("/tmp/x")));
    [Fact]
    public void ACopyOfAMaskCannotBeMovedAway() =>
        Refused(Rules.Decide(new MountCall(MountSyscall.Mount, MOVE, "/tmp/x/kcore", "/tmp/mine"),
            new CallerFacts(true, new PathFacts(Mine, true), new PathFacts(InCopy("/tmp/x/kcore"), true), CopyTable)));
    // systemd's unit sandboxing: an rbind copy moved as a whole (its masks move along and stay protected).
    [Fact]
    public void ACopyWithMasksBelowMayBeMovedAsAWhole() =>
        Assert.IsType<D.Move>(Rules.Decide(new MountCall(MountSyscall.Mount, MOVE, "/tmp/x", "/tmp/mine"),
            new CallerFacts(true, new PathFacts(Mine, true), new PathFacts(InCopy("/tmp/x"), true), CopyTable)));
    [Fact]
    public void AfterTheMoveTheMaskCopyIsStillProtected()
    {
        var moved = MountInfo.Parse(InitMountInfo + """

            800 109 0:60 / /tmp/mine rw,nosuid,nodev,noexec,relatime - proc proc rw
            801 800 0:70 /null /tmp/mine/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
            109 100 0:99 / /tmp/mine rw - tmpfs t rw
            """);
        Refused(UmountIn(moved, moved.Single(m => m.MountPoint == "/tmp/mine/kcore")));
    }
    [Fact]
    public void APlainBindOfTheCopyIsMadeRecursive() =>
        Assert.Equal(new D.Bind(true, false), Rules.Decide(new MountCall(MountSyscall.Mount, BIND, "/tmp/x", "/tmp/mine"),
            new CallerFacts(true, new PathFacts(Mine, true), new PathFacts(InCopy("/tmp/x"), true), CopyTable)));
    [Fact]
    public void ACopySeenFromAnotherRootIsStillProtected()
    {
        // after pivot_root in a new mount namespace: the copies stand at other paths, with other ids
        var table = MountInfo.Parse("""
            900 899 0:50 / / rw - overlay overlay rw
            901 900 0:60 / /old/proc rw,nosuid - proc proc rw
            902 901 0:70 /null /old/proc/kcore rw - tmpfs tmpfs rw
            """);
        Refused(UmountIn(table, table[2]));
    }

    // with protect-initial-mounts: a read-only path layered over a read-write volume, and a copy of both
    const string Layered = InitMountInfo + "\n110 106 8:1 /srv/data/sub /data/sub ro,relatime - ext4 /dev/sda1 rw";
    static readonly List<MountEntry> LayeredCopy = MountInfo.Parse(Layered + """

        910 100 8:1 /srv/data /mnt/y rw,nosuid,relatime - ext4 /dev/sda1 rw
        911 910 8:1 /srv/data/sub /mnt/y/sub ro,relatime - ext4 /dev/sda1 rw
        """);
    [Fact]
    public void WithAllProtectedTheCopyOfAReadOnlyLayerCannotBeUnmounted() =>
        Refused(UmountIn(LayeredCopy, LayeredCopy.Last(), MountRules.FromMountInfo("c1", Layered, [], protectAllInitialMounts: true)));
    [Fact]
    public void WithoutProtectionTheCopyOfAReadOnlyLayerMayBeUnmounted() =>
        Assert.IsType<D.Unmount>(UmountIn(LayeredCopy, LayeredCopy.Last(), MountRules.FromMountInfo("c1", Layered, [])));

    // --- pivot_root ---
    static D Pivot(MountEntry newRoot, List<MountEntry> table, bool isRoot = true) =>
        Rules.Decide(new MountCall(MountSyscall.PivotRoot, 0, "/put_old", newRoot.MountPoint),
            new CallerFacts(true, new PathFacts(newRoot, isRoot), new PathFacts(At("/"), false), table));
    [Fact] public void PivotRootOntoOwnMountIsPerformed() => Assert.IsType<D.PivotRoot>(Pivot(Mine, Table));
    [Fact] public void PivotRootOntoAProtectedMountIsRefused() => Refused(Pivot(At("/proc/sys"), Table));
    [Fact] public void PivotRootOntoACopyOfAProtectedMountIsRefused() => Refused(Pivot(InCopy("/tmp/x/sys"), CopyTable));
    [Fact] public void PivotRootOntoANonMountRootIsTheKernelsEinval() => Refused(Pivot(Mine, Table, isRoot: false), EINVAL, policy: false);
    [Fact] public void PivotRootWithoutCapSysAdminIsRefused() =>
        Refused(Rules.Decide(new MountCall(MountSyscall.PivotRoot, 0, "/o", "/n"), new CallerFacts(false, null, null, [])));

    [Fact]
    public void CoveredPlaceIsTheMountPointInTheParentsFilesystem()
    {
        Assert.Equal(new FsLocation(0, 60, "/kcore"), MountRules.Covered(At("/proc/kcore"), Table));
        Assert.Equal(new FsLocation(0, 50, "/proc"), MountRules.Covered(At("/proc"), Table));
        Assert.Equal(new FsLocation(8, 1, "/srv/data/sub"), MountRules.Covered(LayeredCopy.First(m => m.Id == 110), LayeredCopy));
        Assert.Null(MountRules.Covered(At("/"), Table));
    }

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
        Assert.Null(Rules.DecideWithoutLookup(new MountCall(MountSyscall.PivotRoot, 0, "/o", "/n"), true));
        Assert.IsType<D.Refuse>(Rules.DecideWithoutLookup(new MountCall(MountSyscall.PivotRoot, 0, "/o", "/n"), false));
    }
}
