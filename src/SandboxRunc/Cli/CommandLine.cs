namespace SandboxRunc.Cli;

public static class CommandLine
{
    public static int Run(string[] args)
    {
        Console.Error.WriteLine("not yet");
        return 1;
    }
}
