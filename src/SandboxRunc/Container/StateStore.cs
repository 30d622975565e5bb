using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>A refusal or failure of a lifecycle command, shown to the user as is.</summary>
public sealed class RuntimeException(string message) : Exception(message);

/// <summary>
/// The runtime's state directory (--root): one directory per container with state.json (written
/// atomically) and, until `start`, the exec fifo. Commands on one container serialise on an flock
/// of its directory, so concurrent CLI calls are safe.
/// </summary>
public sealed partial class StateStore(string root)
{
    public const string StateFile = "state.json", ExecFifo = "exec.fifo", NoteFile = "created.json", LegacyCreatingFile = "creating";
    public string Root { get; } = root;

    [GeneratedRegex(@"^[\w+\-\.]+$")]
    private static partial Regex IdPattern();

    public static void ValidateId(string id)
    {
        if (string.IsNullOrEmpty(id))
            throw new RuntimeException("container id cannot be empty");
        if (id is "." or ".." || !IdPattern().IsMatch(id) || id.Length > 1024)
            throw new RuntimeException($"invalid container id \"{id}\": use letters, digits, '_', '+', '-' and '.', not '/' or '..'");
    }

    public string Dir(string id) => Path.Combine(Root, id);
    public string FifoPath(string id) => Path.Combine(Dir(id), ExecFifo);

    /// <summary>Creates the container's directory; fails if the id is taken.</summary>
    public string CreateDir(string id)
    {
        ValidateId(id);
        Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string dir = Dir(id);
        try
        {
            Directory.CreateDirectory(Root);
            if (Directory.Exists(dir)) throw new RuntimeException($"container with id exists: {id}");
            var info = Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return info.FullName;
        }
        catch (IOException e)
        {
            throw new RuntimeException($"create state dir {dir}: {e.Message}");
        }
    }

    /// <summary>
    /// What create makes that `delete` must undo even without state.json (a create killed before writing it,
    /// or a state.json that became unreadable): the cgroup dirs (they come from the bundle's spec) and the
    /// host IDs the container runs as. Noted before they are made and kept for the container's whole life.
    /// JSON, because cgroup keys hold '=' themselves ("name=systemd").
    /// </summary>
    public sealed record CreateNote(Dictionary<string, string> CgroupPaths, Policy.RangeHolder? Ids, string? CgroupDriver = null, string? SystemdUnit = null)
    {
        /// <summary>The manager of the noted cgroup (null when nothing was noted).</summary>
        public Cgroups.CgroupManager? Cgroup() =>
            CgroupPaths.Count == 0 ? null : Cgroups.CgroupManager.Of(CgroupPaths, CgroupDriver, SystemdUnit);
    }

