/*
 * mntns_ops.c: what a seccomp-notify worker (NotifyServer.cs) does INSIDE a container's mount
 * namespace and root, as raw system calls, with no managed code in between.
 *
 * Why C: a worker enters the caller's mount namespace (setns) and root (chroot) to resolve paths
 * exactly as the caller would and to act on the mounts it checked. While it is there, every path
 * the thread opens by name is the container's. The .NET GC reads /proc/meminfo (and cgroup files)
 * by name on the thread that triggers a collection: a container that puts a FIFO at proc/meminfo
 * under a chroot, then makes a trapped call from there, would hang that worker (and, through it,
 * every `docker exec`). A thread that has entered a container must therefore not allocate managed
 * memory, which C# cannot promise across a decision. So the managed side prepares everything
 * (strings, fds, buffers) outside, calls one function here that enters, does a handful of
 * syscalls, and leaves before returning; the decision happens outside, between srn_lookup and
 * srn_perform, on fds that pin what was resolved.
 *
 *   srn_lookup   enter; open the target (and the source, and the namespace's /proc or /sys)
 *                with O_PATH as the caller would resolve them; statx each (mount id, mount root,
 *                device, mode) and its path relative to the caller's root; if asked, the target's
 *                mount and its parent as statmount(2) shows them, and whether mounts lie below the
 *                target (listmount(2); kernel >= 6.8: an umount2 is then decided without reading
 *                the whole mount table); leave.
 *   srn_perform  enter; do one checked operation on those fds, with CAP_SYS_ADMIN out of the
 *                effective set (lower_sys_admin: the kernel's capability checks then answer as for
 *                the container's root, not as for the host's):
 *                SETFLAGS  fspick + fsconfig (superblock options), then mount_setattr
 *                BIND      open_tree(CLONE [| RECURSIVE]) of the source fd, mount_setattr on the
 *                          detached copy, move_mount onto the target fd
 *                MOVE      move_mount of the source mount onto the target fd
 *                UNMOUNT   umount2 of the mount with the given id, by name in its parent directory
 *                          after checking that the name still shows that very mount (ESTALE if not)
 *                PIVOT     pivot_root(new_root, put_old) on the two fds, from the caller's root
 *                          (through /proc/thread-self/fd magic links of the host's /proc)
 *                leave.
 *
 * Leaving never fails quietly: if setns back to our own mount namespace fails, the thread would
 * keep acting inside a container, so the process aborts (fail closed: the kernel then answers
 * every trapped call with ENOSYS). The thread must have unshared CLONE_FS beforehand (setns into a
 * mount namespace and chroot are then this thread's only).
 *
 * The layout of the structs below is checked against Seccomp/Notify/MountNamespaceOps.cs by a test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x1000
#endif

#define SRN_OPEN_TREE_CLONE 1u
#define SRN_OPEN_TREE_CLOEXEC 0x80000u
#define SRN_AT_RECURSIVE 0x8000u
#define SRN_MOVE_MOUNT_F_EMPTY_PATH 0x4u
#define SRN_MOVE_MOUNT_T_EMPTY_PATH 0x40u
#define SRN_FSPICK_CLOEXEC 1u
#define SRN_FSPICK_EMPTY_PATH 8u
#define SRN_FSCONFIG_SET_FLAG 0u
#define SRN_FSCONFIG_SET_STRING 1u
#define SRN_FSCONFIG_CMD_RECONFIGURE 7u
#define SRN_FSCONFIG_SET_FD 5u
#define SRN_FSCONFIG_CMD_CREATE 6u
#define SRN_FSOPEN_CLOEXEC 1u
#define SRN_FSMOUNT_CLOEXEC 1u
#define SRN_MAX_OVERLAY_LAYERS 502
#define SRN_MAX_OVERLAY_OPTIONS 64
#define SRN_NS_GET_NSTYPE 0xb703
#define SRN_STATX_MNT_ID 0x1000u
#define SRN_STATX_ATTR_MOUNT_ROOT 0x2000u
#define SRN_CAP_SYS_ADMIN 21
#define SRN_STATX_MNT_ID_UNIQUE 0x4000u
#define SRN_SYS_statmount 457
#define SRN_SYS_listmount 458
#define SRN_STATMOUNT_SB_BASIC 0x1u
#define SRN_STATMOUNT_MNT_BASIC 0x2u
#define SRN_STATMOUNT_MNT_ROOT 0x8u
#define SRN_STATMOUNT_MNT_POINT 0x10u
#define SRN_STATMOUNT_FS_TYPE 0x20u
#define SRN_STATMOUNT_PARENT_OFFSET 48 /* struct statmount: __u64 mnt_parent_id */

