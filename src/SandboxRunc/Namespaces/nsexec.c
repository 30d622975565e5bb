#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void nsexec(void)
{
    if (getenv("_NSTEST")) { fprintf(stderr, "ctor ran pid %d\n", getpid()); }
}
int nsexec_role(void) { return 42; }
