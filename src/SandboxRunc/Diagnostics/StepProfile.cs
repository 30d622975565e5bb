using System.Diagnostics;
using System.Text;

namespace SandboxRunc.Diagnostics;

/// <summary>
/// Where a helper's per-request time goes (the supervisor's vetting of one trapped call, step by step): with
/// SANDBOX_RUNC_STEP_PROFILE=FILE each step's time is summed per kind of request, and every 1000 requests of a
/// kind one line is appended to FILE: "PID KIND n=N STEP=US_PER_REQUEST ...". Off, a step costs one branch.
/// For benchmarks (tests/bench), never for decisions; no allocation per step.
/// </summary>
public sealed class StepProfile
{
    public const string Variable = "SANDBOX_RUNC_STEP_PROFILE";
    static readonly string? s_file = Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } f ? f : null;

    public static bool Enabled => s_file is not null;

    /// <summary>The environment entry that passes the setting on to a helper started with its own environment; none when off.</summary>
    public static string[] Inherited => s_file is null ? [] : [$"{Variable}={s_file}"];

    readonly string _kind;
    readonly string[] _steps;
    readonly long[] _ticks;
    long _count;
    readonly Lock _lock = new();

    public StepProfile(string kind, params string[] steps)
    {
        _kind = kind;
        _steps = steps;
        _ticks = new long[steps.Length];
    }

    /// <summary>Adds the time since <paramref name="since"/> to step <paramref name="step"/>; returns now.</summary>
    public long Add(int step, long since)
    {
        if (s_file is null) return 0;
        long now = Stopwatch.GetTimestamp();
        Interlocked.Add(ref _ticks[step], now - since);
        return now;
    }

    public static long Now() => s_file is null ? 0 : Stopwatch.GetTimestamp();

    /// <summary>One request of this kind done: every 1000, the averages are written and reset.</summary>
    public unsafe void Done()
    {
        if (s_file is null) return;
        if (Interlocked.Increment(ref _count) % 1000 != 0) return;
        var line = new StringBuilder();
        lock (_lock)
        {
            line.Append($"{Environment.ProcessId} {_kind} n=1000");
            long total = 0;
            for (int i = 0; i < _steps.Length; i++)
            {
                long t = Interlocked.Exchange(ref _ticks[i], 0);
                total += t;
                line.Append($" {_steps[i]}={t * 1_000_000.0 / Stopwatch.Frequency / 1000:F1}");
            }
            line.Append($" total={total * 1_000_000.0 / Stopwatch.Frequency / 1000:F1}\n");
        }
        int fd = Interop.Libc.open(s_file, Interop.Libc.O_WRONLY | Interop.Libc.O_APPEND | Interop.Libc.O_CREAT | Interop.Libc.O_CLOEXEC, 0x180);
        if (fd < 0) return;
        byte[] bytes = Encoding.UTF8.GetBytes(line.ToString());
        fixed (byte* b = bytes) Interop.Libc.write(fd, b, bytes.Length);
        Interop.Libc.close(fd);
    }
}
