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

    /// <summary>Waits up to the timeout for the process to be gone; true if it is.</summary>
    public static async Task<bool> WaitGone(int pid, int timeoutMs = 5000)
    {
        for (var end = DateTime.UtcNow.AddMilliseconds(HangLimits.Ms(timeoutMs)); DateTime.UtcNow < end; await Task.Delay(20))
            if (!Alive(pid)) return true;
        return !Alive(pid);
    }
}
