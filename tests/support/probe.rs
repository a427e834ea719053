//! The isolation probe (tests/helpers/isolation_probe.c) in a container: run by `ferry exec`
//! or by a loop inside (whose children carry the filter of a restored process), and what its
//! answers must show under ferry's default isolation.
#![allow(dead_code)]

use super::support::TestHost;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Create `ct` with `extra` options and the probe at /usr/local/bin/probe.
pub fn create_with_probe(h: &TestHost, ct: &str, extra: &[&str]) {
    let mut args = vec!["create", ct, "--template", h.template.to_str().unwrap()];
    args.extend(extra);
    h.ok(&args);
    install(h, ct);
}

/// Put the probe at /usr/local/bin/probe in `ct`'s private area.
pub fn install(h: &TestHost, ct: &str) {
    let bin = h.data.join("private").join(ct).join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(h.static_helper("isolation_probe"), bin.join("probe")).unwrap();
}

pub fn parse(out: &str) -> HashMap<String, String> {
    out.lines().filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The probe run by `ferry exec` (with the filter exec installs).
pub fn probe_exec(h: &TestHost, ct: &str) -> HashMap<String, String> {
    parse(&h.ok(&["exec", ct, "--", "/usr/local/bin/probe"]))
}

/// A loop started inside that runs the probe when /tmp/go appears: after a restore it is a
/// restored process, so the probe inherits the filter CRIU gave back, not exec's.
pub fn start_probe_loop(h: &TestHost, ct: &str) {
    h.exec(
        ct,
        "(while :; do if [ -e /tmp/go ]; then rm -f /tmp/go; /usr/local/bin/probe > /tmp/probe.new 2>&1; mv /tmp/probe.new /tmp/probe.out; fi; usleep 50000; done) </dev/null >/dev/null 2>&1 &",
    );
}

/// Ask the loop for a probe run and read what it printed.
pub fn probe_loop(h: &TestHost, ct: &str) -> HashMap<String, String> {
    h.exec(ct, "rm -f /tmp/probe.out; touch /tmp/go");
    let t0 = Instant::now();
    loop {
        let o = h.ferry(&["exec", ct, "--", "cat", "/tmp/probe.out"]);
        if o.status.success() {
            return parse(&String::from_utf8_lossy(&o.stdout));
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the probe loop in {ct} did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the default filter and masks must show, whoever runs the probe.
pub fn assert_confined(r: &HashMap<String, String>, what: &str) {
    let eperm = "1";
    for call in ["keyctl", "bpf", "perf_event_open", "open_by_handle_at", "userfaultfd", "unshare_user", "clone_user"] {
        assert_eq!(r.get(call).map(String::as_str), Some(eperm), "{what}: {call} not refused with EPERM: {r:?}");
    }
    assert_eq!(r.get("clone3").map(String::as_str), Some("38"), "{what}: clone3 should fail with ENOSYS: {r:?}");
    assert_masked(r, what);
}

pub fn assert_masked(r: &HashMap<String, String>, what: &str) {
    // EROFS: the read-only mount refused it; EACCES: so did the owner check before it (the
    // root of an unprivileged container's user namespace owns nothing of the host's /proc).
    let refused = |key: &str| matches!(r.get(key).map(String::as_str), Some("30") | Some("13"));
    assert!(refused("write_irq"), "{what}: /proc/irq writable: {r:?}");
    if Path::new("/proc/bus/pci").is_dir() {
        assert!(refused("write_pci"), "{what}: PCI config space writable: {r:?}");
    }
    for (key, host) in [("timer_list_bytes", "/proc/timer_list"), ("keys_bytes", "/proc/keys"), ("sched_debug_bytes", "/proc/sched_debug")] {
        if Path::new(host).exists() {
            assert_eq!(r.get(key).map(String::as_str), Some("0"), "{what}: {host} not masked: {r:?}");
        }
    }
    if Path::new("/sys/firmware").is_dir() {
        assert_eq!(r.get("firmware_entries").map(String::as_str), Some("0"), "{what}: /sys/firmware not masked: {r:?}");
    }
}
