//! Round trip of a real CRIU image directory: dump a small process with CRIU, write the
//! directory as an image, extract it elsewhere, compare byte for byte, and restore from the
//! extracted copy.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_dump_format::{extract_to_dir, inspect, verify, Manifest, SectionKind, Writer, WriterOptions};

/// Kills a process (by pid) when dropped, so a failing test leaves nothing running.
struct KillOnDrop(Option<Child>, Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.1 {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn criu_available() -> bool {
    Command::new("criu").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

#[test]
fn criu_dump_directory_round_trips_and_restores() {
    if !criu_available() {
        println!("SKIP: criu is not installed (run scripts/install-deps.sh)");
        return;
    }
    let base = tempfile::Builder::new().prefix("ferry-t-criuimg").tempdir().unwrap();
    let dump_dir = base.path().join("dump");
    let out_dir = base.path().join("restored");
    std::fs::create_dir(&dump_dir).unwrap();
    std::fs::create_dir(&out_dir).unwrap();

    // `setsid` execs sleep in place (the spawned child is not a process-group leader), so the
    // child's pid is sleep's pid; it runs in its own session, as --shell-job expects.
    let child = Command::new("setsid").args(["sleep", "1000"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let mut guard = KillOnDrop(Some(child), None);
    for _ in 0..50 {
        if comm(pid) == "sleep" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(comm(pid), "sleep");
    let status =
        Command::new("criu").args(["dump", "--shell-job", "-v1", "-o", "dump.log", "-t", &pid.to_string(), "-D"]).arg(&dump_dir).status().unwrap();
    if !status.success() {
        let log = std::fs::read_to_string(dump_dir.join("dump.log")).unwrap_or_default();
        panic!("criu dump failed ({status}):\n{log}");
    }
    if let Some(mut child) = guard.0.take() {
        let _ = child.wait(); // CRIU killed it after the dump
    }

    let manifest = Manifest { image_id: "criu-test".into(), criu_version: "4.2".into(), ..Default::default() };
    let mut writer = Writer::new(Vec::new(), &manifest, WriterOptions::default()).unwrap();
    let entries = writer.write_dir(&dump_dir).unwrap();
    let image = writer.finish().unwrap();
    assert!(entries.iter().any(|e| e.name == "pstree.img"), "{entries:?}");
    assert!(entries.iter().any(|e| e.name.starts_with("pages-")));

    let report = verify(image.as_slice()).unwrap();
    assert_eq!(report.sections.len(), entries.len());
    let inspection = inspect(image.as_slice()).unwrap();
    assert!(inspection.sections.iter().all(|s| s.kind == SectionKind::CriuImage.label()));

    extract_to_dir(image.as_slice(), &out_dir).unwrap();
    for entry in std::fs::read_dir(&dump_dir).unwrap() {
        let entry = entry.unwrap();
        let copy = out_dir.join(entry.file_name());
        assert_eq!(std::fs::read(entry.path()).unwrap(), std::fs::read(&copy).unwrap(), "{copy:?}");
    }

    // The extracted images are usable by CRIU, not only equal bytes.
    let pidfile = base.path().join("restored.pid");
    let status = Command::new("criu")
        .args(["restore", "--shell-job", "--restore-detached", "-v1", "-o", "restore.log", "--pidfile"])
        .arg(&pidfile)
        .arg("-D")
        .arg(&out_dir)
        .status()
        .unwrap();
    let restored_pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok());
    guard.1 = restored_pid;
    if !status.success() {
        let log = std::fs::read_to_string(out_dir.join("restore.log")).unwrap_or_default();
        panic!("criu restore from extracted images failed ({status}):\n{log}");
    }
    let restored_pid = restored_pid.expect("criu wrote a pidfile");
    assert_eq!(comm(restored_pid as u32), "sleep");
    drop(guard);
}
