using System.Globalization;
using SandboxRunc.Emulation;
using SandboxRunc.Fuse;
using SandboxRunc.Interop;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Emulation;

/// <summary>
/// The handle on a FUSE caller's thread (Interop/ThreadHandle). Before Linux 6.9 pidfd_open takes no thread but a
/// process's leader, and Go programs (dockerd, containerd, kubelet) read /proc/sys from any thread: there the handle
/// is the thread's /proc/TID directory. These tests hold that form on any kernel.
/// </summary>
public sealed class ThreadHandleTests
{
    const long SYS_gettid = 186, SYS_setresuid = 117;

    /// <summary>Runs <paramref name="body"/> on a thread of its own until <paramref name="release"/> is set; returns its tid.</summary>
    static (Thread Thread, int Tid) Park(ManualResetEventSlim release, Action? body = null)
    {
        int tid = 0;
        using var started = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            body?.Invoke();
            tid = (int)Libc.syscall(SYS_gettid, 0, 0, 0, 0, 0, 0);
            started.Set();
            release.Wait();
        }) { IsBackground = true };
        thread.Start();
        started.Wait();
        return (thread, tid);
    }

    [RootFact]
    public void AThreadThatLeadsNoProcess_IsEnteredThroughItsOwnNamespace_NotItsProcesss()
    {
        using var release = new ManualResetEventSlim();
        // A thread in a network namespace of its own (unshare of CLONE_NEWNET changes the calling thread only).
        int unshared = -2;
        var (thread, tid) = Park(release, () => unshared = Libc.unshare(Libc.CLONE_NEWNET));
        try
        {
            Assert.Equal(0, unshared);
            Assert.NotEqual(Environment.ProcessId, tid);
            string its = new FileInfo($"/proc/{tid}/ns/net").LinkTarget!;
            string process = new FileInfo($"/proc/{Environment.ProcessId}/ns/net").LinkTarget!;
            Assert.NotEqual(process, its);

            using var handle = ThreadHandle.OpenProcDirectory(tid)!;
            Assert.False(handle.Exited);
            string? entered = null;
            var enter = new Thread(() =>
            {
                // A throwaway thread: it ends in the namespace it entered.
                if (handle.EnterNamespace("net", Libc.CLONE_NEWNET) == 0)
                    entered = new FileInfo("/proc/thread-self/ns/net").LinkTarget;
            });
            enter.Start();
            enter.Join();
            Assert.Equal(its, entered);
        }
        finally
        {
            release.Set();
            thread.Join();
        }
    }

    [RootFact]
    public async Task AThreadThatExited_IsSeenGone_AndNothingEntersThroughIt()
    {
        using var release = new ManualResetEventSlim();
        var (thread, tid) = Park(release);
        using var handle = ThreadHandle.OpenProcDirectory(tid)!;
        Assert.False(handle.Exited);
        release.Set();
        thread.Join();
        await Eventually.Holds(() => handle.Exited, gone => gone, $"thread {tid}'s handle to see it gone");
        int entered = 0;
        var enter = new Thread(() => entered = handle.EnterNamespace("uts", Libc.CLONE_NEWUTS));
        enter.Start();
        enter.Join();
        Assert.Equal(-1, entered);
    }
    /// <summary>
    /// The id of an exited thread given to a new thread (the host's ns_last_pid steers the next id): the old handle
    /// neither takes the newcomer for alive nor enters its namespace, while a handle opened now does (the reuse is real).
    /// </summary>
    [RootFact]
    public async Task AReusedThreadId_IsNotTheThreadTheHandleWasTakenOn()
    {
        using var release = new ManualResetEventSlim();
        var (thread, tid) = Park(release);
        using var handle = ThreadHandle.OpenProcDirectory(tid)!;
        release.Set();
        thread.Join();
        await Eventually.Holds(() => handle.Exited, gone => gone, $"thread {tid}'s handle to see it gone");

        using var hold = new ManualResetEventSlim();
        Thread? newcomer = null;
        int unshared = -2;
        // Another process may take the id between the write and the clone: a few tries.
        for (int attempt = 0; attempt < 50 && newcomer is null; attempt++)
        {
            File.WriteAllText("/proc/sys/kernel/ns_last_pid", (tid - 1).ToString(CultureInfo.InvariantCulture));
            var (t, got) = Park(hold, () => unshared = Libc.unshare(Libc.CLONE_NEWUTS));
            if (got == tid) newcomer = t;
            else
            {
                // Not the id: a parked thread that is not ours to keep; it waits on `hold` like the one we keep.
                hold.Set();
                t.Join();
                hold.Reset();
            }
        }
        Assert.True(newcomer is not null, $"thread id {tid} was never given again in 50 tries (a busy host took it)");
        try
        {
            Assert.Equal(0, unshared);
            string theirs = new FileInfo($"/proc/{tid}/ns/uts").LinkTarget!;
            Assert.True(handle.Exited, "the old handle takes the newcomer with its id for the thread it was opened on");
            string? throughOld = Entered(handle), throughNew;
            using (var fresh = ThreadHandle.OpenProcDirectory(tid)!) throughNew = Entered(fresh);
            Assert.Equal(theirs, throughNew);
            Assert.Null(throughOld);
        }
        finally
        {
            hold.Set();
            newcomer!.Join();
        }

        static string? Entered(ThreadHandle h)
        {
            string? entered = null;
            var enter = new Thread(() =>
            {
                if (h.EnterNamespace("uts", Libc.CLONE_NEWUTS) == 0) entered = new FileInfo("/proc/thread-self/ns/uts").LinkTarget;
            });
            enter.Start();
            enter.Join();
            return entered;
        }
    }

    /// <summary>
    /// Credentials are a thread's own (a raw setresuid changes the calling thread only): a caller thread that is not
    /// its process's leader is judged by its own effective uid and capabilities, not by its leader's.
    /// </summary>
    [RootFact]
    public void ACallerThreadsCredentials_AreItsOwn_NotItsLeaders()
    {
        using var release = new ManualResetEventSlim();
        long changed = -2;
        var (thread, tid) = Park(release, () => changed = Libc.syscall(SYS_setresuid, -1, 12345, -1, 0, 0, 0));
        try
        {
            Assert.Equal(0, changed);
            var theirs = CallerIdentity.Credentials(new FuseCaller(tid, 12345, 0));
            var leaders = CallerIdentity.Credentials(new FuseCaller(Environment.ProcessId, 0, 0));
            Assert.NotNull(theirs);
            Assert.NotNull(leaders);
            Assert.Equal(12345u, theirs.Value.Euid);
            Assert.Equal(0ul, theirs.Value.CapEff);
            Assert.Equal(0u, leaders.Value.Euid);
            Assert.NotEqual(0ul, leaders.Value.CapEff);
        }
        finally
        {
            release.Set();
            thread.Join();
        }
    }
}
