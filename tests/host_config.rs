//! The host config file through the `ferry` command on a simulated host: a flag beats the
//! FERRY_* variable, which beats the file, which beats the default; the file's paths and
//! cgroup parent are where containers land; an unknown key is refused with its line; a named
//! file that is missing is an error (exit code 10), and `host-config` says where each value
//! came from. The machine's /etc/ferry is never read: every command names its file.

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::process::{Command, Output};
use support::TestHost;
use topology::Topology;

/// ferry on `h`'s netns with nothing but the host config file saying where things are.
fn bare(h: &TestHost, config: &std::path::Path) -> Command {
    let mut c = h.cmd();
    for v in ["FERRY_DATA_DIR", "FERRY_RUN_DIR", "FERRY_CGROUP_PARENT"] {
        c.env_remove(v);
    }
    c.env("FERRY_HOST_CONFIG", config);
    c
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    if !support::need_root("host config precedence") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let conf = h.dir.path().join("etc-ferry.toml");
    std::fs::write(
        &conf,
        format!(
            "# this host\ndata_dir = \"{}\"\nrun_dir = \"{}\"\ncgroup_parent = \"{}\"\nstop_mode = \"suspend\"\n",
            h.data.display(),
            h.run.display(),
            h.cgroup_parent
        ),
    )
    .unwrap();
    let tpl = h.template.to_str().unwrap();

    // The file alone: the container lands in its data dir, runs with its run dir and cgroup.
    ok(bare(&h, &conf).args(["create", "f1", "--template", tpl]).output().unwrap());
    assert!(h.data.join("conf/f1.toml").is_file());
    ok(bare(&h, &conf).args(["start", "f1"]).output().unwrap());
    assert!(h.run.join("f1/state.json").is_file());
    // Its cgroup is under the file's parent, in a v1 hierarchy or on the cgroup2 mount.
    let cg: Vec<_> =
        ["pids", "unified", ""].iter().map(|m| std::path::Path::new("/sys/fs/cgroup").join(m).join(&h.cgroup_parent).join("f1")).collect();
    assert!(cg.iter().any(|p| p.is_dir()), "no cgroup of f1 under {}: {cg:?}", h.cgroup_parent);
    ok(bare(&h, &conf).args(["stop", "f1"]).output().unwrap());

    // The environment beats the file, a flag beats both.
    let env_data = h.dir.path().join("env-data");
    let flag_data = h.dir.path().join("flag-data");
    ok(bare(&h, &conf).env("FERRY_DATA_DIR", &env_data).args(["create", "e1", "--template", tpl]).output().unwrap());
    assert!(env_data.join("conf/e1.toml").is_file() && !h.data.join("conf/e1.toml").exists());
    let o = bare(&h, &conf)
        .env("FERRY_DATA_DIR", &env_data)
        .args(["--data-dir", flag_data.to_str().unwrap(), "create", "g1", "--template", tpl])
        .output()
        .unwrap();
    ok(o);
    assert!(flag_data.join("conf/g1.toml").is_file() && !env_data.join("conf/g1.toml").exists());

    // host-config says where each value came from.
    let o = bare(&h, &conf).env("FERRY_RUN_DIR", "/run/elsewhere").args(["--cgroup-parent", "x/y", "host-config", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
    let s = &v["settings"];
    assert_eq!(v["file"], conf.to_str().unwrap());
    assert_eq!((s["data_dir"]["source"].as_str(), s["data_dir"]["value"].as_str()), (Some("file"), h.data.to_str()));
    assert_eq!((s["run_dir"]["source"].as_str(), s["run_dir"]["value"].as_str()), (Some("environment"), Some("/run/elsewhere")));
    assert_eq!((s["cgroup_parent"]["source"].as_str(), s["cgroup_parent"]["value"].as_str()), (Some("flag"), Some("x/y")));
    assert_eq!((s["stop_mode"]["source"].as_str(), s["stop_mode"]["value"].as_str()), (Some("file"), Some("suspend")));
    // Without a file every value is the default.
    let empty = h.dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(bare(&h, &empty).args(["host-config", "--json"]).output().unwrap())).unwrap();
    assert_eq!(v["settings"]["data_dir"]["value"], "/var/lib/ferry");
    assert_eq!(v["settings"]["data_dir"]["source"], "default");
}

#[test]
fn a_wrong_host_config_is_refused_with_its_line() {
    if !support::need_root("host config errors") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let conf = h.dir.path().join("bad.toml");
    std::fs::write(&conf, format!("data_dir = \"{}\"\n# a typo:\nstop-mode = \"suspend\"\n", h.data.display())).unwrap();
    for args in [&["list", "-a"][..], &["start", "--all"], &["status", "x"]] {
        let o = bare(&h, &conf).args(args).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(10), "{args:?}: {e}");
        assert!(e.contains("line 3") && e.contains("stop-mode") && e.contains(conf.to_str().unwrap()), "{e}");
    }
    std::fs::write(&conf, "stop_mode = \"hibernate\"\n").unwrap();
    let o = bare(&h, &conf).args(["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hibernate"));
    // A named file that is not there.
    let o = bare(&h, &h.dir.path().join("absent.toml")).args(["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", String::from_utf8_lossy(&o.stderr));
    // A bad value in the environment is the admin's value: invalid value, 21.
    let good = h.dir.path().join("good.toml");
    std::fs::write(&good, "").unwrap();
    let o = bare(&h, &good).env("FERRY_STOP_MODE", "nap").args(["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(21), "{}", String::from_utf8_lossy(&o.stderr));
    // Commands that need no host still work: images are images.
    let o = bare(&h, &conf).args(["image", "verify", "/nonexistent.img"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("host config"), "{}", String::from_utf8_lossy(&o.stderr));
}
