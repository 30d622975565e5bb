using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxRunc.Cgroups;
using SandboxRunc.Oci;

namespace SandboxRunc.Container;

/// <summary>
/// update: change the resources of a live container. The request (an OCI LinuxResources document and/or
/// flags) is applied to the container's cgroup as given, then merged field by field into the resources
/// saved in the container's state so that later commands (and a later update) see the current values.
/// </summary>
public static partial class UpdateOperation
{
    public static void Run(StateStore store, string id, Resources request)
    {
        var r = store.Load(id);
        using var _ = store.Lock(id);
        string status = store.StatusOf(r);
        if (status == ContainerStatus.Stopped) throw new RuntimeException($"container not running: {id}");
        // Devices are not updatable (as in runc): the cgroup's device rules stay the ones of create.
        request.Devices = null;
        r.Cgroup().Apply(request);
        r.Resources = Merge(r.Resources ?? new Resources(), request);
        store.Save(r);
    }

    /// <summary>Reads an OCI LinuxResources document ("-" = stdin).</summary>
    public static Resources ReadResources(string file)
    {
        string what = file == "-" ? "stdin" : file;
        try
        {
            using Stream s = file == "-" ? Console.OpenStandardInput() : File.OpenRead(file);
            return JsonSerializer.Deserialize(s, OciJson.Default.Resources)
                ?? throw new RuntimeException($"--resources {what}: empty document");
        }
        catch (JsonException e)
        {
            throw new RuntimeException($"--resources {what}: invalid resources JSON: {e.Message}");
        }
        catch (FileNotFoundException)
        {
            throw new RuntimeException($"--resources {what}: no such file");
        }
    }

    /// <summary>
    /// The values in update replace the ones in saved, except null and 0: the cgroup writers treat 0 as
    /// "not set" (docker's update sends 0 for everything it does not change), so the saved value stays.
    /// </summary>
    public static Resources Merge(Resources saved, Resources update)
    {
        if (update.Memory is { } m)
        {
            var t = saved.Memory ??= new MemoryResources();
            t.Limit = Pick(m.Limit, t.Limit);
            t.Reservation = Pick(m.Reservation, t.Reservation);
            t.Swap = Pick(m.Swap, t.Swap);
            t.Kernel = Pick(m.Kernel, t.Kernel);
            t.KernelTcp = Pick(m.KernelTcp, t.KernelTcp);
            t.Swappiness = m.Swappiness ?? t.Swappiness;
            t.DisableOomKiller = m.DisableOomKiller ?? t.DisableOomKiller;
        }
        if (update.Cpu is { } c)
        {
            var t = saved.Cpu ??= new CpuResources();
            t.Shares = c.Shares is null or 0 ? t.Shares : c.Shares;
            t.Quota = Pick(c.Quota, t.Quota);
            t.Period = c.Period is null or 0 ? t.Period : c.Period;
            t.RealtimeRuntime = Pick(c.RealtimeRuntime, t.RealtimeRuntime);
            t.RealtimePeriod = c.RealtimePeriod is null or 0 ? t.RealtimePeriod : c.RealtimePeriod;
            t.Cpus = string.IsNullOrEmpty(c.Cpus) ? t.Cpus : c.Cpus;
            t.Mems = string.IsNullOrEmpty(c.Mems) ? t.Mems : c.Mems;
            t.Idle = c.Idle ?? t.Idle;
        }
        if (update.Pids is { } p) saved.Pids = new PidsResources { Limit = p.Limit };
        if (update.BlockIo is { } b)
        {
            var t = saved.BlockIo ??= new BlockIo();
            t.Weight = b.Weight is null or 0 ? t.Weight : b.Weight;
            t.LeafWeight = b.LeafWeight is null or 0 ? t.LeafWeight : b.LeafWeight;
            t.WeightDevice = b.WeightDevice ?? t.WeightDevice;
            t.ThrottleReadBpsDevice = b.ThrottleReadBpsDevice ?? t.ThrottleReadBpsDevice;
            t.ThrottleWriteBpsDevice = b.ThrottleWriteBpsDevice ?? t.ThrottleWriteBpsDevice;
            t.ThrottleReadIopsDevice = b.ThrottleReadIopsDevice ?? t.ThrottleReadIopsDevice;
            t.ThrottleWriteIopsDevice = b.ThrottleWriteIopsDevice ?? t.ThrottleWriteIopsDevice;
        }
        if (update.HugepageLimits is { Count: > 0 } hp) saved.HugepageLimits = hp;
        if (update.Unified is { Count: > 0 } u)
        {
            saved.Unified ??= new Dictionary<string, string>();
            foreach (var (k, v) in u) saved.Unified[k] = v;
        }
        return saved;
    }

