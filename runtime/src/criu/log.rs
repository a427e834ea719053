//! Turning a CRIU log into an error a person can act on: CRIU's own "Error (" lines with a
//! little context, a hint for the failures ferry knows, and the path of the full log.

use std::path::Path;

/// Lines of context kept before each error line.
const CONTEXT_BEFORE: usize = 2;
/// At most this many error lines (with context) are quoted; the log has the rest.
const MAX_ERRORS: usize = 8;

/// The error lines of a CRIU log with a little context before each, in order, deduplicated.
pub fn error_excerpt(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut keep = vec![false; lines.len()];
    let mut errors = 0;
    for (i, l) in lines.iter().enumerate() {
        if is_error_line(l) {
            errors += 1;
            if errors > MAX_ERRORS {
                break;
            }
            for k in keep.iter_mut().take(i + 1).skip(i.saturating_sub(CONTEXT_BEFORE)) {
                *k = true;
            }
        }
    }
    lines.iter().zip(keep).filter(|(_, k)| *k).map(|(l, _)| l.trim_end().to_owned()).collect()
}

fn is_error_line(l: &str) -> bool {
    (l.contains("Error (") || l.contains("Error:")) && !BENIGN.iter().any(|b| l.contains(b))
}

/// Error lines CRIU prints on successful runs too (no CAP_SYS_RESOURCE in the bounding set).
const BENIGN: &[&str] = &["rlimit: Can't setup RLIMIT_NOFILE for self"];

/// Dump failures that come from a moment, not from the container: a message in flight in a
/// unix socket's queue with its sender's credentials attached (a booted system's journald,
/// notify and D-Bus sockets receive them all the time; CRIU dumps only descriptors passed in
/// a queue). The reader takes it off once the container runs again, so a dump a moment
/// later succeeds.
pub fn is_transient_dump_failure(log: &str) -> bool {
    error_excerpt(log).iter().any(|l| l.contains("Control messages in queue, not supported"))
}

/// A hint for known failure patterns in the error lines, if one matches.
pub fn hint(errors: &[String]) -> Option<&'static str> {
    let all = errors.join("\n");
    let has = |s: &str| all.contains(s);
    if has("Can't get rlimit") && has("Operation not permitted") {
        Some("CRIU may not read the limits of a process running as another user: this host's root lacks CAP_SYS_RESOURCE (see CapBnd in /proc/self/status; some sandboxes and VMs drop it). An unprivileged container (`ferry set CTID --userns on --save` while it is stopped) is not affected: host root owns its user namespace and holds every capability inside it. Else run ferry where root keeps it, or the container's processes as root")
    } else if has("Can't lookup mount=") {
        Some("a process holds a file from outside the container (an fd the launcher leaked, stdio opened before pivot_root, or a host bind mount): close it, or declare the mount external")
    } else if has("session leader") && has("outside of its pid namespace") {
        Some("the container's init must be a session leader inside its pid namespace (setsid after entering it)")
    } else if has("kerndat_tcp_repair") || has("Network is unreachable") {
        Some("CRIU probes TCP repair over the loopback of the network namespace it runs in: bring it up there (ip link set lo up)")
    } else if has("veth") || has("Can't restore link") || has("netdev") && has("File exists") {
        Some("CRIU could not recreate a network device (veth): check the external veth mapping (veth[IN]:OUT) and that its outer name is free in the network namespace the restore runs in")
    } else if (has("tcp") || has("TCP") || has("sockets:")) && has("Operation not supported") {
        Some("this kernel/CRIU pair cannot dump this socket option; CRIU 4.2+ is needed for established TCP on recent kernels (ferry-install-criu installs it)")
    } else if has("Control messages in queue") {
        Some("a unix socket had a message with its sender's credentials in flight (journald, systemd's notify socket, D-Bus): a passing moment that outlasted ferry's tries; check it again")
    } else if has("Can't dump") && (has("socket") || has("sk ")) {
        Some("a process holds a socket kind CRIU cannot dump (or one connected outside the container): close it or make it external (ext_unix_sk for unix sockets)")
    } else if has("Unsupported") || has("unsupported") {
        Some("a process holds a file descriptor of a kind CRIU cannot dump (e.g. a device, perf or bpf fd); close it before the checkpoint")
    } else if (has("clone") || has("pid")) && has("File exists") || has("do not match expected") {
        Some("a pid the image needs is taken on this host (the container may already run here)")
    } else if has("External mount") || has("mnt: No mapping") || has("is not mapped") {
        Some("a mount from outside the container was found: declare it external at dump and map it at restore")
    } else if has("magic doesn't match") || has("Unable to open") && has(".img") || has("Can't open image") {
        Some("the image directory is incomplete or damaged (or not a CRIU image): dump again, or copy the images again")
    } else if has("ip6tables") || has("iptables") || has("nft") {
        Some("CRIU could not lock the network with iptables/nftables: check that iptables-restore works in this network namespace")
    } else {
        None
    }
}

