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

    public static TimeSpan Seconds(double seconds) => TimeSpan.FromSeconds(seconds * Scale);

    public static int Ms(int milliseconds) => (int)Math.Min(int.MaxValue, milliseconds * Scale);
}
