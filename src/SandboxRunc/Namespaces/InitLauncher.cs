using System.Globalization;
using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Namespaces;

/// <summary>
/// Host side of starting a container's init: spawn a sealed copy of this executable as
/// `sandbox-runc init`, let nsexec.c build the namespaces, write the ID maps it asks for, and
/// learn the pid of the init. Returns the channel for the typed conversation that follows.
/// </summary>
internal static unsafe class InitLauncher
{
    public sealed record Request(
        Spec Spec,
        int PreserveFds,
        int ConsoleSocketFd,
        int ExecFifoFd,
        Action<int> PlaceInCgroup,
        Action<int>? OnUserNamespace = null,
        bool SealedCopy = true);

    public sealed record Launched(int Pid, InitChannel Channel, int FirstFreeFd);

    /// <summary>The fds the init finds after the preserved ones: sync socket, then console socket and exec fifo if any.</summary>
    public static Launched Launch(Request r)
    {
        var (parentEnd, childEnd) = UnixSocket.SeqPacketPair();
        using var _ = childEnd;
        var channel = new InitChannel(parentEnd);
        int stage0 = -1;
        CgroupPlacement? placement = null;
        try
        {
            int next = 3 + r.PreserveFds;
            int syncFd = next++;
            var fdMap = new List<(int, int)> { (syncFd, childEnd.Fd) };
            int consoleFd = -1, fifoFd = -1;
            if (r.ConsoleSocketFd >= 0) fdMap.Add((consoleFd = next++, r.ConsoleSocketFd));
            if (r.ExecFifoFd >= 0) fdMap.Add((fifoFd = next++, r.ExecFifoFd));
            for (int fd = 3; fd < 3 + r.PreserveFds; fd++) fdMap.Add((fd, fd));
            // With a terminal the process's stdio is the pty, never ours: our stdout/stderr is often a
            // pipe the caller reads until EOF (containerd's shim does, for `create`), and an init that
            // kept it open would hang that caller until the container exits. runc gives /dev/null too.
            using var devNull = r.Spec.Process?.Terminal == true
                ? new SafeFd(SysException.Check(Libc.open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC, 0), "open", "/dev/null"))
                : null;
            if (devNull is not null)
                for (int fd = 0; fd <= 2; fd++) fdMap.Add((fd, devNull.Fd));

            using var self = r.SealedCopy ? SealedExecutable.Open() : null;
            string exe = self is null ? Environment.ProcessPath! : $"/proc/{Environment.ProcessId}/fd/{self.Fd}";
            stage0 = Spawn.Start(exe, ["sandbox-runc", "init"],
                [$"_SANDBOX_RUNC_INIT={syncFd.ToString(CultureInfo.InvariantCulture)}"], fdMap);
            // Only the init may hold its end now: if it dies, our receive must see the end of the stream.
            childEnd.Dispose();
            Diagnostics.PhaseTrace.Mark("nsexec spawned");
            var (flags, joins) = Namespaces(r.Spec);
            // Moving a process into v1 cgroups can wait for an RCU grace period (several ms here). With a
            // new user namespace, stage0 has work to do first (unshare, then wait for its maps), so the
            // move runs alongside and is only awaited before MAP_DONE, ahead of the clone of the init.
            placement = new CgroupPlacement(r.PlaceInCgroup, stage0, background: (flags & NsexecProtocol.CLONE_NEWUSER) != 0);
            UnixSocket.Send(parentEnd, NsexecProtocol.EncodeBootstrap(flags, joins, r.Spec.Process?.OomScoreAdj));
            int initPid = ReceiveInitPid(parentEnd, r, placement);
            if (initPid < 0)
            {
                // It died, most likely killed: say by what (a memory limit too small for the init is the usual SIGKILL).
                int? status = Spawn.Wait(stage0, 1000);
                if (status is not null) stage0 = -1; // reaped
                string how = status is > 128
                    ? $" (killed by signal {status - 128}{(status == 128 + 9 ? ", e.g. by the OOM killer: is linux.resources.memory.limit too small?" : "")})"
                    : "";
                throw new InitFailedException($"container init exited while creating namespaces{how}");
            }
            placement.Wait();
            Spawn.Wait(stage0);
            stage0 = -1;
            return new Launched(initPid, channel, next) { };
        }
        catch
        {
            if (stage0 > 0) { Libc.kill(stage0, 9); Spawn.Wait(stage0); }
            try { placement?.Wait(); } catch { /* the create fails anyway; the caller removes the cgroup */ }
            channel.Dispose();
            throw;
        }
    }

    /// <summary>The init's pid, once nsexec has made the namespaces; -1 when stage0 went away without a word.</summary>
    static int ReceiveInitPid(SafeFd socket, Request r, CgroupPlacement placement)
    {
        var buffer = new byte[NsexecProtocol.MessageSize];
        while (true)
        {
            int n = UnixSocket.Receive(socket, buffer);
            if (n == 0) return -1;
            var (type, value, text) = NsexecProtocol.Decode(buffer.AsSpan(0, n));
            switch (type)
            {
                case NsexecProtocol.MapRequest:
                    Diagnostics.PhaseTrace.Mark("user namespace made");
                    WriteIdMaps(value, r.Spec);
                    Diagnostics.PhaseTrace.Mark("ID maps written");
                    r.OnUserNamespace?.Invoke(value);
                    placement.Wait();
                    UnixSocket.Send(socket, NsexecProtocol.Encode(NsexecProtocol.MapDone));
                    break;
                case NsexecProtocol.InitPid:
                    return value;
                case NsexecProtocol.Error:
                    throw new InitFailedException(text);
                default:
                    throw new InitFailedException($"nsexec protocol error: unexpected message {type}");
            }
        }
    }

    static void WriteIdMaps(int pid, Spec spec)
    {
        WriteMap($"/proc/{pid}/uid_map", spec.Linux?.UidMappings);
        WriteMap($"/proc/{pid}/gid_map", spec.Linux?.GidMappings);
    }

    static void WriteMap(string path, List<IdMapping>? mappings)
    {
        if (mappings is null || mappings.Count == 0)
            throw new InitFailedException($"a new user namespace needs linux.uidMappings and linux.gidMappings ({path})");
        string text = string.Concat(mappings.Select(m => $"{m.ContainerId} {m.HostId} {m.Size}\n"));
        try { File.WriteAllText(path, text); }
        catch (IOException e) { throw new InitFailedException($"write \"{text.TrimEnd()}\" to {path}: {e.Message}"); }
    }

    /// <summary>Namespaces to create (clone flags) and to join (type, path), from linux.namespaces.</summary>
    public static (uint Flags, List<(uint, string)> Joins) Namespaces(Spec spec)
    {
        uint flags = 0;
        var joins = new List<(uint, string)>();
        foreach (var ns in spec.Linux?.Namespaces ?? [])
        {
            uint flag = NsexecProtocol.CloneFlag(ns.Type);
            if (string.IsNullOrEmpty(ns.Path)) flags |= flag;
            else joins.Add((flag, ns.Path));
        }
        return (flags, joins);
    }
}

