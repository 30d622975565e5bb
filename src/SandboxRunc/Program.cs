using SandboxRunc.Namespaces;

// A Linux runtime: Linux-only APIs (Unix file modes, ...) are fine everywhere in it.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace SandboxRunc;

public static class Program
{
    public static int Main(string[] args)
    {
        Diagnostics.PhaseTrace.MainEntered();
        // nsexec.c already ran (it is an ELF constructor); in a container's init it hands over to .NET here.
        if (Environment.GetEnvironmentVariable("_SANDBOX_RUNC_INIT") is not null && Nsexec.Role() == 1)
            return InitProcess.Run();
        return Cli.CommandLine.Run(args);
    }
}
