using System.Text.Json;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Hooks;

/// <summary>
/// Runs OCI hooks: each gets the container's state JSON on stdin, its own args and env, and must exit 0
/// within its timeout (killed otherwise). The first failure stops the phase with an error naming the hook.
/// </summary>
public static unsafe class HookRunner
{
    public static void Run(string phase, IReadOnlyList<Hook>? hooks, OciState state)
    {
        if (hooks is null || hooks.Count == 0) return;
        byte[] stdin = JsonSerializer.SerializeToUtf8Bytes(state, OciJson.Default.OciState);
        for (int i = 0; i < hooks.Count; i++)
            RunOne(phase, i, hooks[i], stdin);
    }

    static void RunOne(string phase, int index, Hook hook, byte[] stdin)
    {
        string name = $"{phase} hook #{index} ({hook.Path})";
        if (!hook.Path.StartsWith('/'))
            throw new HookException($"{name}: path must be absolute");
        int* p = stackalloc int[2];
        SysException.Check(Libc.pipe2(p, Libc.O_CLOEXEC), "pipe2", name);
        using var readEnd = new SafeFd(p[0]);
        using var writeEnd = new SafeFd(p[1]);
        var argv = hook.Args is { Count: > 0 } a ? a : [hook.Path];
        int pid;
        try
        {
            pid = Spawn.Start(hook.Path, argv, hook.Env ?? [], [(0, readEnd.Fd)]);
        }
        catch (SysException e)
        {
            throw new HookException($"{name}: {e.Message}");
        }
        readEnd.Dispose();
        // The state is small (well under a pipe buffer), so this write does not block on a hook that never reads.
        fixed (byte* b = stdin) Libc.write(writeEnd.Fd, b, stdin.Length);
        writeEnd.Dispose();

        int timeoutMs = hook.Timeout is int t && t > 0 ? t * 1000 : -1;
        int? status = Spawn.Wait(pid, timeoutMs);
        if (status is null)
        {
            Libc.kill(pid, 9);
            Spawn.Wait(pid);
            throw new HookException($"{name}: timed out after {hook.Timeout}s and was killed");
        }
        if (status != 0)
            throw new HookException($"{name}: exited with status {status}");
    }
}

public sealed class HookException(string message) : SandboxRuncException(message);