    /// <summary>Writes the <see cref="CreateNote"/> (create calls it before it makes the cgroups).</summary>
    public void NoteCreating(string id, Cgroups.CgroupManager cgroup, Policy.RangeHolder? ids)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartObject("cgroupPaths");
            foreach (var (key, dir) in cgroup.Paths.Map) w.WriteString(key, dir);
            w.WriteEndObject();
            w.WriteString("cgroupDriver", cgroup.Driver.ToString());
            if (cgroup.Unit is { } unit) w.WriteString("systemdUnit", unit);
            if (ids is not null) Policy.IdRangeTable.WriteNoted(w, "ids", ids);
            w.WriteEndObject();
        }
        AtomicFile.Write(Path.Combine(Dir(id), NoteFile), buffer.ToArray());
    }

    /// <summary>The note of <see cref="NoteCreating"/>; null when there is none or it cannot be read.</summary>
    public CreateNote? ReadNote(string id)
    {
        string dir = Dir(id), file = Path.Combine(dir, NoteFile);
        try
        {
            if (!File.Exists(file)) return ReadLegacyNote(Path.Combine(dir, LegacyCreatingFile));
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) return null;
            var paths = new Dictionary<string, string>();
            if (doc.RootElement.TryGetProperty("cgroupPaths", out var cg) && cg.ValueKind == JsonValueKind.Object)
                foreach (var p in cg.EnumerateObject())
                    if (p.Value.ValueKind == JsonValueKind.String && p.Value.GetString() is { } v && v.StartsWith('/'))
                        paths[p.Name] = v;
            var ids = doc.RootElement.TryGetProperty("ids", out var e) ? Policy.IdRangeTable.ReadNoted(e, id, Path.GetFullPath(dir)) : null;
            string? Str(string key) => doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            return new CreateNote(paths, ids, Str("cgroupDriver"), Str("systemdUnit"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { return null; }
    }

    /// <summary>
    /// The note of an earlier version ("controller=dir" lines, written during create only). The dir starts
    /// with '/', so a line splits at its first "=/": the key "name=systemd" holds a '=' of its own.
    /// </summary>
    static CreateNote? ReadLegacyNote(string file)
    {
        if (!File.Exists(file)) return null;
        var paths = new Dictionary<string, string>();
        foreach (var line in File.ReadAllLines(file))
            if (line.IndexOf("=/", StringComparison.Ordinal) is var at and >= 0) paths[line[..at]] = line[(at + 1)..];
        return new CreateNote(paths, null);
    }

    public bool Exists(string id) => File.Exists(Path.Combine(Dir(id), StateFile));

    public ContainerRecord Load(string id) =>
        TryLoad(id, out string? problem) ?? throw new RuntimeException(Exists(id) ? $"{problem}; {CorruptHint(id)}" : problem!);

    public static string CorruptHint(string id) => $"\"delete --force {id}\" removes what it can find without it";

    /// <summary>The container's state, or null and why it cannot be had (it does not exist, or state.json is corrupt).</summary>
    public ContainerRecord? TryLoad(string id, out string? problem)
    {
        ValidateId(id);
        problem = null;
        string file = Path.Combine(Dir(id), StateFile);
        if (!File.Exists(file))
        {
            problem = $"container does not exist: {id}";
            return null;
        }
        string? why;
        ContainerRecord? record = null;
        try
        {
            record = JsonSerializer.Deserialize(File.ReadAllBytes(file), OciJson.Default.ContainerRecord);
            why = record is null ? "it is null"
                : record.Id != id ? $"it names container \"{record.Id}\""
                : record.Pid <= 0 ? "it has no init pid"
                : record.CgroupPaths is null ? "it has no cgroup paths"
                : null;
        }
        catch (JsonException e) { why = e.Message.Split('\n')[0]; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { why = e.Message; }
        if (why is null) return record;
        problem = $"container {id}: its state file {file} is corrupt ({why})";
        return null;
    }

    public void Save(ContainerRecord record)
    {
        string file = Path.Combine(Dir(record.Id), StateFile);
        AtomicFile.Write(file, JsonSerializer.SerializeToUtf8Bytes(record, OciJson.Default.ContainerRecord));
    }

    public IEnumerable<string> Ids() =>
        Directory.Exists(Root)
            ? Directory.EnumerateDirectories(Root).Select(Path.GetFileName).Where(id => id is not null && File.Exists(Path.Combine(Root, id, StateFile))).Order()!
            : [];

    /// <summary>Exclusive lock on the container's directory for the duration of one command.</summary>
    public SafeFd Lock(string id)
    {
        string dir = Dir(id);
        int fd = Libc.open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw new RuntimeException($"container does not exist: {id}");
        var handle = new SafeFd(fd);
        SysException.Check(Libc.flock(fd, Libc.LOCK_EX), "flock", dir);
        return handle;
    }

    public void RemoveDir(string id)
    {
        string dir = Dir(id);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    /// <summary>The status the OCI state reports, from the init's liveness and the exec fifo.</summary>
    public string StatusOf(ContainerRecord r)
    {
        if (!ProcStat.IsAlive(r.Pid, r.PidStartTime)) return ContainerStatus.Stopped;
        if (File.Exists(FifoPath(r.Id))) return ContainerStatus.Created;
        if (Cgroups.Freezer.IsFrozen(Cgroups.CgroupPaths.FromMap(r.CgroupPaths))) return ContainerStatus.Paused;
        return ContainerStatus.Running;
    }

    public OciState ToOci(ContainerRecord r, string status) => new()
    {
        Id = r.Id,
        Status = status,
        Pid = status == ContainerStatus.Stopped ? 0 : r.Pid,
        Bundle = r.Bundle,
        Rootfs = r.Rootfs,
        Created = r.Created,
        Owner = "",
        Annotations = r.Annotations,
        IdMappings = r.IdMappings,
    };

    public static IdMappingsState? MappingsOf(Spec spec) =>
        spec.Linux?.UidMappings is { Count: > 0 } u && spec.Linux.GidMappings is { Count: > 0 } g
            ? new IdMappingsState
            {
                UidMap = string.Join('\n', u.Select(m => $"{m.ContainerId} {m.HostId} {m.Size}")),
                GidMap = string.Join('\n', g.Select(m => $"{m.ContainerId} {m.HostId} {m.Size}")),
            }
            : null;

    public const string SpecFile = "spec.json";

    /// <summary>The container's full spec as create ran it (for exec).</summary>
    public void SaveSpec(string id, Spec spec)
    {
        string file = Path.Combine(Dir(id), SpecFile);
        AtomicFile.Write(file, JsonSerializer.SerializeToUtf8Bytes(spec, OciJson.Default.Spec));
    }

    public Spec LoadSpec(string id)
    {
        string file = Path.Combine(Dir(id), SpecFile);
        if (!File.Exists(file)) throw new RuntimeException($"container does not exist: {id}");
        return JsonSerializer.Deserialize(File.ReadAllBytes(file), OciJson.Default.Spec)
            ?? throw new RuntimeException($"{file}: empty spec");
    }
}

/// <summary>What /proc/[pid]/stat says about a process: its state letter and start time.</summary>
public static class ProcStat
{
    public static (char State, ulong StartTime)? Read(int pid)
    {
        if (pid <= 0) return null;
        string text;
        try { text = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (IOException) { return null; }
        // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
        int close = text.LastIndexOf(')');
        if (close < 0) return null;
        var fields = text[(close + 2)..].Split(' ');
        // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
        return (fields[0][0], ulong.Parse(fields[19]));
    }

    public static ulong StartTime(int pid) => Read(pid)?.StartTime ?? 0;

    /// <summary>The real uid of a process (the Uid: line of /proc/PID/status), or null when it is gone.</summary>
    public static long? RealUid(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                    return long.TryParse(line[4..].Trim().Split('\t', ' ')[0], out long uid) ? uid : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    public static bool IsAlive(int pid, ulong startTime)
    {
        var s = Read(pid);
        return s is { } st && st.StartTime == startTime && st.State is not ('Z' or 'X' or 'x');
    }
}
