//! Finding a container by what the admin typed: its CTID or its name (vzctl's `--name`), and
//! keeping the two apart: a name is never another container's CTID or name, and a new CTID is
//! never another container's name, so every word points at one container at most.

use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;

/// The global action scripts are `<data>/conf/vps.<action>` (vzctl's names): `vps` cannot be a
/// CTID, or its scripts would run for every container.
pub const RESERVED_CTID: &str = "vps";

/// The CTID of the container `word` names on this host: the container whose CTID it is, else
/// the one whose name it is.
pub fn resolve(host: &Host, word: &str) -> Result<Ctid> {
    if let Ok(ct) = Ctid::new(word) {
        if host.config_path(&ct).exists() {
            return Ok(ct);
        }
    }
    if let Some(ct) = by_name(host, word)? {
        return Ok(ct);
    }
    match Ctid::new(word) {
        // The usual message, naming the config file that is missing.
        Ok(ct) => crate::container::load_config(host, &ct).map(|c| c.ctid),
        Err(_) => {
            Err(Error::not_found(word, "find", "no container has this CTID or name; `ferry list -a -o ctid,name` shows the containers of this host"))
        }
    }
}

/// The container whose name is `name`, if any.
pub fn by_name(host: &Host, name: &str) -> Result<Option<Ctid>> {
    for ct in host.list_ctids().map_err(|e| Error::io("read", host.conf_dir(), e))? {
        // A config that does not load cannot carry a name anyone relies on.
        if let Ok(cfg) = ContainerConfig::load(&host.config_path(&ct)) {
            if cfg.name.as_deref() == Some(name) {
                return Ok(Some(ct));
            }
        }
    }
    Ok(None)
}

/// Check a name: the characters of a CTID (it is typed where a CTID goes).
pub fn check_name(name: &str) -> Result<()> {
    Ctid::new(name).map(|_| ()).map_err(|_| {
        Error::Invalid(format!("invalid name {name:?}: use 1 to 64 characters from [A-Za-z0-9_.-], not '.' or '..' (it is typed where a CTID goes)"))
    })
}

/// `name` may become the name of `ct`: valid, and no other container's CTID or name.
pub fn check_name_free(host: &Host, ct: &Ctid, name: &str) -> Result<()> {
    check_name(name)?;
    let taken = |why: String| Error::Exists { ctid: ct.to_string(), op: "set name", msg: why };
    if name != ct.as_str() && host.config_path(&Ctid::new(name)?).exists() {
        return Err(taken(format!("{name} is the CTID of another container; a name must not hide a CTID")));
    }
    match by_name(host, name)? {
        Some(other) if &other != ct => Err(taken(format!("container {other} is named {name} already; pick another name"))),
        _ => Ok(()),
    }
}

/// `ct` may be the CTID of a new container: not reserved, and no container is named so.
pub fn check_new_ctid(host: &Host, ct: &Ctid) -> Result<()> {
    if ct.as_str() == RESERVED_CTID {
        return Err(Error::Invalid(format!(
            "CTID {RESERVED_CTID} is reserved: {}/{RESERVED_CTID}.<action> are the global action scripts; pick another CTID",
            host.conf_dir().display()
        )));
    }
    match by_name(host, ct.as_str())? {
        Some(other) => Err(Error::Exists {
            ctid: ct.to_string(),
            op: "create",
            msg: format!("container {other} is named {ct}; pick another CTID (or rename it with `ferry set {other} --name NEW --save`)"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(d: &std::path::Path, cts: &[(&str, Option<&str>)]) -> Host {
        let h = Host::new(d.join("data"), d.join("run"), "t");
        for (ct, name) in cts {
            let mut c = ContainerConfig::new(Ctid::new(ct).unwrap());
            c.name = name.map(str::to_string);
            c.save(&h.config_path(&c.ctid)).unwrap();
        }
        h
    }

    #[test]
    fn names_resolve_and_stay_apart_from_ctids() {
        let d = tempfile::tempdir().unwrap();
        let h = host_with(d.path(), &[("101", Some("web")), ("102", None)]);
        let c = |s: &str| Ctid::new(s).unwrap();
        assert_eq!(resolve(&h, "101").unwrap(), c("101"));
        assert_eq!(resolve(&h, "web").unwrap(), c("101"));
        assert!(matches!(resolve(&h, "nosuch"), Err(Error::NotFound { .. })));
        assert!(matches!(resolve(&h, "a b"), Err(Error::NotFound { .. })));
        // Taken: another's CTID, another's name; one's own name again is fine.
        assert!(matches!(check_name_free(&h, &c("102"), "101"), Err(Error::Exists { .. })));
        assert!(matches!(check_name_free(&h, &c("102"), "web"), Err(Error::Exists { .. })));
        check_name_free(&h, &c("101"), "web").unwrap();
        check_name_free(&h, &c("102"), "db").unwrap();
        assert!(matches!(check_name_free(&h, &c("102"), "a/b"), Err(Error::Invalid(_))));
        // A new CTID may not be an existing name, nor the reserved word.
        assert!(matches!(check_new_ctid(&h, &c("web")), Err(Error::Exists { .. })));
        assert!(matches!(check_new_ctid(&h, &c("vps")), Err(Error::Invalid(_))));
        check_new_ctid(&h, &c("103")).unwrap();
    }
}
