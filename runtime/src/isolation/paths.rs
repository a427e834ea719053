//! Paths of /proc and /sys that reach the host, hidden or made read-only inside a container
//! (runc's and Docker's lists). Done by PID 1 in its own mount namespace after pivot_root,
//! before any code of the container runs; CRIU dumps and restores these mounts with the rest
//! of the container's mount tree.

use nix::mount::MsFlags;
use std::path::Path;

/// Hidden: a file gets /dev/null bound over it, a directory an empty read-only tmpfs.
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Read-only (bound onto themselves, then remounted read-only).
pub const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

fn mount(src: Option<&str>, target: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    nix::mount::mount(src, target, fstype, flags, data).map_err(|e| format!("mount {} on {target}: {e}", src.or(fstype).unwrap_or("")))
}

/// Mask and protect in the calling process's mount namespace, whose root is the container's
/// (after pivot_root); /dev/null must be there. Paths this kernel lacks are skipped.
pub fn apply() -> Result<(), String> {
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in READONLY {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        mount(None, p, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden, None)?;
    }
    for p in MASKED {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY | hidden, Some("mode=0555"))?,
            Ok(_) => mount(Some("/dev/null"), p, None, MsFlags::MS_BIND, None)?,
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Which of [`MASKED`] and [`READONLY`] a mount table (`/proc/PID/mountinfo`) shows in force:
/// (masked, read-only). For tests and `status`.
pub fn in_force(mountinfo: &str) -> (Vec<String>, Vec<String>) {
    let mut masked = Vec::new();
    let mut ro = Vec::new();
    for l in mountinfo.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (Some(point), Some(opts)) = (f.get(4), f.get(5)) else { continue };
        if MASKED.contains(point) {
            masked.push(point.to_string());
        }
        if READONLY.contains(point) && opts.split(',').any(|o| o == "ro") {
            ro.push(point.to_string());
        }
    }
    masked.sort();
    masked.dedup();
    ro.sort();
    ro.dedup();
    (masked, ro)
}

/// Whether `p` is one of the masked paths (for a clearer message in tests).
pub fn is_masked(p: &Path) -> bool {
    MASKED.iter().any(|m| Path::new(m) == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_lists_are_covered() {
        for p in [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ] {
            assert!(is_masked(Path::new(p)), "{p}");
        }
        for p in ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"] {
            assert!(READONLY.contains(&p), "{p}");
        }
    }

    #[test]
    fn reads_mountinfo() {
        let mi = "30 25 0:5 / /proc rw,nosuid - proc proc rw\n\
                  31 30 0:22 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw\n\
                  32 30 0:5 /irq /proc/irq ro,nosuid - proc proc rw\n\
                  33 30 0:5 /bus /proc/bus rw,nosuid - proc proc rw\n";
        let (m, r) = in_force(mi);
        assert_eq!(m, vec!["/proc/kcore"]);
        assert_eq!(r, vec!["/proc/irq"], "/proc/bus is not read-only there");
    }
}
