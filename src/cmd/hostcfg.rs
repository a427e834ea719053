//! The host's settings for this run (`--host-config`, the global flags, `FERRY_*`, the file;
//! see `ferry_runtime::host_config`) and `ferry host-config`, which shows them.

use super::Cli;
use anyhow::Result;
use ferry_runtime::host_config::{self, Flags, Loaded, KEYS};

/// Load the settings: the global flags first, then what the runtime's loader adds.
pub fn load(cli: &Cli) -> Result<Loaded> {
    let mut flags = Flags::default();
    if let Some(d) = &cli.data_dir {
        flags.set("data_dir", d.display().to_string());
    }
    if let Some(d) = &cli.run_dir {
        flags.set("run_dir", d.display().to_string());
    }
    if let Some(c) = &cli.cgroup_parent {
        flags.set("cgroup_parent", c.clone());
    }
    if let Some(m) = cli.cgroup_mode {
        flags.set("cgroup_mode", m.as_str());
    }
    let (path, named) = host_config::config_path(cli.host_config.as_deref(), &host_config::process_env);
    Ok(host_config::load(&path, named, &flags, &host_config::process_env)?)
}

/// `ferry host-config [--json]`.
pub fn show(l: &Loaded, json: bool) -> Result<u8> {
    let value = serde_json::to_value(&l.settings)?;
    if json {
        let settings: serde_json::Map<String, serde_json::Value> = KEYS
            .iter()
            .map(|k| (k.name.to_string(), serde_json::json!({ "value": value[k.name], "source": l.source(k.name), "env": k.env })))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "file": l.file, "settings": settings }))?);
        return Ok(0);
    }
    match &l.file {
        Some(f) => println!("# host config {}", f.display()),
        None => println!("# no host config file ({} does not exist): defaults", host_config::DEFAULT_PATH),
    }
    for k in KEYS {
        let v = match &value[k.name] {
            serde_json::Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let src = l.source(k.name).map(|s| format!("{s:?}").to_lowercase()).unwrap_or_default();
        println!("{} = {v}  # {src}; {}", k.name, k.env);
    }
    Ok(0)
}
