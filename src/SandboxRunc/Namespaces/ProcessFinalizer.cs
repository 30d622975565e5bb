using SandboxRunc.Interop;
using SandboxRunc.Oci;

namespace SandboxRunc.Namespaces;

/// <summary>
/// The last steps before execve, all on the calling thread (capabilities, no_new_privs and seccomp
/// filters are per-thread; execve keeps the calling thread's): cwd, umask, apparmor, no_new_privs, the
/// user and groups, the capability sets, closing every fd we do not hand over, and last the spec's
/// seccomp filter, installed and followed by execve in one C call (nsexec.c): the filter may forbid
/// anything the runtime itself needs (close_range, setresuid, capset, ...), so nothing else may run after it.
/// </summary>
internal static unsafe class ProcessFinalizer
{
    const uint CloseRangeCloexec = 4;
    const int CapSysAdmin = 21;

    public static void Exec(InitConfig config, ProcessImage image, int terminalSlave)
    {
        var process = config.Spec.Process!;
        var user = process.User;
        if (terminalSlave >= 0) Terminal.Attach(terminalSlave);

        string cwd = string.IsNullOrEmpty(process.Cwd) ? "/" : process.Cwd;
        if (Libc.chdir(cwd) != 0)
        {
            // As runc: a missing working directory is made (a file in the way, or a read-only rootfs, is the error).
            if (Libc.Errno != Libc.ENOENT) throw new SysException("chdir", $"process.cwd {cwd}", Libc.Errno);
            try { Directory.CreateDirectory(cwd); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new RuntimeException($"process.cwd {cwd}: cannot create it: {UserFile.Reason(e)}");
            }
            SysException.Check(Libc.chdir(cwd), "chdir", $"process.cwd {cwd}");
        }
        if (user.Umask is uint umask) Libc.umask(umask);
        ApplyApparmor(process.ApparmorProfile);

        if (process.NoNewPrivileges)
            SysException.Check(Libc.prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");

        var caps = process.Capabilities;
        DropBoundingSet(caps?.Bounding);
        SysException.Check(Libc.prctl(Libc.PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)");
        SetGroups(user.AdditionalGids);
        SysException.Check(Libc.setresgid(user.Gid, user.Gid, user.Gid), "setresgid", user.Gid.ToString());
        SysException.Check(Libc.setresuid(user.Uid, user.Uid, user.Uid), "setresuid", user.Uid.ToString());
        // Without no_new_privs the kernel loads a filter only for a holder of CAP_SYS_ADMIN (runc installs it
        // early for that reason, before dropping capabilities). We keep it in the effective and permitted sets
        // until the filter is in: what the program gets is decided at execve from the bounding, inheritable and
        // ambient sets (root: bounding | inheritable; any other uid: ambient), which hold exactly the spec's.
        bool filterNeedsSysAdmin = config.SeccompProgram is not null && !process.NoNewPrivileges;
        SetCapabilities(caps, filterNeedsSysAdmin ? 1UL << CapSysAdmin : 0);

        // CVE-2024-21626: no fd of ours (state dir, cgroup files, the runtime's own) reaches the container.
        SysException.Check(Libc.syscall(Libc.SYS_close_range, 3 + config.PreserveFds, uint.MaxValue, CloseRangeCloexec, 0, 0, 0), "close_range");

        using var native = new Spawn.NativeStrings(image.Path, image.Args, image.Env);
        int stage;
        int rc;
        fixed (byte* filter = config.SeccompProgram)
            rc = Nsexec.SeccompExec(filter, (uint)(config.SeccompProgram?.Length ?? 0) / 8, config.SeccompFlags,
                native.Path, native.Argv, native.Envp, &stage);
        throw stage == 1
            ? new SysException("seccomp", "linux.seccomp (the spec's filter)", -rc)
            : new SysException("exec", image.Path, -rc);
    }

    /// <summary>
    /// Called before "ready", so that capabilities this process cannot grant fail `create` with a clear
    /// message (as runc's does), instead of capset failing after `start` as the container's own output.
    /// Example: `docker run --privileged` asks for every capability, on a host whose bounding set lacks one.
    /// </summary>
    public static void CheckCapabilities(Oci.Capabilities? caps)
    {
        if (caps is null) return;
        ulong held = CapabilitySets.Get().Permitted;
        var missing = new List<string>();
        foreach (var list in new[] { caps.Effective, caps.Permitted, caps.Inheritable })
            foreach (var name in list ?? [])
                if (CapabilityNames.TryParse(name, out int cap) && cap <= LastCap() && (held & (1UL << cap)) == 0 && !missing.Contains(name))
                    missing.Add(name);
        if (missing.Count > 0)
            throw new InvalidOperationException(
                $"cannot grant capabilities the runtime does not hold (not in this host's bounding/permitted set): {string.Join(", ", missing)}");
    }

    static void ApplyApparmor(string? profile)
    {
        if (string.IsNullOrEmpty(profile)) return;
        string enabled = "/sys/module/apparmor/parameters/enabled";
        if (!File.Exists(enabled) || !File.ReadAllText(enabled).StartsWith('Y')) return;
        string attr = Directory.Exists("/proc/self/attr/apparmor") ? "/proc/self/attr/apparmor/exec" : "/proc/self/attr/exec";
        try { File.WriteAllText(attr, "exec " + profile); }
        catch (IOException e) { throw new InvalidOperationException($"apparmor profile \"{profile}\": write {attr}: {e.Message}"); }
    }

    /// <summary>
    /// A missing bounding list is an empty one, as for the other sets: Docker's `--cap-drop ALL` sends
    /// `"capabilities": {}`. Keeping the runtime's full bounding set there let a root process regain every
    /// capability at execve (root's file capabilities are the bounding set).
    /// </summary>
    static void DropBoundingSet(List<string>? bounding)
    {
        ulong keep = CapabilityNames.Mask(bounding);
        for (int cap = 0; cap <= LastCap(); cap++)
        {
            if ((keep & (1UL << cap)) != 0) continue;
            if (Libc.prctl(Libc.PR_CAPBSET_DROP, (ulong)cap, 0, 0, 0) != 0 && Libc.Errno != Libc.EINVAL)
                throw new SysException("prctl(PR_CAPBSET_DROP)", CapabilityNames.All[cap], Libc.Errno);
        }
    }

    static int _lastCap = -1;
    static int LastCap()
    {
        if (_lastCap >= 0) return _lastCap;
        try { _lastCap = Math.Min(int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim()), CapabilityNames.Last); }
        catch { _lastCap = CapabilityNames.Last; }
        return _lastCap;
    }

    static void SetGroups(List<uint>? gids)
    {
        var list = gids?.ToArray() ?? [];
        fixed (uint* p = list)
        {
            int rc = Libc.setgroups(list.Length, p);
            // In a user namespace whose setgroups is denied, an empty list cannot be set either: nothing to do then.
            if (rc != 0 && !(list.Length == 0 && Libc.Errno == Libc.EPERM))
                throw new SysException("setgroups", string.Join(',', list), Libc.Errno);
        }
    }

    /// <param name="keep">capabilities held in the effective and permitted sets until execve (see <see cref="Exec"/>).</param>
    static void SetCapabilities(Oci.Capabilities? caps, ulong keep)
    {
        ulong effective = CapabilityNames.Mask(caps?.Effective) | keep;
        ulong permitted = CapabilityNames.Mask(caps?.Permitted) | keep;
        ulong inheritable = CapabilityNames.Mask(caps?.Inheritable);
        new CapabilitySets(effective, permitted, inheritable).Set();
        Libc.prctl(Libc.PR_CAP_AMBIENT, Libc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        foreach (var name in caps?.Ambient ?? [])
        {
            if (!CapabilityNames.TryParse(name, out int cap)) continue;
            // Like runc, an ambient capability that cannot be raised (not permitted+inheritable) is skipped.
            Libc.prctl(Libc.PR_CAP_AMBIENT, Libc.PR_CAP_AMBIENT_RAISE, (ulong)cap, 0, 0);
        }
    }
}
