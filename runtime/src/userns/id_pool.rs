//! The host's pool of IDs for unprivileged containers, as the host setting `userns_pool`
//! names it (`auto`: root's entry in /etc/subuid and /etc/subgid, else [`DEFAULT_POOL`]; or
//! `FIRST:COUNT`). Which ranges are taken from it is [`super::pool`]'s.

use super::{IdMap, CONTAINER_IDS};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The pool when neither the host config nor /etc/subuid names one: a billion IDs from one
/// million up (Incus and LXD use the same), 15258 containers' worth.
pub const DEFAULT_POOL: IdPool = IdPool { first: 1_000_000, count: 1_000_000_000 };

/// The lowest first ID a pool may have: below it live the host's own users and groups.
pub const LOWEST_POOL_ID: u32 = 65_536;

/// A range of host IDs containers take their ranges from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPool {
    pub first: u32,
    pub count: u32,
}

impl IdPool {
    /// How many containers' ranges fit.
    pub fn slots(&self) -> u32 {
        self.count / CONTAINER_IDS
    }

    pub(super) fn holds(&self, m: &IdMap) -> bool {
        m.host_first >= self.first && u64::from(m.host_first) + u64::from(m.count) <= u64::from(self.first) + u64::from(self.count)
    }

    fn check(self) -> std::result::Result<IdPool, String> {
        if self.first < LOWEST_POOL_ID {
            return Err(format!("pool {self} starts below {LOWEST_POOL_ID}, among the host's own users; start it at {LOWEST_POOL_ID} or above"));
        }
        if u64::from(self.first) + u64::from(self.count) > u64::from(u32::MAX) {
            return Err(format!("pool {self} ends beyond the largest ID {}", u32::MAX));
        }
        if self.count < CONTAINER_IDS {
            return Err(format!("pool {self} holds fewer than the {CONTAINER_IDS} IDs of one container"));
        }
        Ok(self)
    }
}

impl std::fmt::Display for IdPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.first, self.count)
    }
}

/// The `userns_pool` host setting: `auto` or `FIRST:COUNT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IdPoolSetting {
    #[default]
    Auto,
    Range(IdPool),
}

impl std::str::FromStr for IdPoolSetting {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(IdPoolSetting::Auto);
        }
        let bad = || format!("invalid ID pool {s:?}: use auto or FIRST:COUNT, e.g. 1000000:1000000000");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let pool = IdPool { first: a.trim().parse().map_err(|_| bad())?, count: b.trim().parse().map_err(|_| bad())? };
        pool.check().map(IdPoolSetting::Range)
    }
}

impl TryFrom<String> for IdPoolSetting {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<IdPoolSetting> for String {
    fn from(s: IdPoolSetting) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for IdPoolSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdPoolSetting::Auto => f.write_str("auto"),
            IdPoolSetting::Range(p) => p.fmt(f),
        }
    }
}

impl IdPoolSetting {
    /// The pool this setting names on this host.
    pub fn resolve(&self) -> Result<IdPool> {
        match self {
            IdPoolSetting::Range(p) => Ok(*p),
            IdPoolSetting::Auto => {
                let read = |f: &str| std::fs::read_to_string(f).ok().and_then(|t| root_subid(&t));
                Ok(match (read("/etc/subuid"), read("/etc/subgid")) {
                    (Some(u), Some(g)) => common(u, g)
                        .and_then(|p| p.check().ok())
                        .ok_or_else(|| Error::Invalid(format!(
                            "root's /etc/subuid range {u} and /etc/subgid range {g} have no common part of {CONTAINER_IDS} IDs at {LOWEST_POOL_ID} or above: give both files the same root entry, or set userns_pool in the host config"
                        )))?,
                    _ => DEFAULT_POOL,
                })
            }
        }
    }
}

/// root's first entry (`root:FIRST:COUNT` or `0:FIRST:COUNT`) of /etc/subuid or /etc/subgid.
pub fn root_subid(text: &str) -> Option<IdPool> {
    text.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split(':');
        let who = f.next()?;
        if who != "root" && who != "0" {
            return None;
        }
        Some(IdPool { first: f.next()?.trim().parse().ok()?, count: f.next()?.trim().parse().ok()? })
    })
}

fn common(a: IdPool, b: IdPool) -> Option<IdPool> {
    let first = a.first.max(b.first);
    let end = (u64::from(a.first) + u64::from(a.count)).min(u64::from(b.first) + u64::from(b.count));
    (end > u64::from(first)).then(|| IdPool { first, count: (end - u64::from(first)) as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_check() {
        assert_eq!("auto".parse::<IdPoolSetting>().unwrap(), IdPoolSetting::Auto);
        let p: IdPoolSetting = "200000:131072".parse().unwrap();
        assert_eq!(p, IdPoolSetting::Range(IdPool { first: 200_000, count: 131_072 }));
        assert_eq!(p.to_string(), "200000:131072");
        for bad in ["", "1:2:3", "x:65536", "100000", "1000:65536", "100000:100", "4294000000:1000000"] {
            assert!(bad.parse::<IdPoolSetting>().is_err(), "{bad}");
        }
        assert!("1000:65536".parse::<IdPoolSetting>().unwrap_err().contains("host's own users"));
    }

    #[test]
    fn subid_files() {
        let t = "# users\nalice:100000:65536\nroot:1000000:1000000000\n";
        assert_eq!(root_subid(t), Some(IdPool { first: 1_000_000, count: 1_000_000_000 }));
        assert_eq!(root_subid("0:300000:65536\n"), Some(IdPool { first: 300_000, count: 65_536 }));
        assert_eq!(root_subid("alice:100000:65536\n"), None);
        let a = IdPool { first: 100_000, count: 200_000 };
        let b = IdPool { first: 200_000, count: 200_000 };
        assert_eq!(common(a, b), Some(IdPool { first: 200_000, count: 100_000 }));
        assert_eq!(common(a, IdPool { first: 400_000, count: 10 }), None);
    }
}
