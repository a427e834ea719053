/* A container workload for checkpoint/restore tests: state that must survive a dump.
 *
 * usage: ckpt_worker DIR PORT
 * - a socketpair to a forked child: the parent sends a counter every 20 ms, the child answers
 *   counter+1 and checks that counters arrive without a gap;
 * - DIR/append.log: one line per tick, appended through one O_APPEND descriptor kept open;
 * - DIR/counter: the current counter (written by rename);
 * - DIR/lock: an flock held all along;
 * - a TCP listener on PORT (all addresses) echoing whatever each client sends.
 * Any inconsistency writes DIR/error and exits 1. Prints nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *dir;

static void fail(const char *what) {
	char p[4096], msg[512];
	snprintf(p, sizeof p, "%s/error", dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int n = snprintf(msg, sizeof msg, "%s: %s\n", what, strerror(errno));
	if (fd >= 0) {
		if (write(fd, msg, n) < 0) {}
		close(fd);
	}
	exit(1);
}

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void child(int sk) {
	long expect = 1;
	for (;;) {
		long v;
		ssize_t n = read(sk, &v, sizeof v);
		if (n == 0)
			exit(0);
		if (n != sizeof v)
			fail("child read");
		if (v != expect) {
			errno = 0;
			fail("child: counter gap");
		}
		expect = v + 1;
		v += 1;
		if (write(sk, &v, sizeof v) != sizeof v)
			fail("child write");
	}
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	dir = argv[1];
	int port = atoi(argv[2]);
	char p[4096], tmp[4096];
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		fail("socketpair");
	pid_t c = fork();
	if (c < 0)
		fail("fork");
	if (c == 0) {
		close(sp[0]);
		child(sp[1]);
	}
	close(sp[1]);
	snprintf(p, sizeof p, "%s/lock", dir);
	int lk = open(p, O_RDWR | O_CREAT, 0644);
	if (lk < 0 || flock(lk, LOCK_EX) < 0)
		fail("flock");
	snprintf(p, sizeof p, "%s/append.log", dir);
	int log = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (log < 0)
		fail("open append.log");
	int ls = socket(AF_INET6, SOCK_STREAM, 0);
	int one = 1, zero = 0;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
	if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 16) < 0)
		fail("listen");
	struct pollfd fds[17];
	int nfds = 1;
	fds[0].fd = ls;
	fds[0].events = POLLIN;
	long counter = 0;
	long long next = now_ms();
	for (;;) {
		int wait = (int)(next - now_ms());
		if (wait < 0)
			wait = 0;
		int r = poll(fds, nfds, wait);
		if (r < 0 && errno != EINTR)
			fail("poll");
		for (int i = 1; r > 0 && i < nfds; i++) {
			if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char buf[4096];
			ssize_t n = read(fds[i].fd, buf, sizeof buf);
			if (n <= 0 || write(fds[i].fd, buf, n) != n) {
				close(fds[i].fd);
				fds[i] = fds[--nfds];
				i--;
			}
		}
		if (r > 0 && (fds[0].revents & POLLIN) && nfds < 17) {
			int s = accept(ls, NULL, NULL);
			if (s >= 0) {
				fds[nfds].fd = s;
				fds[nfds].events = POLLIN;
				nfds++;
			}
		}
		if (now_ms() < next)
			continue;
		next += 20;
		if (next < now_ms() - 1000)
			next = now_ms() + 20; /* after a long freeze, no burst */
		counter++;
		long v = counter, back;
		if (write(sp[0], &v, sizeof v) != sizeof v || read(sp[0], &back, sizeof back) != sizeof back)
			fail("socketpair round trip");
		if (back != counter + 1) {
			errno = 0;
			fail("parent: wrong answer");
		}
		char line[32];
		int n = snprintf(line, sizeof line, "%ld\n", counter);
		if (write(log, line, n) != n)
			fail("append");
		snprintf(tmp, sizeof tmp, "%s/counter.tmp", dir);
		snprintf(p, sizeof p, "%s/counter", dir);
		int cf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (cf < 0 || write(cf, line, n) != n)
			fail("counter");
		close(cf);
		if (rename(tmp, p) < 0)
			fail("rename counter");
	}
}
