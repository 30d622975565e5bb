using System.Diagnostics;
using SandboxRunc.Cgroups;

namespace SandboxRunc.Container;

/// <summary>
/// ps: the processes in the container's cgroup. As JSON, the host pids; as a table, the host's ps(1)
/// output (default options -ef) reduced to the header and the lines whose PID column is in the cgroup.
/// </summary>
public static class PsOperation
{
    public static IReadOnlyList<int> Pids(StateStore store, string id)
    {
        var r = store.Load(id);
        if (store.StatusOf(r) == Oci.ContainerStatus.Stopped && !AnyLeft(r)) return [];
        return r.Cgroup().Pids();
    }

    static bool AnyLeft(Oci.ContainerRecord r) =>
        r.CgroupPaths.Values.Any(Directory.Exists);

    public static string Json(IReadOnlyList<int> pids) => "[" + string.Join(',', pids) + "]";

    public static string Table(IReadOnlyList<int> pids, IReadOnlyList<string> psArgs)
    {
        var psi = new ProcessStartInfo("ps") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in psArgs.Count > 0 ? psArgs : ["-ef"]) psi.ArgumentList.Add(a);
        string output, error;
        int exit;
        try
        {
            using var p = Process.Start(psi) ?? throw new RuntimeException("ps: could not start");
            var err = p.StandardError.ReadToEndAsync();
            output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            error = err.Result;
            exit = p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new RuntimeException($"ps: {e.Message}");
        }
        if (exit != 0) throw new RuntimeException($"ps {string.Join(' ', psi.ArgumentList)} failed (exit {exit}): {error.Trim()}");
        return Filter(output, pids);
    }

    /// <summary>Keeps the header and the lines whose PID column holds one of the pids.</summary>
    public static string Filter(string psOutput, IReadOnlyList<int> pids)
    {
        var lines = psOutput.Split('\n');
        if (lines.Length == 0 || lines[0].Trim().Length == 0) return psOutput;
        int column = Array.IndexOf(lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries), "PID");
        if (column < 0) throw new RuntimeException("couldn't find PID field in ps output (add pid to the -o format)");
        var set = pids.ToHashSet();
        var kept = new List<string> { lines[0] };
        foreach (var line in lines.Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > column && int.TryParse(fields[column], out int pid) && set.Contains(pid))
                kept.Add(line);
        }
        return string.Join('\n', kept) + "\n";
    }
}
