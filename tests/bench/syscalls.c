/* Benchmark probes run inside a container (static; the test image has no libc).
 *   syscalls getpid N        N raw getpid calls: prints "ns_per_call=X" (untrapped: the data path)
 *   syscalls mount N DIR     N pairs of mount(tmpfs on DIR) + umount2(DIR): prints "us_per_pair=X" */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: syscalls getpid N | mount N DIR\n"); return 2; }
    long n = atol(argv[2]);
    if (strcmp(argv[1], "getpid") == 0) {
        double t0 = now();
        for (long i = 0; i < n; i++) syscall(SYS_getpid);
        printf("ns_per_call=%.1f\n", (now() - t0) / n);
        return 0;
    }
    if (strcmp(argv[1], "mount") == 0 && argc == 4) {
        const char *dir = argv[3];
        double t0 = now();
        for (long i = 0; i < n; i++) {
            if (mount("bench", dir, "tmpfs", 0, "size=64k") != 0) { perror("mount"); return 1; }
            if (umount2(dir, 0) != 0) { perror("umount2"); return 1; }
        }
        printf("us_per_pair=%.1f\n", (now() - t0) / n / 1000);
        return 0;
    }
    fprintf(stderr, "usage: syscalls getpid N | mount N DIR\n");
    return 2;
}
