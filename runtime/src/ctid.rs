//! Container IDs: `[A-Za-z0-9_.-]{1,64}`, never `.` or `..` (they are used as path components).

use crate::error::{Error, Result};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ctid(String);

impl Ctid {
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Ctid(s.to_string()))
        } else {
            Err(Error::InvalidCtid(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short stable tag for kernel object names limited to 15 bytes (interfaces): the CTID
    /// itself when it fits, else a hash of it.
    pub fn short_tag(&self, room: usize) -> String {
        if self.0.len() <= room && !self.0.contains('.') {
            self.0.clone()
        } else {
            let h = blake3::hash(self.0.as_bytes()).to_hex();
            h[..room.min(16)].to_string()
        }
    }
}

impl TryFrom<String> for Ctid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Ctid::new(&s)
    }
}

impl From<Ctid> for String {
    fn from(c: Ctid) -> String {
        c.0
    }
}

impl fmt::Display for Ctid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Ctid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ctid::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["101", "web-1", "a.b_c", &"x".repeat(64)] {
            assert!(Ctid::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65), "a\0b"] {
            assert!(Ctid::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_tag_fits() {
        let c = Ctid::new("101").unwrap();
        assert_eq!(c.short_tag(8), "101");
        let long = Ctid::new("a-very-long-container-name").unwrap();
        assert_eq!(long.short_tag(8).len(), 8);
        assert_ne!(long.short_tag(8), Ctid::new("a-very-long-container-namf").unwrap().short_tag(8));
    }
}
