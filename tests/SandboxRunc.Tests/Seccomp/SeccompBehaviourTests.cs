using SandboxRunc.Seccomp;
using Xunit;
using static SandboxRunc.Tests.Seccomp.SeccompTestSupport;

namespace SandboxRunc.Tests.Seccomp;

/// <summary>
/// What installed filters do, checked with raw syscalls on a thread of their own (see
/// <see cref="SeccompTestSupport.OnFilteredThread{T}(CompiledSeccomp?, Func{T})"/>).
/// </summary>
public class SeccompBehaviourTests
{
    [Fact]
    public void DockerDefaultDeniesUserNamespacesButAllowsGetpid()
    {
        var compiled = Compile("docker-default.json");
        // Unfiltered, unshare(CLONE_NEWUSER) in a multi-threaded process fails with EINVAL:
        // so an EPERM below can only come from the filter.
        var unfiltered = OnFilteredThread(null, () => Sys(SYS_unshare, CLONE_NEWUSER));
        Assert.NotEqual(EPERM, unfiltered.Errno);

        var (unshare, getpid, clone3) = OnFilteredThread(compiled,
            () => (Sys(SYS_unshare, CLONE_NEWUSER), Sys(SYS_getpid), Sys(SYS_clone3)));
        Assert.Equal((-1L, EPERM), unshare);
        Assert.Equal((Environment.ProcessId, 0), ((int)getpid.Result, getpid.Errno));
        Assert.Equal((-1L, ENOSYS), clone3); // Docker's rule: clone3 → ENOSYS so libcs fall back to clone
    }

    [Fact]
    public void ErrnoRetIsReturned()
    {
        var (getppid, getpid) = OnFilteredThread(Compile("errno-getppid.json"), () => (Sys(SYS_getppid), Sys(SYS_getpid)));
        Assert.Equal((-1L, 38), getppid);
        Assert.Equal(0, getpid.Errno);
    }

    [Fact]
    public void UnknownSyscallNamesAreSkippedAndTheRestApplies()
    {
        var getppid = OnFilteredThread(Compile("unknown-syscall.json"), () => Sys(SYS_getppid));
        Assert.Equal((-1L, 5), getppid);
    }

    [Fact]
    public void MaskedEqBlocksOnlyMatchingValues()
    {
        // mask 0xff00, value 0x1200: 0x1234 and 0x12ff match, 0 and 0x3412 do not.
        var r = OnFilteredThread(Compile("masked-eq.json"),
            () => (Sys(SYS_getpgid, 0x1234), Sys(SYS_getpgid, 0x12ff), Sys(SYS_getpgid, 0), Sys(SYS_getpgid, 0x3412)));
        Assert.Equal(EACCES, r.Item1.Errno);
        Assert.Equal(EACCES, r.Item2.Errno);
        Assert.Equal(0, r.Item3.Errno);
        Assert.NotEqual(EACCES, r.Item4.Errno);
    }

    [Fact]
    public void TwoConditionsOnOneArgumentMatchEither()
    {
        // As runc does: each condition becomes a rule of its own, so the result is an OR.
        var r = OnFilteredThread(Compile("same-arg-twice.json"),
            () => (Sys(SYS_getpgid, 1111), Sys(SYS_getpgid, 2222), Sys(SYS_getpgid, 3333), Sys(SYS_getpgid, 0)));
        Assert.Equal(EACCES, r.Item1.Errno);
        Assert.Equal(EACCES, r.Item2.Errno);
        Assert.NotEqual(EACCES, r.Item3.Errno);
        Assert.Equal(0, r.Item4.Errno);
    }

    [Fact]
    public void ConditionsOnDifferentArgumentsMustAllMatch()
    {
        // getpriority(PRIO_PROCESS=0, who): blocked only for who == 4242.
        var r = OnFilteredThread(Compile("two-args-and.json"),
            () => (Sys(SYS_getpriority, 0, 4242), Sys(SYS_getpriority, 0, 0), Sys(SYS_getpriority, 1, 4242)));
        Assert.Equal(EACCES, r.Item1.Errno);
        Assert.Equal(0, r.Item2.Errno);
        Assert.NotEqual(EACCES, r.Item3.Errno);
    }

    [Fact]
    public void FlagsAreAcceptedByTheKernel()
    {
        var getppid = OnFilteredThread(Compile("flags.json"), () => Sys(SYS_getppid));
        Assert.Equal(0, getppid.Errno);
    }

    [Fact]
    public void NewListenerReturnsASeccompNotifyFd()
    {
        var profile = new Oci.Seccomp
        {
            DefaultAction = "SCMP_ACT_ALLOW",
            Syscalls = [new() { Names = ["getppid"], Action = "SCMP_ACT_NOTIFY" }],
        };
        var compiled = SeccompCompiler.Compile(profile);
        var (fd, target, getpid) = OnFilteredThread(compiled, SeccompCompiler.SECCOMP_FILTER_FLAG_NEW_LISTENER,
            fd => (fd, fd > 0 ? new FileInfo($"/proc/self/fd/{fd}").LinkTarget : null, Sys(SYS_getpid)));
        Assert.True(fd > 0, $"listener fd {fd}");
        Assert.Contains("seccomp notify", target);
        Assert.Equal(0, getpid.Errno);
    }

    [Fact]
    public void MalformedProgramIsRejectedBeforeTheSyscall()
    {
        Assert.Throws<ArgumentException>(() => SeccompFilter.Install(new byte[12], 0));
        Assert.Throws<ArgumentException>(() => SeccompFilter.Install([], 0));
    }
}