#define SRN_PATH_MAX 4096
#define SRN_MAX_SB_OPTIONS 32

/* What a worker enters: the caller's namespace, root and cwd, and its own way back. */
struct srn_enter {
    int32_t own_mntns;  /* the supervisor's mount namespace (way back) */
    int32_t mntns;      /* the caller's mount namespace (/proc/PID/ns/mnt) */
    int32_t root;       /* the caller's root (/proc/PID/root, O_PATH) */
    int32_t cwd;        /* the caller's cwd (/proc/PID/cwd, O_PATH) */
    int32_t host_proc;  /* the host's /proc (O_PATH | O_DIRECTORY): magic links to our own fds */
    int32_t caller_fds; /* the caller's /proc/PID/fd (O_PATH | O_DIRECTORY), or -1 */
};

/* One resolved path. */
struct srn_path {
    int32_t fd;          /* O_PATH fd (ours to close), or -1 */
    int32_t err;         /* errno when fd is -1 */
    uint64_t mnt_id;     /* statx STATX_MNT_ID */
    uint32_t mount_root; /* 1 when the path is the root of its mount */
    uint32_t dev_major;
    uint32_t dev_minor;
    uint32_t mode;       /* st_mode */
    char path[SRN_PATH_MAX]; /* the kernel's path of the fd relative to the caller's root ("" if unknown) */
};

enum srn_kind { SRN_SETFLAGS = 1, SRN_BIND = 2, SRN_MOVE = 3, SRN_UNMOUNT = 4, SRN_PIVOT = 5 };

struct srn_op {
    int32_t kind;
    int32_t target_fd;        /* SETFLAGS, BIND, MOVE: the target; PIVOT: new_root */
    int32_t source_fd;        /* BIND, MOVE: the source; PIVOT: put_old */
    int32_t recursive;        /* BIND: clone the whole tree */
    uint64_t attr_set;        /* SETFLAGS; BIND: set on the copy before it is attached */
    uint64_t attr_clr;        /* SETFLAGS */
    int32_t attr_recursive;   /* BIND: set the attributes on every mount of the copy */
    int32_t umount_flags;     /* UNMOUNT */
    uint64_t expect_mnt_id;   /* UNMOUNT: the mount to take off */
    const char *mount_point;  /* UNMOUNT: its mount point, relative to the caller's root */
    int32_t sb_count;         /* SETFLAGS: superblock options "key" or "key=value" */
    int32_t reserved;
    const char *const *sb_options;
};

struct srn_mount_attr { uint64_t attr_set, attr_clr, propagation, userns_fd; };

/* The target's mount facts from statmount(2) (srn_lookup, when asked): raw struct statmount records, one
 * after another at 8-byte alignment in buf, the target's first, then its parent's (when the parent is
 * another mount and statmount shows it). */
struct srn_mount_facts {
    char *buf;         /* in: where the records go */
    int64_t size;      /* in: its size */
    int32_t count;     /* out: records written */
    int32_t children;  /* out: 1 when a mount lies below the target (listmount) */
    int32_t err;       /* out: 0; ENOSYS (no statmount or unique mount id: read the mount table); ENOSPC; errno */
    int32_t reserved;
};

struct srn_mnt_id_req { uint32_t size, spare; uint64_t mnt_id, param; };

