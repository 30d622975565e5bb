using System.Diagnostics;
using SandboxRunc.Interop;
using SandboxRunc.Policy;

namespace SandboxRunc.Doctor;

/// <summary>
/// The impure half of `check` for the host: each feature is tried rather than inferred where the kernel lets us
/// try it without side effects (a user namespace is created, an ID-mapped mount is set up on a detached clone that
/// is never attached, /dev/fuse is opened). Every failure becomes the call and errno, never an exception.
/// </summary>
public static unsafe class HostProbe
{
    const int SECCOMP_GET_ACTION_AVAIL = 2;
    const uint SECCOMP_RET_USER_NOTIF = 0x7fc00000;

    public static HostFeatureFacts Gather(string dockerRoot)
    {
        string kernel = ReadTrimmed("/proc/sys/kernel/osrelease") ?? Environment.OSVersion.Version.ToString();
        long? maxUserns = long.TryParse(ReadTrimmed("/proc/sys/user/max_user_namespaces"), out long n) ? n : null;

        var table = HostPlacesReader.MountTable();
        var targets = new List<(string Path, string Role, bool Needed)>();
        if (Directory.Exists(dockerRoot)) targets.Add((dockerRoot, "docker's data root: image layers and container roots (the rootfs is ID-mapped)", true));
        targets.Add(("/tmp", "binds from the file-sharing allow list (ID-mapped, so container root owns its files as under runc)", false));

        var idmap = new List<IdmapProbe>();
        string? usernsError;
        using (var userns = ThrowawayUserNamespace(out usernsError))
            foreach (var (path, role, needed) in targets)
            {
                string? fs = HostPlacesReader.PlaceOf(path, table)?.FsType;
                idmap.Add(new IdmapProbe(path, role, fs, needed, userns is null ? $"no user namespace to map with ({usernsError})" : TryIdmap(path, userns.Fd)));
            }

        var (mode, controllers) = CgroupFacts();
        IdPoolFacts? pool = null;
        string? poolError = null;
        try
        {
            var allocator = new IdRangeAllocator(IdPoolConfig.FromEnvironment());
            var pools = allocator.Pools();
            long held = allocator.Held().SelectMany(h => pools.IndexesTouching(h.Uid, h.Gid)).Where(i => i >= 0 && i < pools.Count).Distinct().LongCount();
            pool = new IdPoolFacts(pools.ToString(), pools.Count, held);
        }
        catch (SandboxRuncException e) { poolError = e.Message; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { poolError = e.Message; }

        return new HostFeatureFacts(kernel, maxUserns, usernsError, idmap, SeccompNotify(), Fuse(), mode, controllers,
            AppArmor(), SELinux(), pool, poolError);
    }

    /// <summary>
    /// A user namespace with one mapping (0 -> nobody), held by an fd: a child `unshare --user sleep` (a
    /// multithreaded process cannot unshare CLONE_NEWUSER itself) whose namespace we open, then the child is killed.
    /// </summary>
    static SafeFd? ThrowawayUserNamespace(out string? error)
    {
        error = null;
        Process? child = null;
        try
        {
            var psi = new ProcessStartInfo("unshare") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "--user", "--", "sleep", "30" }) psi.ArgumentList.Add(a);
            child = Process.Start(psi);
            if (child is null) { error = "unshare --user could not be started"; return null; }
            string own = LinkText("/proc/self/ns/user") ?? "";
            var deadline = DateTime.UtcNow.AddSeconds(10);
            string? theirs = null;
            while (DateTime.UtcNow < deadline && !child.HasExited)
            {
                theirs = LinkText($"/proc/{child.Id}/ns/user");
                if (theirs is not null && theirs != own && ReadTrimmed($"/proc/{child.Id}/comm") == "sleep") break;
                Thread.Sleep(10);
            }
            if (child.HasExited || theirs is null || theirs == own)
            {
                error = $"unshare --user: {(child.HasExited ? child.StandardError.ReadToEnd().Trim() : "no new user namespace after 10 s")}";
                return null;
            }
            File.WriteAllText($"/proc/{child.Id}/uid_map", "0 65534 1\n");
            File.WriteAllText($"/proc/{child.Id}/gid_map", "0 65534 1\n");
            string ns = $"/proc/{child.Id}/ns/user";
            int fd = Libc.open(ns, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd < 0) { error = new SysException("open", ns, Libc.Errno).Message; return null; }
            return new SafeFd(fd);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            error = e.Message;
            return null;
        }
        finally
        {
            if (child is not null)
            {
                try { if (!child.HasExited) child.Kill(); child.WaitForExit(5000); } catch (InvalidOperationException) { }
                child.Dispose();
            }
        }
    }

    /// <summary>open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) on the clone, which is dropped unattached.</summary>
    static string? TryIdmap(string path, int usernsFd)
    {
        int fd = Libc.OpenTree(Libc.AT_FDCWD, path, (uint)(Libc.OPEN_TREE_CLONE | Libc.OPEN_TREE_CLOEXEC));
        if (fd < 0) return new SysException("open_tree", path, Libc.Errno).Message;
        using var tree = new SafeFd(fd);
        var attr = new Libc.MountAttr { AttrSet = Libc.MOUNT_ATTR_IDMAP, UsernsFd = (ulong)usernsFd };
        return Libc.MountSetattr(fd, "", (uint)Libc.AT_EMPTY_PATH, ref attr) < 0
            ? new SysException("mount_setattr(MOUNT_ATTR_IDMAP)", path, Libc.Errno).Message : null;
    }

    static string? SeccompNotify()
    {
        uint action = SECCOMP_RET_USER_NOTIF;
        if (Libc.syscall(Libc.SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, (long)&action, 0, 0, 0) < 0)
            return new SysException("seccomp", "SECCOMP_GET_ACTION_AVAIL(SECCOMP_RET_USER_NOTIF)", Libc.Errno).Message;
        try { SeccompNotifyAbi.CheckKernelSizes(); }
        catch (Exception e) when (e is SysException or InvalidOperationException) { return e.Message; }
        return null;
    }

    static string? Fuse()
    {
        int fd = Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (fd < 0) return new SysException("open", "/dev/fuse", Libc.Errno).Message;
        Libc.close(fd);
        return null;
    }

    /// <summary>v2 (cgroup2 at /sys/fs/cgroup), hybrid (v1 controllers and a cgroup2 mount), v1, or none; and the controllers.</summary>
    static (string Mode, List<string> Controllers) CgroupFacts()
    {
        var mounts = SandboxRunc.Cgroups.CgroupLayout.ParseMountInfo(File.ReadAllText("/proc/self/mountinfo"));
        if (SandboxRunc.Cgroups.CgroupLayout.IsUnified(mounts))
            return ("v2", (ReadTrimmed("/sys/fs/cgroup/cgroup.controllers") ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).Order().ToList());
        var v1 = SandboxRunc.Cgroups.CgroupLayout.V1Hierarchies(mounts);
        if (v1.Count == 0) return ("none", []);
        var controllers = v1.SelectMany(h => h.Controllers).Where(c => !c.StartsWith("name=", StringComparison.Ordinal)).Distinct().Order().ToList();
        return (mounts.Any(m => m.FsType == "cgroup2") ? "hybrid (v1 controllers, v2 mounted for systemd)" : "v1", controllers);
    }

    static string? AppArmor() =>
        ReadTrimmed("/sys/module/apparmor/parameters/enabled") == "Y" ? "enabled" : null;

    static string? SELinux() => ReadTrimmed("/sys/fs/selinux/enforce") switch
    {
        "1" => "enforcing",
        "0" => "permissive",
        _ => null,
    };

    static string? LinkText(string path)
    {
        try { return new FileInfo(path).LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    internal static string? ReadTrimmed(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
