//! Translation of ferry's resource limits into cgroup v1 and v2 file writes. Pure functions.

use super::{CgroupWrite, LimitContext};
use crate::config::Resources;
use crate::error::Result;

/// The writes that set `res` on a v1 host, in the order to apply them.
pub fn v1_writes(_res: &Resources, _ctx: &LimitContext) -> Result<Vec<CgroupWrite>> {
    Ok(Vec::new())
}

/// The writes that set `res` on a v2 host, in the order to apply them.
pub fn v2_writes(_res: &Resources, _ctx: &LimitContext) -> Result<Vec<CgroupWrite>> {
    Ok(Vec::new())
}
