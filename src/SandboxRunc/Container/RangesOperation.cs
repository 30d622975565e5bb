using SandboxRunc.Interop;
using SandboxRunc.Policy;

namespace SandboxRunc.Container;

/// <summary>
/// `sandbox-runc ranges` lists the ID range table; `ranges --rebuild` rebuilds it from the truth, for a
/// table that cannot be trusted (which stops every create until then) or one suspected of drifting.
///
/// Where the truth is, and why. A holder is keyed by its container's state dir: `delete` releases by it,
/// and a holder whose state dir is gone is reclaimed. So the rebuild starts from the state dirs. Every
/// running supervisor has the command line `sandbox-runc --root ROOT supervise ID`, which names each state
/// root in use (docker's, containerd's, podman's, a user's --root), and each state dir under those roots
/// holds the note create wrote (created.json: the host IDs the container runs as, and whether they came
/// from the pool, the spec or a container it joined) or, for a container of an earlier version,
/// state.json's idRange. That gives holders that a later `delete` releases, and it covers a created or
/// stopped container that is not deleted yet (it keeps its range, and has no process to find it by).
/// The user namespaces of live processes (/proc/PID/uid_map) are the second source: they show pool
/// ranges in use that no state names (a container of another root whose supervisor died, a process that
/// outlived its container). No delete can release those, so they are held as "live" until a later
/// rebuild finds them unused. uid_map alone would not do: it cannot say which state dir holds a range.
/// Either way a range that is in use is never left free.
/// </summary>
public static class RangesOperation
{
    public static int List(IdRangeAllocator allocator, TextWriter output)
    {
        var holders = allocator.Held();
        output.WriteLine($"table {allocator.TablePath}; pool: {allocator.Pools()}");
        Print(holders, output);
        return 0;
    }

    public static int Rebuild(StateStore store, IdRangeAllocator allocator, TextWriter output)
    {
        var notes = new List<string>();
        var holders = allocator.Rebuild(() => (FindHolders(Roots(store), notes), LiveNamespaces()), notes);
        foreach (var note in notes) output.WriteLine("note: " + note);
        output.WriteLine($"rebuilt {allocator.TablePath}: {holders.Count} holder(s)");
        Print(holders, output);
        return 0;
    }

    static void Print(IReadOnlyList<RangeHolder> holders, TextWriter output)
    {
        output.WriteLine($"{"KIND",-7} {"UIDS",-23} {"GIDS",-23} {"CONTAINER",-20} STATE DIR");
        foreach (var h in holders)
            output.WriteLine($"{IdRangeTable.KindName(h.Kind),-7} {h.Uid,-23} {h.Gid,-23} {(h.Kind == HolderKind.Live ? "-" : h.Id),-20} " +
                             (h.Kind == HolderKind.Live ? h.Process : h.StateDir));
    }

    /// <summary>
    /// The root of every supervisor running as host root, then this command's --root; one spelling per
    /// directory (/run and /var/run are one), the supervisor's, which is the one create keyed the table by.
    /// </summary>
    static IEnumerable<string> Roots(StateStore store) =>
        Supervisor.AllRunning().Select(s => s.Root).Append(Path.GetFullPath(store.Root))
            .Where(Directory.Exists).DistinctBy(root => FileId.Of(root));

    /// <summary>The IDs each state dir under the roots records (see the class comment). Roots not owned by root, or writable by others, are skipped.</summary>
    static List<RangeHolder> FindHolders(IEnumerable<string> roots, List<string> notes)
    {
        var found = new List<RangeHolder>();
        foreach (var root in roots)
        {
            if (HostPath.OwnerAndMode(root) is not (0, var mode) || (mode & 0x12) != 0)
            {
                notes.Add($"skipped {root}: not a directory of host root closed to others");
                continue;
            }
            var store = new StateStore(root);
            foreach (var dir in Directory.EnumerateDirectories(root).Order())
            {
                string id = Path.GetFileName(dir);
                try { StateStore.ValidateId(id); }
                catch (RuntimeException) { continue; }
                if (HostPath.OwnerAndMode(dir) is not (0, _)) continue;
                if (store.ReadNote(id)?.Ids is { } noted)
                    found.Add(noted);
                else if (store.TryLoad(id, out string? problem) is { } record)
                {
                    if (record.IdRange is { } r)
                        found.Add(new RangeHolder(HolderKind.Pool, id, Path.GetFullPath(dir), null, new IdSpan(r.UidBase, r.Size), new IdSpan(r.GidBase, r.Size)));
                }
                else if (store.Exists(id))
                    notes.Add($"{dir}: no note of its IDs from create and {problem}; only a live process of it can keep its range held");
            }
        }
        return found;
    }

    /// <summary>One live process of every user namespace on the host other than the initial one, with its uid and gid maps as the host sees them.</summary>
    static List<IdRangeTable.LiveNamespace> LiveNamespaces()
    {
        var seen = new HashSet<string>();
        if (UserNamespaceOf("1") is { } initial) seen.Add(initial);
        var result = new List<IdRangeTable.LiveNamespace>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            string pid = Path.GetFileName(dir);
            if (!pid.All(char.IsAsciiDigit) || UserNamespaceOf(pid) is not { } ns || seen.Contains(ns)) continue;
            // A zombie (a killed container's init waiting for its reaper) runs nothing as any ID.
            if (ProcStat.Read(int.Parse(pid)) is not { State: not ('Z' or 'X' or 'x') }) continue;
            seen.Add(ns);
            try
            {
                var uid = HostExtents(File.ReadAllText($"/proc/{pid}/uid_map"));
                var gid = HostExtents(File.ReadAllText($"/proc/{pid}/gid_map"));
                // The name is the process's own choice (prctl): no control characters into the table and messages.
                string comm = new(File.ReadAllText($"/proc/{pid}/comm").Trim().Select(c => char.IsControl(c) ? '?' : c).ToArray());
                result.Add(new IdRangeTable.LiveNamespace($"pid {pid} ({comm}, {ns})", uid, gid));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { seen.Remove(ns); } // exited meanwhile: another process may show it
        }
        return result;
    }

    static string? UserNamespaceOf(string pid)
    {
        try { return new FileInfo($"/proc/{pid}/ns/user").LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// The host side of each "inside outside count" line. A line from host ID 0 (the whole ID space, as
    /// root's namespaces without a range have) is no container's range and is left out.
    /// </summary>
    internal static List<IdSpan> HostExtents(string map)
    {
        var spans = new List<IdSpan>();
        foreach (var line in map.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 3 && long.TryParse(f[1], out long start) && long.TryParse(f[2], out long size) && start > 0 && size > 0)
                spans.Add(new IdSpan(start, size));
        }
        return spans;
    }
}