/* A new overlayfs from layers we resolved and judged (srn_overlay). */
struct srn_overlay {
    int32_t userns_fd;        /* the caller's user namespace (/proc/PID/ns/user): owner of the new superblock */
    int32_t target_fd;        /* where it goes (O_PATH, resolved in the caller's root) */
    int32_t count;            /* layers */
    int32_t opt_count;        /* other options: "flag" or "key=value" */
    const int32_t *layer_fds; /* O_PATH fds of the layers, in order */
    const char *const *layer_keys; /* "lowerdir+", "datadir+", "upperdir", "workdir" */
    const char *const *options;
    uint64_t attr;            /* MOUNT_ATTR_RDONLY/NOSUID/NODEV/NOEXEC of the new mount */
    int32_t read_only;        /* the superblock too ("ro") */
    int32_t timeout_ms;       /* the child is killed after this */
};

struct srn_statx_ts { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct srn_statx {
    uint32_t stx_mask, stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink, stx_uid, stx_gid;
    uint16_t stx_mode, pad1;
    uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
    struct srn_statx_ts stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
    uint64_t stx_mnt_id;
    uint64_t spare[13];
};

static int still_ours(int fd) { return ioctl(fd, SRN_NS_GET_NSTYPE) == CLONE_NEWNS; }

static void leave(const struct srn_enter *e)
{
    if (setns(e->own_mntns, CLONE_NEWNS) != 0) {
        static const char msg[] = "sandbox-runc supervisor: setns back to its own mount namespace failed; aborting (fail closed)\n";
        ssize_t ignored = write(2, msg, sizeof msg - 1);
        (void)ignored;
        abort();
    }
}

/* setns into the caller's mount namespace; the namespace's /proc or /sys (from its root, before the
 * chroot) if asked; then the caller's root and cwd. 0, or an errno (then we are back out). */
static int enter(const struct srn_enter *e, const char *kernel_fs, int *kernel_fs_fd, int *kernel_fs_err)
{
    if (!still_ours(e->own_mntns)) return EBADF; /* never go in without a way back */
    if (setns(e->mntns, CLONE_NEWNS) != 0) return errno;
    if (kernel_fs != NULL) {
        *kernel_fs_fd = openat(AT_FDCWD, kernel_fs, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        *kernel_fs_err = *kernel_fs_fd < 0 ? errno : 0;
    }
    if (fchdir(e->root) != 0 || chroot(".") != 0 || fchdir(e->cwd) != 0) {
        int err = errno;
        leave(e);
        return err;
    }
    return 0;
}

static void describe(const struct srn_enter *e, int fd, int err, struct srn_path *out)
{
    memset(out, 0, offsetof(struct srn_path, path) + 1);
    out->fd = fd;
    out->err = err;
    if (fd < 0) return;
    struct srn_statx stx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, SRN_STATX_MNT_ID | STATX_BASIC_STATS, &stx) != 0) {
        out->err = errno;
        close(fd);
        out->fd = -1;
        return;
    }
    if (!(stx.stx_mask & SRN_STATX_MNT_ID)) {
        out->err = ENOSYS;
        close(fd);
        out->fd = -1;
        return;
    }
    out->mnt_id = stx.stx_mnt_id;
    out->mount_root = (stx.stx_attributes_mask & SRN_STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & SRN_STATX_ATTR_MOUNT_ROOT);
    out->dev_major = stx.stx_dev_major;
    out->dev_minor = stx.stx_dev_minor;
    out->mode = stx.stx_mode;
    /* d_path relative to our root, which is the caller's now; through the host's /proc, never the container's. */
    char link[64];
    snprintf(link, sizeof link, "thread-self/fd/%d", fd);
    ssize_t n = readlinkat(e->host_proc, link, out->path, SRN_PATH_MAX - 1);
    out->path[n > 0 ? n : 0] = '\0';
}

/* N for "/proc/self/fd/N" or "/proc/thread-self/fd/N" (N decimal, no sign, no trailing text), else -1. */
static int self_fd_number(const char *path)
{
    static const char *const prefixes[] = { "/proc/self/fd/", "/proc/thread-self/fd/" };
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t len = strlen(prefixes[i]);
        if (strncmp(path, prefixes[i], len) != 0) continue;
        const char *p = path + len;
        if (*p < '0' || *p > '9') return -1;
        long n = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            n = n * 10 + (*p - '0');
            if (n > INT_MAX) return -1;
        }
        return *p == '\0' ? (int)n : -1;
    }
    return -1;
}

