using System.Runtime.InteropServices;
using SandboxRunc.Interop;
using SandboxRunc.Seccomp.Notify;
using Xunit;

namespace SandboxRunc.Tests.Notify;

/// <summary>
/// An umount2 is decided from the target's mount and its parent as statmount(2) reports them (kernel >= 6.8) instead
/// of the whole mount table: those entries must be the very ones the table shows, and a target with a mount below it
/// (or stacked on it) must fall back to the table. Runs in a mount namespace of its own, on tmpfs mounts it makes.
/// </summary>
public sealed partial class NotifyStatmountTests
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int gettid();

    static bool KernelHasStatmount()
    {
        var release = File.ReadAllText("/proc/sys/kernel/osrelease").Split('.', '-');
        return int.Parse(release[0]) * 100 + int.Parse(release[1]) >= 608;
    }

    [Fact]
    public void StatmountEntriesAreTheMountTables()
    {
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try { Check(); }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        thread.Join();
        if (error is not null) throw new Xunit.Sdk.XunitException(error.ToString());
    }

    static void Check()
    {
        // This thread only: its own fs state and mount namespace, mounts private so nothing reaches the host.
        SysException.Check(Libc.unshare(Libc.CLONE_FS | Libc.CLONE_NEWNS), "unshare", "CLONE_NEWNS");
        SysException.Check(Libc.mount(null, "/", null, Libc.MS_REC | Libc.MS_PRIVATE, null), "mount", "/ private");
        string dir = Directory.CreateTempSubdirectory("statmount-").FullName;
        try
        {
            SysException.Check(Libc.mount("outer", dir, "tmpfs", Libc.MS_NOSUID, "size=64k"), "mount", dir);
            Directory.CreateDirectory(Path.Combine(dir, "inner dir"));
            string inner = Path.Combine(dir, "inner dir");
            SysException.Check(Libc.mount("inner", inner, "tmpfs", Libc.MS_NODEV, "size=64k"), "mount", inner);

            int tid = gettid();
            using var performer = new MountPerformer();
            using var caller = CallerHandles.Open(tid);
            caller.OpenPaths();
            var table = MountPerformer.ReadMountInfo(caller.MountInfo);

            // Without a mount below it: the target's and its parent's entries, exactly as the table shows them.
            using (var lookup = performer.Lookup(caller, inner, followTarget: true, null, null, targetMounts: true))
            {
                Assert.NotNull(lookup.Target);
                if (!KernelHasStatmount())
                {
                    Assert.Null(lookup.TargetMounts);
                    return;
                }
                var facts = Assert.IsType<List<MountEntry>>(lookup.TargetMounts);
                Assert.Equal(2, facts.Count);
                Assert.Equal((ulong)facts[0].Id, lookup.Target!.MountId);
                Assert.Equal(inner, facts[0].MountPoint);
                Assert.Equal(dir, facts[1].MountPoint);
                foreach (var e in facts)
                {
                    var m = table.Single(x => x.Id == e.Id);
                    Assert.Equal((m.ParentId, m.Major, m.Minor, m.Root, m.MountPoint, m.Flags, m.FsType),
                        (e.ParentId, e.Major, e.Minor, e.Root, e.MountPoint, e.Flags, e.FsType));
                }
            }
            // With a mount below it: the whole table is read instead.
            using (var lookup = performer.Lookup(caller, dir, followTarget: true, null, null, targetMounts: true))
            {
                Assert.NotNull(lookup.Target);
                Assert.Null(lookup.TargetMounts);
            }
            // A mount stacked on another at the same place: the name resolves to the top one, whose parent is the one below.
            SysException.Check(Libc.mount("stacked", inner, "tmpfs", 0, "size=64k"), "mount", inner);
            table = MountPerformer.ReadMountInfo(caller.MountInfo);
            using (var lookup = performer.Lookup(caller, inner, followTarget: true, null, null, targetMounts: true))
            {
                var facts = Assert.IsType<List<MountEntry>>(lookup.TargetMounts);
                Assert.Equal([inner, inner], facts.Select(f => f.MountPoint));
                Assert.Equal(table.Last(m => m.MountPoint == inner).Id, facts[0].Id);
                Assert.Equal(facts[1].Id, facts[0].ParentId);
            }
            // The one below has a mount stacked on it: the whole table.
            using (var lookup = performer.Lookup(caller, dir, followTarget: true, null, null, targetMounts: true))
                Assert.Null(lookup.TargetMounts);
        }
        finally
        {
            Libc.umount2(dir, 2 /* MNT_DETACH */);
            Directory.Delete(dir, recursive: true);
        }
    }
}
