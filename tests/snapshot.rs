//! Snapshots through the `ferry` command (root, CRIU): stateful snapshot and restore of a
//! counting process, shared storage between snapshots, delete, export and restore on a second
//! host, schedules with an injected clock, damaged and interrupted snapshots, btrfs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{need_root, TestHost};

fn have_criu(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    if Command::new("criu").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
        true
    } else {
        eprintln!("{test}: skipped: criu is not installed");
        false
    }
}

/// The counting loop: its counter lives in the shell's memory and is appended to /root/n.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i >> /root/n; sleep 0.02; done </dev/null >/dev/null 2>&1 &";

fn numbers(p: &Path) -> Vec<u64> {
    std::fs::read_to_string(p).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn counter_file(h: &TestHost, ct: &str) -> PathBuf {
    h.data.join("private").join(ct).join("root/n")
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 1, 2, 3, ... with no gap and no repeat: the shell's counter and the file agree.
fn assert_consecutive(v: &[u64], what: &str) {
    for (k, n) in v.iter().enumerate() {
        assert_eq!(*n, k as u64 + 1, "{what}: line {} is {n}: {:?}", k + 1, &v[k.saturating_sub(3)..(k + 3).min(v.len())]);
    }
}

fn start_counter(h: &TestHost, ct: &str) {
    h.started(ct);
    h.exec(ct, COUNTER);
    let f = counter_file(h, ct);
    wait_for(Duration::from_secs(10), "the counter", || numbers(&f).len() > 10);
}

fn list(h: &TestHost, ct: &str) -> serde_json::Value {
    serde_json::from_str(&h.ok(&["snapshot", "list", ct, "--json"])).unwrap()
}

fn ids(h: &TestHost, ct: &str) -> Vec<String> {
    list(h, ct)["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn take(h: &TestHost, ct: &str, extra: &[&str]) -> String {
    let before = ids(h, ct);
    let mut args = vec!["snapshot", "create", ct];
    args.extend_from_slice(extra);
    let out = h.ok(&args);
    eprintln!("{}", out.trim());
    let after = ids(h, ct);
    let new: Vec<_> = after.into_iter().filter(|i| !before.contains(i)).collect();
    assert_eq!(new.len(), 1, "{out}");
    new[0].clone()
}

/// `du` over both dirs counts a hardlinked block once: the second number is what B adds.
fn du_added(a: &Path, b: &Path) -> u64 {
    let o = Command::new("du").args(["-s", "--block-size=1"]).arg(a).arg(b).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    s.lines().nth(1).and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("du output")
}

#[test]
fn stateful_snapshot_restores_memory_and_files_together() {
    if !have_criu("stateful_snapshot_restores_memory_and_files_together") {
        return;
    }
    let h = TestHost::new();
    let ct = "sn1";
    start_counter(&h, ct);
    // A 100 MB file that never changes: the second snapshot must share it.
    let big = h.data.join("private").join(ct).join("root/big");
    let st = Command::new("dd").args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"]).arg(format!("of={}", big.display())).status().unwrap();
    assert!(st.success());

    let t = Instant::now();
    let a = take(&h, ct, &["--name", "first"]);
    eprintln!("snapshot of a 100 MB tree: {} ms", t.elapsed().as_millis());
    let pid = h.pid(ct);
    // The container kept running and is thawed: the counter goes on.
    let f = counter_file(&h, ct);
    let n0 = numbers(&f).len();
    wait_for(Duration::from_secs(5), "the counter after the snapshot", || numbers(&f).len() > n0 + 5);
    assert_eq!(h.pid(ct), pid);

    let t = Instant::now();
    let b = take(&h, ct, &[]);
    eprintln!("second snapshot: {} ms", t.elapsed().as_millis());
    let sdir = h.data.join("snapshots").join(ct);
    let added = du_added(&sdir.join(&a), &sdir.join(&b));
    eprintln!("second snapshot adds {added} bytes");
    assert!(added < 1 << 20, "the second snapshot of an unchanged tree adds {added} bytes");
    let l = list(&h, ct);
    let sb = &l["snapshots"][1];
    assert_eq!(sb["stateful"], true);
    assert!(sb["shared"].as_u64().unwrap() >= 100 << 20, "{l}");
    assert!(sb["size"].as_u64().unwrap() < 1 << 20, "{l}");

    // The snapshot's copy of a file never changes when the container writes that file.
    let snap_big = sdir.join(&b).join("files/root/big");
    let digest = |p: &Path| std::fs::read(p).unwrap();
    let before = digest(&snap_big);
    h.exec(ct, "printf XXXX | dd of=/root/big bs=1 seek=1000 conv=notrunc status=none");
    assert_ne!(digest(&big), before);
    assert_eq!(digest(&snap_big), before, "writing in the container changed the snapshot");

    // Run on, then go back to B: the file is B's again and the shell's counter continues it.
    let in_b = numbers(&sdir.join(&b).join("files/root/n"));
    assert_consecutive(&in_b, "the snapshot's file");
    let m = numbers(&f).len();
    wait_for(Duration::from_secs(10), "the counter to run on", || numbers(&f).len() > m + 50);
    let ahead = numbers(&f).len();
    // Delete A first: B shares files with it and must still restore.
    h.ok(&["snapshot", "delete", ct, &a]);
    assert_eq!(ids(&h, ct), vec![b.clone()]);
    let t = Instant::now();
    eprintln!("{}", h.ok(&["snapshot", "restore", ct, &b]).trim());
    eprintln!("restore: {} ms", t.elapsed().as_millis());
    let right_after = numbers(&f);
    assert!(right_after.len() < ahead, "the file is back at the snapshot ({} lines, was {ahead})", right_after.len());
    assert_eq!(&right_after[..in_b.len()], &in_b[..]);
    wait_for(Duration::from_secs(10), "the restored counter", || numbers(&f).len() > in_b.len() + 20);
    let v = numbers(&f);
    assert_consecutive(&v, "after restore");
    // The big file is B's copy again.
    assert_eq!(digest(&big), before);
}

#[test]
fn damaged_interrupted_and_exported_snapshots() {
    if !have_criu("damaged_interrupted_and_exported_snapshots") {
        return;
    }
    let h = TestHost::new();
    let ct = "sn2";
    start_counter(&h, ct);
    let good = take(&h, ct, &[]);
    let bad = take(&h, ct, &[]);
    let sdir = h.data.join("snapshots").join(ct);
    // Flip bytes in the middle of the second one's process image.
    let img = sdir.join(&bad).join("state.img");
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&img, &bytes).unwrap();
    let pid = h.pid(ct);
    let err = h.fails(&["snapshot", "restore", ct, &bad]);
    assert!(err.contains("damaged") && err.contains(&bad), "{err}");
    assert_eq!(h.pid(ct), pid, "a damaged snapshot must not touch the running container");
    h.ok(&["snapshot", "restore", ct, &good]);
    assert_consecutive(&numbers(&counter_file(&h, ct)), "after restoring the good one");

    // An interrupted snapshot: its tmp dir is never listed and the next snapshot removes it.
    std::fs::create_dir_all(sdir.join(".tmp-1-dead/files/root")).unwrap();
    std::fs::write(sdir.join(".tmp-1-dead/files/root/x"), b"half").unwrap();
    assert_eq!(ids(&h, ct).len(), 2);
    let c = take(&h, ct, &["--stateless"]);
    assert!(!sdir.join(".tmp-1-dead").exists());
    // Listed last even when taken within the same second as the one before it.
    let listed = list(&h, ct);
    assert_eq!(listed["snapshots"][2]["id"], c.as_str());
    assert_eq!(listed["snapshots"][2]["stateful"], false);
    // A files-only export starts the container on another host.
    let files_only = h.dir.path().join("sn2-files.img");
    h.ok(&["snapshot", "export", ct, &c, files_only.to_str().unwrap()]);
    let h4 = TestHost::new();
    let o = h4.ok(&["restore", ct, "--from-image", files_only.to_str().unwrap()]);
    assert!(o.contains("started"), "{o}");
    h4.pid(ct);
    assert!(!numbers(&counter_file(&h4, ct)).is_empty());
    drop(h4);

    // Export the good one and bring it up on a second host that never had the container.
    let out = h.dir.path().join("sn2.img");
    h.ok(&["snapshot", "export", ct, &good, out.to_str().unwrap()]);
    let inspect = h.ok(&["image", "inspect", out.to_str().unwrap()]);
    assert!(inspect.contains("file-tree"), "{inspect}");
    let good_n = numbers(&sdir.join(&good).join("files/root/n"));
    let h2 = TestHost::new();
    let o = h2.ok(&["restore", ct, "--from-image", out.to_str().unwrap()]);
    eprintln!("{}", o.trim());
    let f2 = counter_file(&h2, ct);
    wait_for(Duration::from_secs(10), "the counter on host 2", || numbers(&f2).len() > good_n.len() + 10);
    let v = numbers(&f2);
    assert_eq!(&v[..good_n.len()], &good_n[..]);
    assert_consecutive(&v, "on host 2");
    drop(h2);

    // Processes that cannot be restored on the destination (a stand-in for another kernel or
    // CRIU: the shell binary the dumped processes map has another size in the image's files,
    // which CRIU refuses). Without --cold nothing is left; with --cold it starts from the files.
    let bb = sdir.join(&good).join("files/bin/busybox");
    let mut exe = std::fs::read(&bb).unwrap();
    exe.extend_from_slice(&[0u8; 4096]);
    let tmpbb = bb.with_file_name(".bb");
    std::fs::write(&tmpbb, &exe).unwrap();
    std::fs::set_permissions(&tmpbb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmpbb, &bb).unwrap();
    let out2 = h.dir.path().join("sn2-other.img");
    h.ok(&["snapshot", "export", ct, &good, out2.to_str().unwrap()]);
    let h3 = TestHost::new();
    let err = h3.fails(&["restore", ct, "--from-image", out2.to_str().unwrap()]);
    assert!(err.contains("--cold"), "{err}");
    assert!(!h3.data.join("conf").join(format!("{ct}.toml")).exists(), "a failed restore left a config");
    assert!(!h3.data.join("private").join(ct).exists(), "a failed restore left files");
    h3.assert_clean();
    let o = h3.ferry(&["restore", ct, "--from-image", out2.to_str().unwrap(), "--cold"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be restored") && stderr.contains("cold"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&h3.ok(&["status", ct, "--json"])).unwrap();
    assert!(v["pid"].as_i64().is_some(), "started cold: {v}");
    // The files are the snapshot's (the counter file is there, no counter runs).
    assert_eq!(numbers(&counter_file(&h3, ct)), good_n);
    drop(h3);
}

#[test]
fn run_due_takes_and_prunes_by_the_clock() {
    if !have_criu("run_due_takes_and_prunes_by_the_clock") {
        return;
    }
    let h = TestHost::new();
    let ct = "sn3";
    h.ok(&["create", ct, "--template", h.template.to_str().unwrap()]);
    h.ok(&["snapshot", "schedule", ct, "--every", "1h", "--keep", "2"]);
    let manual = take(&h, ct, &["--name", "keepme"]);
    let t0: i64 = 1_800_000_000;
    let run = |now: i64| h.ok(&["snapshot", "run-due", "--now", &now.to_string()]);
    assert!(run(t0).contains("taken"));
    assert!(!run(t0 + 60).contains("taken"), "not due a minute later");
    assert!(run(t0 + 3600).contains("taken"));
    let out = run(t0 + 7200);
    assert!(out.contains("pruned"), "{out}");
    let l = list(&h, ct);
    let snaps = l["snapshots"].as_array().unwrap();
    let auto: Vec<i64> = snaps.iter().filter(|s| s["auto"] == true).map(|s| s["created"].as_i64().unwrap()).collect();
    assert_eq!(auto, vec![t0 + 3600, t0 + 7200]);
    assert!(snaps.iter().any(|s| s["id"] == manual.as_str()), "manual snapshots are never pruned");

    // A failure is reported (exit code, list) and the running container is not harmed.
    h.ok(&["start", ct]);
    let pid = h.pid(ct);
    // Another operation (a migration, say) holds the container's lock: the snapshot fails.
    let lockfile = h.data.join("locks").join(format!("{ct}.lock"));
    let mut holder = Command::new("flock").args(["-x", "--no-fork"]).arg(&lockfile).args(["sleep", "30"]).spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut holder);
    std::thread::sleep(Duration::from_millis(300));
    let o = h.ferry(&["snapshot", "run-due", "--now", &(t0 + 10800).to_string()]);
    drop(guard);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(h.pid(ct), pid);
    h.exec(ct, "true");
    let l = list(&h, ct);
    assert!(l["last_error"]["error"].as_str().unwrap_or_default().contains("lock"), "{l}");
    let text = h.ok(&["snapshot", "list", ct]);
    assert!(text.contains("last scheduled snapshot failed"), "{text}");
    // The next good run clears it.
    assert!(run(t0 + 10800).contains("taken"));
    assert!(list(&h, ct)["last_error"].is_null());
    h.ok(&["snapshot", "schedule", ct, "--off"]);
    assert!(!run(t0 + 100000).contains("taken"));
}

#[test]
fn btrfs_snapshot_is_a_subvolume() {
    if !have_criu("btrfs_snapshot_is_a_subvolume") {
        return;
    }
    if Command::new("mkfs.btrfs").arg("--version").output().is_err() {
        eprintln!("btrfs_snapshot_is_a_subvolume: skipped: no mkfs.btrfs");
        return;
    }
    let h = TestHost::new();
    let pool = h.dir.path().join("pool.img");
    let f = std::fs::File::create(&pool).unwrap();
    f.set_len(512 << 20).unwrap();
    drop(f);
    assert!(Command::new("mkfs.btrfs").args(["-q"]).arg(&pool).status().unwrap().success());
    std::fs::create_dir_all(&h.data).unwrap();
    // Unmounted by the TestHost guard (it removes every mount below its directory).
    assert!(Command::new("mount").args(["-o", "loop"]).arg(&pool).arg(&h.data).status().unwrap().success());
    let ct = "sn4";
    start_counter(&h, ct);
    let cfg = std::fs::read_to_string(h.data.join("conf").join(format!("{ct}.toml"))).unwrap();
    assert!(cfg.contains("btrfs"), "the private area should be a subvolume: {cfg}");
    let a = take(&h, ct, &[]);
    let b = take(&h, ct, &[]);
    let sdir = h.data.join("snapshots").join(ct);
    let show = Command::new("btrfs").args(["subvolume", "show"]).arg(sdir.join(&b).join("files")).output().unwrap();
    assert!(show.status.success(), "not a subvolume: {}", String::from_utf8_lossy(&show.stderr));
    let l = list(&h, ct);
    eprintln!("{l}");
    let sb = &l["snapshots"][1];
    assert!(sb["btrfs"] == true && sb["size"].as_u64().unwrap() < 1 << 20, "{l}");
    h.ok(&["snapshot", "delete", ct, &a]);
    let in_b = numbers(&sdir.join(&b).join("files/root/n"));
    h.ok(&["snapshot", "restore", ct, &b]);
    let f = counter_file(&h, ct);
    wait_for(Duration::from_secs(10), "the restored counter", || numbers(&f).len() > in_b.len() + 10);
    let v = numbers(&f);
    assert_eq!(&v[..in_b.len()], &in_b[..]);
    assert_consecutive(&v, "after a btrfs restore");
    // Remove the read-only subvolumes before the guard unmounts the pool.
    h.ok(&["snapshot", "delete", ct, &b]);
}

#[test]
fn image_backend_snapshots_use_the_mounted_root() {
    let test = "image_backend_snapshots_use_the_mounted_root";
    if !have_criu(test) {
        return;
    }
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        eprintln!("{test}: skipped: no mkfs.xfs");
        return;
    }
    let h = TestHost::new();
    std::fs::create_dir_all(&h.data).unwrap();
    if nix::sys::statfs::statfs(&h.data).unwrap().filesystem_type().0 as i64 == 0x9123_683E {
        eprintln!("{test}: skipped: the temp dir is on btrfs, which picks the btrfs backend");
        return;
    }
    let ct = "sn5";
    h.ok(&["create", ct, "--template", h.template.to_str().unwrap(), "--diskspace", "256M"]);
    let cfg = std::fs::read_to_string(h.data.join("conf").join(format!("{ct}.toml"))).unwrap();
    assert!(cfg.contains("image"), "{cfg}");
    // Stopped: files only (the image is mounted for the copy and unmounted again).
    let cold = take(&h, ct, &[]);
    assert_eq!(list(&h, ct)["snapshots"][0]["stateful"], false);
    assert!(h.mounts().is_empty(), "the image stayed mounted: {:?}", h.mounts());
    h.ok(&["start", ct]);
    h.exec(ct, COUNTER);
    let f = h.data.join("root").join(ct).join("root/n");
    wait_for(Duration::from_secs(10), "the counter", || numbers(&f).len() > 10);
    let warm = take(&h, ct, &[]);
    let sdir = h.data.join("snapshots").join(ct);
    let added = du_added(&sdir.join(&cold), &sdir.join(&warm));
    assert!(added < 1 << 20, "{added}");
    let in_warm = numbers(&sdir.join(&warm).join("files/root/n"));
    wait_for(Duration::from_secs(10), "the counter to run on", || numbers(&f).len() > in_warm.len() + 30);
    h.ok(&["snapshot", "restore", ct, &warm]);
    wait_for(Duration::from_secs(10), "the restored counter", || numbers(&f).len() > in_warm.len() + 10);
    let v = numbers(&f);
    assert_eq!(&v[..in_warm.len()], &in_warm[..]);
    assert_consecutive(&v, "after an image-backend restore");
    // Back to the stateless one: the container is started afresh on the template's files.
    h.ok(&["snapshot", "restore", ct, &cold]);
    assert!(numbers(&f).is_empty(), "the counter file did not exist in the first snapshot");
    h.pid(ct);
}

#[test]
fn killed_snapshot_leaves_nothing_in_the_list() {
    let test = "killed_snapshot_leaves_nothing_in_the_list";
    if !have_criu(test) {
        return;
    }
    let h = TestHost::new();
    let ct = "sn6";
    start_counter(&h, ct);
    // A tree big enough that the copy is still running when ferry is killed.
    let many = h.data.join("private").join(ct).join("root/many");
    for d in 0..40 {
        let dir = many.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..50 {
            std::fs::write(dir.join(format!("f{i}")), vec![(d * i) as u8; 64 << 10]).unwrap();
        }
    }
    let sdir = h.data.join("snapshots").join(ct);
    let mut child = h.cmd().args(["snapshot", "create", ct]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    let files_started = || {
        std::fs::read_dir(&sdir)
            .map(|r| r.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-") && e.path().join("files/root").exists()))
            .unwrap_or(false)
    };
    while !files_started() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.success() {
        eprintln!("{test}: the snapshot finished before it could be killed; checking only the cleanup");
    } else {
        assert!(ids(&h, ct).is_empty(), "a killed snapshot is listed");
    }
    // The container runs on (thawed: the counter moves, also if the kill hit the freeze).
    let f = counter_file(&h, ct);
    let n = numbers(&f).len();
    h.ok(&["snapshot", "list", ct]);
    let again = take(&h, ct, &[]);
    wait_for(Duration::from_secs(10), "the counter after the kill", || numbers(&f).len() > n + 5);
    let left: Vec<_> =
        std::fs::read_dir(&sdir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(left.is_empty(), "stale tmp dirs left: {left:?}");
    assert!(ids(&h, ct).contains(&again));
}

#[test]
fn work_while_frozen_sees_a_frozen_container_and_a_failure_thaws_it() {
    let test = "work_while_frozen_sees_a_frozen_container_and_a_failure_thaws_it";
    if !have_criu(test) {
        return;
    }
    use ferry_runtime::container::{self, CheckpointOpts};
    use ferry_runtime::{lock::ContainerLock, Ctid};
    let h = TestHost::new();
    let ct = "sn7";
    start_counter(&h, ct);
    let host = h.runtime_host();
    let c = Ctid::new(ct).unwrap();
    let cfg = container::load_config(&host, &c).unwrap();
    let freezer = host.cgroup(&c).unwrap().freezer();
    let f = counter_file(&h, ct);
    let opts = CheckpointOpts { keep_running: true, ..CheckpointOpts::default() };
    let images = h.dir.path().join("imgs");
    {
        let lock = ContainerLock::acquire(&host, &c, "test").unwrap();
        let mut seen_frozen = false;
        let mut still = false;
        let r = container::checkpoint_to_dir_frozen(&host, &lock, &cfg, &images, &opts, &mut || {
            seen_frozen = freezer.is_frozen().unwrap_or(false);
            // Frozen: the counter does not move.
            let a = numbers(&f).len();
            std::thread::sleep(Duration::from_millis(200));
            still = numbers(&f).len() == a;
            Err("the copy failed (test)".into())
        });
        let e = r.expect_err("the callback's failure is the checkpoint's");
        assert!(e.to_string().contains("the copy failed (test)") && e.to_string().contains("thawed"), "{e}");
        assert!(seen_frozen && still, "the callback ran while the container was frozen");
    }
    assert!(!freezer.is_frozen().unwrap(), "left frozen");
    let n = numbers(&f).len();
    wait_for(Duration::from_secs(5), "the counter after the failed snapshot", || numbers(&f).len() > n + 5);
    assert!(std::fs::read_dir(&images).map(|mut d| d.next().is_none()).unwrap_or(true), "images left");
}

/// A container's 4 GiB file holding 20 MiB of data in 5000 extents costs the snapshot store
/// about its data, not its size.
#[test]
fn a_sparse_file_costs_the_store_its_data() {
    use std::os::unix::fs::MetadataExt;
    let test = "a_sparse_file_costs_the_store_its_data";
    if !need_root(test) {
        return;
    }
    let h = TestHost::new();
    let ct = "sn7";
    h.ok(&["create", ct, "--template", h.template.to_str().unwrap()]);
    let img = h.data.join("private").join(ct).join("var/disk.img");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&img).unwrap();
    let size: u64 = 4 << 30;
    f.set_len(size).unwrap();
    for i in 0..5000u64 {
        std::os::unix::fs::FileExt::write_all_at(&f, &[(i % 251) as u8 + 1; 4096], (i * (size / 5000)) & !4095).unwrap();
    }
    drop(f);
    let id = take(&h, ct, &[]);
    let copy = h.data.join("snapshots").join(ct).join(&id).join("files/var/disk.img");
    let md = std::fs::metadata(&copy).unwrap();
    assert_eq!(md.len(), size);
    assert!(md.blocks() * 512 < 64 << 20, "the store holds {} MiB for 20 MiB of data", (md.blocks() * 512) >> 20);
}

/// `restore --from-image` of an image whose file tree reaches outside the new container's
/// directory (through a symlink it made earlier on an entry's path, or a hard link through
/// one) refuses it naming the entry, and leaves nothing: no container, no files, nothing
/// outside.
#[test]
fn an_image_whose_tree_escapes_is_refused_naming_the_entry() {
    use ferry_dump_format::{self as fmt, EntryType, TreeEntry, TreeWriter};
    use std::os::unix::fs::MetadataExt;
    let test = "an_image_whose_tree_escapes_is_refused_naming_the_entry";
    if !need_root(test) {
        return;
    }
    let h = TestHost::new();
    let outside = h.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("etc")).unwrap();
    std::fs::write(outside.join("secret"), b"host file").unwrap();
    let cfg = ferry_runtime::ContainerConfig::new(ferry_runtime::Ctid::new("sn8").unwrap());
    let entry = |path: &str, kind: EntryType| TreeEntry { path: path.into(), entry_type: kind as i32, mode: 0o755, ..Default::default() };
    let link = TreeEntry { symlink_target: outside.as_os_str().as_encoded_bytes().to_vec(), ..entry("d/link", EntryType::Symlink) };
    let hardlink = TreeEntry { hardlink_target: b"d/link/secret".to_vec(), ..entry("stolen", EntryType::Hardlink) };
    let file = TreeEntry { size: 4, ..entry("d/link/etc/evil", EntryType::File) };
    for (entries, bad) in [
        (vec![entry("d", EntryType::Directory), link.clone(), file], "d/link/etc/evil"),
        (vec![entry("d", EntryType::Directory), link, hardlink], "stolen"),
    ] {
        let path = h.dir.path().join("evil.img");
        let manifest = ferry_migrate::checkpoint::new_manifest(&cfg, "", None);
        let mut w = fmt::Writer::new(std::fs::File::create(&path).unwrap(), &manifest, fmt::WriterOptions::default()).unwrap();
        w.add_bytes(fmt::SectionKind::Config, ferry_migrate::checkpoint::CONFIG_SECTION, false, cfg.to_toml().as_bytes()).unwrap();
        let section = w.start_section(fmt::SectionKind::FileTree, ferry_migrate::snapshot::TREE_SECTION, false, None).unwrap();
        let mut tree = TreeWriter::new(section);
        for e in &entries {
            let content: Option<&mut dyn std::io::Read> = if e.entry_type == EntryType::File as i32 { Some(&mut &b"evil"[..]) } else { None };
            tree.add(e, content).unwrap();
        }
        tree.finish().unwrap().finish().unwrap();
        w.finish().unwrap();
        let err = h.fails(&["restore", "sn8", "--from-image", path.to_str().unwrap()]);
        assert!(err.contains(&format!("{bad:?}")) && err.contains("refused"), "{err}");
        assert!(!outside.join("etc/evil").exists(), "written outside");
        assert_eq!(std::fs::metadata(outside.join("secret")).unwrap().nlink(), 1, "a hard link to a host file");
        assert!(!h.data.join("conf/sn8.toml").exists() && !h.data.join("private/sn8").exists(), "a refused restore left a container");
        let private = h.data.join("private");
        let left: Vec<_> = std::fs::read_dir(&private).map(|r| r.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", private.display());
        h.assert_clean();
    }
}
