using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>
/// The runtime's state directory (--root): one directory per container with state.json (written
/// atomically) and, until `start`, the exec fifo. Commands on one container serialise on an flock
/// of its directory, so concurrent CLI calls are safe.
/// </summary>
public sealed partial class StateStore(string root)
{
    public const string StateFile = "state.json", ExecFifo = "exec.fifo", CreatingFile = "creating";
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
        string dir = Dir(id);
        try
        {
            Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            if (Directory.Exists(dir)) throw new RuntimeException($"container with id exists: {id}");
            var info = Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return info.FullName;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"create state dir {dir}: {Interop.UserFile.Reason(e)}");
        }
    }

    /// <summary>
    /// What an unfinished create has made that `delete` cannot otherwise find (the cgroup dirs come from
    /// the bundle's spec), noted before it is made: one "controller=dir" line each. If the create dies
    /// (SIGKILL) before state.json, `delete` cleans up from this note.
    /// </summary>
    public void NoteCreating(string id, IReadOnlyDictionary<string, string> cgroupPaths)
    {
        string file = Path.Combine(Dir(id), CreatingFile);
        AtomicFile.Write(file, string.Concat(cgroupPaths.Select(kv => $"{kv.Key}={kv.Value}\n")));
    }

    /// <summary>The cgroup dirs noted by <see cref="NoteCreating"/> (empty if there is no note).</summary>
    public Dictionary<string, string> CreatingCgroups(string id)
    {
        string file = Path.Combine(Dir(id), CreatingFile);
        if (!File.Exists(file)) return [];
        return File.ReadAllLines(file).Select(l => l.Split('=', 2)).Where(kv => kv.Length == 2 && kv[1].StartsWith('/'))
            .GroupBy(kv => kv[0]).ToDictionary(g => g.Key, g => g.Last()[1]);
    }

    public bool Exists(string id) => File.Exists(Path.Combine(Dir(id), StateFile));

    public ContainerRecord Load(string id)
    {
        ValidateId(id);
        string file = Path.Combine(Dir(id), StateFile);
        if (!File.Exists(file)) throw new RuntimeException($"container does not exist: {id}");
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(file), OciJson.Default.ContainerRecord)
                ?? throw new RuntimeException($"{file}: empty state");
        }
        catch (JsonException e)
        {
            throw new RuntimeException($"{file}: corrupt state: {e.Message}");
        }
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
        if (Cgroups.Freezer.IsFrozen(r.CgroupPaths)) return ContainerStatus.Paused;
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

    public static bool IsAlive(int pid, ulong startTime)
    {
        var s = Read(pid);
        return s is { } st && st.StartTime == startTime && st.State is not ('Z' or 'X' or 'x');
    }
}
