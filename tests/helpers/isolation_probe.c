/* Plays a hostile container: tries host-level system calls and host kernel knobs and prints
 * one line per try, "NAME ERRNO" (0: it worked), or "NAME VALUE" for the sizes it reads.
 * Built static by the isolation tests and copied into a container. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    printf("%s %d\n", name, rc < 0 ? errno : 0);
}

/* Run f in a child (a namespace it creates must not change the probe); its errno. */
static int in_child(int (*f)(void)) {
    pid_t p = fork();
    if (p == 0) {
        _exit(f() < 0 ? errno : 0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static int do_unshare_user(void) { return unshare(CLONE_NEWUSER); }

static int do_clone_user(void) {
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) waitpid((pid_t)r, 0, 0);
    return r < 0 ? -1 : 0;
}

static long bytes_of(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    char buf[4096];
    long total = 0, n;
    while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
    close(fd);
    return total;
}

static long entries_of(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    }
    closedir(d);
    return n;
}

/* The first PCI config space file, /proc/bus/pci/BUS/DEV.FN. */
static int first_pci(char *out, size_t len) {
    DIR *d = opendir("/proc/bus/pci");
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "devices")) continue;
        char bus[300];
        snprintf(bus, sizeof bus, "/proc/bus/pci/%s", e->d_name);
        DIR *b = opendir(bus);
        if (!b) continue;
        struct dirent *f;
        while ((f = readdir(b))) {
            if (f->d_name[0] == '.') continue;
            snprintf(out, len, "%s/%s", bus, f->d_name);
            found = 1;
            break;
        }
        closedir(b);
    }
    closedir(d);
    return found;
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    errno = 0;
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -4 /* user keyring */, 0));

    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4;
    a.value_size = 4;
    a.max_entries = 1;
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));

    struct perf_event_attr p;
    memset(&p, 0, sizeof p);
    p.type = PERF_TYPE_SOFTWARE;
    p.size = sizeof p;
    p.config = PERF_COUNT_SW_CPU_CLOCK;
    p.disabled = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &p, 0, -1, -1, 0));

    struct {
        unsigned int bytes;
        int type;
        unsigned char h[8];
    } fh = {8, 1, {0}};
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY));
    report("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    printf("unshare_user %d\n", in_child(do_unshare_user));
    printf("clone_user %d\n", in_child(do_clone_user));
    report("clone3", syscall(SYS_clone3, 0, 0));

    report("write_irq", open("/proc/irq/default_smp_affinity", O_WRONLY));
    char pci[600];
    if (first_pci(pci, sizeof pci)) {
        report("write_pci", open(pci, O_WRONLY));
    } else {
        printf("write_pci absent\n");
    }
    printf("timer_list_bytes %ld\n", bytes_of("/proc/timer_list"));
    printf("keys_bytes %ld\n", bytes_of("/proc/keys"));
    printf("sched_debug_bytes %ld\n", bytes_of("/proc/sched_debug"));
    printf("firmware_entries %ld\n", entries_of("/sys/firmware"));
    return 0;
}
