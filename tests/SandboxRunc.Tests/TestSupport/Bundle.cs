using System.Text.Json;
using SandboxRunc.Oci;

namespace SandboxRunc.Tests.TestSupport;

/// <summary>
/// An OCI bundle in a temp dir, made from the test image's rootfs and `sandbox-runc spec`'s defaults
/// (no terminal). By default the rootfs is shared and read-only; <see cref="WritableRootfs"/> copies it.
/// </summary>
public sealed class Bundle : IDisposable
{
    public string Dir { get; }
    public Spec Spec { get; }

    public Bundle(params string[] args)
    {
        if (!Directory.Exists(Repo.Rootfs))
            throw new InvalidOperationException($"test rootfs {Repo.Rootfs} is missing: run ./build.sh up (or set SANDBOX_RUNC_ROOTFS)");
        Dir = Path.Combine(Path.GetTempPath(), "sr-bundle-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Dir);
        Spec = DefaultSpec.Create();
        Spec.Process!.Terminal = false;
        Spec.Process.Args = args.Length > 0 ? [.. args] : ["true"];
        Spec.Root!.Path = Repo.Rootfs;
        Spec.Root.Readonly = true;
        Spec.Linux!.CgroupsPath = "/sandbox-runc-test/" + Path.GetFileName(Dir);
    }

    /// <summary>Gives this bundle its own writable copy of the rootfs.</summary>
    public Bundle WritableRootfs()
    {
        string copy = Path.Combine(Dir, "rootfs");
        var p = System.Diagnostics.Process.Start("cp", ["-a", Repo.Rootfs, copy]);
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"cp -a {Repo.Rootfs} {copy} failed");
        Spec.Root!.Path = "rootfs";
        Spec.Root.Readonly = false;
        return this;
    }

    /// <summary>
    /// The container's cgroup directory for a v1 controller (from cgroupsPath), e.g. "memory"; on a cgroup v2
    /// host the one unified directory, whatever the controller.
    /// </summary>
    public string CgroupDir(string controller) => HostCgroups.Dir(controller, Spec.Linux!.CgroupsPath!);

    /// <summary>Writes config.json (call after editing <see cref="Spec"/>); returns the bundle dir.</summary>
    public string Write()
    {
        File.WriteAllText(Path.Combine(Dir, "config.json"), JsonSerializer.Serialize(Spec, OciJson.Default.Spec));
        return Dir;
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, true); } catch { }
    }
}