/*
 * A path the caller names through its own fd ("/proc/self/fd/N": runc mounts every source and target that way) is
 * resolved by the caller's procfs to its own fd; in that procfs (of the caller's pid namespace) our thread has no
 * "self". So the caller's fd N itself is opened, through its /proc/PID/fd pinned before the notification was
 * checked: exactly the file the caller holds, which is then judged like any other path.
 */
static void resolve(const struct srn_enter *e, const char *path, int flags, struct srn_path *out)
{
    int n = (e->caller_fds >= 0 && !(flags & O_NOFOLLOW)) ? self_fd_number(path) : -1;
    int fd;
    if (n >= 0) {
        char name[16];
        snprintf(name, sizeof name, "%d", n);
        fd = openat(e->caller_fds, name, O_PATH | O_CLOEXEC);
    } else {
        fd = openat(AT_FDCWD, path, O_PATH | O_CLOEXEC | flags);
    }
    describe(e, fd, fd < 0 ? errno : 0, out);
}

/* One statmount record of mount `id` appended at *used; 0 or an errno. */
static int statmount_into(uint64_t id, struct srn_mount_facts *f, int64_t *used)
{
    struct srn_mnt_id_req req = { sizeof req, 0, id,
        SRN_STATMOUNT_SB_BASIC | SRN_STATMOUNT_MNT_BASIC | SRN_STATMOUNT_MNT_ROOT | SRN_STATMOUNT_MNT_POINT | SRN_STATMOUNT_FS_TYPE };
    int64_t room = f->size - *used;
    if (room < 1024) return ENOSPC;
    if (syscall(SRN_SYS_statmount, &req, f->buf + *used, (size_t)room, 0) != 0) return errno == EOVERFLOW ? ENOSPC : errno;
    uint32_t size;
    memcpy(&size, f->buf + *used, sizeof size);
    if (size < 512 || size > room) return EIO;
    *used += ((int64_t)size + 7) & ~(int64_t)7;
    f->count++;
    return 0;
}

/* Inside the caller's namespace and root (statmount shows mount points relative to our root, now the caller's). */
static void mount_facts(int target_fd, struct srn_mount_facts *f)
{
    f->count = 0;
    f->children = 0;
    f->err = 0;
    if (target_fd < 0) { f->err = EBADF; return; }
    struct srn_statx stx;
    if (syscall(SYS_statx, target_fd, "", AT_EMPTY_PATH, SRN_STATX_MNT_ID_UNIQUE, &stx) != 0) { f->err = errno; return; }
    if (!(stx.stx_mask & SRN_STATX_MNT_ID_UNIQUE)) { f->err = ENOSYS; return; }
    int64_t used = 0;
    int err = statmount_into(stx.stx_mnt_id, f, &used);
    if (err != 0) { f->err = err == EINVAL ? ENOSYS : err; return; }
    uint64_t parent;
    memcpy(&parent, f->buf + SRN_STATMOUNT_PARENT_OFFSET, sizeof parent);
    uint64_t child = 0;
    struct srn_mnt_id_req req = { sizeof req, 0, stx.stx_mnt_id, 0 };
    long n = syscall(SRN_SYS_listmount, &req, &child, 1, 0);
    if (n < 0) { f->err = errno == EINVAL ? ENOSYS : errno; return; }
    f->children = n > 0;
    /* A parent outside the caller's view (the root of a chroot) is left out, as the mount table leaves it out. */
    if (parent != stx.stx_mnt_id && statmount_into(parent, f, &used) == ENOSPC) f->err = ENOSPC;
}

int srn_lookup(const struct srn_enter *e, const char *target, int32_t target_flags, const char *source,
               const char *kernel_fs, struct srn_path *out_target, struct srn_path *out_source,
               struct srn_path *out_kernel_fs, struct srn_mount_facts *facts)
{
    int kfd = -1, kerr = 0;
    int err = enter(e, kernel_fs, &kfd, &kerr);
    if (err != 0) {
        if (kfd >= 0) close(kfd);
        return err;
    }
    resolve(e, target, target_flags, out_target);
    if (facts != NULL) mount_facts(out_target->fd, facts);
    if (source != NULL) resolve(e, source, 0, out_source);
    if (kernel_fs != NULL) describe(e, kfd, kerr, out_kernel_fs);
    leave(e);
    return 0;
}

