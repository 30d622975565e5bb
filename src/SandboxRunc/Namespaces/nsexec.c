/*
 * nsexec.c: the part of `sandbox-runc init` that must run while the process is single-threaded.
 *
 * A native-AOT .NET process already has several threads when Main runs, and the kernel refuses
 * unshare(CLONE_NEWUSER) and setns() into a user or mount namespace for a multi-threaded process.
 * So, like runc's nsexec, this file runs as an ELF constructor before the .NET runtime starts.
 * It does nothing unless the environment names a bootstrap socket (_SANDBOX_RUNC_INIT=<fd>).
 *
 * It only does raw system calls: join namespaces by path, create the new ones, let the host
 * write the ID maps, then fork the container's init into the new PID namespace. The forked
 * init returns from this constructor and the .NET runtime starts in it, inside every namespace;
 * the rest of the set-up (mounts, pivot_root, capabilities, seccomp, exec) is C#
 * (Namespaces/InitProcess.cs).
 *
 * Messages on the SOCK_SEQPACKET socket (one struct nsexec_msg per packet, host byte order):
 *
 *   host   -> stage0   BOOTSTRAP    payload: struct nsexec_bootstrap
 *   stage0 -> host     MAP_REQUEST  value: pid whose uid_map/gid_map the host must write
 *   host   -> stage0   MAP_DONE     (the host has also staged the ID-mapped mounts by now: they must
 *                                    exist before we copy the host's mount namespace)
 *   stage0 -> host     INIT_PID     value: pid of the container's init (in the host's PID namespace)
 *   stage0 / init -> host  ERROR    text: what failed, with errno text
 *
 * stage0 is the process the host spawned; it exits once INIT_PID is sent. The init is created
 * with CLONE_PARENT so that it is a direct child of the host process (the `run` command can
 * wait for it; after `create` exits it is re-parented to the engine's subreaper, like runc's).
 * The host checks the layout of these structs against Namespaces/NsexecProtocol.cs in a test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#define NSEXEC_VERSION 1
#define NSEXEC_MAX_JOIN 8
#define NSEXEC_PATH_MAX 512
#define NSEXEC_TEXT_MAX 1024

enum nsexec_type {
    NSEXEC_BOOTSTRAP = 1,
    NSEXEC_MAP_REQUEST = 2,
    NSEXEC_MAP_DONE = 3,
    NSEXEC_INIT_PID = 4,
    NSEXEC_ERROR = 5,
};

struct nsexec_join {
    uint32_t nstype; /* CLONE_NEW* flag of the namespace */
    char path[NSEXEC_PATH_MAX];
};

struct nsexec_bootstrap {
    uint32_t version;
    uint32_t clone_flags; /* namespaces to create (CLONE_NEW*) */
    uint32_t join_count;
    int32_t oom_score_adj;
    uint32_t set_oom_score_adj;
    struct nsexec_join join[NSEXEC_MAX_JOIN];
};

struct nsexec_msg {
    uint32_t type;
    int32_t value;
    union {
        struct nsexec_bootstrap bootstrap;
        char text[NSEXEC_TEXT_MAX];
    } u;
};

/* 1 in the container's init once the constructor returned into .NET; 0 everywhere else. */
static int nsexec_is_init;
static int nsexec_sync_fd = -1;

int nsexec_role(void) { return nsexec_is_init; }
int nsexec_sync(void) { return nsexec_sync_fd; }
int nsexec_layout(int which)
{
    switch (which) {
    case 0: return (int)sizeof(struct nsexec_msg);
    case 1: return (int)sizeof(struct nsexec_bootstrap);
    case 2: return (int)offsetof(struct nsexec_msg, u);
    case 3: return (int)offsetof(struct nsexec_bootstrap, join);
    default: return -1;
    }
}

/*
 * The very end of a container process's set-up (Namespaces/ProcessFinalizer.cs): the spec's seccomp filter,
 * then execve, with no other system call in between (the filter may forbid any of them, and managed code
 * between the two could make some). `filter` is a struct sock_filter[] of `len` instructions, or NULL.
 * Returns only on failure, -errno: *stage is 1 when seccomp(2) failed (no filter in place), 2 when execve
 * failed (the filter is in place).
 */
int nsexec_seccomp_exec(const void *filter, unsigned int len, unsigned int flags,
                        const char *path, char *const argv[], char *const envp[], int *stage)
{
    if (filter != NULL && len > 0) {
        struct sock_fprog prog = { .len = (unsigned short)len, .filter = (struct sock_filter *)filter };
        *stage = 1;
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) < 0)
            return -errno;
    }
    *stage = 2;
    execve(path, argv, envp);
    return -errno;
}

