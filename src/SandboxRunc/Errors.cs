namespace SandboxRunc;

/// <summary>
/// The one error type of the runtime: every failure the runtime means to report (a refusal, bad input, a
/// failed system call, a cgroup or seccomp problem, an init that failed) is one of these, with a message
/// that names what failed and why, in one line. The command line maps it once to an exit code and that
/// line (Cli/CommandLine.cs); anything else that reaches the top is a bug, reported as an internal error.
/// It lives below every folder so that each of them (Container, Policy, Install, Cgroups, ...) can throw
/// it without depending on the command line.
/// </summary>
public abstract class SandboxRuncException : Exception
{
    protected SandboxRuncException(string message) : base(message) { }
    protected SandboxRuncException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A refusal or failure of a lifecycle command, shown to the user as is.</summary>
public sealed class RuntimeException : SandboxRuncException
{
    public RuntimeException(string message) : base(message) { }
    public RuntimeException(string message, Exception inner) : base(message, inner) { }
}