/* CAP_SYS_ADMIN out of our effective set (into *saved the set as it was), or back in from *saved; 0 or an errno.
 * Without it in the effective set, host root keeps CAP_SYS_ADMIN only in the user namespaces its euid (0) owns,
 * the containers' (the kernel's owner rule in cap_capable), never in the host's own: every capability check the
 * kernel makes in a performed operation then answers as for the container's root, not as for the host's
 * (ns_capable(sb->s_user_ns) when umount2 of the caller's root remounts its superblock read-only, a superblock
 * reconfiguration through fspick, capable() for MNT_FORCE). may_mount (CAP_SYS_ADMIN over the owner of the
 * caller's mount namespace, a container's) still holds. setns needs it back before we leave. */
static int lower_sys_admin(struct __user_cap_data_struct saved[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct lowered[2];
    if (syscall(SYS_capget, &h, saved) != 0) return errno;
    memcpy(lowered, saved, sizeof lowered);
    lowered[0].effective &= ~(1u << SRN_CAP_SYS_ADMIN);
    return syscall(SYS_capset, &h, lowered) == 0 ? 0 : errno;
}

static int restore_caps(const struct __user_cap_data_struct saved[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return syscall(SYS_capset, &h, saved) == 0 ? 0 : errno;
}

/* Superblock options through fspick + fsconfig (CAP_SYS_ADMIN is out of the effective set in srn_perform, so
 * the kernel only lets us touch superblocks that the container's user namespace owns, never the host's: an
 * ext4 under a bind). */
static int reconfigure(int target_fd, int count, const char *const *options)
{
    int result = 0;
    int fs = (int)syscall(SYS_fspick, target_fd, "", SRN_FSPICK_EMPTY_PATH | SRN_FSPICK_CLOEXEC);
    if (fs < 0) result = errno;
    for (int i = 0; result == 0 && i < count; i++) {
        char key[256];
        const char *eq = strchr(options[i], '=');
        size_t klen = eq ? (size_t)(eq - options[i]) : strlen(options[i]);
        if (klen == 0 || klen >= sizeof key) { result = EINVAL; break; }
        memcpy(key, options[i], klen);
        key[klen] = '\0';
        long r = eq ? syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_STRING, key, eq + 1, 0)
                    : syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_FLAG, key, NULL, 0);
        if (r != 0) result = errno;
    }
    if (result == 0 && syscall(SYS_fsconfig, fs, SRN_FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0) != 0) result = errno;
    if (fs >= 0) close(fs);
    return result;
}

static int set_flags(const struct srn_op *op)
{
    if (op->sb_count > 0) {
        if (op->sb_count > SRN_MAX_SB_OPTIONS) return EINVAL;
        int r = reconfigure(op->target_fd, op->sb_count, op->sb_options);
        if (r != 0) return r;
    }
    struct srn_mount_attr attr = { op->attr_set, op->attr_clr, 0, 0 };
    return syscall(SYS_mount_setattr, op->target_fd, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0 ? 0 : errno;
}

static int bind(const struct srn_op *op)
{
    unsigned flags = SRN_OPEN_TREE_CLONE | SRN_OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | (op->recursive ? SRN_AT_RECURSIVE : 0);
    int tree = (int)syscall(SYS_open_tree, op->source_fd, "", flags);
    if (tree < 0) return errno;
    int result = 0;
    if (op->attr_set != 0) {
        /* Before it is attached: no moment where the copy is visible without these flags. */
        struct srn_mount_attr attr = { op->attr_set, 0, 0, 0 };
        if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (op->attr_recursive ? SRN_AT_RECURSIVE : 0), &attr, sizeof attr) != 0)
            result = errno;
    }
    if (result == 0 && syscall(SYS_move_mount, tree, "", op->target_fd, "", SRN_MOVE_MOUNT_F_EMPTY_PATH | SRN_MOVE_MOUNT_T_EMPTY_PATH) != 0)
        result = errno;
    close(tree);
    return result;
}