/// The text of a CRIU failure: what failed, CRIU's error lines, a hint, where the log is.
pub fn describe_failure(op: &str, cr_errmsg: &str, log_path: Option<&Path>) -> String {
    let log = log_path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let excerpt = error_excerpt(&log);
    let mut s = format!("{op} failed");
    let cr_errmsg = cr_errmsg.trim();
    if !cr_errmsg.is_empty() && !BENIGN.iter().any(|b| cr_errmsg.contains(b)) && !excerpt.iter().any(|l| l.contains(cr_errmsg)) {
        s.push_str(&format!(" ({cr_errmsg})"));
    }
    if excerpt.is_empty() {
        s.push_str(": CRIU wrote no error line\n");
    } else {
        s.push_str(":\n");
        for l in &excerpt {
            s.push_str("  ");
            s.push_str(l);
            s.push('\n');
        }
    }
    if let Some(h) = hint(&excerpt) {
        s.push_str(&format!("hint: {h}\n"));
    }
    match log_path {
        Some(p) => s.push_str(&format!("full log: {}", p.display())),
        None => s.push_str("(no CRIU log was asked for)"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "(00.001) one\n(00.002) two\n(00.003) three\n(00.004) Error (criu/files-reg.c:1710): Can't lookup mount=22 for fd=3 path=/etc/hostname\n(00.005) after\n(00.006) Error (criu/cr-dump.c:1600): Dumping FAILED.\n";

    #[test]
    fn credentials_in_a_socket_queue_are_a_passing_moment() {
        let log = "(00.086946) unix: Dumped: id 0x3d ino 5585164 peer 0 type 1 state 10 name 28 bytes\n\
                   (00.086986) Error (criu/sk-queue.c:144): skqueue: Control messages in queue, not supported\n\
                   (00.145679) Error (criu/cr-dump.c:1975): Dumping FAILED.\n";
        assert!(is_transient_dump_failure(log));
        assert!(!is_transient_dump_failure(LOG));
        assert!(hint(&error_excerpt(log)).is_some_and(|h| h.contains("credentials")));
    }

    #[test]
    fn excerpt_keeps_errors_and_context() {
        let e = error_excerpt(LOG);
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].contains("two"));
        assert!(e[2].contains("Can't lookup mount=22"));
        assert!(e[4].contains("Dumping FAILED"));
        assert!(!e.iter().any(|l| l.contains("one")));
        let benign = "(0.1) x\n(0.2) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";
        assert!(error_excerpt(benign).is_empty());
    }

    #[test]
    fn hints_for_known_patterns() {
        let e = error_excerpt(LOG);
        assert!(hint(&e).unwrap().contains("outside the container"));
        let s = vec!["Error (criu/pstree.c:1): A session leader of 5(5) is outside of its pid namespace".to_owned()];
        assert!(hint(&s).unwrap().contains("session leader"));
        let t = vec!["Error (criu/sockets.c:1): sockets: Can't get 1:16 opt: Operation not supported".to_owned()];
        assert!(hint(&t).unwrap().contains("4.2"));
        assert_eq!(hint(&["Error (x): something else".to_owned()]), None);
        let m = vec!["Error (criu/image.c:554): Head magic doesn't match for pstree.img".to_owned()];
        assert!(hint(&m).unwrap().contains("damaged"));
        let v = vec![
            "1: Error (criu/libnetlink.c:54): -17 reported by netlink: File exists".to_owned(),
            "1: Error (criu/net.c:1927): net: Can't restore link: -17".to_owned(),
        ];
        assert!(hint(&v).unwrap().contains("veth"));
        let r = vec!["Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted".to_owned()];
        assert!(hint(&r).unwrap().contains("CAP_SYS_RESOURCE"));
    }

    #[test]
    fn describe_names_log_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dump.log");
        std::fs::write(&p, LOG).unwrap();
        let s = describe_failure("dump of pid 7", "", Some(&p));
        assert!(s.contains("Can't lookup mount=22"));
        assert!(s.contains("hint:"));
        assert!(s.contains(&p.display().to_string()));
    }
}
