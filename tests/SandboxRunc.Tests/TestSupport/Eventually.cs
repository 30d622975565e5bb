using System.Diagnostics;
using Xunit.Sdk;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// How long a test waits before it calls something hung. Tests assert behaviour, never speed: each bound
/// is one that only a hang exceeds on a loaded 2-core CI machine (other test classes, other builds and
/// dockerd all running at once), and it stays well under the run's --blame-hang-timeout (300 s), so that a
/// hang fails its own test with a message rather than aborting the whole run.
/// </summary>
public static class Patience
{
    /// <summary>For a condition that usually holds within milliseconds (a process started, a file written, a status changed).</summary>
    public static readonly TimeSpan Condition = HangLimits.Seconds(60);

    /// <summary>For one command (a runtime or docker CLI call, a helper program) that usually takes a second or two.</summary>
    public static readonly TimeSpan Command = HangLimits.Seconds(120);
}

/// <summary>
/// Waits for something to happen instead of sleeping and hoping it has: polls a read until a condition
/// holds, quickly at first and then less often. On timeout the failure says what was awaited, for how
/// long, and the last value seen (or what the read threw).
/// </summary>
public static class Eventually
{
    /// <summary>Polls <paramref name="read"/> until <paramref name="done"/> holds for its value; returns that value.</summary>
    /// <param name="what">what is awaited, as the failure message should say it ("the container to log \"ready\"").</param>
    /// <param name="show">how to show the last value in the failure message (default: ToString).</param>
    public static async Task<T> Holds<T>(Func<Task<T>> read, Func<T, bool> done, string what, TimeSpan? timeout = null, Func<T, string>? show = null)
    {
        var limit = timeout ?? Patience.Condition;
        var sw = Stopwatch.StartNew();
        string last = "(nothing read yet)";
        int pause = 10;
        while (true)
        {
            try
            {
                T value = await read();
                if (done(value)) return value;
                last = value is null ? "null" : show is not null ? show(value) : value.ToString() ?? "";
            }
            catch (Exception e) when (e is not XunitException)
            {
                last = $"{e.GetType().Name}: {e.Message}";
            }
            if (sw.Elapsed >= limit)
                throw new XunitException($"waited {sw.Elapsed.TotalSeconds:0.0} s for {what}; last seen: {last}");
            await Task.Delay(pause);
            pause = Math.Min(pause * 2, 250);
        }
    }

    /// <summary>As <see cref="Holds{T}(Func{Task{T}}, Func{T, bool}, string, TimeSpan?, Func{T, string}?)"/>, for a synchronous read.</summary>
    public static Task<T> Holds<T>(Func<T> read, Func<T, bool> done, string what, TimeSpan? timeout = null, Func<T, string>? show = null) =>
        Holds(() => Task.FromResult(read()), done, what, timeout, show);

    /// <summary>Polls a condition until it holds.</summary>
    public static Task True(Func<bool> condition, string what, TimeSpan? timeout = null) =>
        Holds(condition, b => b, what, timeout);

    /// <summary>Polls an asynchronous condition until it holds.</summary>
    public static Task True(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) =>
        Holds(condition, b => b, what, timeout);

    /// <summary>Whether the condition comes to hold within the timeout (for tests that collect their verdicts).</summary>
    public static async Task<bool> Happens(Func<bool> condition, TimeSpan? timeout = null)
    {
        try
        {
            await True(condition, "it", timeout);
            return true;
        }
        catch (XunitException) { return false; }
    }
}