static int move(const struct srn_op *op)
{
    return syscall(SYS_move_mount, op->source_fd, "", op->target_fd, "", SRN_MOVE_MOUNT_F_EMPTY_PATH | SRN_MOVE_MOUNT_T_EMPTY_PATH) == 0 ? 0 : errno;
}

static int mount_id_at(int dirfd, const char *name, uint64_t *id)
{
    struct srn_statx stx;
    if (syscall(SYS_statx, dirfd, name, AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH), SRN_STATX_MNT_ID, &stx) != 0) return errno;
    if (!(stx.stx_mask & SRN_STATX_MNT_ID)) return ENOSYS;
    *id = stx.stx_mnt_id;
    return 0;
}

/* One line on stderr, for the record (no allocation: a thread inside a container must not allocate). */
__attribute__((format(printf, 1, 2)))
static void say(const char *format, ...)
{
    static const char prefix[] = "sandbox-runc supervisor: ";
    char line[SRN_PATH_MAX + 160];
    memcpy(line, prefix, sizeof prefix - 1);
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line + sizeof prefix - 1, sizeof line - sizeof prefix, format, args);
    va_end(args);
    if (n < 0) return;
    n += (int)sizeof prefix - 1;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(2, line, (size_t)n);
    (void)ignored;
}

#define UNMOUNT_BUSY_RETRIES 5

/* There is no umount by fd (and an fd of ours on the mount would make it busy): unmount by name in
 * the parent directory, after checking that this name still shows the mount we decided on (a rename
 * race makes the ids differ: EBUSY). A mount stacked on the caller's root ("/") is unmounted by "/",
 * which the kernel resolves to the topmost mount there (LOOKUP_MOUNTPOINT), as for the caller. */
