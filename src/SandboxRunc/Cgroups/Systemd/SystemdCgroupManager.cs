// The systemd cgroup driver on a unified (v2) host, as runc's: the container's cgroup is a transient scope
// that systemd makes, owns and removes, with Delegate=yes (the subtree is ours: the container may make its
// own cgroups in it) and the resources as unit properties systemd understands, so that a `systemctl
// daemon-reload` re-applies our limits instead of resetting them. The cgroup files (everything systemd has no
// property for) and the device program are then written in the scope's directory, as the v2 cgroupfs driver
// does. A scope needs a process when it is started: the unit is made with the first process `create` places
// (the init's first stage), and the resources given before that are kept for it.
using SandboxRunc.Oci;
using Tmds.DBus.Protocol;

namespace SandboxRunc.Cgroups;

public sealed class SystemdCgroupManager : CgroupV2Manager
{
    readonly SystemdUnit _unit;
    bool _started;
    Resources? _pending;

    /// <param name="started">the unit exists (a later command on a created container), not to be started again.</param>
    public SystemdCgroupManager(CgroupPaths paths, SystemdUnit unit, bool started = false) : base(paths)
    {
        _unit = unit;
        _started = started;
    }

    public override CgroupDriver Driver => CgroupDriver.Systemd;
    public override string? Unit => _unit.ToString();

    /// <summary>Nothing to make before the first process; systemd must be reachable though, or create fails now.</summary>
    public override void Create()
    {
        using var bus = SystemdBus.Connect();
    }

    public override void AddProcess(int pid)
    {
        if (_started)
        {
            base.AddProcess(pid);
            return;
        }
        var properties = new List<UnitProperty>
        {
            new("Description", $"sandbox-runc container {Path.GetFileName(Dir)}"),
            new("PIDs", VariantValue.Array(new[] { (uint)pid })),
            new("Delegate", true),
            new("MemoryAccounting", true),
            new("CPUAccounting", true),
            new("IOAccounting", true),
            new("TasksAccounting", true),
            new("DefaultDependencies", false),
        };
        if (!_unit.IsSlice) properties.Add(new("Slice", _unit.Slice));
        properties.AddRange(Properties(_pending));
        using (var bus = SystemdBus.Connect())
            bus.StartTransientUnit(_unit.Name, properties);
        _started = true;
        if (!Directory.Exists(Dir))
            throw new CgroupException($"cgroup: systemd started {_unit.Name} but its cgroup is not {Dir} (a slice layout this driver does not expect)");
        // What systemd has no property for, and the device rules.
        base.Apply(_pending);
    }

    public override void Apply(Resources? r)
    {
        if (!_started)
        {
            _pending = r;
            return;
        }
        if (r is null) return;
        using (var bus = SystemdBus.Connect())
            bus.SetUnitProperties(_unit.Name, Properties(r));
        base.Apply(r);
    }

    /// <summary>systemd stops the scope (killing what is left, removing its cgroup); then anything that stayed goes as on v2.</summary>
    public override void Destroy(TimeSpan timeout)
    {
        try
        {
            using var bus = SystemdBus.Connect();
            bus.StopUnit(_unit.Name);
        }
        catch (CgroupException) when (!Directory.Exists(Dir))
        {
            // systemd already removed it (a scope whose processes all exited is collected)
        }
        base.Destroy(timeout);
    }

    const ulong Infinity = ulong.MaxValue;

    /// <summary>The resources systemd has properties for (systemd.resource-control(5)), in systemd's units.</summary>
    public static List<UnitProperty> Properties(Resources? r)
    {
        var list = new List<UnitProperty>();
        if (r is null) return list;
        if (r.Memory is { } m)
        {
            long limit = m.Limit ?? 0;
            if (limit != 0) list.Add(new("MemoryMax", limit < 0 ? Infinity : (ulong)limit));
            if (V2Resources.SwapToV2(m.Swap ?? 0, limit) is long swap) list.Add(new("MemorySwapMax", swap < 0 ? Infinity : (ulong)swap));
            if (m.Reservation is long low and not 0) list.Add(new("MemoryLow", low < 0 ? Infinity : (ulong)low));
        }
        if (r.Cpu is { } c)
        {
            if (c.Shares is ulong shares and > 0) list.Add(new("CPUWeight", V2Resources.SharesToWeight(shares)));
            long quota = c.Quota ?? 0;
            ulong period = c.Period is > 0 ? c.Period.Value : 100_000;
            if (quota > 0)
            {
                // systemd rounds the quota to whole percent of a CPU (10 ms per second); the exact quota is
                // also written to cpu.max afterwards.
                ulong perSecond = (ulong)quota * 1_000_000 / period;
                list.Add(new("CPUQuotaPerSecUSec", perSecond));
            }
            else if (quota < 0) list.Add(new("CPUQuotaPerSecUSec", Infinity));
            if (c.Period is > 0) list.Add(new("CPUQuotaPeriodUSec", period));
            if (!string.IsNullOrEmpty(c.Cpus)) list.Add(new("AllowedCPUs", VariantValue.Array(CpuMask(c.Cpus))));
            if (!string.IsNullOrEmpty(c.Mems)) list.Add(new("AllowedMemoryNodes", VariantValue.Array(CpuMask(c.Mems))));
        }
        if (r.Pids is { } p) list.Add(new("TasksMax", p.Limit > 0 ? (ulong)p.Limit : Infinity));
        return list;
    }

    /// <summary>A cpuset list ("0-3,5") as systemd's byte mask: bit N of byte N/8 for CPU N.</summary>
    public static byte[] CpuMask(string list)
    {
        var bits = new List<int>();
        foreach (var part in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var range = part.Split('-');
            if (!int.TryParse(range[0], out int first) || first < 0 || range.Length > 2)
                throw new CgroupException($"cgroup: \"{list}\" is not a list of CPUs or memory nodes");
            int last = first;
            if (range.Length == 2 && (!int.TryParse(range[1], out last) || last < first || last > 8191))
                throw new CgroupException($"cgroup: \"{list}\" is not a list of CPUs or memory nodes");
            for (int i = first; i <= last; i++) bits.Add(i);
        }
        var mask = new byte[bits.Count == 0 ? 0 : bits.Max() / 8 + 1];
        foreach (int b in bits) mask[b / 8] |= (byte)(1 << (b % 8));
        return mask;
    }
}
