//! The seccomp filter of a container's processes, compiled with `seccompiler` and installed in
//! PID 1 and in every process `exec`/`enter` start.
//!
//! The default profile has the semantics of Docker's and Podman's: an allowlist (everything
//! else fails with EPERM, so a syscall newer than the list is refused too), an architecture
//! check (a 32-bit or x32 call from a 64-bit process is refused or kills it), and calls that
//! depend on the container's capabilities allowed only when it has them (mount with
//! SYS_ADMIN, reboot with SYS_BOOT, ...). ferry refuses the host-level calls whatever the
//! capabilities: kexec and modules, bpf, perf_event_open, the keyrings, open_by_handle_at,
//! userfaultfd, swap, setting the clock, acct, quotactl, io_uring; creating a user namespace
//! only with `--features nesting:on`. `clone3` gets ENOSYS (its flags are out of a filter's
//! reach), so libc falls back to `clone`, whose flags are checked.
//!
//! A profile of the admin's (`--seccomp FILE`) is seccompiler's JSON format: every filter in
//! the file is installed, in name order; a call runs only when every filter allows it.
//!
//! Filters are installed without `no_new_privs` (setuid programs inside keep working, as in
//! Docker): the installing process still holds CAP_SYS_ADMIN, then drops its capabilities and
//! execs. CRIU dumps the filters with the processes and restores them.

use crate::error::{Error, Result};
use caps::{Capability, CapsHashSet};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;

/// Compiled filters, installed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters(pub Vec<BpfProgram>);

/// What the default profile refuses whatever the capabilities (for docs, `check`, `status`).
pub const REFUSED_ALWAYS: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "userfaultfd",
    "swapon",
    "swapoff",
    "clock_settime",
    "settimeofday",
    "acct",
    "quotactl",
    "quotactl_fd",
    "io_uring_setup",
    "clone3 (ENOSYS)",
];

/// Capabilities whose only use is a call the default profile refuses: granting one of them
/// needs `--seccomp` too (the error says so).
pub const CAPS_ONLY_FOR_REFUSED: &[(Capability, &str)] = &[
    (Capability::CAP_SYS_TIME, "setting the clock"),
    (Capability::CAP_SYS_MODULE, "loading kernel modules"),
    (Capability::CAP_SYS_PACCT, "process accounting (acct)"),
    (Capability::CAP_BPF, "bpf"),
    (Capability::CAP_PERFMON, "perf_event_open"),
];

/// Calls numbered alike on every architecture (the unified table from 424 on) that libc does
/// not name yet.
mod newer {
    pub const CACHESTAT: i64 = 451;
    pub const MAP_SHADOW_STACK: i64 = 453;
    pub const FUTEX_WAKE: i64 = 454;
    pub const FUTEX_WAIT: i64 = 455;
    pub const FUTEX_REQUEUE: i64 = 456;
    pub const STATMOUNT: i64 = 457;
    pub const LISTMOUNT: i64 = 458;
    pub const SETXATTRAT: i64 = 463;
    pub const GETXATTRAT: i64 = 464;
    pub const LISTXATTRAT: i64 = 465;
    pub const REMOVEXATTRAT: i64 = 466;
}

/// What every container may call, on every architecture.
const ALLOWED: &[i64] = &[
    // files and directories
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_chroot,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_readahead,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sync_file_range,
    libc::SYS_utimensat,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_umask,
    libc::SYS_name_to_handle_at,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    newer::GETXATTRAT,
    newer::SETXATTRAT,
    newer::LISTXATTRAT,
    newer::REMOVEXATTRAT,
    newer::CACHESTAT,
    newer::STATMOUNT,
    newer::LISTMOUNT,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    libc::SYS_fanotify_mark,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    // polling and events
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_cancel,
    libc::SYS_io_getevents,
    // memory
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_msync,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_remap_file_pages,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_membarrier,
    libc::SYS_mseal,
    newer::MAP_SHADOW_STACK,
    // processes, threads, signals
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_process_mrelease,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    newer::FUTEX_WAKE,
    newer::FUTEX_WAIT,
    newer::FUTEX_REQUEUE,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_getcpu,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_restrict_self,
    // time (reading it; setting it is refused)
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_times,
    // system information
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrandom,
    // sockets (socket itself below: not every family)
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // System V and POSIX IPC (the container's own IPC namespace)
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
];

