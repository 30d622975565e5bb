using System.Runtime.Versioning;
using SandboxRunc.Oci;
using SandboxRunc.Tests.TestSupport;
using Xunit;

namespace SandboxRunc.Tests.Integration;

/// <summary>
/// The end of a container process's set-up: the spec's seccomp filter is the last thing before execve
/// (nothing of ours may need a syscall it forbids), and a failure after `create` returned (between the start
/// byte and execve) fails `start`, which engines report, instead of a container that silently never ran.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class InitFailureTests : IDisposable
{
    readonly RuntimeCli _rt = new();

    /// <summary>
    /// An allow-list profile (default SCMP_ACT_ERRNO) with only what busybox's echo needs: none of close_range,
    /// setresuid, setgroups, capset or prctl, which the runtime itself calls before execve. With and without
    /// no_new_privs (without it the kernel wants CAP_SYS_ADMIN to load a filter). Before, the init died with
    /// "close_range: Operation not permitted" after create and start had both said 0.
    /// </summary>
    [IntegrationTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AllowListWithoutTheRuntimesSyscallsRuns(bool noNewPrivileges)
    {
        using var b = new Bundle("echo", "hello-from-container");
        b.Spec.Process!.NoNewPrivileges = noNewPrivileges;
        b.Spec.Linux!.Seccomp = new Oci.Seccomp
        {
            DefaultAction = "SCMP_ACT_ERRNO",
            Architectures = ["SCMP_ARCH_X86_64"],
            Syscalls =
            [
                new SeccompSyscall
                {
                    Action = "SCMP_ACT_ALLOW",
                    Names = ["execve", "brk", "arch_prctl", "set_tid_address", "write", "writev", "exit_group", "exit",
                        "getuid", "geteuid", "getgid", "getegid", "getpid", "getppid", "rt_sigaction", "rt_sigprocmask",
                        "rt_sigreturn", "ioctl", "uname", "mmap", "munmap", "mprotect", "prlimit64", "getrandom", "rseq",
                        "set_robust_list", "fstat", "newfstatat", "read", "openat", "close", "fcntl", "getcwd", "futex"],
                },
            ],
        };
        Assert.DoesNotContain("close_range", b.Spec.Linux.Seccomp.Syscalls[0].Names);
        string output = await _rt.RunOk(b.Write(), "seccomp-last" + (noNewPrivileges ? "-nnp" : ""));
        Assert.Contains("hello-from-container", output);
    }

    /// <summary>A startContainer hook runs after the start byte: its failure is start's error, in one line.</summary>
    [IntegrationFact]
    public async Task FailingStartContainerHookFailsStart()
    {
        using var b = new Bundle("true");
        b.Spec.Hooks = new Oci.Hooks { StartContainer = [new Hook { Path = "/bin/false" }] };
        await _rt.Create(b.Write(), "hookfail");
        var r = await _rt.Run("start", "hookfail");
        BadInput.AssertCleanRefusal(r, "start", "cannot start container hookfail: startContainer hook #0 (/bin/false): exited with status 1");
        Assert.Equal("stopped", await _rt.Status("hookfail"));
    }

    /// <summary>execve itself failing after start (a script whose interpreter is missing) is start's error too.</summary>
    [IntegrationFact]
    public async Task ExecveFailureFailsStartAndExec()
    {
        using var b = new Bundle("sleep", "100").WritableRootfs();
        string script = Path.Combine(b.Dir, "rootfs", "bad.sh");
        File.WriteAllText(script, "#!/nonexistent-interpreter\n");
        File.SetUnixFileMode(script, (UnixFileMode)0x1ed /* 0755 */);
        b.Spec.Process!.Args = ["/bad.sh"];
        await _rt.Create(b.Write(), "badexec");
        var r = await _rt.Run("start", "badexec");
        BadInput.AssertCleanRefusal(r, "start", "cannot start container badexec: exec /bad.sh: No such file or directory");
        Assert.Equal("stopped", await _rt.Status("badexec"));

        // The same for a process joining a running container: "exec failed: ..." and 255, as runc's.
        b.Spec.Process.Args = ["sleep", "100"];
        b.Spec.Linux!.CgroupsPath += "-2";
        await _rt.Create(b.Write(), "badexec2");
        await _rt.Ok("start", "badexec2");
        var e = await _rt.Run("exec", "badexec2", "/bad.sh");
        BadInput.AssertCleanRefusal(e, "exec", "exec failed: exec /bad.sh: No such file or directory", exec: true);
        Assert.Equal(255, e.ExitCode);
        Assert.Equal("running", await _rt.Status("badexec2"));
    }

    /// <summary>A program that exits at once is started fine: the end of the fifo means it was exec'd, not that it failed.</summary>
    [IntegrationFact]
    public async Task ProgramThatExitsAtOnceStarts()
    {
        using var b = new Bundle("true");
        b.Write();
        for (int i = 0; i < 5; i++)
        {
            await _rt.Create(b.Dir, $"quick{i}");
            await _rt.Ok("start", $"quick{i}");
            await _rt.WaitStatus($"quick{i}", "stopped");
            await _rt.Ok("delete", $"quick{i}");
        }
    }

    public void Dispose() => _rt.Dispose();
}
