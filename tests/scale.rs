//! Fifty containers created, started, listed and stopped.

mod support;
use support::{need_root, TestHost};

#[test]
fn fifty_containers() {
    if !need_root("fifty") {
        return;
    }
    let h = TestHost::new();
    let tpl = h.template.to_str().unwrap().to_string();
    let names: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        h.ok(&["create", n, "--template", &tpl]);
    }
    for n in &names {
        h.ok(&["start", n]);
    }
    let out = h.ok(&["list", "-H", "-o", "ctid,status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 50, "{out}");
    assert!(lines.iter().all(|l| l.ends_with("running")));
    let pids: std::collections::HashSet<i32> = names.iter().map(|n| h.pid(n)).collect();
    assert_eq!(pids.len(), 50);
    for n in &names {
        h.ok(&["stop", n]);
    }
    assert_eq!(h.ok(&["list", "-H", "-o", "ctid"]), "");
    assert_eq!(h.ok(&["list", "-a", "-H", "-o", "ctid"]).lines().count(), 50);
    h.assert_clean();
}
