namespace SandboxRunc.Cli;

/// <summary>Signal names and numbers as `kill` accepts them: "SIGKILL", "KILL", "kill", "9", "SIGRTMIN+3".</summary>
public static class Signals
{
    static readonly string[] Names =
    [
        "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
        "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
        "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    const int RtMin = 34, RtMax = 64;

    public static int Parse(string text)
    {
        if (int.TryParse(text, out int n))
        {
            if (n is > 0 and <= RtMax) return n;
            throw new UsageException($"invalid signal number {text}");
        }
        string name = text.ToUpperInvariant();
        if (name.StartsWith("SIG", StringComparison.Ordinal)) name = name[3..];
        int idx = Array.IndexOf(Names, name);
        if (idx > 0) return idx;
        if (name == "IOT") return 6;
        if (name == "CLD") return 17;
        if (name == "POLL") return 29;
        if (name.StartsWith("RTMIN", StringComparison.Ordinal))
        {
            int off = name.Length == 5 ? 0 : int.TryParse(name[5..], out var o) ? o : -1;
            if (off >= 0 && off <= RtMax - RtMin) return RtMin + off;
        }
        if (name.StartsWith("RTMAX", StringComparison.Ordinal))
        {
            int off = name.Length == 5 ? 0 : int.TryParse(name[5..], out var o) ? o : 1;
            if (off <= 0 && off >= RtMin - RtMax) return RtMax + off;
        }
        throw new UsageException($"unknown signal \"{text}\"");
    }
}
