/* TOCTOU probe for the mount vetting, run inside a container (static binary, bind-mounted in).
 * A second thread keeps rewriting the target path buffer between a mount the container made itself
 * (remounting it rw is allowed) and an initial read-only mount (remounting it rw is not), while the main
 * thread asks for a read-write bind remount through that buffer, N times. After each attempt the
 * protected mount must still be read-only. Prints "attempts=N allowed=A refused=R escaped=E". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

static char target[64];
static const char *mine, *protected_path;
static atomic_int stop;

static void *flipper(void *arg)
{
    (void)arg;
    size_t a = strlen(mine) + 1, b = strlen(protected_path) + 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        memcpy(target, protected_path, b);
        memcpy(target, mine, a);
    }
    return NULL;
}

static int readonly(const char *p)
{
    struct statvfs s;
    return statvfs(p, &s) == 0 && (s.f_flag & ST_RDONLY);
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: toctou MINE PROTECTED N\n"); return 2; }
    mine = argv[1];
    protected_path = argv[2];
    int n = atoi(argv[3]), allowed = 0, refused = 0, escaped = 0;
    if (!readonly(protected_path)) { fprintf(stderr, "%s is not read-only to begin with\n", protected_path); return 2; }
    strcpy(target, mine);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    for (int i = 0; i < n; i++) {
        if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND, NULL) == 0) allowed++; else refused++;
        if (!readonly(protected_path)) { escaped++; break; }
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("attempts=%d allowed=%d refused=%d escaped=%d\n", n, allowed, refused, escaped);
    return escaped ? 1 : 0;
}
