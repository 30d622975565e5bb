// Every cgroup failure surfaces as one exception type whose message names the file and the value
// ("cgroup: write 999 to /sys/fs/cgroup/cpuset/x/cpuset.cpus: Invalid argument"), so the CLI can print
// it as-is and callers can still branch on errno when they need to (EBUSY on rmdir, ENOENT, ...).
namespace SandboxRunc.Cgroups;

public sealed class CgroupException : SandboxRuncException
{
    /// <summary>The errno behind the failure, or 0 when it is not a system-call failure.</summary>
    public int Errno { get; }

    public CgroupException(string message, int errno = 0) : base(message) => Errno = errno;
}