/// The older calls only x86_64 has (aarch64 has just their *at forms).
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[i64] = &[
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_getdents,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_mknod,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_link,
    libc::SYS_symlink,
    libc::SYS_readlink,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_signalfd,
    libc::SYS_inotify_init,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_pause,
    libc::SYS_alarm,
    libc::SYS_time,
    libc::SYS_getpgrp,
    libc::SYS_arch_prctl,
    libc::SYS_modify_ldt,
    libc::SYS_get_thread_area,
    libc::SYS_set_thread_area,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[i64] = &[];

/// Namespace flags of clone/unshare.
const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

/// Socket families refused: AF_VSOCK reaches the host and its VMs across network namespaces;
/// AF_ALG is the kernel's crypto API, which a container has no need of.
const REFUSED_FAMILIES: [u64; 2] = [libc::AF_VSOCK as u64, libc::AF_ALG as u64];

/// The architecture of this build (the filter's architecture check).
pub fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(Error::Seccomp)
}

fn cond(index: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(index, len, op, value).map_err(Error::Seccomp)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conds).map_err(Error::Seccomp)
}

/// `flags & mask == 0` on argument 0 (clone's and unshare's flags on x86_64 and aarch64).
fn flags_without(mask: u64) -> Result<Vec<SeccompRule>> {
    Ok(vec![rule(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask), 0)?])?])
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, mismatch: SeccompAction, matched: SeccompAction) -> Result<BpfProgram> {
    let f = SeccompFilter::new(rules, mismatch, matched, target_arch()?).map_err(Error::Seccomp)?;
    BpfProgram::try_from(f).map_err(Error::Seccomp)
}

/// ferry's default profile for a container with capabilities `caps`; `nesting` allows user
/// namespaces.
pub fn default_filters(caps: &CapsHashSet, nesting: bool) -> Result<Filters> {
    let has = |c: Capability| caps.contains(&c);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALLOWED.iter().chain(ALLOWED_ARCH) {
        rules.insert(*nr, Vec::new());
    }
    // socket(2) for every family but the refused ones.
    let mut not_refused = Vec::new();
    for fam in REFUSED_FAMILIES {
        not_refused.push(cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, fam)?);
    }
    rules.insert(libc::SYS_socket, vec![rule(not_refused)?]);
    // personality(2): the Linux personalities and the query, not ADDR_NO_RANDOMIZE and co.
    let mut personas = Vec::new();
    for p in [0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        personas.push(rule(vec![cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, p)?])?);
    }
    rules.insert(libc::SYS_personality, personas);
    // Namespaces: with nesting every kind (a user namespace first, then the rest inside it);
    // with SYS_ADMIN all but user namespaces; else none.
    let admin = has(Capability::CAP_SYS_ADMIN);
    let ns_refused = if nesting {
        0
    } else if admin {
        libc::CLONE_NEWUSER as u64
    } else {
        NS_FLAGS
    };
    for nr in [libc::SYS_clone, libc::SYS_unshare] {
        rules.insert(nr, if ns_refused == 0 { Vec::new() } else { flags_without(ns_refused)? });
    }
    let mut allow_if = |ok: bool, nrs: &[i64]| {
        if ok {
            for nr in nrs {
                rules.insert(*nr, Vec::new());
            }
        }
    };
    // Mounts, namespaces joined, names and the like need SYS_ADMIN (or a user namespace of the
    // container's own, with nesting).
    allow_if(
        admin || nesting,
        &[
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_move_mount,
            libc::SYS_open_tree,
            libc::SYS_mount_setattr,
            libc::SYS_setns,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
        ],
    );
    allow_if(admin, &[libc::SYS_fanotify_init]);
    allow_if(has(Capability::CAP_SYS_BOOT), &[libc::SYS_reboot]);
    allow_if(has(Capability::CAP_SYS_PTRACE), &[libc::SYS_kcmp, libc::SYS_pidfd_getfd, libc::SYS_process_madvise]);
    allow_if(has(Capability::CAP_SYS_NICE), &[libc::SYS_get_mempolicy, libc::SYS_mbind, libc::SYS_set_mempolicy, libc::SYS_set_mempolicy_home_node]);
    allow_if(has(Capability::CAP_SYSLOG), &[libc::SYS_syslog]);
    allow_if(has(Capability::CAP_SYS_TTY_CONFIG), &[libc::SYS_vhangup]);
    #[cfg(target_arch = "x86_64")]
    allow_if(has(Capability::CAP_SYS_RAWIO), &[libc::SYS_iopl, libc::SYS_ioperm]);
    // Reading the clock's adjustments is fine; with SYS_TIME the same calls would set it.
    allow_if(!has(Capability::CAP_SYS_TIME), &[libc::SYS_adjtimex, libc::SYS_clock_adjtime]);
    let main = compile(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow)?;
    // clone3 takes its flags in memory, out of the filter's reach: ENOSYS makes libc use
    // clone, whose flags the main filter checks.
    let clone3 = compile(BTreeMap::from([(libc::SYS_clone3, Vec::new())]), SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok(Filters(vec![main, clone3]))
}

