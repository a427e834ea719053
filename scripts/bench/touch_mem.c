/* A process that touches N MiB of anonymous memory and then sleeps: the payload for the
 * checkpoint and migration benchmarks. Built static at bench time so it runs in a busybox root. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 256;
    size_t n = mib << 20;
    unsigned char *p = malloc(n);
    if (!p) return 1;
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i * 2654435761u >> 13); /* not all-zero pages */
    for (;;) pause();
}
