//! create, start, stop, restart, status, destroy.

use anyhow::Result;
use ferry_runtime::container::{self, CreateOptions, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub ctid: String,
    /// A directory tree or a .tar / .tar.zst / .tar.gz archive.
    #[arg(long)]
    pub template: PathBuf,
    #[arg(long)]
    pub hostname: Option<String>,
    /// What runs as PID 1 (split on spaces; default /sbin/init or a built-in keep-alive).
    #[arg(long)]
    pub init: Option<String>,
}

pub fn create(h: &Host, a: CreateArgs) -> Result<u8> {
    let ct = super::ctid(&a.ctid)?;
    let lock = ContainerLock::acquire(h, &ct, "create")?;
    let opts = CreateOptions {
        template: a.template,
        hostname: a.hostname,
        init: a.init.map(|s| s.split_whitespace().map(str::to_string).collect()),
    };
    match container::create(h, &lock, &opts) {
        Ok(_) => {
            println!("container {ct} created");
            Ok(0)
        }
        Err(e) => {
            // Nothing of a failed create may remain, not even its lock file.
            if !h.config_path(&ct).exists() {
                let _ = std::fs::remove_file(h.lock_path(&ct));
            }
            Err(e.into())
        }
    }
}

pub fn start(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "start")?;
    let st = container::start(h, &lock, &cfg)?;
    println!("container {ct} started (pid {})", st.pid);
    Ok(0)
}

pub fn stop(h: &Host, ct: &str, timeout: u64) -> Result<u8> {
    let ct = super::ctid(ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "stop")?;
    super::checkpoint::thaw_stale(h, &lock);
    container::stop(h, &lock, &cfg, Duration::from_secs(timeout))?;
    println!("container {ct} stopped");
    Ok(0)
}

pub fn restart(h: &Host, ct: &str, timeout: u64) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "restart")?;
    let st = container::restart(h, &lock, Duration::from_secs(timeout))?;
    println!("container {ct} restarted (pid {})", st.pid);
    Ok(0)
}

pub fn status(h: &Host, ct: &str, json: bool) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let (st, state) = container::status(h, &ct)?;
    let pid = state.as_ref().map(|s| s.pid);
    if json {
        println!("{}", serde_json::json!({ "ctid": ct.as_str(), "status": st, "pid": pid }));
    } else {
        match pid {
            Some(p) if st == Status::Running => println!("{ct} {st} pid {p}"),
            _ => println!("{ct} {st}"),
        }
    }
    Ok(0)
}

pub fn destroy(h: &Host, ct: &str, force: bool) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "destroy")?;
    container::destroy(h, &lock, force)?;
    println!("container {ct} destroyed");
    Ok(0)
}