static int unmount(const struct srn_op *op)
{
    const char *mp = op->mount_point;
    if (mp == NULL || mp[0] != '/') return EINVAL;
    if (mp[1] == '\0') return umount2("/", op->umount_flags | UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
    size_t len = strlen(mp);
    if (len >= SRN_PATH_MAX) return ENAMETOOLONG;
    char dir[SRN_PATH_MAX];
    memcpy(dir, mp, len + 1);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
    char *slash = strrchr(dir, '/');
    const char *name = slash + 1;
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return EINVAL;
    char name_copy[NAME_MAX + 1];
    if (strlen(name) > NAME_MAX) return ENAMETOOLONG;
    strcpy(name_copy, name); /* before the directory is cut off: name points into it */
    if (slash == dir) dir[1] = '\0'; else *slash = '\0';
    int parent = openat(AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0) return errno;
    if (fchdir(parent) != 0) {
        int err = errno;
        close(parent);
        return err;
    }
    /* The kernel calls a mount busy while anyone holds a reference to it, and a path walk passing through it
     * (anyone's: a process of the container, or the kernel's own look-ups) holds one for a moment. The caller's
     * umount2 would have met the same moment, but ours comes a little later than the caller's, so a busy answer is
     * retried a few times, a millisecond apart, each time after checking again which mount the name shows. A mount
     * that stays busy (a process's cwd inside it) is answered EBUSY after about 5 ms. Each retry is said on stderr. */
    int result = 0;
    for (int attempt = 0; ; attempt++) {
        uint64_t id = 0;
        result = mount_id_at(parent, name_copy, &id);
        if (result == 0 && id != op->expect_mnt_id) {
            /* Not the mount decided on: ESTALE tells the caller of srn_perform to look again (it answers EBUSY
             * if the name keeps showing another mount). Said on stderr, with both ids, for the record. */
            say("umount2 %s: the name shows mount %llu, not %llu as decided", mp, (unsigned long long)id, (unsigned long long)op->expect_mnt_id);
            result = ESTALE;
        }
        if (result == 0 && umount2(name_copy, op->umount_flags | UMOUNT_NOFOLLOW) != 0) result = errno;
        if (result != EBUSY || (op->umount_flags & MNT_DETACH) || attempt == UNMOUNT_BUSY_RETRIES) break;
        say("umount2 %s: mount %llu busy, attempt %d; trying again", mp, (unsigned long long)op->expect_mnt_id, attempt + 1);
        struct timespec pause = { 0, 1000000 };
        nanosleep(&pause, NULL);
    }
    close(parent);
    return result;
}

/* pivot_root of the caller (its root is ours now) onto the new root we checked, through magic links
 * of our own fds in the host's /proc: the kernel resolves them to exactly those files. */
static int pivot(const struct srn_enter *e, const struct srn_op *op)
{
    char new_root[64], put_old[64];
    snprintf(new_root, sizeof new_root, "thread-self/fd/%d", op->target_fd);
    snprintf(put_old, sizeof put_old, "thread-self/fd/%d", op->source_fd);
    if (fchdir(e->host_proc) != 0) return errno;
    return syscall(SYS_pivot_root, new_root, put_old) == 0 ? 0 : errno;
}

int srn_perform(const struct srn_enter *e, const struct srn_op *op)
{
    int err = enter(e, NULL, NULL, NULL);
    if (err != 0) return err;
    /* Everything below as the container's root would be, not as the host's (lower_sys_admin). */
    struct __user_cap_data_struct saved[2];
    int result = lower_sys_admin(saved);
    if (result == 0) {
        switch (op->kind) {
        case SRN_SETFLAGS: result = set_flags(op); break;
        case SRN_BIND: result = bind(op); break;
        case SRN_MOVE: result = move(op); break;
        case SRN_UNMOUNT: result = unmount(op); break;
        case SRN_PIVOT: result = pivot(e, op); break;
        default: result = EINVAL; break;
        }
        /* Back before leaving: setns needs it (and leave aborts if it cannot get out). */
        int restored = restore_caps(saved);
        if (result == 0) result = restored;
    }
    leave(e);
    return result;
}

/* The overlay child: no managed code, no malloc (it was cloned from a multi-threaded process), raw system
 * calls only. It drops host root's supplementary groups, becomes root of the caller's user namespace (so the
 * superblock belongs to that namespace and overlayfs acts on the layers with those credentials, as if the
 * caller's root had mounted it), enters the caller's mount namespace, makes the overlay from the layer fds
 * (reopened read-only through the host's /proc: the new mount API takes layers by fd, no name is resolved
 * again) and attaches it on the target fd. Returns 0 or an errno. */
static void put_decimal(char *out, int v)
{
    char tmp[16];
    int n = 0;
    if (v < 0) v = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v > 0 && n < 15);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static int overlay_child(const struct srn_enter *e, const struct srn_overlay *o)
{
    if (syscall(SYS_setgroups, 0, NULL) != 0) return errno;
    if (setns(o->userns_fd, CLONE_NEWUSER) != 0) return errno;
    if (syscall(SYS_setresgid, 0, 0, 0) != 0) return errno;
    if (syscall(SYS_setresuid, 0, 0, 0) != 0) return errno;
    if (setns(e->mntns, CLONE_NEWNS) != 0) return errno;
    if (fchdir(e->root) != 0 || chroot(".") != 0) return errno;
    int fs = (int)syscall(SYS_fsopen, "overlay", SRN_FSOPEN_CLOEXEC);
    if (fs < 0) return errno;
    /* Kernels before 6.13 take no layer by fd, and say so for the first one in two ways: before 6.5 overlayfs
     * has no fs_context of its own and fsconfig refuses any fd or path value on such a "legacy" context with
     * EOPNOTSUPP (Debian 12's 6.1, Ubuntu 22.04's 5.15: seen in the v2 VM, strace of the child:
     * fsconfig(FSCONFIG_SET_FD, "lowerdir+") = -1 EOPNOTSUPP); from 6.5 its parser answers EINVAL. Either way
     * ENOSYS tells the supervisor to let the kernel mount it from the caller's own strings (the layers were
     * judged by the same names; a race between that check and the kernel's lookup is the residual the README
     * names). Any later failure is the kernel's answer for this overlay and is returned as it is. */
    for (int i = 0; i < o->count; i++) {
        char link[32] = "self/fd/";
        put_decimal(link + 8, o->layer_fds[i]);
        int dir = openat(e->host_proc, link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0) return errno;
        long r = syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_FD, o->layer_keys[i], NULL, dir);
        int err = errno;
        close(dir);
        if (r == 0) continue;
        return i == 0 && (err == EINVAL || err == EOPNOTSUPP) ? ENOSYS : err;
    }
    for (int i = 0; i < o->opt_count; i++) {
        char key[256];
        const char *opt = o->options[i];
        const char *eq = strchr(opt, '=');
        size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
        if (klen == 0 || klen >= sizeof key) return EINVAL;
        memcpy(key, opt, klen);
        key[klen] = '\0';
        long r = eq ? syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_STRING, key, eq + 1, 0)
                    : syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_FLAG, key, NULL, 0);
        if (r != 0) return errno;
    }
    if (o->read_only && syscall(SYS_fsconfig, fs, SRN_FSCONFIG_SET_FLAG, "ro", NULL, 0) != 0) return errno;
    if (syscall(SYS_fsconfig, fs, SRN_FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) return errno;
    int mnt = (int)syscall(SYS_fsmount, fs, SRN_FSMOUNT_CLOEXEC, (unsigned)o->attr);
    if (mnt < 0) return errno;
    if (syscall(SYS_move_mount, mnt, "", o->target_fd, "", SRN_MOVE_MOUNT_F_EMPTY_PATH | SRN_MOVE_MOUNT_T_EMPTY_PATH) != 0) return errno;
    return 0;
}