/// Compile a profile in seccompiler's JSON format: every filter in it, in name order.
pub fn profile_filters(source: &str, json: &str) -> Result<Filters> {
    let bad = |msg: String| Error::SeccompProfile { source_name: source.to_string(), msg };
    let map = seccompiler::compile_from_json(json.as_bytes(), target_arch()?).map_err(|e| bad(e.to_string()))?;
    if map.is_empty() {
        return Err(bad("it holds no filter".into()));
    }
    let mut named: Vec<_> = map.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, prog) in named {
        if prog.is_empty() {
            return Err(bad(format!("filter {name:?} is empty")));
        }
        if prog.len() > libc::BPF_MAXINSNS as usize {
            return Err(bad(format!("filter {name:?} compiles to {} instructions, more than the kernel's {}", prog.len(), libc::BPF_MAXINSNS)));
        }
        out.push(prog);
    }
    Ok(Filters(out))
}

/// Install `filters` on the calling thread. It must still hold CAP_SYS_ADMIN (no
/// `no_new_privs` is set). Runs in a forked child right before it drops its capabilities
/// and execs: everything it calls afterwards (capset, prctl, execve) must be allowed.
pub fn install(filters: &Filters) -> std::result::Result<(), String> {
    for prog in &filters.0 {
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
        // SAFETY: seccompiler's sock_filter has libc's layout (u16, u8, u8, u32, repr(C));
        // the kernel copies the program during the call, while `prog` is alive.
        let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0u64, &fprog as *const libc::sock_fprog) };
        if rc != 0 {
            return Err(format!("install the seccomp filter: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_for_every_capability_set() {
        let none = CapsHashSet::new();
        let all: CapsHashSet = caps::all();
        for (caps, nesting) in [(&none, false), (&none, true), (&all, false), (&all, true)] {
            let f = default_filters(caps, nesting).unwrap();
            assert_eq!(f.0.len(), 2);
            assert!(f.0[0].len() < libc::BPF_MAXINSNS as usize, "{}", f.0[0].len());
        }
        // More capabilities, more allowed calls.
        assert!(default_filters(&all, false).unwrap().0[0].len() > default_filters(&none, false).unwrap().0[0].len());
    }

    #[test]
    fn refused_calls_are_not_in_the_allowlist() {
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_open_by_handle_at,
            libc::SYS_userfaultfd,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_clock_settime,
            libc::SYS_settimeofday,
            libc::SYS_acct,
            libc::SYS_quotactl,
            libc::SYS_io_uring_setup,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_setns,
        ] {
            assert!(!ALLOWED.contains(&nr) && !ALLOWED_ARCH.contains(&nr), "syscall {nr}");
        }
    }

    #[test]
    fn profiles_in_json() {
        let json = r#"{"main": {"mismatch_action": {"errno": 1}, "match_action": "allow",
            "filter": [{"syscall": "read"}, {"syscall": "unshare", "args": [{"index": 0, "type": "qword", "op": {"masked_eq": 268435456}, "val": 0}]}]},
            "a_first": {"mismatch_action": "allow", "match_action": {"errno": 38}, "filter": [{"syscall": "clone3"}]}}"#;
        let f = profile_filters("p.json", json).unwrap();
        assert_eq!(f.0.len(), 2);
        // Name order: "a_first" is the shorter one.
        assert!(f.0[0].len() < f.0[1].len());
        let e = profile_filters("p.json", "{").unwrap_err().to_string();
        assert!(e.contains("p.json") && e.contains("docs/runtime.md"), "{e}");
        let e = profile_filters(
            "p.json",
            r#"{"x": {"mismatch_action": "allow", "match_action": "kill_process", "filter": [{"syscall": "nosuchcall"}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nosuchcall"), "{e}");
        assert!(profile_filters("p.json", "{}").unwrap_err().to_string().contains("no filter"));
    }
}
