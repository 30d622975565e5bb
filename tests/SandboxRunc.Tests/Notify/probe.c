/*
 * Probe for the seccomp-notify integration test (NotifyServerIntegrationTests).
 *
 *   probe BPF_FILE SOCKET_PATH WORKDIR
 *
 * Becomes root of a new user + mount namespace (so the mounts it makes are its own, not locked:
 * without our vetting the kernel would allow every scenario below), sets up WORKDIR as a tmpfs
 * with a read-only bind WORKDIR/prot, measures mount+umount of a tmpfs, installs the BPF program
 * from BPF_FILE with SECCOMP_FILTER_FLAG_NEW_LISTENER, sends the listener fd (SCM_RIGHTS, payload:
 * its pid) to SOCKET_PATH, waits for one byte ("go"), then runs the scenarios and prints
 * "key=value" lines for the test to assert on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *W;
static char prot[512], mine[512], copy[512], bench[512], src[512], tree[512], newroot[512], jail[512];

static void die(const char *what) { fprintf(stderr, "probe: %s: %s\n", what, strerror(errno)); exit(2); }

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) die(path);
    close(fd);
}

/* "name=0" on success, "name=ERRNONAME" otherwise */
static void report(const char *name, int rc)
{
    printf("%s=%s\n", name, rc == 0 ? "0" : strerrorname_np(errno));
    fflush(stdout);
}

static int is_ro(const char *path)
{
    struct statvfs st;
    if (statvfs(path, &st) != 0) return -1;
    return (st.f_flag & ST_RDONLY) != 0;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* mount+umount pairs. A failure does not stop the probe: it is counted and the first one described
 * (bench_errors, bench_first_error=CALL:ERRNO at pair N) for the test to assert on with the cause shown. */
static int bench_errors, bench_busy;
static char bench_first_error[128] = "none";
static void bench_error(const char *call, int i)
{
    /* umount2 EBUSY right after a trapped mount: counted apart, so that the test names it. */
    if (errno == EBUSY && call[0] == 'u') { bench_busy++; return; }
    if (bench_errors++ == 0)
        snprintf(bench_first_error, sizeof bench_first_error, "%s:%s at pair %d", call, strerrorname_np(errno), i);
}
static double bench_pairs(int n)
{
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
        if (mount("tmpfs", bench, "tmpfs", 0, "size=64k") != 0) {
            bench_error("mount", i);
            continue;
        }
        if (umount2(bench, 0) != 0) {
            bench_error("umount2", i);
            umount2(bench, MNT_DETACH);
        }
    }
    return (now_us() - t0) / n;
}

/* a trapped call answered CONTINUE without a look-up: the floor of the round trip */
static double bench_propagation(int n)
{
    double t0 = now_us();
    for (int i = 0; i < n; i++)
        if (mount(NULL, mine, NULL, MS_PRIVATE, NULL) != 0) die("bench propagation");
    return (now_us() - t0) / n;
}

static struct sock_fprog load_program(const char *file)
{
    static unsigned char buf[65536];
    int fd = open(file, O_RDONLY);
    if (fd < 0) die(file);
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0 || n % 8) die("bpf file");
    close(fd);
    return (struct sock_fprog){ .len = n / 8, .filter = (struct sock_filter *)buf };
}

static void send_fd(const char *socket_path, int fd)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    char payload[32];
    int len = snprintf(payload, sizeof payload, "%d", getpid());
    struct iovec iov = { payload, len };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(s, &msg, 0) < 0) die("sendmsg");
    char go;
    if (read(s, &go, 1) != 1) die("wait for go");
    close(s);
}

/* --- TOCTOU: a thread flips the target buffer between mine and prot (same length) --- */
static char target_buf[512];
static atomic_int stop_flipping;
static atomic_long flips;

static void *flipper(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_flipping)) {
        memcpy(target_buf, prot, strlen(prot) + 1);
        memcpy(target_buf, mine, strlen(mine) + 1);
        atomic_fetch_add(&flips, 2);
    }
    return NULL;
}

static void toctou(void)
{
    pthread_t t;
    memcpy(target_buf, mine, strlen(mine) + 1);
    pthread_create(&t, NULL, flipper, NULL);
    int ok = 0, refused = 0, other = 0, other_errno = 0, prot_rw = 0;
    for (int i = 0; i < 3000 || atomic_load(&flips) < 10000; i++) {
        if (mount(NULL, target_buf, NULL, MS_REMOUNT | MS_BIND, NULL) == 0) ok++;
        else if (errno == EPERM) refused++;
        else if (other++ == 0) other_errno = errno; /* a torn name ("/mrot"): ENOENT */
        if (is_ro(prot) != 1) prot_rw++;
    }
    atomic_store(&stop_flipping, 1);
    pthread_join(t, NULL);
    printf("toctou_ok=%d\ntoctou_eperm=%d\ntoctou_other=%d\ntoctou_other_first=%s\ntoctou_flips=%ld\ntoctou_prot_rw=%d\n",
           ok, refused, other, other ? strerrorname_np(other_errno) : "none", atomic_load(&flips), prot_rw);
    fflush(stdout);
}

