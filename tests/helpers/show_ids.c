/* Prints "UID EUID" of the process running it: a setuid copy shows whose uid it runs with. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("%u %u\n", (unsigned)getuid(), (unsigned)geteuid());
	return 0;
}
