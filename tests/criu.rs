//! The runtime makes CRIU-friendly containers: the criu CLI dumps a container started by
//! `ferry start` (with a background process left by `ferry exec`) and restores it.

mod support;
use std::process::Command;
use support::{need_root, TestHost};

fn children(pid: i32) -> Vec<String> {
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    kids.split_whitespace()
        .map(|c| std::fs::read_to_string(format!("/proc/{c}/cmdline")).unwrap_or_default().replace('\0', " ").trim().to_string())
        .collect()
}

#[test]
fn criu_dumps_and_restores_a_ferry_container() {
    if !need_root("criu") {
        return;
    }
    if Command::new("criu").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("criu: skipped: the criu binary is missing; run scripts/install-deps.sh");
        return;
    }
    let h = TestHost::new();
    h.started("cr");
    h.ok(&["exec", "cr", "--", "sh", "-c", "sleep 1000 >/dev/null 2>&1 </dev/null &"]);
    let pid = h.pid("cr");
    assert!(children(pid).iter().any(|c| c == "sleep 1000"), "{:?}", children(pid));

    // An unprivileged container's /dev binds the host's nodes: CRIU takes them as external
    // mounts, and its restored tasks read the images as the container's root.
    let cfg = h.config("cr");
    let ext = ferry_runtime::container::restore::dev_externals(&cfg).unwrap();
    let (dump_ext, restore_ext): (Vec<String>, Vec<String>) = if cfg.security.kind.has_userns() {
        ext.iter().map(|(inside, key, host)| (format!("--external=mnt[{inside}]:{key}"), format!("--external=mnt[{key}]:{host}"))).unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    let dump = h.dir.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    let o = Command::new("criu")
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&dump)
        .args(["--tcp-established", "-v4", "-o", "dump.log"])
        .args(&dump_ext)
        .output()
        .unwrap();
    let log = |name: &str| std::fs::read_to_string(dump.join(name)).unwrap_or_default();
    assert!(o.status.success(), "criu dump failed: {}", log("dump.log").lines().filter(|l| l.contains("Error")).collect::<Vec<_>>().join("\n"));
    // The dump stopped the container's processes.
    assert_eq!(h.ok(&["status", "cr"]).trim(), "cr mounted");

    let root = h.data.join("root/cr");
    if let Some(map) = &cfg.security.id_map {
        ferry_runtime::userns::criu_image::open_to(&dump, map).unwrap();
    }
    let pidfile = h.dir.path().join("restored.pid");
    let o = Command::new("criu")
        .args(["restore", "-D"])
        .arg(&dump)
        .arg("--root")
        .arg(&root)
        .args(["-d", "-v4", "-o", "restore.log", "--pidfile"])
        .arg(&pidfile)
        .args(&restore_ext)
        .output()
        .unwrap();
    assert!(o.status.success(), "criu restore failed: {}", log("restore.log").lines().filter(|l| l.contains("Error")).collect::<Vec<_>>().join("\n"));
    let new_pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let kids = children(new_pid);
    assert!(kids.iter().any(|c| c == "sleep 1000"), "background process not restored: {kids:?}");
    let cmdline = std::fs::read_to_string(format!("/proc/{new_pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/bin/sh\0-c\0trap"), "{cmdline:?}");
    // The restored init is back in the container's cgroup, so `ferry stop` cleans it up.
    for f in h.cgroup("cr").procs_files() {
        let procs = std::fs::read_to_string(&f).unwrap();
        assert!(procs.lines().any(|l| l.trim() == new_pid.to_string()), "{}: {procs}", f.display());
    }
    h.ok(&["stop", "cr"]);
    assert!(
        !std::path::Path::new(&format!("/proc/{new_pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{new_pid}/stat")).unwrap_or_default().contains(") Z")
    );
    h.assert_clean();
}
