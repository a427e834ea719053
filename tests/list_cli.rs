//! `ferry list` as vzlist users call it, on a simulated host: CTIDs or names to list, -a, -S,
//! -1, -j, -L, -s [-]FIELD, -n, -N/-d/--hostname patterns, --human, and the fields name,
//! description, onboot, bootorder, uptime, cpus, iolimit, iopslimit, ioprio, capability.

mod support;
#[path = "support/topology.rs"]
mod topology;

use support::TestHost;
use topology::Topology;

fn lines(s: &str) -> Vec<Vec<String>> {
    s.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn vzlist_options_and_fields() {
    if !support::need_root("vzlist") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    // Limits are among the fields shown: this test needs their controllers.
    if !h.has_controllers_for("vzlist_options_and_fields", &["cpus", "iolimit", "iopslimit", "ioprio", "ram"]) {
        return;
    }
    let tpl = h.template.to_str().unwrap();
    h.ok(&["create", "101", "--template", tpl, "--name", "web", "--description", "front", "--onboot", "yes", "--bootorder", "20"]);
    h.ok(&["create", "20", "--template", tpl, "--hostname", "db1", "--name", "db", "--bootorder", "90", "--cpus", "1"]);
    h.ok(&["create", "3", "--template", tpl, "--iolimit", "10M", "--iopslimit", "300", "--ioprio", "6", "--ram", "64M"]);
    h.ok(&["set", "3", "--capability", "NET_RAW:off", "--features", "nesting:on", "--save"]);
    h.ok(&["start", "101"]);
    h.ok(&["start", "3"]);

    // Default: running only, CTIDs in numeric order; -a all; -S the others.
    assert_eq!(h.ok(&["list", "-1"]), "3\n101\n");
    assert_eq!(h.ok(&["list", "-a", "-1"]), "3\n20\n101\n");
    assert_eq!(h.ok(&["list", "-S", "-1"]), "20\n");
    // Named containers, by CTID or name, whatever their status.
    assert_eq!(h.ok(&["list", "-1", "db", "101"]), "20\n101\n");
    assert!(h.fails_with(14, &["list", "nosuch"]).contains("nosuch"));
    // Sorting, ascending and descending, unset last.
    assert_eq!(h.ok(&["list", "-a", "-1", "-s", "-bootorder"]), "20\n101\n3\n");
    assert_eq!(h.ok(&["list", "-a", "-1", "-s", "bootorder"]), "101\n20\n3\n");
    h.fails_with(20, &["list", "-s", "nofield"]);
    // The new fields.
    let l = lines(&h.ok(&["list", "-a", "-H", "-o", "ctid,name,description,onboot,bootorder,cpus,iolimit,iopslimit,ioprio,capability,features"]));
    assert_eq!(
        l,
        [
            ["3", "-", "-", "-", "-", "-", "10485760", "300", "6", "NET_RAW:off", "nesting:on"],
            ["20", "db", "-", "-", "90", "1", "-", "-", "-", "-", "-"],
            ["101", "web", "front", "yes", "20", "-", "-", "-", "-", "-", "-"],
        ]
    );
    let l = lines(&h.ok(&["list", "-H", "--human", "-o", "ctid,iolimit,ram,uptime", "3"]));
    assert_eq!((l[0][1].as_str(), l[0][2].as_str()), ("10M", "64M"));
    assert!(l[0][3].starts_with("00:00:"), "uptime as h:m:s: {l:?}");
    let raw = lines(&h.ok(&["list", "-H", "-o", "uptime", "3"]));
    assert!(raw[0][0].parse::<u64>().is_ok(), "{raw:?}");
    // -n shows the name where the hostname was.
    let l = h.ok(&["list", "-n", "101"]);
    assert!(l.starts_with("CTID") && l.contains("NAME") && l.lines().nth(1).unwrap().ends_with("web"), "{l}");
    // Patterns, as vzlist's -N, -d, -h (here --hostname: -h stays help).
    assert_eq!(h.ok(&["list", "-a", "-1", "-N", "d*"]), "20\n");
    assert_eq!(h.ok(&["list", "-a", "-1", "-d", "fr?nt"]), "101\n");
    assert_eq!(h.ok(&["list", "-a", "-1", "--hostname", "db[0-9]"]), "20\n");
    // -j is --json: every field unless -o.
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["list", "-j", "101"])).unwrap();
    assert_eq!(v[0]["name"], "web");
    assert_eq!(v[0]["onboot"], true);
    assert!(v[0]["uptime"].as_u64().is_some(), "{v}");
    assert_eq!(v[0]["features"], serde_json::json!([]));
    // userns: the mapping of an unprivileged container, - for a privileged one.
    h.ok(&["create", "40", "--template", tpl, "--userns", "on"]);
    h.ok(&["create", "41", "--template", tpl, "--userns", "off"]);
    let l = lines(&h.ok(&["list", "-H", "-o", "ctid,userns", "40", "41"]));
    let first = h.range_first("40").expect("an unprivileged container has a range");
    assert_eq!(l, [["40".to_string(), format!("0:{first}:65536")], ["41".to_string(), "-".to_string()]]);
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["list", "-j", "-o", "userns", "40", "41"])).unwrap();
    assert_eq!(v, serde_json::json!([{"userns": format!("0:{first}:65536")}, {"userns": null}]));
    // -L lists every field with its meaning.
    let fields = h.ok(&["list", "-L"]);
    for f in
        ["ctid", "name", "description", "onboot", "bootorder", "uptime", "cpus", "iolimit", "iopslimit", "ioprio", "capability", "features", "userns"]
    {
        assert!(fields.lines().any(|l| l.split_whitespace().next() == Some(f)), "-L lacks {f}:\n{fields}");
    }
    // -h is help.
    assert!(h.ok(&["list", "-h"]).contains("Usage"));
    h.ok(&["stop", "101"]);
    h.ok(&["stop", "3"]);
}
