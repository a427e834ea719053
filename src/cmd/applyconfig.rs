//! `--applyconfig NAME|FILE` (vzctl's, with `create --config`): a sample config's limits, as
//! if given as options. A sample is TOML with the limit options' names and their values as
//! the options take them (`ram = "512M"`, `numproc = 200`, `cpulimit = "50%"`); an unknown
//! key is refused with its line. NAME is `samples/NAME.toml` beside the host config file
//! (/etc/ferry/samples/); anything with a `/` or ending in `.toml` is a path. Options on the
//! command line win over the sample's.

use super::exit::{bail_invalid, invalid};
use super::opts::ResArgs;
use anyhow::Result;
use ferry_runtime::host_config::Loaded;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

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
    let line = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<Spanned<String>, Value> = toml::from_str(text).map_err(|e| {
        let l = e.span().map(|sp| format!("line {}: ", line(sp.start))).unwrap_or_default();
        invalid!("sample config {}: {l}{}", path.display(), e.message().trim())
    })?;
    let mut r = ResArgs::default();
    for (key, value) in table {
        let mut slots = r.slots();
        let Some((_, slot)) = slots.iter_mut().find(|(n, _)| *n == key.get_ref()) else {
            let known: Vec<&str> = slots.iter().map(|(n, _)| *n).collect();
            bail_invalid!(
                "sample config {}: line {}: unknown key {:?}; a sample sets limits: {}",
                path.display(),
                line(key.span().start),
                key.get_ref(),
                known.join(", ")
            );
        };
        **slot = Some(value.text());
    }
    Ok(r)
}

/// `given` on top of the sample `arg`: what the command applies.
pub fn merged(loaded: &Loaded, arg: &str, given: &ResArgs) -> Result<ResArgs> {
    let path = sample_path(loaded, arg);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => bail_invalid!("--applyconfig {arg}: {}: {e}; samples are in {} (or give a path)", path.display(), loaded.samples_dir().display()),
    };
    Ok(given.clone().or(parse(&path, &text)?))
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