    static long? Pick(long? update, long? saved) => update is null or 0 ? saved : update;

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)\s*([kmgtp])?i?b?$", RegexOptions.IgnoreCase)]
    private static partial Regex SizePattern();

    /// <summary>
    /// A size as runc (docker's units.RAMInBytes) reads it: plain bytes, or a number with a binary suffix
    /// k/m/g/t/p (optionally followed by "b" or "ib", any case): "64m", "1g", "512KiB", "1.5g".
    /// "-1" (unlimited) is accepted where allowMinusOne.
    /// </summary>
    public static long ParseSize(string flag, string value, bool allowMinusOne = true)
    {
        string v = value.Trim();
        if (allowMinusOne && v == "-1") return -1;
        var m = SizePattern().Match(v);
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double n))
            throw new Cli.UsageException($"invalid value \"{value}\" for flag --{flag}: invalid size (use bytes or a k/m/g/t/p suffix, e.g. 64m)");
        int shift = m.Groups[2].Success ? "kmgtp".IndexOf(char.ToLowerInvariant(m.Groups[2].Value[0])) * 10 + 10 : 0;
        double bytes = n * Math.Pow(2, shift);
        if (bytes > long.MaxValue) throw new Cli.UsageException($"invalid value \"{value}\" for flag --{flag}: too large");
        return (long)bytes;
    }

    public static ulong ParseUnsigned(string flag, string value) =>
        ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n) ? n
            : throw new Cli.UsageException($"invalid value \"{value}\" for flag --{flag}: not a non-negative number");

    public static long ParseSigned(string flag, string value) =>
        long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n) ? n
            : throw new Cli.UsageException($"invalid value \"{value}\" for flag --{flag}: not a number");

    /// <summary>The flag names update understands (runc spells the shares flag --cpu-share).</summary>
    public static readonly string[] ValueFlags =
    [
        "resources|r", "memory", "memory-reservation", "memory-swap", "kernel-memory", "kernel-memory-tcp",
        "cpu-quota", "cpu-period", "cpu-share|cpu-shares", "cpu-rt-period", "cpu-rt-runtime",
        "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight",
    ];

    /// <summary>Builds the request: the --resources document (if any) with the individual flags on top.</summary>
    public static Resources FromFlags(Func<string, string?> get)
    {
        var r = get("resources") is { } file ? ReadResources(file) : new Resources();
        MemoryResources Mem() => r.Memory ??= new MemoryResources();
        CpuResources Cpu() => r.Cpu ??= new CpuResources();
        if (get("memory") is { } mem) Mem().Limit = ParseSize("memory", mem);
        if (get("memory-reservation") is { } res) Mem().Reservation = ParseSize("memory-reservation", res);
        if (get("memory-swap") is { } swap) Mem().Swap = ParseSize("memory-swap", swap);
        if (get("kernel-memory") is { } km) Mem().Kernel = ParseSize("kernel-memory", km);
        if (get("kernel-memory-tcp") is { } kt) Mem().KernelTcp = ParseSize("kernel-memory-tcp", kt);
        if (get("cpu-quota") is { } q) Cpu().Quota = ParseSigned("cpu-quota", q);
        if (get("cpu-period") is { } per) Cpu().Period = ParseUnsigned("cpu-period", per);
        if (get("cpu-share") is { } sh) Cpu().Shares = ParseUnsigned("cpu-share", sh);
        if (get("cpu-rt-period") is { } rtp) Cpu().RealtimePeriod = ParseUnsigned("cpu-rt-period", rtp);
        if (get("cpu-rt-runtime") is { } rtr) Cpu().RealtimeRuntime = ParseSigned("cpu-rt-runtime", rtr);
        if (get("cpuset-cpus") is { } cpus) Cpu().Cpus = cpus;
        if (get("cpuset-mems") is { } mems) Cpu().Mems = mems;
        if (get("pids-limit") is { } pl) r.Pids = new PidsResources { Limit = ParseSigned("pids-limit", pl) };
        if (get("blkio-weight") is { } bw)
        {
            ulong w = ParseUnsigned("blkio-weight", bw);
            if (w != 0 && w is < 10 or > 1000)
                throw new Cli.UsageException($"invalid value \"{bw}\" for flag --blkio-weight: must be 0 or between 10 and 1000");
            (r.BlockIo ??= new BlockIo()).Weight = (ushort)w;
        }
        return r;
    }
}
