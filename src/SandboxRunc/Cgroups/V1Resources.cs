// Writes OCI resources into cgroup v1 hierarchies. One method per controller, each writing only the
// values the spec sets, in the order the kernel needs (memory vs memsw, cfs period vs quota). A controller
// that is not mounted is only an error when the spec actually asks for one of its values.
using SandboxRunc.Oci;

namespace SandboxRunc.Cgroups;

internal static class V1Resources
{
    /// <summary>
    /// Device rules runc appends after the spec's own, on v1 and v2 alike, so a container always has its
    /// standard /dev nodes (null, zero, full, random, urandom, tty, pts, ptmx, tun) and may mknod anything.
    /// </summary>
    internal static readonly IReadOnlyList<DeviceCgroup> DefaultAllowedDevices =
    [
        Allow("c", null, null, "m"), Allow("b", null, null, "m"), Allow("c", 1, 3), Allow("c", 1, 8), Allow("c", 1, 7),
        Allow("c", 5, 0), Allow("c", 1, 5), Allow("c", 1, 9), Allow("c", 136, null), Allow("c", 5, 2), Allow("c", 10, 200),
    ];

    static DeviceCgroup Allow(string type, long? major, long? minor, string access = "rwm") =>
        new() { Allow = true, Type = type, Major = major, Minor = minor, Access = access };

    internal static void Apply(IReadOnlyDictionary<string, string> paths, Resources r)
    {
        string Dir(string controller, string what) => paths.TryGetValue(controller, out var d) ? d
            : throw new CgroupException($"cgroup: {what} is set, but the {controller} controller is not mounted");

        if (r.Memory is { } m) Memory(() => Dir("memory", "memory"), m);
        if (r.Cpu is { } c)
        {
            Cpu(() => Dir("cpu", "cpu"), c);
            if (!string.IsNullOrEmpty(c.Cpus)) CgroupFs.Write(Dir("cpuset", "cpuset.cpus"), "cpuset.cpus", c.Cpus);
            if (!string.IsNullOrEmpty(c.Mems)) CgroupFs.Write(Dir("cpuset", "cpuset.mems"), "cpuset.mems", c.Mems);
        }
        if (r.Pids is { } p) CgroupFs.Write(Dir("pids", "pids.limit"), "pids.max", p.Limit > 0 ? p.Limit.ToString() : "max");
        if (r.BlockIo is { } b) BlkIo(() => Dir("blkio", "blockIO"), b);
        if (r.HugepageLimits is { Count: > 0 } hp)
            foreach (var h in hp)
                CgroupFs.Write(Dir("hugetlb", "hugepageLimits"), $"hugetlb.{h.PageSize}.limit_in_bytes", h.Limit.ToString());
        if (r.Devices is { } devs && paths.TryGetValue("devices", out var devDir)) Devices(devDir, devs);
        if (r.Unified is { Count: > 0 })
            throw new CgroupException("cgroup: resources.unified is set, but this host uses cgroup v1");
    }

    static void Memory(Func<string> dir, MemoryResources m)
    {
        long limit = m.Limit ?? 0, swap = m.Swap ?? 0;   // 0 means "not set", as in runc
        if (limit == 0 && swap == 0 && m.Reservation is null or 0 && m.Swappiness is null && m.DisableOomKiller != true)
            return;
        string d = dir();
        bool hasMemsw = CgroupFs.Exists(d, "memory.memsw.limit_in_bytes");
        if (limit == -1 && swap == 0 && hasMemsw) swap = -1;   // unlimited memory implies unlimited swap

        void SetLimit() { if (limit != 0) CgroupFs.Write(d, "memory.limit_in_bytes", limit.ToString()); }
        void SetSwap() { if (swap != 0 && hasMemsw) CgroupFs.Write(d, "memory.memsw.limit_in_bytes", swap.ToString()); }

        // The kernel keeps memsw >= limit at all times: when raising, write memsw first; when lowering, limit first.
        bool swapFirst = false;
        if (limit != 0 && swap != 0 && hasMemsw)
            swapFirst = swap == -1 || (ulong.TryParse(CgroupFs.Read(d, "memory.limit_in_bytes"), out var cur) && cur < (ulong)swap);
        if (swapFirst) { SetSwap(); SetLimit(); }
        else { SetLimit(); SetSwap(); }

        if (m.Reservation is long res && res != 0) CgroupFs.Write(d, "memory.soft_limit_in_bytes", res.ToString());
        if (m.Swappiness is ulong sw) CgroupFs.Write(d, "memory.swappiness", sw.ToString());
        if (m.DisableOomKiller == true) CgroupFs.Write(d, "memory.oom_control", "1");
        // kernel / kernelTCP (kmem limits) are deprecated by the kernel and ignored, as runc does.
    }