/// <summary>Puts stage0 into the container's cgroups, now or on a thread of its own; Wait rethrows its failure.</summary>
internal sealed class CgroupPlacement
{
    readonly Thread? _thread;
    Exception? _failure;

    public CgroupPlacement(Action<int> place, int pid, bool background)
    {
        if (!background)
        {
            place(pid);
            return;
        }
        _thread = new Thread(() =>
        {
            try { place(pid); }
            catch (Exception e) { _failure = e; }
        });
        _thread.Start();
    }

    public void Wait()
    {
        _thread?.Join();
        if (_failure is { } e)
        {
            _failure = null;
            throw e;
        }
    }
}

/// <summary>
/// CVE-2019-5736: a container process must never be able to rewrite the host's sandbox-runc through
/// /proc/[init]/exe. Without a user namespace the init therefore runs a sealed in-memory copy (memfd
/// with write seals). With one whose maps leave out host root, container root is an unprivileged host
/// user that cannot open the root-owned binary for writing, so the copy (~1.5 ms) is skipped.
/// </summary>
internal static unsafe class SealedExecutable
{
    public static SafeFd Open()
    {
        using var src = new SafeFd(SysException.Check(Libc.open("/proc/self/exe", Libc.O_RDONLY | Libc.O_CLOEXEC, 0), "open", "/proc/self/exe"));
        var mem = new SafeFd(SysException.Check(Libc.memfd_create("sandbox-runc", Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING), "memfd_create", "sandbox-runc"));
        try
        {
            while (true)
            {
                nint n = Libc.sendfile(mem.Fd, src.Fd, null, 1 << 30);
                if (n == 0) break;
                if (n < 0 && Libc.Errno == Libc.EINTR) continue;
                if (n < 0) throw new SysException("sendfile", "/proc/self/exe -> memfd", Libc.Errno);
            }
            SysException.Check(Libc.fcntl(mem.Fd, Libc.F_ADD_SEALS,
                Libc.F_SEAL_SEAL | Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_WRITE), "fcntl(F_ADD_SEALS)", "memfd");
            return mem;
        }
        catch
        {
            mem.Dispose();
            throw;
        }
    }
}
