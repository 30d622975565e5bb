using SandboxRunc.Cgroups;

namespace SandboxRunc.Container;

/// <summary>pause / resume: freeze and thaw the container's cgroup; `state` then says paused / running.</summary>
public static class PauseOperation
{
    public static void Pause(StateStore store, string id)
    {
        var r = store.Load(id);
        using var _ = store.Lock(id);
        string status = store.StatusOf(r);
        // As runc: only a running container can be paused (an already paused one is "not running" too).
        if (status != Oci.ContainerStatus.Running) throw new RuntimeException($"container not running: {id}");
        r.Cgroup().Freeze(TimeSpan.FromSeconds(10));
    }

    public static void Resume(StateStore store, string id)
    {
        var r = store.Load(id);
        using var _ = store.Lock(id);
        if (store.StatusOf(r) != Oci.ContainerStatus.Paused) throw new RuntimeException($"container not paused: {id}");
        r.Cgroup().Thaw();
    }
}
