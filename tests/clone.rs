//! `restore --from-image IMG --new-id CT2 CT`: a clone of a container under a new CTID on a
//! simulated host where the original still runs: refused while its addresses would clash,
//! then up with its processes and memory, its own name, MACs and addresses (the old venet
//! address gone from inside it, the new one routed), the original untouched.

mod support;
#[path = "support/topology.rs"]
mod topology;

use support::TestHost;
use topology::Topology;

#[test]
fn a_clone_under_a_new_ctid_runs_beside_the_original() {
    let test = "a_clone_under_a_new_ctid_runs_beside_the_original";
    if !support::need_root(test) || !std::process::Command::new("sh").arg("-c").arg("command -v criu").status().is_ok_and(|s| s.success()) {
        eprintln!("{test}: skipped: needs root and criu");
        return;
    }
    let t = Topology::new(1, 0);
    let node = t.host(0).clone();
    t.run_in_ok(&node, "ip link add brc0 type bridge && ip link set brc0 up");
    let h = TestHost::in_netns(&node.netns_path());
    let (ip_a, ip_b) = (t.ct_ip4(51).to_string(), t.ct_ip4(52).to_string());
    h.ok(&["create", "101", "--template", h.template.to_str().unwrap(), "--name", "orig", "--ipadd", &ip_a, "--netif", "eth0:brc0"]);
    h.ok(&["start", "101"]);
    h.start_counter("101");
    h.ok(&["snapshot", "create", "101"]);
    let snaps: serde_json::Value = serde_json::from_str(&h.ok(&["snapshot", "list", "101", "--json"])).unwrap();
    let id = snaps["snapshots"][0]["id"].as_str().unwrap().to_string();
    let img = h.dir.path().join("101.img");
    h.ok(&["snapshot", "export", "101", &id, img.to_str().unwrap()]);
    // (Empty when the snapshot froze the counter between its truncate and its write: 0.)
    let at_snapshot = std::fs::read_to_string(h.data.join(format!("snapshots/101/{id}/files/root/ctr"))).unwrap().trim().parse::<u64>().unwrap_or(0);

    // Its address is the running original's: refused, nothing made.
    let e = h.fails_with(21, &["restore", "101", "--from-image", img.to_str().unwrap(), "--new-id", "201"]);
    assert!(e.contains(&ip_a) && e.contains("--ipdel"), "{e}");
    assert!(!h.data.join("conf/201.toml").exists() && !h.data.join("private/201").exists());
    // Its name is the original's: refused.
    h.fails_with(44, &["restore", "101", "--from-image", img.to_str().unwrap(), "--new-id", "201", "--name", "orig", "--ipdel", "all"]);

    let out =
        h.ok(&["restore", "101", "--from-image", img.to_str().unwrap(), "--new-id", "201", "--name", "copy", "--ipdel", "all", "--ipadd", &ip_b]);
    assert!(out.contains("clone of 101"), "{out}");
    // Both run; the clone's counter goes on from the snapshot's memory.
    for ct in ["101", "copy"] {
        assert!(h.ok(&["status", ct]).contains("running"), "{ct}");
    }
    support::wait_for("the clone's counter to go on", || h.counter("201") > at_snapshot + 3);
    // Its own addresses inside and on the host; its own MAC on the bridge.
    let inside = h.exec("copy", "ip -o addr show dev venet0");
    assert!(inside.contains(&ip_b) && !inside.contains(&ip_a), "{inside}");
    let routes = t.run_in_ok(&node, "ip -4 route");
    assert!(routes.lines().any(|l| l.starts_with(&ip_b) && l.contains("fv201")), "{routes}");
    assert!(routes.lines().any(|l| l.starts_with(&ip_a) && l.contains("fv101")), "the original lost its route: {routes}");
    let mac = |ct: &str| h.exec(ct, "cat /sys/class/net/eth0/address").trim().to_string();
    assert_ne!(mac("101"), mac("201"));
    let conf = std::fs::read_to_string(h.data.join("conf/201.toml")).unwrap();
    assert!(conf.contains(&mac("201")) && conf.contains("name = \"copy\"") && conf.contains("hostname = \"101\""), "{conf}");
    let l = h.ok(&["list", "-H", "-o", "ctid,name,ip"]);
    assert_eq!(l, format!("101 orig {ip_a}\n201 copy {ip_b}\n"));
    for ct in ["101", "201"] {
        h.ok(&["stop", ct]);
    }
    h.ok(&["destroy", "201"]);
    h.ok(&["destroy", "101"]);
    assert!(t.leftovers(&node).is_empty(), "{:?}", t.leftovers(&node));
}
