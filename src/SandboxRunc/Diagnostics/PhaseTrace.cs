using System.Diagnostics;
using System.Text;

namespace SandboxRunc.Diagnostics;

/// <summary>
/// Where the time of one command goes: each process of the runtime (the CLI command, the supervisor, the
/// emulation server) marks the end of its phases with a CLOCK_MONOTONIC timestamp. Enabled by
/// SANDBOX_RUNC_TRACE=FILE (one line appended per phase, from every process, so helpers started by `create`
/// inherit it) and by --debug (one debug log line per phase with its duration). Off, a mark is one branch.
///
/// A line: MONOTONIC_NS PID COMMAND ID PHASE US_SINCE_PREVIOUS_MARK_OF_THIS_PROCESS. The first mark of a
/// process is "main" (Main entered; the time before it is exec and the .NET runtime's start); ID is "-" until
/// the command knows its container. Lines are written with one write(2) on an O_APPEND descriptor, so the
/// processes of many concurrent commands never interleave within a line. tests/bench/bench.sh turns the
/// lines into the phase table.
/// </summary>
public static class PhaseTrace
{
    public const string Variable = "SANDBOX_RUNC_TRACE";

    static readonly string? s_file = Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } f ? f : null;
    static bool s_debug;
    static string s_command = "-", s_id = "-";
    static long s_last;

    /// <summary>The trace file helpers inherit (null when off).</summary>
    public static string? File => s_file;

    public static bool Enabled => s_file is not null || s_debug;

    /// <summary>The environment entry that passes the trace on to a helper started with its own environment; none when off.</summary>
    public static string[] Inherited => s_file is null ? [] : [$"{Variable}={s_file}"];

    static long s_main;

    /// <summary>The first thing Main does: the time the "main" mark carries.</summary>
    public static void MainEntered() => s_main = Stopwatch.GetTimestamp();

    /// <summary>Once the command line is parsed: the command's name and whether --debug asked for phase lines; marks "main".</summary>
    public static void Begin(string command, bool debug)
    {
        s_debug = debug;
        if (!Enabled) return;
        s_command = command;
        s_last = s_main != 0 ? s_main : Stopwatch.GetTimestamp();
        Write("main", s_last, 0);
    }

    /// <summary>The container the command works on, for the following lines.</summary>
    public static void Container(string id)
    {
        if (Enabled) s_id = id;
    }

    /// <summary>The phase just finished.</summary>
    public static void Mark(string phase)
    {
        if (!Enabled) return;
        long now = Stopwatch.GetTimestamp();
        long us = (now - s_last) * 1_000_000 / Stopwatch.Frequency;
        s_last = now;
        Write(phase, now, us);
    }

    static unsafe void Write(string phase, long timestamp, long us)
    {
        if (s_debug) Cli.Log.Debug($"phase {s_command} {phase}: {us} us");
        if (s_file is null) return;
        long ns = (long)((Int128)timestamp * 1_000_000_000 / Stopwatch.Frequency);
        string line = $"{ns} {Environment.ProcessId} {s_command} {s_id} {phase} {us}\n";
        // A trace never fails a command: a file that cannot be opened or written loses the line.
        int fd = Interop.Libc.open(s_file, Interop.Libc.O_WRONLY | Interop.Libc.O_APPEND | Interop.Libc.O_CREAT | Interop.Libc.O_CLOEXEC, 0x180 /* 0600 */);
        if (fd < 0) return;
        byte[] bytes = Encoding.UTF8.GetBytes(line);
        fixed (byte* b = bytes) Interop.Libc.write(fd, b, bytes.Length);
        Interop.Libc.close(fd);
    }
}
