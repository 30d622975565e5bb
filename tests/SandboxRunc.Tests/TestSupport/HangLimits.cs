using System.Globalization;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// The hang detectors of the integration tests (how long a docker or runtime command, or a wait for a
/// state, may take before the test calls it hung), scaled by SANDBOX_RUNC_TEST_TIMEOUT_SCALE (default 1).
/// The cgroup v2 VM runs the tests under emulation (TCG), where one `docker run` can take tens of seconds:
/// it sets a larger factor. These are not timing assertions: nothing passes or fails by being fast.
/// </summary>
public static class HangLimits
{
    public static double Scale { get; } =
        double.TryParse(Environment.GetEnvironmentVariable("SANDBOX_RUNC_TEST_TIMEOUT_SCALE"), NumberStyles.Float,
            CultureInfo.InvariantCulture, out double s) && s >= 1 ? s : 1;

    /// <summary>
    /// No limit, however scaled, beyond SANDBOX_RUNC_TEST_HANG_CAP seconds (unset: no cap). The VM sets it below its
    /// run's --blame-hang-timeout: a command that hangs then fails its own test with what it was doing, instead of
    /// VSTest aborting the whole run as a crash and losing every test after it (a cgroupfs pass once ended that way,
    /// with a 120 s command limit scaled to 960 s against a 600 s hang timeout).
    /// </summary>
    public static double CapSeconds { get; } =
        double.TryParse(Environment.GetEnvironmentVariable("SANDBOX_RUNC_TEST_HANG_CAP"), NumberStyles.Float,
            CultureInfo.InvariantCulture, out double c) && c >= 1 ? c : double.MaxValue;

    public static TimeSpan Seconds(double seconds) => TimeSpan.FromSeconds(Math.Min(seconds * Scale, Math.Max(seconds, CapSeconds)));

    public static int Ms(int milliseconds) => (int)Math.Min(int.MaxValue, Seconds(milliseconds / 1000.0).TotalMilliseconds);
}
