//! Action scripts, as vzctl's: files in `<data>/conf/` that ferry runs when a container is
//! mounted, started, stopped or unmounted. `vps.<action>` runs for every container (first),
//! `<CTID>.<action>` for that one.
//!
//! | action     | when                                  | where                    | global |
//! |------------|---------------------------------------|--------------------------|--------|
//! | premount   | before its root is mounted            | host                     | yes    |
//! | mount      | right after its root is mounted       | host                     | yes    |
//! | start      | right after it started                | inside the container     | no     |
//! | stop       | right before it is stopped            | inside the container     | no     |
//! | umount     | before its root is unmounted          | host                     | yes    |
//! | postumount | right after its root is unmounted     | host                     | yes    |
//!
//! Host scripts run as root on the host, executed directly when executable, else by
//! `/bin/sh`. Scripts run inside are read on the host and their text runs as `/bin/sh -c` in
//! the container, with the container's namespaces, cgroup and capabilities. Every script gets
//! `VEID` (the CTID) and `VE_CONFFILE` (its config) as vzctl gave them, plus `VE_ROOT` and
//! `VE_PRIVATE` (vzctl's scripts read those from its shell-syntax config, which ferry's TOML
//! is not). A script that exits non-zero fails the operation (vzctl's exit code 79): premount,
//! mount and start undo the start or mount; stop, umount and postumount failures during a
//! stop are warnings, since the container must stop anyway.

use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lookup::RESERVED_CTID;
use std::path::PathBuf;

/// When an action script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Premount,
    Mount,
    Start,
    Stop,
    Umount,
    Postumount,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Premount => "premount",
            Action::Mount => "mount",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Umount => "umount",
            Action::Postumount => "postumount",
        }
    }

    /// Start and stop scripts run inside the container; the others on the host.
    pub fn inside(self) -> bool {
        matches!(self, Action::Start | Action::Stop)
    }
}

/// The scripts of `action` for `cfg`'s container that exist, in the order they run: the
/// global one (host actions only), then the container's.
pub fn scripts(host: &Host, cfg: &ContainerConfig, action: Action) -> Vec<PathBuf> {
    let dir = host.conf_dir();
    let mut v = Vec::new();
    if !action.inside() {
        v.push(dir.join(format!("{RESERVED_CTID}.{}", action.name())));
    }
    v.push(dir.join(format!("{}.{}", cfg.ctid, action.name())));
    v.retain(|p| p.is_file());
    v
}

/// The variables every action script gets.
pub fn environment(host: &Host, cfg: &ContainerConfig) -> Vec<(&'static str, String)> {
    let ct = &cfg.ctid;
    vec![
        ("VEID", ct.to_string()),
        ("VE_CONFFILE", host.config_path(ct).display().to_string()),
        ("VE_ROOT", host.root_dir(ct).display().to_string()),
        ("VE_PRIVATE", host.private_dir(ct).display().to_string()),
    ]
}

fn failed(cfg: &ContainerConfig, action: Action, script: &std::path::Path, msg: String) -> Error {
    Error::ActionScript { ctid: cfg.ctid.to_string(), action: action.name(), script: script.to_path_buf(), msg }
}

/// Run the host scripts of `action` (premount, mount, umount, postumount); the first that
/// fails stops the rest.
pub fn run_on_host(host: &Host, cfg: &ContainerConfig, action: Action) -> Result<()> {
    debug_assert!(!action.inside());
    for script in scripts(host, cfg, action) {
        use std::os::unix::fs::PermissionsExt;
        let executable = std::fs::metadata(&script).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
        let mut cmd = if executable {
            std::process::Command::new(&script)
        } else {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg(&script);
            c
        };
        cmd.envs(environment(host, cfg)).stdin(std::process::Stdio::null());
        let status = cmd.status().map_err(|e| failed(cfg, action, &script, format!("cannot run it: {e}")))?;
        if !status.success() {
            return Err(failed(cfg, action, &script, format!("exited with {status}; fix or remove the script")));
        }
    }
    Ok(())
}

/// Run the container's start or stop script inside it (it must run).
pub fn run_inside(host: &Host, cfg: &ContainerConfig, action: Action) -> Result<()> {
    debug_assert!(action.inside());
    for script in scripts(host, cfg, action) {
        let text = std::fs::read_to_string(&script).map_err(|e| failed(cfg, action, &script, format!("read: {e}")))?;
        let mut sh = String::new();
        for (k, v) in environment(host, cfg) {
            sh.push_str(&format!("{k}='{}'; export {k}\n", v.replace('\'', "'\\''")));
        }
        sh.push_str(&text);
        let code = crate::container::exec_detached(host, &cfg.ctid, &["/bin/sh".to_string(), "-c".to_string(), sh])
            .map_err(|e| failed(cfg, action, &script, e.to_string()))?;
        if code != 0 {
            return Err(failed(cfg, action, &script, format!("exited with status {code} inside the container; fix or remove the script")));
        }
    }
    Ok(())
}

/// [`run_on_host`] where a failure must not stop the operation: logged as a warning.
pub fn run_on_host_or_warn(host: &Host, cfg: &ContainerConfig, action: Action) {
    if let Err(e) = run_on_host(host, cfg, action) {
        tracing::warn!("{e}");
        eprintln!("ferry: warning: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctid::Ctid;

    #[test]
    fn global_first_then_the_containers_and_only_on_the_host() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path().join("data"), d.path().join("run"), "t");
        let cfg = ContainerConfig::new(Ctid::new("101").unwrap());
        std::fs::create_dir_all(h.conf_dir()).unwrap();
        for f in ["vps.mount", "101.mount", "101.start", "vps.start", "102.mount"] {
            std::fs::write(h.conf_dir().join(f), "true\n").unwrap();
        }
        let names = |a| scripts(&h, &cfg, a).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert_eq!(names(Action::Mount), ["vps.mount", "101.mount"]);
        assert_eq!(names(Action::Start), ["101.start"], "no global start script, as vzctl");
        assert!(names(Action::Umount).is_empty());
        let out = d.path().join("out");
        std::fs::write(h.conf_dir().join("101.umount"), format!("echo \"$VEID $VE_ROOT\" > {}\n", out.display())).unwrap();
        run_on_host(&h, &cfg, Action::Umount).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), format!("101 {}", h.root_dir(&cfg.ctid).display()));
        std::fs::write(h.conf_dir().join("vps.postumount"), "exit 3\n").unwrap();
        let e = run_on_host(&h, &cfg, Action::Postumount).unwrap_err();
        assert!(matches!(e, Error::ActionScript { .. }) && e.to_string().contains("vps.postumount"), "{e}");
    }
}
