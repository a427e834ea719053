//! `set`: hostname and passwords live (vzctl semantics: live without --save, persisted with
//! it), capabilities and devices persisted for the next start.

use anyhow::{bail, Result};
use ferry_runtime::cgroups::DeviceRule;
use ferry_runtime::container::{self, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{capabilities, Host};

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    pub ctid: String,
    #[arg(long)]
    pub hostname: Option<String>,
    /// USER:PASSWORD; the user is created if missing.
    #[arg(long)]
    pub userpasswd: Vec<String>,
    /// NAME:on|off (e.g. SYS_TIME:on); takes effect on the next start.
    #[arg(long)]
    pub capability: Vec<String>,
    /// Extra device allowed, TYPE:MAJOR:MINOR[:ACCESS] (e.g. c:10:200:rw); next start.
    #[arg(long)]
    pub devices: Vec<String>,
    /// Persist the settings in the container's config.
    #[arg(long)]
    pub save: bool,
}

pub fn set(h: &Host, a: SetArgs) -> Result<u8> {
    let ct = super::ctid(&a.ctid)?;
    let mut cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "set")?;
    let running = container::status(h, &ct)?.0 == Status::Running;
    if a.hostname.is_none() && a.userpasswd.is_empty() && a.capability.is_empty() && a.devices.is_empty() {
        bail!("container {ct}: set: nothing to change; see `ferry set --help`");
    }
    if (!a.capability.is_empty() || !a.devices.is_empty()) && !a.save {
        bail!("container {ct}: set: capabilities and devices cannot change in a running container; add --save (they take effect on the next start)");
    }
    if a.hostname.is_some() && !running && !a.save {
        bail!("container {ct}: set: container is not running, so --hostname without --save changes nothing; add --save");
    }
    // Validate everything before changing anything.
    let mut sec = cfg.security.clone();
    for c in &a.capability {
        capabilities::set_capability(&mut sec, c)?;
    }
    for d in &a.devices {
        DeviceRule::parse(d)?;
        if !sec.devices.contains(d) {
            sec.devices.push(d.clone());
        }
    }
    if let Some(hn) = &a.hostname {
        if running {
            container::set_hostname_live(h, &ct, hn)?;
        } else {
            ferry_runtime::container::check_hostname(hn)?;
        }
    }
    for up in &a.userpasswd {
        container::set_userpasswd(h, &ct, up)?;
    }
    if a.save {
        if let Some(hn) = &a.hostname {
            cfg.hostname = Some(hn.clone());
        }
        let sec_changed = sec != cfg.security;
        cfg.security = sec;
        cfg.save(&h.config_path(&ct))?;
        if sec_changed && running {
            println!("capabilities/devices saved; they take effect on the next start (`ferry restart {ct}`)");
        }
    }
    drop(lock);
    println!("container {ct}: settings applied{}", if a.save { " and saved" } else { "" });
    Ok(0)
}
