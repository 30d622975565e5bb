// Writes OCI resources into one cgroup v2 directory, converting the v1-shaped OCI values the way runc
// does (shares -> cpu.weight, memory+swap -> swap.max, blkio weight -> io.weight). The conversions are
// separate pure functions so they can be unit-tested.
//
// Device rules have no files on v2: they are an eBPF program attached to the cgroup (DeviceFilter), which
// the v2 managers apply after these files.
using SandboxRunc.Oci;

namespace SandboxRunc.Cgroups;

internal static class V2Resources
{
    /// <summary>
    /// cgroup v1 cpu.shares [2..262144] (default 1024) to v2 cpu.weight [1..10000] (default 100), using the
    /// log-quadratic mapping runc adopted in 1.3.2 (it keeps 1024 -> 100; the older linear one gave 39).
    /// 0 means "not set" and stays 0.
    /// </summary>
    internal static ulong SharesToWeight(ulong shares)
    {
        if (shares == 0) return 0;
        if (shares <= 2) return 1;
        if (shares >= 262144) return 10000;
        double l = Math.Log2(shares);
        double exponent = (l * l + 125 * l) / 612.0 - 7.0 / 34.0;
        return (ulong)Math.Ceiling(Math.Pow(10, exponent));
    }

    /// <summary>
    /// OCI memory.swap is memory+swap (the v1 memsw meaning); v2 memory.swap.max is swap alone.
    /// Returns null for "leave unset", -1 for "max".
    /// </summary>
    internal static long? SwapToV2(long swap, long limit)
    {
        if (limit == -1 && swap == 0) return -1;
        if (swap == -1) return -1;
        if (swap == 0) return null;
        if (limit == 0 || limit == -1)
            throw new CgroupException($"cgroup: memory.swap {swap} needs a memory limit on cgroup v2");
        if (swap < limit)
            throw new CgroupException($"cgroup: memory.swap {swap} (memory+swap) is lower than memory.limit {limit}");
        return swap - limit;
    }

    /// <summary>blkio weight [10..1000] to io.weight [1..10000].</summary>
    internal static ulong BlkioToIoWeight(ulong weight) => weight == 0 ? 0 : 1 + (weight - 10) * 9999 / 990;

    static string MaxOr(long v) => v < 0 ? "max" : v.ToString();

    internal static void Apply(string d, Resources r)
    {
        if (r.Memory is { } m)
        {
            long limit = m.Limit ?? 0;
            if (SwapToV2(m.Swap ?? 0, limit) is long swapMax)
            {
                string v = MaxOr(swapMax);
                int err = CgroupFs.TryWrite(Path.Combine(d, "memory.swap.max"), v);
                // Without swap accounting the file is missing: only "max"/"0" (no-ops then) may be skipped.
                if (err != 0 && !(err == Interop.Libc.ENOENT && v is "max" or "0"))
                    CgroupFs.Write(d, "memory.swap.max", v);
            }
            if (limit != 0) CgroupFs.Write(d, "memory.max", MaxOr(limit));
            if (m.Reservation is long res and not 0) CgroupFs.Write(d, "memory.low", MaxOr(res));
            // swappiness and disableOOMKiller have no v2 equivalent and are ignored.
        }
        if (r.Cpu is { } c)
        {
            if (c.RealtimePeriod is > 0 || c.RealtimeRuntime is not (null or 0))
                throw new CgroupException("cgroup: cpu.realtimePeriod/realtimeRuntime are not supported on cgroup v2");
            if (c.Shares is ulong s and > 0) CgroupFs.Write(d, "cpu.weight", SharesToWeight(s).ToString());
            if (c.Idle is long idle) CgroupFs.Write(d, "cpu.idle", idle.ToString());
            long quota = c.Quota ?? 0;
            ulong period = c.Period ?? 0;
            if (quota != 0 || period != 0)
            {
                string v = quota > 0 ? quota.ToString() : "max";
                if (period != 0) v += " " + period;
                CgroupFs.Write(d, "cpu.max", v);
            }
            if (!string.IsNullOrEmpty(c.Cpus)) CgroupFs.Write(d, "cpuset.cpus", c.Cpus);
            if (!string.IsNullOrEmpty(c.Mems)) CgroupFs.Write(d, "cpuset.mems", c.Mems);
        }
        if (r.Pids is { } p) CgroupFs.Write(d, "pids.max", p.Limit > 0 ? p.Limit.ToString() : "max");
        if (r.BlockIo is { } b)
        {
            bool bfq = CgroupFs.Exists(d, "io.bfq.weight");
            if (b.Weight is ushort w and > 0)
            {
                if (bfq) CgroupFs.Write(d, "io.bfq.weight", w.ToString());
                else CgroupFs.Write(d, "io.weight", BlkioToIoWeight(w).ToString());
            }
            foreach (var wd in b.WeightDevice ?? [])
                if (wd.Weight is ushort dw)
                {
                    if (bfq) CgroupFs.Write(d, "io.bfq.weight", $"{wd.Major}:{wd.Minor} {dw}");
                    else CgroupFs.Write(d, "io.weight", $"{wd.Major}:{wd.Minor} {BlkioToIoWeight(dw)}");
                }
            void Max(string key, List<ThrottleDevice>? list)
            {
                foreach (var t in list ?? []) CgroupFs.Write(d, "io.max", $"{t.Major}:{t.Minor} {key}={t.Rate}");
            }
            Max("rbps", b.ThrottleReadBpsDevice);
            Max("wbps", b.ThrottleWriteBpsDevice);
            Max("riops", b.ThrottleReadIopsDevice);
            Max("wiops", b.ThrottleWriteIopsDevice);
        }
        foreach (var h in r.HugepageLimits ?? [])
            CgroupFs.Write(d, $"hugetlb.{h.PageSize}.max", h.Limit.ToString());

        // unified is written last and verbatim, so it can override anything above.
        foreach (var (key, value) in r.Unified ?? [])
        {
            if (key.Length == 0 || key.Contains('/') || key.Contains("..") || !key.Contains('.'))
                throw new CgroupException($"cgroup: unified key \"{key}\" is not a cgroup file name");
            CgroupFs.Write(d, key, value);
        }
    }
}