static void send_msg(uint32_t type, int32_t value, const char *text)
{
    struct nsexec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.value = value;
    if (text)
        strncpy(m.u.text, text, sizeof(m.u.text) - 1);
    /* Best effort: if the host is gone there is nobody to tell. */
    (void)!send(nsexec_sync_fd, &m, sizeof(m), MSG_NOSIGNAL);
}

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    char text[NSEXEC_TEXT_MAX];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(text) && saved)
        snprintf(text + n, sizeof(text) - n, ": %s", strerror(saved));
    send_msg(NSEXEC_ERROR, saved, text);
    _exit(1);
}

static void recv_msg(struct nsexec_msg *m, uint32_t want)
{
    ssize_t n;
    do
        n = recv(nsexec_sync_fd, m, sizeof(*m), 0);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        _exit(1); /* the host went away: nothing to set up any more */
    if (n != (ssize_t)sizeof(*m) || m->type != want) {
        errno = EPROTO;
        fail("nsexec: expected message %u, got %zd bytes of type %u", want, n, n > 0 ? m->type : 0);
    }
}

static const char *nsname(uint32_t flag)
{
    switch (flag) {
    case CLONE_NEWUSER: return "user";
    case CLONE_NEWNS: return "mount";
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWNET: return "network";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWCGROUP: return "cgroup";
    case 0x80: return "time"; /* CLONE_NEWTIME */
    default: return "unknown";
    }
}

/* Opened before any setns: after joining a mount namespace, /proc/PID/... paths would resolve in it. */
static int open_namespace(const struct nsexec_join *j)
{
    int fd = open(j->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail("join %s namespace: open %s", nsname(j->nstype), j->path);
    return fd;
}

static void join_namespace(int fd, const struct nsexec_join *j)
{
    if (setns(fd, (int)j->nstype) < 0)
        fail("join %s namespace: setns %s", nsname(j->nstype), j->path);
    close(fd);
}

static void write_oom_score_adj(int32_t value)
{
    char buf[16];
    int len = snprintf(buf, sizeof(buf), "%d", value);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, buf, (size_t)len) != len)
        fail("write %d to /proc/self/oom_score_adj", value);
    close(fd);
}

__attribute__((constructor)) static void nsexec(void)
{
    const char *env = getenv("_SANDBOX_RUNC_INIT");
    if (!env)
        return;
    nsexec_sync_fd = atoi(env);

    struct nsexec_msg m;
    recv_msg(&m, NSEXEC_BOOTSTRAP);
    struct nsexec_bootstrap b = m.u.bootstrap;
    if (b.version != NSEXEC_VERSION || b.join_count > NSEXEC_MAX_JOIN) {
        errno = EPROTO;
        fail("nsexec: bootstrap version %u with %u joins is not understood", b.version, b.join_count);
    }

    /* The host's root can set any score; inside a user namespace lowering it needs privileges we lack. */
    if (b.set_oom_score_adj)
        write_oom_score_adj(b.oom_score_adj);

    /*
     * Order matters for privileges. Every namespace other than the user namespace is joined first,
     * while we are still root of the host's user namespace and so may enter any of them (dockerd's
     * network namespace, or all of a container's for `exec`). The user namespace comes last: joined,
     * or created (then the host writes its maps). Inside it we would have no capability over
     * namespaces it does not own.
     */
    int fds[NSEXEC_MAX_JOIN];
    int user_join = -1;
    for (uint32_t i = 0; i < b.join_count; i++)
        fds[i] = open_namespace(&b.join[i]);
    for (uint32_t i = 0; i < b.join_count; i++) {
        if (b.join[i].nstype == CLONE_NEWUSER)
            user_join = (int)i;
        else
            join_namespace(fds[i], &b.join[i]);
    }
    if (user_join >= 0)
        join_namespace(fds[user_join], &b.join[user_join]);

    if (b.clone_flags & CLONE_NEWUSER) {
        if (unshare(CLONE_NEWUSER) < 0)
            fail("create user namespace: unshare(CLONE_NEWUSER)");
        /* The maps can only be written from outside; the host does it while we wait. */
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
            fail("prctl(PR_SET_DUMPABLE)");
        send_msg(NSEXEC_MAP_REQUEST, getpid(), NULL);
        recv_msg(&m, NSEXEC_MAP_DONE);
    }
    if ((b.clone_flags & CLONE_NEWUSER) || user_join >= 0) {
        /* Become root of the (new or joined) user namespace before acting in it. */
        if (setresgid(0, 0, 0) < 0)
            fail("setresgid(0) in the container's user namespace");
        if (setresuid(0, 0, 0) < 0)
            fail("setresuid(0) in the container's user namespace");
    }

    uint32_t rest = b.clone_flags & ~(uint32_t)CLONE_NEWUSER;
    if (rest && unshare((int)rest) < 0)
        fail("create namespaces: unshare(0x%x)", rest);

    /* New (or joined) PID and time namespaces apply to children only: the init is our child. */
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        fail("clone the container's init");
    if (pid == 0) {
        nsexec_is_init = 1;
        return; /* into .NET's main, as the container's init */
    }
    send_msg(NSEXEC_INIT_PID, pid, NULL);
    _exit(0);
}