static int child(void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) { fn(); fflush(stdout); _exit(0); }
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static void in_new_mount_namespace(void)
{
    if (unshare(CLONE_NEWNS) != 0) die("unshare");
    report("unshare_remount_bind_rw_prot", mount(NULL, prot, NULL, MS_REMOUNT | MS_BIND, NULL));
    report("unshare_umount_prot", umount2(prot, 0));
    report("unshare_remount_ro_mine", mount(NULL, mine, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL));
    printf("unshare_mine_ro=%d\n", is_ro(mine));
}

/* `mount --rbind W W/tree`: the copy of prot covers what prot covers, so it is protected too */
static void copies_of_protected(void)
{
    char p[600];
    report("copy_rbind", mount(W, tree, NULL, MS_BIND | MS_REC, NULL));
    snprintf(p, sizeof p, "%s/prot", tree);
    printf("copy_prot_ro=%d\n", is_ro(p));
    report("copy_umount_prot", umount2(p, 0));
    report("copy_umount_prot_detach", umount2(p, MNT_DETACH));
    report("copy_move_prot", mount(p, copy, NULL, MS_MOVE, NULL));
    report("copy_remount_rw_prot", mount(NULL, p, NULL, MS_REMOUNT | MS_BIND, NULL));
    report("copy_umount_tree", umount2(tree, MNT_DETACH));
}

/* A nested user namespace without a mount namespace of its own: CapEff reads full, but it holds no
 * capability over the mount namespace (owned by the probe's user namespace); the kernel would refuse. */
static void in_nested_user_namespace(void)
{
    char map[64];
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER) != 0) die("unshare user");
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "0 %d 1", uid);
    write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "0 %d 1", gid);
    write_file("/proc/self/gid_map", map);
    report("nested_umount_mine", umount2(mine, 0));
    report("nested_bind_over_mine", mount(src, mine, NULL, MS_BIND, NULL));
    report("nested_remount_ro_mine", mount(NULL, mine, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL));
}

/* pivot_root in a new mount namespace onto a tmpfs of our own, then the copy of prot under put_old */
static void pivot_root_then_copy(void)
{
    char old[600], p[1200];
    if (unshare(CLONE_NEWNS) != 0) die("unshare");
    if (mount("tmpfs", newroot, "tmpfs", 0, "size=64k") != 0) die("tmpfs newroot");
    snprintf(old, sizeof old, "%s/old", newroot);
    if (mkdir(old, 0755) != 0) die("mkdir old");
    report("pivot_root_own", syscall(SYS_pivot_root, newroot, old));
    snprintf(p, sizeof p, "/old%s", prot);
    printf("pivot_copy_prot_ro=%d\n", is_ro(p));
    report("pivot_umount_copy_prot", umount2(p, 0));
    report("pivot_umount_old", umount2("/old", MNT_DETACH));
}

static void pivot_root_onto_protected(void)
{
    char old[600];
    if (unshare(CLONE_NEWNS) != 0) die("unshare");
    snprintf(old, sizeof old, "%s/old", prot);
    report("pivot_root_prot", syscall(SYS_pivot_root, prot, old));
}

/* The supervisor must never read a path of the container by name: a FIFO at proc/meminfo in a
 * chroot would hang a worker whose GC reads it while inside. Many trapped calls from there: each
 * allocates tens of KiB in the server (its mount table), so a GC comes every few dozen calls. */
static void from_a_jail_with_a_fifo_meminfo(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/proc", jail);
    if (mkdir(p, 0755) != 0) die("mkdir jail/proc");
    snprintf(p, sizeof p, "%s/proc/meminfo", jail);
    if (mkfifo(p, 0644) != 0) die("mkfifo meminfo");
    if (chroot(jail) != 0 || chdir("/") != 0) die("chroot jail");
    int calls = 0;
    for (int i = 0; i < 10000; i++, calls++)
        if (umount2("/no-such-mount-point-in-this-jail", 0) == 0) break;
    printf("jail_calls=%d\n", calls);
}

