//! The setting that says whether a container gets a user namespace of its own: `--userns
//! on|off` and the host setting `userns` (what `create` does when not told).

use crate::config::ContainerKind;
use serde::{Deserialize, Serialize};

/// `--userns on|off`, and the host setting `userns` (what `create` does when not told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Userns {
    /// A user namespace of its own: the unprivileged kind.
    On,
    /// None: the privileged kind.
    Off,
}

impl std::str::FromStr for Userns {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "on" | "yes" => Ok(Userns::On),
            "off" | "no" => Ok(Userns::Off),
            other => Err(format!("invalid userns setting {other:?}: use on or off")),
        }
    }
}

impl Userns {
    pub fn kind(self) -> ContainerKind {
        match self {
            Userns::On => ContainerKind::Unprivileged,
            Userns::Off => ContainerKind::Privileged,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Userns::On => "on",
            Userns::Off => "off",
        }
    }
}
