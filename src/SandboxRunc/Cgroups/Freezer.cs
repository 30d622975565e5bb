namespace SandboxRunc.Cgroups;

/// <summary>
/// Freezing a container's cgroup (pause/resume) and asking whether it is frozen: v1 through
/// freezer.state (FROZEN/THAWED, passing through FREEZING), v2 through cgroup.freeze and the
/// "frozen" key of cgroup.events.
/// </summary>
public static class Freezer
{
    public static bool IsFrozen(CgroupPaths paths)
    {
        try
        {
            if (paths.IsV2)
                return File.Exists(paths.Unified + "/cgroup.freeze") && File.ReadAllText(paths.Unified + "/cgroup.freeze").Trim() == "1";
            if (paths.Of("freezer") is { } v1 && File.Exists(v1 + "/freezer.state"))
                return File.ReadAllText(v1 + "/freezer.state").Trim() == "FROZEN";
        }
        catch (IOException) { }
        return false;
    }

    /// <summary>Best effort, briefly (for kill --all): true when a freeze was asked, so it must be thawed after.</summary>
    public static bool TryFreeze(CgroupPaths paths)
    {
        string? dir = paths.IsV2 ? paths.Unified : paths.Of("freezer");
        string file = paths.IsV2 ? "cgroup.freeze" : "freezer.state";
        if (dir is null || !CgroupFs.Exists(dir, file)) return false;
        if (CgroupFs.TryWrite(Path.Combine(dir, file), paths.IsV2 ? "1" : "FROZEN") != 0) return false;
        var deadline = DateTime.UtcNow.AddSeconds(1);
        while (DateTime.UtcNow < deadline && !(paths.IsV2 ? V2Frozen(dir) : CgroupFs.Read(dir, file) == "FROZEN"))
            Thread.Sleep(5);
        return true; // partially frozen is still worth thawing afterwards
    }

    public static void TryThaw(CgroupPaths paths)
    {
        string? dir = paths.IsV2 ? paths.Unified : paths.Of("freezer");
        if (dir is not null) CgroupFs.TryWrite(Path.Combine(dir, paths.IsV2 ? "cgroup.freeze" : "freezer.state"), paths.IsV2 ? "0" : "THAWED");
    }

    /// <summary>
    /// v1: thaws every cgroup below the container's top (and the top) in the freezer hierarchy. The container owns its
    /// children's freezer.state (delegation) and a child it froze stays frozen when its parent thaws (self-freezing),
    /// with its tasks deaf to SIGKILL. v2 needs nothing: a fatal signal ends a frozen task there.
    /// </summary>
    public static void ThawBelow(CgroupPaths paths)
    {
        if (paths.IsV2 || paths.Of("freezer") is not { } v1) return;
        CgroupTree.Walk(v1, fd =>
        {
            if (CgroupTree.ReadAt(fd, "freezer.self_freezing").Trim() == "1") CgroupTree.WriteAt(fd, "freezer.state", "THAWED");
        }, null);
    }

    /// <summary>Freezes every process of the cgroup and waits until the kernel reports it frozen.</summary>
    public static void Freeze(CgroupPaths paths, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        if (!paths.IsV2 && paths.Of("freezer") is { } v1)
        {
            // A v1 cgroup can stay in FREEZING while a task is in an uninterruptible sleep or forking;
            // writing FROZEN again retries the freeze, so keep writing until it sticks.
            while (true)
            {
                CgroupFs.Write(v1, "freezer.state", "FROZEN");
                for (int i = 0; i < 10; i++)
                {
                    if (CgroupFs.Read(v1, "freezer.state") == "FROZEN") return;
                    Thread.Sleep(1 + i);
                }
                if (DateTime.UtcNow >= deadline)
                {
                    CgroupFs.TryWrite(Path.Combine(v1, "freezer.state"), "THAWED");
                    throw new CgroupException($"cgroup: {v1} did not freeze within {timeout.TotalSeconds:0.#} s (still FREEZING)");
                }
            }
        }
        if (paths.Unified is { } v2)
        {
            CgroupFs.Write(v2, "cgroup.freeze", "1");
            while (!V2Frozen(v2))
            {
                if (DateTime.UtcNow >= deadline)
                {
                    CgroupFs.TryWrite(Path.Combine(v2, "cgroup.freeze"), "0");
                    throw new CgroupException($"cgroup: {v2} did not report \"frozen 1\" within {timeout.TotalSeconds:0.#} s");
                }
                Thread.Sleep(2);
            }
            return;
        }
        throw new CgroupException("cgroup: the freezer controller is not available for this container");
    }

    /// <summary>Thaws the cgroup (a no-op when it is not frozen).</summary>
    public static void Thaw(CgroupPaths paths)
    {
        if (!paths.IsV2 && paths.Of("freezer") is { } v1)
        {
            CgroupFs.Write(v1, "freezer.state", "THAWED");
            for (int i = 0; i < 200 && CgroupFs.Read(v1, "freezer.state") != "THAWED"; i++) Thread.Sleep(2);
            return;
        }
        if (paths.Unified is { } v2)
        {
            CgroupFs.Write(v2, "cgroup.freeze", "0");
            for (int i = 0; i < 200 && V2Frozen(v2); i++) Thread.Sleep(2);
            return;
        }
        throw new CgroupException("cgroup: the freezer controller is not available for this container");
    }

    static bool V2Frozen(string dir) =>
        CgroupFs.Read(dir, "cgroup.events").Split('\n').Any(l => l.Trim() == "frozen 1");
}
