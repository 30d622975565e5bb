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
    const long SYS_gettid = 186;

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
}