/* Runs overlay_child in a process of its own (setns into a user namespace needs a single-threaded caller),
 * cloned from this thread while it is in our own namespaces; its answer comes through a pipe, so that no
 * other reaper of children can take it. A child that does not answer in time (a layer on a FUSE filesystem
 * of the container's that never replies) is killed: ETIMEDOUT. */
int srn_overlay(const struct srn_enter *e, const struct srn_overlay *o)
{
    if (o->count <= 0 || o->count > SRN_MAX_OVERLAY_LAYERS || o->opt_count < 0 || o->opt_count > SRN_MAX_OVERLAY_OPTIONS)
        return EINVAL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return errno;
    int pidfd = -1;
    long pid = syscall(SYS_clone, SIGCHLD | CLONE_PIDFD, NULL, &pidfd, NULL, NULL);
    if (pid < 0) {
        int err = errno;
        close(p[0]);
        close(p[1]);
        return err;
    }
    if (pid == 0) {
        close(p[0]);
        int32_t result = overlay_child(e, o);
        ssize_t ignored = write(p[1], &result, sizeof result);
        (void)ignored;
        _exit(0);
    }
    close(p[1]);
    int32_t result = ETIMEDOUT;
    struct pollfd pf = { p[0], POLLIN, 0 };
    int r;
    do r = poll(&pf, 1, o->timeout_ms); while (r < 0 && errno == EINTR);
    if (r > 0 && read(p[0], &result, sizeof result) != (ssize_t)sizeof result) result = EIO;
    if (r <= 0) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    siginfo_t info;
    while (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED) != 0 && errno == EINTR) { }
    close(pidfd);
    close(p[0]);
    return result;
}

/* For the layout test: sizes and offsets of the structs above. */
int64_t srn_layout(int which)
{
    switch (which) {
    case 0: return sizeof(struct srn_enter);
    case 1: return sizeof(struct srn_path);
    case 2: return offsetof(struct srn_path, path);
    case 3: return sizeof(struct srn_op);
    case 4: return offsetof(struct srn_op, expect_mnt_id);
    case 5: return offsetof(struct srn_op, mount_point);
    case 6: return offsetof(struct srn_op, sb_options);
    case 7: return sizeof(struct srn_overlay);
    case 8: return offsetof(struct srn_overlay, attr);
    case 9: return sizeof(struct srn_mount_facts);
    default: return -1;
    }
}
