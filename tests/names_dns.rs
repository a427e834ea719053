//! Names, descriptions and DNS settings through the `ferry` command on a simulated host: a
//! name works wherever a CTID does and never hides another container; --nameserver and
//! --searchdomain write the container's /etc/resolv.conf from inside, and a container that
//! points that file (or the temp file next to it) at a host file by symlink gets the link
//! replaced, never the host file written.

mod support;
#[path = "support/topology.rs"]
mod topology;

use support::TestHost;
use topology::Topology;

#[test]
fn a_name_goes_wherever_a_ctid_does_and_never_hides_another_container() {
    if !support::need_root("names") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let tpl = h.template.to_str().unwrap();
    h.ok(&["create", "101", "--template", tpl, "--name", "web", "--description", "the front end"]);
    h.ok(&["create", "102", "--template", tpl]);
    h.ok(&["start", "web"]);
    assert_eq!(h.exec("web", "hostname").trim(), "101");
    let s: serde_json::Value = serde_json::from_str(&h.ok(&["status", "web", "--json"])).unwrap();
    assert_eq!((s["ctid"].as_str(), s["name"].as_str(), s["status"].as_str()), (Some("101"), Some("web"), Some("running")));
    let l = h.ok(&["list", "-H", "-o", "ctid,name,description", "web"]);
    assert_eq!(l.trim(), "101 web the front end");
    h.ok(&["set", "web", "--hostname", "www1"]);
    assert_eq!(h.exec("web", "hostname").trim(), "www1");
    h.ok(&["stop", "web"]);

    // Taken: another's name, another's CTID; a new CTID may not be an existing name.
    let e = h.fails_with(44, &["set", "102", "--name", "web", "--save"]);
    assert!(e.contains("named web"), "{e}");
    let e = h.fails_with(44, &["set", "102", "--name", "101", "--save"]);
    assert!(e.contains("CTID of another container"), "{e}");
    let e = h.fails_with(44, &["create", "web", "--template", tpl]);
    assert!(e.contains("named web"), "{e}");
    assert!(!h.data.join("conf/web.toml").exists());
    // Saved only.
    h.fails_with(20, &["set", "102", "--name", "db"]);
    // A rename frees the old name.
    h.ok(&["set", "web", "--name", "www", "--save"]);
    h.fails_with(14, &["status", "web"]);
    h.ok(&["status", "www"]);
    h.ok(&["set", "102", "--name", "web", "--save"]);
    assert!(h.ok(&["status", "web"]).starts_with("102 "));
    h.ok(&["delete", "web"]);
    assert!(!h.data.join("conf/102.toml").exists());
}

/// The container's /etc/resolv.conf and the untouched host file.
fn resolv(h: &TestHost, ct: &str) -> String {
    let p = h.data.join(format!("private/{ct}/etc/resolv.conf"));
    assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file(), "{} is not a regular file", p.display());
    std::fs::read_to_string(p).unwrap()
}

/// Point the container's /etc/resolv.conf and its temp name at `victim` (a host path).
fn plant_links(h: &TestHost, ct: &str, victim: &std::path::Path) {
    for name in ["resolv.conf", "resolv.conf.ferry-tmp"] {
        let p = h.data.join(format!("private/{ct}/etc/{name}"));
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(victim, &p).unwrap();
    }
}

#[test]
fn dns_settings_write_resolv_conf_inside_and_never_through_a_link() {
    if !support::need_root("dns") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let victim = h.dir.path().join("host-resolv.conf");
    std::fs::write(&victim, "nameserver 198.18.0.1 # the host's own\n").unwrap();
    h.ok(&["create", "d1", "--template", h.template.to_str().unwrap()]);
    std::fs::write(h.data.join("private/d1/etc/resolv.conf"), "options ndots:2\nnameserver 10.9.9.9\n").unwrap();

    // Stopped, not saved: written now, other lines kept.
    h.ok(&["set", "d1", "--nameserver", "198.18.0.53", "--nameserver", "2001:db8::53", "--searchdomain", "example.org"]);
    assert_eq!(resolv(&h, "d1"), "search example.org\nnameserver 198.18.0.53\nnameserver 2001:db8::53\noptions ndots:2\n");

    // Running: the container points the file at a host path.
    h.ok(&["start", "d1"]);
    plant_links(&h, "d1", &victim);
    h.ok(&["set", "d1", "--nameserver", "198.18.0.54"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "nameserver 198.18.0.1 # the host's own\n", "the host file was written");
    assert_eq!(resolv(&h, "d1"), "nameserver 198.18.0.54\n");
    assert_eq!(h.exec("d1", "cat /etc/resolv.conf"), "nameserver 198.18.0.54\n");
    // Saved: written again at every start, also over a link planted meanwhile.
    h.ok(&["set", "d1", "--searchdomain", "lab.example", "--save"]);
    h.ok(&["stop", "d1"]);
    plant_links(&h, "d1", &victim);
    h.ok(&["start", "d1"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "nameserver 198.18.0.1 # the host's own\n");
    assert_eq!(resolv(&h, "d1"), "search lab.example\n", "the saved search domain");
    // Stopped with a link: replaced, the host file untouched.
    h.ok(&["stop", "d1"]);
    plant_links(&h, "d1", &victim);
    h.ok(&["set", "d1", "--nameserver", "198.18.0.55", "--save"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "nameserver 198.18.0.1 # the host's own\n");
    assert_eq!(resolv(&h, "d1"), "search lab.example\nnameserver 198.18.0.55\n");
    let conf = std::fs::read_to_string(h.data.join("conf/d1.toml")).unwrap();
    assert!(conf.contains("198.18.0.55") && conf.contains("lab.example"), "{conf}");
    // Bad values change nothing.
    let e = h.fails_with(21, &["set", "d1", "--nameserver", "dns.example", "--save"]);
    assert!(e.contains("not an IP address"), "{e}");
    assert_eq!(resolv(&h, "d1"), "search lab.example\nnameserver 198.18.0.55\n");
}
