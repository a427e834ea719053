//! Unprivileged containers (`--userns on`): container root is an unprivileged user on the
//! host. Its files keep ordinary owners on disk and show the container's range through its
//! idmapped root; what its root leaves behind (a setuid program) acts for the range, never for
//! host root; ranges come from the host's pool, are never shared and go back with the
//! container. (Checkpoint, restore, snapshots and migration of such containers: the whole
//! suite's second pass with FERRY_TEST_USERNS=1, and the tests in migrate.rs that ask for
//! --userns on themselves.)

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use support::TestHost;

/// Files made inside are 0's inside and in the private area, the range's through the host's
/// view of the idmapped root; a setuid-root program made inside and copied out by host root
/// (owner and mode kept) to where a host user reaches it runs for that user as the range's
/// first uid, not as root; /proc/self/uid_map inside shows the range.
#[test]
fn root_files_belong_to_the_range_outside_and_a_setuid_copy_runs_as_the_range_not_root() {
    let test = "root_files_belong_to_the_range_outside_and_a_setuid_copy_runs_as_the_range_not_root";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    h.ok(&["create", "u", "--template", h.template.to_str().unwrap(), "--userns", "on"]);
    let bin = h.data.join("private/u/usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(h.static_helper("show_ids"), bin.join("show_ids")).unwrap();
    h.ok(&["start", "u"]);
    let first = h.range_first("u").expect("a range");
    assert!(first >= ferry_runtime::userns::pool::LOWEST_POOL_ID);

    // A file root makes inside, and one a user of the container makes.
    h.exec("u", "echo made > /root/made; su -s /bin/sh -c 'echo mine > /tmp/nobodys' nobody");
    assert_eq!(h.exec("u", "stat -c '%u %g' /root/made /tmp/nobodys").split_whitespace().collect::<Vec<_>>(), ["0", "0", "65534", "65534"]);
    let owner = |p: std::path::PathBuf| {
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.uid(), m.gid())
    };
    assert_eq!(owner(h.data.join("root/u/root/made")), (first, first), "through the idmapped root");
    assert_eq!(owner(h.data.join("private/u/root/made")), (0, 0), "on disk");
    assert_eq!(owner(h.data.join("root/u/tmp/nobodys")), (first + 65534, first + 65534));
    assert_eq!(owner(h.data.join("private/u/tmp/nobodys")), (65534, 65534));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(ferry_runtime::userns::idmapped::is_idmapped(&mounts, &h.data.join("root/u")), "the root is an idmapped mount");
    for f in ["uid_map", "gid_map"] {
        let m = h.exec("u", &format!("cat /proc/self/{f}"));
        assert_eq!(m.split_whitespace().collect::<Vec<_>>(), ["0", &first.to_string(), "65536"], "{f}: {m}");
    }
    // PID 1 runs as the range's root on the host.
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid("u"))).unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert!(uid.split_whitespace().all(|u| u == first.to_string()), "{uid}");

    // Root inside makes a setuid-root program; host root copies it out keeping owner and mode,
    // into a directory a host user can reach; that user runs it.
    h.exec("u", "cp /usr/local/bin/show_ids /suid && chown 0:0 /suid && chmod 4755 /suid");
    let reach = tempfile::Builder::new().prefix("ferry-t-reach").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(reach.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = reach.path().join("suid");
    let st = Command::new("cp").arg("-a").arg(h.data.join("root/u/suid")).arg(&copy).status().unwrap();
    assert!(st.success());
    let m = std::fs::metadata(&copy).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o4000), (first, 0o4000), "the copy is setuid and owned by the range's root");
    let out = Command::new(&copy).uid(65534).gid(65534).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["65534", &first.to_string()],
        "it ran as the range's root, not host root"
    );
    h.ok(&["stop", "u"]);
    h.assert_clean();
}

