namespace SandboxRunc.Cgroups;

/// <summary>Whether a container's cgroup is frozen (paused), for v1 (freezer.state) and v2 (cgroup.freeze).</summary>
public static class Freezer
{
    public static bool IsFrozen(IReadOnlyDictionary<string, string> paths)
    {
        try
        {
            if (paths.TryGetValue("freezer", out var v1) && File.Exists(v1 + "/freezer.state"))
                return File.ReadAllText(v1 + "/freezer.state").Trim() == "FROZEN";
            if (paths.TryGetValue("", out var v2) && File.Exists(v2 + "/cgroup.freeze"))
                return File.ReadAllText(v2 + "/cgroup.freeze").Trim() == "1";
        }
        catch (IOException) { }
        return false;
    }
}
