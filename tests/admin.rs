//! What an OpenVZ admin reaches for, on a simulated host: action scripts (vps.ACTION and
//! CTID.ACTION: mount and umount on the host, start and stop inside, with vzctl's
//! environment), mount/umount of a stopped container, runscript, --applyconfig and
//! create --config with the shipped sample configs, and vzctl's spellings (chkpnt,
//! --netif_add, --netif_del, BARRIER:LIMIT).

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::path::Path;
use support::TestHost;
use topology::Topology;

#[test]
fn action_scripts_run_where_vzctl_runs_them_with_its_environment() {
    if !support::need_root("action scripts") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    h.ok(&["create", "101", "--template", h.template.to_str().unwrap()]);
    let log = h.dir.path().join("actions.log");
    let conf = h.data.join("conf");
    // Host scripts append to a host file; what the root holds shows they ran while mounted.
    for (file, action) in
        [("vps.premount", "premount"), ("vps.mount", "mount"), ("101.mount", "ct-mount"), ("vps.umount", "umount"), ("101.postumount", "postumount")]
    {
        std::fs::write(
            conf.join(file),
            format!(
                "echo \"{action} $VEID $(test -e \"$VE_ROOT/bin/busybox\" && echo mounted || echo unmounted) $VE_CONFFILE\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
    }
    // Start and stop run inside: they see the container's hostname and write its files.
    std::fs::write(conf.join("101.start"), "echo \"start $VEID $(hostname)\" >> /root/actions\n").unwrap();
    std::fs::write(conf.join("101.stop"), "echo \"stop $VEID $(cat /proc/1/cmdline | head -c 7)\" >> /root/actions\n").unwrap();
    // A global start script does not exist in vzctl: it is not run.
    std::fs::write(conf.join("vps.start"), format!("echo global-start >> {}\n", log.display())).unwrap();

    h.ok(&["start", "101"]);
    h.ok(&["stop", "101"]);
    let cf = conf.join("101.toml");
    let host_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        host_log.lines().collect::<Vec<_>>(),
        [
            format!("premount 101 unmounted {}", cf.display()),
            format!("mount 101 mounted {}", cf.display()),
            format!("ct-mount 101 mounted {}", cf.display()),
            format!("umount 101 mounted {}", cf.display()),
            format!("postumount 101 unmounted {}", cf.display()),
        ]
    );
    let inside = std::fs::read_to_string(h.data.join("private/101/root/actions")).unwrap();
    assert_eq!(inside, "start 101 101\nstop 101 /bin/sh\n");

    // mount/umount of a stopped container run the same host scripts.
    std::fs::remove_file(&log).unwrap();
    let out = h.ok(&["mount", "101"]);
    assert!(out.contains(h.data.join("root/101").to_str().unwrap()), "{out}");
    assert!(h.data.join("root/101/bin/busybox").is_file());
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 mounted");
    h.ok(&["umount", "101"]);
    assert!(!h.data.join("root/101/bin/busybox").exists());
    let n = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(n, 5, "{}", std::fs::read_to_string(&log).unwrap());
    // A failing mount script undoes the start: nothing stays mounted or running.
    std::fs::write(conf.join("101.mount"), "exit 1\n").unwrap();
    let e = h.fails_with(79, &["start", "101"]);
    assert!(e.contains("101.mount"), "{e}");
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 stopped");
    // A failing start script (inside) stops it again.
    std::fs::remove_file(conf.join("101.mount")).unwrap();
    std::fs::write(conf.join("101.start"), "exit 4\n").unwrap();
    h.fails_with(79, &["start", "101"]);
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 stopped");
    h.assert_clean();
}

#[test]
fn runscript_applyconfig_samples_and_vzctl_spellings() {
    let test = "runscript_applyconfig_samples_and_vzctl_spellings";
    if !support::need_root(test) {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    // The samples are limits: this test needs the controllers they use.
    if !h.has_controllers_for(test, &["cpuunits", "cpulimit", "ram", "swap", "numproc", "ioprio"]) {
        return;
    }
    // The shipped samples, installed beside this host's config file.
    let samples = h.host_config.parent().unwrap().join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/host/samples")).unwrap().flatten() {
        std::fs::copy(e.path(), samples.join(e.file_name())).unwrap();
    }
    let tpl = h.template.to_str().unwrap();
    // create --config NAME: the sample's limits; an option given wins.
    h.ok(&["create", "101", "--template", tpl, "--config", "light", "--numproc", "99"]);
    let conf = || std::fs::read_to_string(h.data.join("conf/101.toml")).unwrap();
    let c = conf();
    assert!(c.contains("ram = 134217728") && c.contains("cpulimit = 50") && c.contains("numproc = 99") && c.contains("swap = 0"), "{c}");
    // --applyconfig NAME|FILE, saved; unknown keys refused with the line.
    h.ok(&["set", "101", "--applyconfig", "basic", "--save"]);
    let c = conf();
    assert!(c.contains("ram = 536870912") && c.contains("numproc = 256"), "{c}");
    let own = h.dir.path().join("mine.toml");
    std::fs::write(&own, "ram = \"1G\"\n\nnumprocs = 5\n").unwrap();
    let e = h.fails_with(21, &["set", "101", "--applyconfig", own.to_str().unwrap(), "--save"]);
    assert!(e.contains("line 3") && e.contains("numprocs"), "{e}");
    h.fails_with(21, &["set", "101", "--applyconfig", "nosuch", "--save"]);
    h.ok(&["set", "101", "--applyconfig", "unlimited", "--save"]);
    assert!(!conf().contains("ram ="), "{}", conf());
    // vzctl's BARRIER:LIMIT takes the limit.
    h.ok(&["set", "101", "--numproc", "80:100", "--save"]);
    assert!(conf().contains("numproc = 100"));

    // runscript: a host file run inside.
    h.ok(&["start", "101"]);
    let script = h.dir.path().join("script.sh");
    std::fs::write(&script, "hostname > /root/ran-by-script\nexit 6\n").unwrap();
    let o = h.ferry(&["runscript", "101", script.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6));
    assert_eq!(std::fs::read_to_string(h.data.join("private/101/root/ran-by-script")).unwrap().trim(), "101");

    // chkpnt is checkpoint; restore brings it back.
    h.ok(&["chkpnt", "101"]);
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 stopped suspended");
    h.ok(&["restore", "101"]);
    assert!(h.ok(&["status", "101"]).starts_with("101 running"));
    h.ok(&["stop", "101"]);

    // --netif_add with vzctl's grammar; --netif_del all.
    h.ok(&["set", "101", "--netif_add", "eth0,,,,br9", "--netif_add", "eth1,02:00:00:aa:bb:01", "--save"]);
    let c = conf();
    assert!(c.contains("name = \"eth0\"") && c.contains("bridge = \"br9\"") && c.contains("02:00:00:aa:bb:01"), "{c}");
    let e = h.fails_with(21, &["set", "101", "--netif_add", "eth2,,veth101.2,,br9", "--save"]);
    assert!(e.contains("HOST_IFNAME"), "{e}");
    h.ok(&["set", "101", "--netif_del", "all", "--save"]);
    assert!(!conf().contains("eth0"), "{}", conf());
}
