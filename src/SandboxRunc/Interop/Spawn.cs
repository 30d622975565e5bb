using System.Text;

namespace SandboxRunc.Interop;

/// <summary>
/// Starting a program with posix_spawn (vfork+exec in libc: no managed code runs in the child).
/// Used for the container's init and for hooks. System.Diagnostics.Process is not used anywhere in
/// the runtime: it would install its own SIGCHLD handling and reap children we wait for ourselves.
/// </summary>
public static unsafe class Spawn
{
    /// <param name="fdMap">child fd -> parent fd to dup2 there (others are closed if close-on-exec).</param>
    public static int Start(string path, IReadOnlyList<string> argv, IReadOnlyList<string> env,
        IReadOnlyList<(int ChildFd, int ParentFd)> fdMap)
    {
        byte* fa = stackalloc byte[128]; // posix_spawn_file_actions_t is 80 bytes on glibc x86_64
        byte* attr = stackalloc byte[512]; // posix_spawnattr_t is 336 bytes
        Check(Libc.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init", path);
        Check(Libc.posix_spawnattr_init(attr), "posix_spawnattr_init", path);
        try
        {
            // dup2 through temporary fds above the target range, so mappings never clobber one another.
            int tempBase = 1000;
            for (int i = 0; i < fdMap.Count; i++)
                Check(Libc.posix_spawn_file_actions_adddup2(fa, fdMap[i].ParentFd, tempBase + i), "posix_spawn dup2", path);
            for (int i = 0; i < fdMap.Count; i++)
                Check(Libc.posix_spawn_file_actions_adddup2(fa, tempBase + i, fdMap[i].ChildFd), "posix_spawn dup2", path);
            // Signals: nothing blocked, everything at its default disposition in the child.
            ulong empty = 0, all = ~0UL;
            Check(Libc.posix_spawnattr_setsigmask(attr, &empty), "posix_spawnattr_setsigmask", path);
            Check(Libc.posix_spawnattr_setsigdefault(attr, &all), "posix_spawnattr_setsigdefault", path);
            Check(Libc.posix_spawnattr_setflags(attr, (short)(Libc.POSIX_SPAWN_SETSIGMASK | Libc.POSIX_SPAWN_SETSIGDEF)), "posix_spawnattr_setflags", path);

            using var native = new NativeStrings(path, argv, env);
            int pid;
            Check(Libc.posix_spawn(&pid, native.Path, fa, attr, native.Argv, native.Envp), "posix_spawn", path);
            return pid;
        }
        finally
        {
            Libc.posix_spawn_file_actions_destroy(fa);
            Libc.posix_spawnattr_destroy(attr);
        }
    }

    static void Check(int rc, string call, string path)
    {
        if (rc != 0) throw new SysException(call, path, rc);
    }

    /// <summary>Waits for a child; returns its exit code (128+signal if killed), or null on timeout.</summary>
    public static int? Wait(int pid, int timeoutMs = -1)
    {
        if (timeoutMs >= 0)
        {
            int pidfd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0, 0, 0, 0);
            if (pidfd >= 0)
            {
                try { if (!UnixSocket.WaitReadable(pidfd, timeoutMs)) return null; }
                finally { Libc.close(pidfd); }
            }
        }
        int status;
        while (true)
        {
            int r = Libc.waitpid(pid, &status, 0);
            if (r == pid) return DecodeStatus(status);
            if (r < 0 && Libc.Errno == Libc.EINTR) continue;
            throw new SysException("waitpid", pid.ToString(), Libc.Errno);
        }
    }

    public static int DecodeStatus(int status) =>
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);

    /// <summary>NUL-terminated UTF-8 strings and pointer arrays in one native block, for exec-family calls.</summary>
    public sealed class NativeStrings : IDisposable
    {
        readonly byte* _block;
        public byte* Path { get; }
        public byte** Argv { get; }
        public byte** Envp { get; }

        public NativeStrings(string path, IReadOnlyList<string> argv, IReadOnlyList<string> env)
        {
            var all = new List<string>(1 + argv.Count + env.Count) { path };
            all.AddRange(argv);
            all.AddRange(env);
            nint pointers = (argv.Count + 1 + env.Count + 1) * sizeof(byte*);
            nint bytes = 0;
            foreach (var s in all) bytes += Encoding.UTF8.GetByteCount(s) + 1;
            _block = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(pointers + bytes));
            byte** ptrs = (byte**)_block;
            byte* cursor = _block + pointers;
            byte* Put(string s)
            {
                byte* start = cursor;
                int n = Encoding.UTF8.GetBytes(s, new Span<byte>(cursor, Encoding.UTF8.GetByteCount(s)));
                cursor[n] = 0;
                cursor += n + 1;
                return start;
            }
            Path = Put(path);
            Argv = ptrs;
            for (int i = 0; i < argv.Count; i++) ptrs[i] = Put(argv[i]);
            ptrs[argv.Count] = null;
            Envp = ptrs + argv.Count + 1;
            for (int i = 0; i < env.Count; i++) Envp[i] = Put(env[i]);
            Envp[env.Count] = null;
        }

        public void Dispose() => System.Runtime.InteropServices.NativeMemory.Free(_block);
    }
}
