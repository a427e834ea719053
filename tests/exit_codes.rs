//! Exit codes by error class (docs/exit-codes.md), as an admin's script sees them on a
//! simulated host: usage 20, invalid value 21, locked 9, not found 14, exists 44, not running
//! 31, already running 32, not mounted 40, already mounted 41, CRIU dump 16 and restore 17,
//! action script 79; the same class and code in --json output; `exec` and `enter` exit with
//! the command's own status and 125 for ferry's own failures. (Host config 10: host_config.rs;
//! the migration classes: migrate.rs.)

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::io::Write;
use support::TestHost;
use topology::Topology;

fn code(h: &TestHost, args: &[&str]) -> Option<i32> {
    h.ferry(args).status.code()
}

#[test]
fn every_class_has_its_code() {
    if !support::need_root("exit codes") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let tpl = h.template.to_str().unwrap();
    h.ok(&["create", "c1", "--template", tpl]);

    // Usage: clap's own errors and incomplete command lines found later.
    assert_eq!(code(&h, &["start"]), Some(20));
    assert_eq!(code(&h, &["bogus-verb"]), Some(20));
    assert_eq!(code(&h, &["list", "--no-such-flag"]), Some(20));
    h.fails_with(20, &["set", "c1"]);
    h.fails_with(20, &["set", "c1", "--ram", "64M"]);
    assert_eq!(code(&h, &["--help"]), Some(0));
    // Invalid values.
    h.fails_with(21, &["set", "c1", "--ram", "64Q", "--save"]);
    h.fails_with(21, &["set", "c1", "--diskspace", "1048576", "--save"]);
    h.fails_with(21, &["create", "c2", "--template", tpl, "--hostname", "bad host"]);
    h.fails_with(21, &["create", "a/b", "--template", tpl]);
    assert_eq!(code(&h, &["restart", "c1", "--timeout", "soon"]), Some(21));
    // Not found, exists.
    h.fails_with(14, &["status", "nosuch"]);
    h.fails_with(14, &["start", "nosuch"]);
    h.fails_with(14, &["destroy", "nosuch"]);
    h.fails_with(44, &["create", "c1", "--template", tpl]);
    // Not running / already running.
    h.fails_with(31, &["stop", "c1"]);
    h.fails_with(31, &["checkpoint", "c1"]);
    h.ok(&["start", "c1"]);
    h.fails_with(32, &["start", "c1"]);
    h.fails_with(32, &["mount", "c1"]);
    h.fails_with(32, &["destroy", "c1"]);
    // Locked: another operation holds it.
    let host = ferry_runtime::Host::new(&h.data, &h.run, h.cgroup_parent.clone());
    let lock = ferry_runtime::lock::ContainerLock::acquire(&host, &ferry_runtime::Ctid::new("c1").unwrap(), "migrate").unwrap();
    let e = h.fails_with(9, &["stop", "c1"]);
    assert!(e.contains("migrate"), "{e}");
    drop(lock);
    h.ok(&["stop", "c1"]);
    // Mounted or not.
    h.fails_with(40, &["umount", "c1"]);
    h.ok(&["mount", "c1"]);
    h.fails_with(41, &["mount", "c1"]);
    h.ok(&["umount", "c1"]);
    // An action script that fails.
    std::fs::write(h.data.join("conf/c1.premount"), "exit 3\n").unwrap();
    let e = h.fails_with(79, &["start", "c1"]);
    assert!(e.contains("c1.premount") && e.contains("exit status: 3"), "{e}");
    std::fs::remove_file(h.data.join("conf/c1.premount")).unwrap();
    h.assert_clean();

    // The same in --json, on stdout.
    for (args, class, c) in [
        (&["status", "nosuch", "--json"][..], "not-found", 14),
        (&["list", "-j", "nosuch"][..], "not-found", 14),
        (&["list", "-j", "-o", "bogus"][..], "usage", 20),
    ] {
        let o = h.ferry(args);
        assert_eq!(o.status.code(), Some(c), "{args:?}");
        let v: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!((v["error"]["class"].as_str(), v["error"]["code"].as_i64()), (Some(class), Some(c as i64)), "{args:?}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(if c == 14 { "nosuch" } else { "bogus" }));
    }
}

#[test]
fn criu_failures_have_their_codes() {
    if !support::need_root("criu exit codes")
        || !std::process::Command::new("sh").arg("-c").arg("command -v criu").status().is_ok_and(|s| s.success())
    {
        eprintln!("criu_failures_have_their_codes: skipped: needs root and criu");
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    h.ok(&["create", "k1", "--template", h.template.to_str().unwrap()]);
    h.ok(&["start", "k1"]);
    h.hold_host_file("k1");
    h.fails_with(16, &["checkpoint", "k1"]);
    h.exec("k1", "pkill sleep || killall sleep; true");
    // A damaged checkpoint: CRIU cannot restore it.
    let dir = h.dir.path().join("images");
    h.ok(&["checkpoint", "k1", "--images-dir", dir.to_str().unwrap()]);
    let pstree = dir.join("pstree.img");
    let len = std::fs::metadata(&pstree).unwrap().len() as usize;
    std::fs::write(&pstree, vec![0xa5u8; len]).unwrap();
    let e = h.fails_with(17, &["restore", "k1", "--images-dir", dir.to_str().unwrap()]);
    assert!(e.contains("restore"), "{e}");
    assert_eq!(h.ok(&["status", "k1"]).trim(), "k1 stopped");
    h.assert_clean();
}

#[test]
fn exec_and_enter_exit_with_the_commands_status_and_125_for_their_own_failures() {
    if !support::need_root("exec codes") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    h.ok(&["create", "x1", "--template", h.template.to_str().unwrap()]);
    // ferry's own failures: no such container, not running.
    let e = h.fails_with(125, &["exec", "nosuch", "--", "true"]);
    assert!(e.contains("nosuch"), "{e}");
    h.fails_with(125, &["exec", "x1", "--", "true"]);
    h.fails_with(125, &["enter", "x1"]);
    h.fails_with(125, &["exec2", "x1", "--", "true"]);
    h.ok(&["start", "x1"]);
    // The command's own.
    assert_eq!(code(&h, &["exec", "x1", "--", "sh", "-c", "exit 31"]), Some(31));
    assert_eq!(code(&h, &["exec", "x1", "--", "/no/such/command"]), Some(127));
    h.exec("x1", "echo echo > /root/noexec; chmod 644 /root/noexec");
    assert_eq!(code(&h, &["exec", "x1", "--", "/root/noexec"]), Some(126));
    // enter --exec runs the command on the container's terminal and exits with its status.
    let c = h.cmd().args(["enter", "x1", "--exec", "sh", "-c", "tty; exit 7"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&o.stdout).contains("/dev/pts/"), "{}", String::from_utf8_lossy(&o.stdout));
    let mut c = h.cmd().args(["enter", "x1"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(b"exit 5\n").unwrap();
    assert_eq!(c.wait_with_output().unwrap().status.code(), Some(5));
    assert_eq!(code(&h, &["enter", "x1", "--exec", "/no/such/command"]), Some(127));
    h.ok(&["stop", "x1"]);
}
