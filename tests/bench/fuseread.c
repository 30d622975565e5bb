// fuseread: times open + read + close of one small file, as procfs readers do it.
//
//   fuseread PATH [N=20000] [THREADS=1] [once|eof]
//
// Each of THREADS threads runs N iterations of open(O_RDONLY) + read(4 KiB) + close ("eof": read until
// read(2) returns 0, as cat does; that is one more request through FUSE). Prints one line:
//   PATH threads=T n=N median_ns=.. mean_ns=.. p99_ns=.. ops_per_s=..
// where the per-iteration times are pooled over all threads and ops_per_s is T*N over the wall time.
// Exits 1 if any open/read fails or a read returns nothing. Build: cc -O2 -pthread -o fuseread fuseread.c
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static long n;
static int to_eof;
static long long *samples; // THREADS * n

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *run(void *arg)
{
    long long *out = samples + (long)arg * n;
    char buf[4096];
    for (long i = 0; i < n; i++) {
        long long t0 = now_ns();
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { perror(path); exit(1); }
        ssize_t got = read(fd, buf, sizeof buf), total = got;
        while (to_eof && got > 0) { got = read(fd, buf, sizeof buf); total += got > 0 ? got : 0; }
        if (got < 0 || total <= 0) { fprintf(stderr, "%s: read %zd\n", path, got); exit(1); }
        close(fd);
        out[i] = now_ns() - t0;
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s PATH [N] [THREADS] [once|eof]\n", argv[0]); return 2; }
    path = argv[1];
    n = argc > 2 ? atol(argv[2]) : 20000;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    to_eof = argc > 4 && strcmp(argv[4], "eof") == 0;
    if (n < 1 || threads < 1) return 2;
    samples = calloc((size_t)threads * n, sizeof *samples);
    pthread_t *tids = calloc(threads, sizeof *tids);

    long long start = now_ns();
    for (long t = 0; t < threads; t++) pthread_create(&tids[t], NULL, run, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    long long wall = now_ns() - start;

    long total = (long)threads * n;
    long double sum = 0;
    for (long i = 0; i < total; i++) sum += samples[i];
    qsort(samples, total, sizeof *samples, cmp);
    printf("%s threads=%d n=%ld mode=%s median_ns=%lld mean_ns=%.0Lf p99_ns=%lld ops_per_s=%.0f\n",
           path, threads, n, to_eof ? "eof" : "once", samples[total / 2], sum / total,
           samples[total * 99 / 100], total / (wall / 1e9));
    return 0;
}
