/* A container workload with a lot of memory for migration tests: touches MiB of anonymous
 * memory with data that does not compress, then sleeps forever.
 *
 * usage: mem_toucher MIB */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 200;
	size_t n = mib << 20;
	uint64_t *p = malloc(n);
	if (!p)
		return 1;
	uint64_t x = 88172645463325252ULL ^ (uint64_t)getpid();
	for (size_t i = 0; i < n / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = x;
	}
	for (;;)
		pause();
}
