//! `--applyconfig NAME|FILE` (vzctl's, with `create --config`): a sample config's limits, as
//! if given as options. A sample is TOML with the limit options' names and their values as
//! the options take them (`ram = "512M"`, `numproc = 200`, `cpulimit = "50%"`); an unknown
//! key is refused with its line. NAME is `samples/NAME.toml` beside the host config file
//! (/etc/ferry/samples/); anything with a `/` or ending in `.toml` is a path. Options on the
//! command line win over the sample's.

use super::exit::bail_invalid;
use super::opts::ResArgs;
use anyhow::Result;
use ferry_runtime::host_config::Loaded;
use serde::Deserialize;
use std::path::PathBuf;

/// A value as written in a sample: text or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Value {
    Int(i64),
    Text(String),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Text(s) => s,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    cpuunits: Option<Value>,
    cpulimit: Option<Value>,
    cpumask: Option<Value>,
    cpus: Option<Value>,
    ram: Option<Value>,
    swap: Option<Value>,
    numproc: Option<Value>,
    numfiles: Option<Value>,
    diskspace: Option<Value>,
    ioprio: Option<Value>,
    iolimit: Option<Value>,
    iopslimit: Option<Value>,
}

/// Where the sample `arg` is.
pub fn sample_path(loaded: &Loaded, arg: &str) -> PathBuf {
    if arg.contains('/') || arg.ends_with(".toml") {
        PathBuf::from(arg)
    } else {
        loaded.samples_dir().join(format!("{arg}.toml"))
    }
}

/// The limits of the sample `text` (read from `path`) as options.
fn parse(path: &std::path::Path, text: &str) -> Result<ResArgs> {
    let s: Sample = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
        super::exit::invalid!("sample config {}: {}{}", path.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default(), e.message().trim())
    })?;
    let t = |v: Option<Value>| v.map(Value::text);
    Ok(ResArgs {
        cpuunits: t(s.cpuunits),
        cpulimit: t(s.cpulimit),
        cpumask: t(s.cpumask),
        cpus: t(s.cpus),
        ram: t(s.ram),
        swap: t(s.swap),
        numproc: t(s.numproc),
        numfiles: t(s.numfiles),
        diskspace: t(s.diskspace),
        ioprio: t(s.ioprio),
        iolimit: t(s.iolimit),
        iopslimit: t(s.iopslimit),
    })
}

/// `given` on top of the sample `arg`: what the command applies.
pub fn merged(loaded: &Loaded, arg: &str, given: &ResArgs) -> Result<ResArgs> {
    let path = sample_path(loaded, arg);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => bail_invalid!("--applyconfig {arg}: {}: {e}; samples are in {} (or give a path)", path.display(), loaded.samples_dir().display()),
    };
    let s = parse(&path, &text)?;
    let pick = |given: &Option<String>, sample: Option<String>| given.clone().or(sample);
    Ok(ResArgs {
        cpuunits: pick(&given.cpuunits, s.cpuunits),
        cpulimit: pick(&given.cpulimit, s.cpulimit),
        cpumask: pick(&given.cpumask, s.cpumask),
        cpus: pick(&given.cpus, s.cpus),
        ram: pick(&given.ram, s.ram),
        swap: pick(&given.swap, s.swap),
        numproc: pick(&given.numproc, s.numproc),
        numfiles: pick(&given.numfiles, s.numfiles),
        diskspace: pick(&given.diskspace, s.diskspace),
        ioprio: pick(&given.ioprio, s.ioprio),
        iolimit: pick(&given.iolimit, s.iolimit),
        iopslimit: pick(&given.iopslimit, s.iopslimit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_as_options_and_refuse_unknown_keys() {
        let p = std::path::Path::new("s.toml");
        let r = parse(p, "# small\nram = \"256M\"\nnumproc = 128\ncpulimit = \"50%\"\n").unwrap();
        assert_eq!((r.ram.as_deref(), r.numproc.as_deref(), r.cpulimit.as_deref()), (Some("256M"), Some("128"), Some("50%")));
        let e = parse(p, "ram = \"256M\"\n\nrma = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("rma"), "{e}");
        let e = parse(p, "hostname = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("hostname"), "{e}");
    }
}
