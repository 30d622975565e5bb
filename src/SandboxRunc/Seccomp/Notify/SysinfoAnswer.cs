using SandboxRunc.Interop;

namespace SandboxRunc.Seccomp.Notify;

/// <summary>What a container's sysinfo(2) shows instead of the host's: its uptime and memory (bytes).</summary>
public sealed record ContainerSysinfo(long UptimeSeconds, ulong TotalRam, ulong FreeRam, ulong SharedRam, ulong BufferRam,
    ulong TotalSwap, ulong FreeSwap)
{
    /// <summary>From the text of the container's emulated /proc/uptime and /proc/meminfo.</summary>
    public static ContainerSysinfo? Parse(string uptime, string meminfo)
    {
        if (!double.TryParse(uptime.Split(' ')[0], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double up))
            return null;
        ulong Kb(string key) => (Emulation.ProcText.MeminfoKb(meminfo, key) ?? 0) * 1024;
        return new ContainerSysinfo((long)up, Kb("MemTotal"), Kb("MemFree"), Kb("Shmem"), Kb("Buffers"), Kb("SwapTotal"), Kb("SwapFree"));
    }
}

/// <summary>
/// Answers a trapped sysinfo(2): the host's struct (load averages, process count) with the container's
/// uptime and memory in place, written into the caller's buffer. Like the emulated /proc files, so that
/// busybox free and uptime, which read sysinfo instead of /proc, tell the truth about the container.
/// Nothing here is a security decision: the caller only learns less about the host.
/// </summary>
internal static unsafe class SysinfoAnswer
{
    public const int Nr = 99;
    const int Size = 112; // struct sysinfo on x86_64

    /// <returns>0, or the errno for the caller (EFAULT for a bad buffer).</returns>
    public static int Write(int pid, ulong address, ContainerSysinfo? view, Func<bool> stillValid)
    {
        byte* info = stackalloc byte[Size];
        new Span<byte>(info, Size).Clear();
        if (Libc.sysinfo(info) != 0) return Libc.Errno;
        if (view is not null)
        {
            *(long*)info = view.UptimeSeconds;
            var ram = (ulong*)(info + 32); // totalram, freeram, sharedram, bufferram, totalswap, freeswap
            ram[0] = view.TotalRam; ram[1] = view.FreeRam; ram[2] = view.SharedRam; ram[3] = view.BufferRam;
            ram[4] = view.TotalSwap; ram[5] = view.FreeSwap;
            *(ulong*)(info + 88) = 0; *(ulong*)(info + 96) = 0; // totalhigh, freehigh
            *(uint*)(info + 104) = 1;                            // mem_unit: bytes
        }
        // Write through /proc/PID/mem opened first and checked after: if the notification is still valid
        // once the file is open, the file is the caller's (a pid reused in between fails the check), so
        // the write can never land in another process (process_vm_writev by pid could).
        string mem = $"/proc/{pid}/mem";
        int fd = Libc.open(mem, Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (fd < 0) return stillValid() ? Libc.EFAULT : 0;
        try
        {
            if (!stillValid()) return 0;
            return Libc.pwrite(fd, info, Size, (long)address) == Size ? 0 : Libc.EFAULT;
        }
        finally { Libc.close(fd); }
    }
}
