namespace SandboxRunc.Tests.TestSupport;

/// <summary>Host process checks for leftovers: a zombie (state Z) counts as gone, it only waits for its reaper.</summary>
public static class Procs
{
    public static bool Alive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            char state = stat[(stat.LastIndexOf(')') + 2)..][0];
            return state is not ('Z' or 'X');
        }
        catch (IOException) { return false; }
    }

    /// <summary>Waits for the process to be gone (a generous bound: only a hang exceeds it); true if it is.</summary>
    public static async Task<bool> WaitGone(int pid, TimeSpan? timeout = null)
    {
        var limit = timeout ?? Patience.Condition;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int pause = 10; sw.Elapsed < limit; pause = Math.Min(pause * 2, 250))
        {
            if (!Alive(pid)) return true;
            await Task.Delay(pause);
        }
        return !Alive(pid);
    }

    /// <summary>
    /// As <see cref="WaitGone(int, TimeSpan?)"/>; kept for callers that gave a bound in milliseconds, which now
    /// counts only when it is the more generous one (tests assert that a process goes, never how fast).
    /// </summary>
    public static Task<bool> WaitGone(int pid, int timeoutMs) =>
        WaitGone(pid, TimeSpan.FromMilliseconds(Math.Max(timeoutMs, Patience.Condition.TotalMilliseconds)));

    /// <summary>"PID (STATE) CMDLINE" for a failure message, or "PID (gone)".</summary>
    public static string Describe(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim();
            return $"{pid} ({stat[(stat.LastIndexOf(')') + 2)..][0]}) {cmdline}";
        }
        catch (IOException) { return $"{pid} (gone)"; }
    }
}