    static void Cpu(Func<string> dir, CpuResources c)
    {
        bool any = c.Shares is > 0 || c.Quota is not (null or 0) || c.Period is > 0 || c.RealtimePeriod is > 0
                   || c.RealtimeRuntime is not (null or 0) || c.Idle is not null;
        if (!any) return;
        string d = dir();
        if (c.Shares is ulong shares and > 0) CgroupFs.Write(d, "cpu.shares", shares.ToString());

        // A smaller period can be refused (EINVAL) while the old quota still applies: retry it after the quota.
        bool periodPending = false;
        if (c.Period is ulong period and > 0)
        {
            int err = CgroupFs.TryWrite(Path.Combine(d, "cpu.cfs_period_us"), period.ToString());
            if (err == Interop.Libc.EINVAL && c.Quota is not (null or 0)) periodPending = true;
            else if (err != 0) CgroupFs.Write(d, "cpu.cfs_period_us", period.ToString()); // rethrows with the message
        }
        if (c.Quota is long quota and not 0)
        {
            CgroupFs.Write(d, "cpu.cfs_quota_us", quota.ToString());
            if (periodPending) CgroupFs.Write(d, "cpu.cfs_period_us", c.Period!.Value.ToString());
        }
        if (c.RealtimePeriod is ulong rtp and > 0) CgroupFs.Write(d, "cpu.rt_period_us", rtp.ToString());
        if (c.RealtimeRuntime is long rtr and not 0) CgroupFs.Write(d, "cpu.rt_runtime_us", rtr.ToString());
        if (c.Idle is long idle) CgroupFs.Write(d, "cpu.idle", idle.ToString());
    }

    static void BlkIo(Func<string> dir, BlockIo b)
    {
        bool any = b.Weight is > 0 || b.LeafWeight is > 0 || b.WeightDevice is { Count: > 0 }
                   || b.ThrottleReadBpsDevice is { Count: > 0 } || b.ThrottleWriteBpsDevice is { Count: > 0 }
                   || b.ThrottleReadIopsDevice is { Count: > 0 } || b.ThrottleWriteIopsDevice is { Count: > 0 };
        if (!any) return;
        string d = dir();
        // Old kernels (CFQ) have blkio.weight; kernels with BFQ expose blkio.bfq.weight instead.
        string prefix = CgroupFs.Exists(d, "blkio.weight") ? "blkio." : "blkio.bfq.";
        if (b.Weight is ushort w and > 0) CgroupFs.Write(d, prefix + "weight", w.ToString());
        if (b.LeafWeight is ushort lw and > 0) CgroupFs.Write(d, "blkio.leaf_weight", lw.ToString());
        foreach (var wd in b.WeightDevice ?? [])
        {
            if (wd.Weight is ushort dw) CgroupFs.Write(d, prefix + "weight_device", $"{wd.Major}:{wd.Minor} {dw}");
            if (wd.LeafWeight is ushort dlw) CgroupFs.Write(d, "blkio.leaf_weight_device", $"{wd.Major}:{wd.Minor} {dlw}");
        }
        void Throttle(string file, List<ThrottleDevice>? list)
        {
            foreach (var t in list ?? []) CgroupFs.Write(d, file, $"{t.Major}:{t.Minor} {t.Rate}");
        }
        Throttle("blkio.throttle.read_bps_device", b.ThrottleReadBpsDevice);
        Throttle("blkio.throttle.write_bps_device", b.ThrottleWriteBpsDevice);
        Throttle("blkio.throttle.read_iops_device", b.ThrottleReadIopsDevice);
        Throttle("blkio.throttle.write_iops_device", b.ThrottleWriteIopsDevice);
    }

    /// <summary>"a"/null type and null/-1 numbers become wildcards: {allow, type c, 136, null, rwm} -> "c 136:* rwm".</summary>
    internal static string DeviceRule(DeviceCgroup d)
    {
        string type = string.IsNullOrEmpty(d.Type) ? "a" : d.Type;
        if (type == "a") return "a *:* " + (string.IsNullOrEmpty(d.Access) ? "rwm" : d.Access);
        static string Num(long? n) => n is null or -1 ? "*" : n.Value.ToString();
        return $"{type} {Num(d.Major)}:{Num(d.Minor)} {(string.IsNullOrEmpty(d.Access) ? "rwm" : d.Access)}";
    }

    /// <summary>Start from deny-all, then apply the spec's rules in order, then runc's default allowed devices.</summary>
    static void Devices(string d, List<DeviceCgroup> rules)
    {
        CgroupFs.Write(d, "devices.deny", "a");
        foreach (var rule in rules)
            CgroupFs.Write(d, rule.Allow ? "devices.allow" : "devices.deny", DeviceRule(rule));
        foreach (var rule in DefaultAllowedDevices)
            CgroupFs.Write(d, "devices.allow", DeviceRule(rule));
    }
}