static void without_cap_sys_admin(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) die("capget");
    d[0].effective &= ~(1u << CAP_SYS_ADMIN);
    if (syscall(SYS_capset, &h, d) != 0) die("capset");
    report("nocap_remount_mine", mount(NULL, mine, NULL, MS_REMOUNT | MS_BIND, NULL));
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: probe BPF_FILE SOCKET_PATH WORKDIR\n"); return 2; }
    W = argv[3];
    snprintf(prot, sizeof prot, "%s/prot", W);
    snprintf(mine, sizeof mine, "%s/mine", W);
    snprintf(copy, sizeof copy, "%s/copy", W);
    snprintf(bench, sizeof bench, "%s/bench", W);
    snprintf(src, sizeof src, "%s/src", W);
    snprintf(tree, sizeof tree, "%s/tree", W);
    snprintf(newroot, sizeof newroot, "%s/newroot", W);
    snprintf(jail, sizeof jail, "%s/jail", W);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) die("unshare user+mnt");
    write_file("/proc/self/setgroups", "deny");
    write_file("/proc/self/uid_map", "0 0 1");
    write_file("/proc/self/gid_map", "0 0 1");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make-rprivate /");
    if (mount("tmpfs", W, "tmpfs", 0, "size=4m") != 0) die("tmpfs workdir");
    const char *dirs[] = { src, prot, mine, copy, bench, tree, newroot, jail };
    for (int i = 0; i < 8; i++) if (mkdir(dirs[i], 0755) != 0) die(dirs[i]);
    char src_old[600];
    snprintf(src_old, sizeof src_old, "%s/old", src);
    if (mkdir(src_old, 0755) != 0) die(src_old);
    if (mount(src, prot, NULL, MS_BIND, NULL) != 0) die("bind prot");
    if (mount(NULL, prot, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) die("ro prot");

    const int pairs = 500; /* figures only: tests/bench/bench.sh measures the round trip properly */
    printf("bench_unfiltered_us=%.2f\n", bench_pairs(pairs));
    if (mount("tmpfs", mine, "tmpfs", 0, "size=64k") != 0) die("bench tmpfs");
    printf("bench_unfiltered_private_us=%.2f\n", bench_propagation(pairs));
    if (umount2(mine, 0) != 0) die("bench umount");

    struct sock_fprog prog = load_program(argv[1]);
    int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (listener < 0) die("seccomp");
    send_fd(argv[2], listener);
    close(listener);

    /* ro bind made before the filter: the rules must keep it ro */
    report("remount_bind_rw_prot", mount(NULL, prot, NULL, MS_REMOUNT | MS_BIND, NULL));
    report("remount_rw_prot", mount(NULL, prot, NULL, MS_REMOUNT, NULL));
    report("remount_bind_ro_prot", mount(NULL, prot, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL));
    report("remount_bind_rw_prot_magic", mount(NULL, prot, NULL, 0xC0ED0000 | MS_REMOUNT | MS_BIND, NULL));
    printf("prot_ro=%d\n", is_ro(prot));

    /* a tmpfs of our own: free */
    report("tmpfs_mount_mine", mount("tmpfs", mine, "tmpfs", 0, "size=1m"));
    report("tmpfs_remount_ro_mine", mount(NULL, mine, NULL, MS_REMOUNT | MS_RDONLY, NULL));
    printf("mine_ro_after_ro=%d\n", is_ro(mine));
    report("tmpfs_remount_rw_size_mine", mount(NULL, mine, NULL, MS_REMOUNT, "size=2m"));
    printf("mine_ro_after_rw=%d\n", is_ro(mine));
    struct statvfs sv;
    statvfs(mine, &sv);
    printf("mine_size_kb=%lu\n", (unsigned long)(sv.f_blocks * sv.f_frsize / 1024));

    report("umount_prot", umount2(prot, 0));
    report("umount_detach_prot", umount2(prot, MNT_DETACH));
    report("move_prot", mount(prot, copy, NULL, MS_MOVE, NULL));

    report("bind_prot_to_copy", mount(prot, copy, NULL, MS_BIND, NULL));
    printf("copy_ro=%d\n", is_ro(copy));
    report("remount_bind_rw_copy", mount(NULL, copy, NULL, MS_REMOUNT | MS_BIND, NULL));
    report("umount_copy", umount2(copy, 0));
    report("propagation_private_mine", mount(NULL, mine, NULL, MS_PRIVATE, NULL));

    child(in_new_mount_namespace);
    child(without_cap_sys_admin);

    report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0) < 0 ? -1 : 0);
    report("fsopen", syscall(SYS_fsopen, "tmpfs", 0) < 0 ? -1 : 0);
    report("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, prot, 0, NULL, 0) < 0 ? -1 : 0);
    report("second_listener", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog) < 0 ? -1 : 0);

    toctou();
    printf("prot_ro_final=%d\n", is_ro(prot));

    child(copies_of_protected);
    if (mount("tmpfs", mine, "tmpfs", 0, "size=64k") != 0) die("tmpfs mine again");
    child(in_nested_user_namespace);
    report("umount_mine_after_nested", umount2(mine, 0));
    child(pivot_root_then_copy);
    child(pivot_root_onto_protected);
    printf("prot_ro_after_pivot=%d\n", is_ro(prot));
    child(from_a_jail_with_a_fifo_meminfo);

    /* a mount held open stays busy: the supervisor's retries of a busy unmount end in the kernel's EBUSY */
    if (mount("tmpfs", bench, "tmpfs", 0, "size=64k") != 0) die("tmpfs bench held");
    int held = open(bench, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (held < 0) die("open bench");
    report("umount_held_bench", umount2(bench, 0));
    close(held);
    report("umount_released_bench", umount2(bench, 0));

    printf("bench_filtered_us=%.2f\n", bench_pairs(pairs));
    printf("bench_errors=%d\nbench_first_error=%s\nbench_umount_busy=%d\n", bench_errors, bench_first_error, bench_busy);
    printf("bench_trapped_private_us=%.2f\n", bench_propagation(pairs));
    report("umount_mine", umount2(mine, 0));
    return 0;
}