/// Ranges come from the pool of the host config, one per unprivileged container, never two
/// alike; an exhausted pool refuses a new one with the way out and leaves nothing; a range
/// goes back with destroy and with --userns off, which changes only a stopped container; a
/// checkpoint of the other kind is refused naming the setting that restores it.
#[test]
fn ranges_come_from_the_pool_never_twice_and_go_back_with_the_container() {
    let test = "ranges_come_from_the_pool_never_twice_and_go_back_with_the_container";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    h.add_host_config("userns_pool = \"4000000:131072\"\n");
    let tpl = h.template.to_str().unwrap();
    h.ok(&["create", "a", "--template", tpl, "--userns", "on"]);
    h.ok(&["create", "b", "--template", tpl, "--userns"]);
    let first = |ct: &str| h.range_first(ct);
    assert_eq!((first("a"), first("b")), (Some(4_000_000), Some(4_065_536)));
    // Full: refused, naming the pool and the ways out, and nothing of it is left.
    let e = h.fails(&["create", "c", "--template", tpl, "--userns", "on"]);
    assert!(e.contains("4000000:131072") && e.contains("userns_pool") && e.contains("--userns off"), "{e}");
    assert!(!h.data.join("conf/c.toml").exists() && !h.data.join("private/c").exists());
    h.ok(&["create", "c", "--template", tpl, "--userns", "off"]);
    assert_eq!(first("c"), None);

    // The kind changes only while stopped.
    h.ok(&["start", "a"]);
    let e = h.fails_with(32, &["set", "a", "--userns", "off", "--save"]);
    assert!(e.contains("ferry stop a"), "{e}");
    // A checkpoint of an unprivileged container does not restore into a privileged one.
    h.ok(&["suspend", "a"]);
    h.ok(&["set", "a", "--userns", "off", "--save"]);
    assert_eq!(first("a"), None, "--userns off frees the range");
    let e = h.fails(&["resume", "a"]);
    assert!(e.contains("unprivileged") && e.contains("--userns on"), "{e}");
    // Its range went back to the pool: the next container gets it.
    h.ok(&["create", "d", "--template", tpl, "--userns", "on"]);
    assert_eq!(first("d"), Some(4_000_000));
    h.fails(&["set", "a", "--userns", "on", "--save"]);
    h.ok(&["destroy", "b"]);
    h.ok(&["set", "a", "--userns", "on", "--save"]);
    assert_eq!(first("a"), Some(4_065_536), "destroy freed b's range");
    h.ok(&["resume", "a"]);
    assert!(h.exec("a", "cat /proc/self/uid_map").contains("4065536"), "restored under its new range");
    h.ok(&["stop", "a"]);
    for ct in ["a", "c", "d"] {
        h.ok(&["destroy", ct]);
    }
    h.assert_clean();
}

/// Devices: an unprivileged container cannot make device nodes, so it gets the host's node of
/// each device its rules name, bound into its /dev with the host's owner and mode (what the
/// host lets only its root open stays closed to the container's root); the bind survives a
/// checkpoint and restore; a rule for a class of devices is refused with the way out.
#[test]
fn device_rules_bind_the_hosts_nodes_and_a_class_of_devices_is_refused() {
    let test = "device_rules_bind_the_hosts_nodes_and_a_class_of_devices_is_refused";
    if !support::need_root(test) {
        return;
    }
    let Ok(host_tun) = std::fs::metadata("/dev/net/tun") else {
        eprintln!("{test}: skipped: this host has no /dev/net/tun to pass");
        return;
    };
    let h = TestHost::new();
    h.ok(&["create", "t", "--template", h.template.to_str().unwrap(), "--userns", "on"]);
    h.ok(&["set", "t", "--devices", "c:10:200:rw", "--save"]);
    h.ok(&["start", "t"]);
    let node = |h: &TestHost| h.exec("t", "stat -c '%F %t:%T' /dev/net/tun").trim().to_string();
    assert_eq!(node(&h), "character special file a:c8", "the host's node is bound in");
    let open = h.exec("t", "(exec 3<>/dev/net/tun) 2>&1 && echo opened || true");
    if host_tun.mode() & 0o006 == 0o006 {
        assert!(open.contains("opened"), "{open}");
    } else {
        assert!(open.contains("denied") && !open.contains("opened"), "the host's mode {:o} lets only its root open it: {open}", host_tun.mode());
    }
    h.ok(&["checkpoint", "t"]);
    h.ok(&["restore", "t"]);
    assert_eq!(node(&h), "character special file a:c8", "the bind came back with the restore");
    let e = h.fails(&["set", "t", "--devices", "c:10:*:rw", "--save"]);
    assert!(e.contains("class of devices") && e.contains("--userns off") && e.contains("nothing was changed"), "{e}");
    h.ok(&["stop", "t"]);
    h.assert_clean();
}

/// A data dir on a filesystem without idmapped mounts (ramfs here) cannot hold an unprivileged
/// container: create says so with the ways out and leaves nothing; a privileged one is fine.
#[test]
fn create_refuses_an_unprivileged_container_where_idmapped_mounts_do_not_work() {
    let test = "create_refuses_an_unprivileged_container_where_idmapped_mounts_do_not_work";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    std::fs::create_dir_all(&h.data).unwrap();
    let st = Command::new("mount").args(["-t", "ramfs", "ferry-t-ramfs"]).arg(&h.data).status().unwrap();
    assert!(st.success());
    let tpl = h.template.to_str().unwrap();
    let e = h.fails(&["create", "r", "--template", tpl, "--userns", "on"]);
    assert!(e.contains("idmapped mount") && e.contains("--userns off") && e.contains("container r: create"), "{e}");
    assert!(!h.data.join("conf/r.toml").exists() && !h.data.join("private/r").exists(), "nothing of it is left");
    h.ok(&["create", "r", "--template", tpl, "--userns", "off"]);
    h.ok(&["destroy", "r"]);
}
