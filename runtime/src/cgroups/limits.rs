//! Translation of ferry's resource limits into cgroup v1 and v2 file writes.
//!
//! [`v1_writes`] and [`v2_writes`] are pure: everything they need to know about the host comes in
//! a [`LimitContext`] (fill it with [`LimitContext::probe`]). They always emit a write for every
//! controller they manage, with the unlimited/default value for an unset limit, so applying the
//! full list both sets new limits and removes old ones (`ferry set` can unset a limit).
//!
//! Order matters and is part of the contract: a backend applies the writes in the order given.
//! - v1 cpuset: `cpuset.mems` before `cpuset.cpus` (a cpuset with no mems takes no tasks).
//! - v1 memory: `memory.memsw.limit_in_bytes` must never be below `memory.limit_in_bytes`.
//!   Without knowing the current values, one order always works: first lift memsw to
//!   unlimited (-1, always allowed), then set `memory.limit_in_bytes`, then set memsw to
//!   ram+swap (which is >= ram). Swap is briefly uncapped between the first and last write.
//!
//! Open files (`numfiles`) are not a cgroup: see [`numfiles_rlimit`] and
//! [`super::nofile::set_nofile`]. What the host offers comes from [`super::probe`].

use super::{CgroupMode, CgroupWrite, LimitContext};
use crate::config::{parse_cpumask, Resources};
use crate::error::{Error, Result};

/// The OpenVZ default of `cpuunits`.
pub const DEFAULT_CPUUNITS: u64 = 1000;
/// OpenVZ's upper bound of `cpuunits`.
pub const MAX_CPUUNITS: u64 = 500_000;
/// The OpenVZ default of `ioprio`, used when none is set so unset containers weigh the same.
pub const DEFAULT_IOPRIO: u8 = 4;
/// CFS period used for every CPU cap (100 ms, the kernel default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest RAM limit accepted: below this nothing, not even a shell, runs.
pub const MIN_RAM: u64 = 1 << 20;

fn bad(msg: impl Into<String>) -> Error {
    Error::Limit(msg.into())
}

/// Check `res` against the host described by `ctx`; every message says what to change.
pub fn validate(res: &Resources, ctx: &LimitContext) -> Result<()> {
    let ncpus = u64::from(ctx.ncpus.max(1));
    if let Some(u) = res.cpuunits {
        if u == 0 || u > MAX_CPUUNITS {
            return Err(bad(format!("cpuunits {u} is out of range: use 1..{MAX_CPUUNITS} (default {DEFAULT_CPUUNITS})")));
        }
    }
    if let Some(p) = res.cpulimit {
        if p == 0 {
            return Err(bad("cpulimit 0 would stop the container: use 1..100 per CPU (100 = one CPU), or unset it"));
        }
        if p > ncpus * 100 {
            return Err(bad(format!("cpulimit {p}% is more than this host's {ncpus} CPUs can give ({}%): lower it or unset it", ncpus * 100)));
        }
    }
    if let Some(n) = res.cpus {
        if n == 0 {
            return Err(bad("cpus 0 would stop the container: use 1 or more, or unset it"));
        }
        if n > ncpus {
            return Err(bad(format!("cpus {n} is more than this host has ({ncpus}): use 1..{ncpus}")));
        }
    }
    if let Some(m) = &res.cpumask {
        let cpus = parse_cpumask(m).map_err(bad)?;
        if let Some(&c) = cpus.iter().find(|&&c| c >= ctx.ncpus.max(1)) {
            return Err(bad(format!("cpumask {m:?} names CPU {c}, but this host has CPUs 0-{} only", ctx.ncpus.max(1) - 1)));
        }
    }
    if let Some(r) = res.ram {
        if r < MIN_RAM {
            return Err(bad(format!("ram {r} bytes is too small: use at least 1M")));
        }
        if let Some(used) = ctx.memory_usage {
            if r < used {
                return Err(bad(format!(
                    "ram {} is below what the container uses now ({}): stop some of its processes first or choose at least {}",
                    crate::config::format_size(r),
                    crate::config::format_size(used),
                    crate::config::format_size(used)
                )));
            }
        }
    }
    if res.swap.is_some() && res.ram.is_none() {
        return Err(bad("swap needs a ram limit (swap is limited on top of ram): set --ram too, or unset --swap"));
    }
    if let Some(n) = res.numproc {
        if n == 0 {
            return Err(bad("numproc 0 would forbid every process: use 1 or more, or unset it"));
        }
    }
    if let Some(n) = res.numfiles {
        if n == 0 {
            return Err(bad("numfiles 0 would forbid every open file: use 1 or more, or unset it"));
        }
    }
    if res.diskspace == Some(0) {
        return Err(bad("diskspace 0 leaves no room for the container's files: use a size such as 1G, or unset it"));
    }
    if let Some(p) = res.ioprio {
        if p > 7 {
            return Err(bad(format!("ioprio {p} is out of range: use 0 (lowest) .. 7 (highest), default {DEFAULT_IOPRIO}")));
        }
    }
    if res.iolimit == Some(0) {
        return Err(bad("iolimit 0 would stop all disk I/O: use a rate such as 10M, or unset it"));
    }
    if res.iopslimit == Some(0) {
        return Err(bad("iopslimit 0 would stop all disk I/O: use 1 or more, or unset it"));
    }
    Ok(())
}

/// The limits that need a cgroup controller: (name, v1 hierarchy, v2 controller). `numfiles`
/// (an rlimit) and `diskspace` (the disk backend) need none.
pub const CONTROLLED_LIMITS: [(&str, &str, &str); 10] = [
    ("cpuunits", "cpu", "cpu"),
    ("cpulimit", "cpu", "cpu"),
    ("cpus", "cpu", "cpu"),
    ("cpumask", "cpuset", "cpuset"),
    ("ram", "memory", "memory"),
    ("swap", "memory", "memory"),
    ("numproc", "pids", "pids"),
    ("ioprio", "blkio", "io"),
    ("iolimit", "blkio", "io"),
    ("iopslimit", "blkio", "io"),
];

/// Whether the limit named `name` (one of [`CONTROLLED_LIMITS`]) is set in `res`.
fn is_set(res: &Resources, name: &str) -> bool {
    match name {
        "cpuunits" => res.cpuunits.is_some(),
        "cpulimit" => res.cpulimit.is_some(),
        "cpus" => res.cpus.is_some(),
        "cpumask" => res.cpumask.is_some(),
        "ram" => res.ram.is_some(),
        "swap" => res.swap.is_some(),
        "numproc" => res.numproc.is_some(),
        "ioprio" => res.ioprio.is_some(),
        "iolimit" => res.iolimit.is_some(),
        "iopslimit" => res.iopslimit.is_some(),
        _ => false,
    }
}

/// Whether any limit of `res` needs a cgroup controller.
pub fn needs_a_controller(res: &Resources) -> bool {
    CONTROLLED_LIMITS.iter().any(|(name, _, _)| is_set(res, name))
}

/// (limit, controller) for every limit a cgroup with `controllers` cannot enforce under
/// `mode`, whether set or not (what `ferry check` lists).
pub fn unavailable_limits(mode: CgroupMode, controllers: &[String]) -> Vec<(&'static str, &'static str)> {
    CONTROLLED_LIMITS
        .iter()
        .map(|&(name, v1, v2)| (name, if mode == CgroupMode::V1 { v1 } else { v2 }))
        .filter(|(_, c)| !controllers.iter().any(|x| x == c))
        .collect()
}

/// Refuse the limits of `res` whose controller the container's cgroup does not have (a
/// hybrid host's cgroup v2 hierarchy offers hardly any): each is named with its controller,
/// never silently left out.
pub fn check_controllers(res: &Resources, mode: CgroupMode, controllers: &[String]) -> Result<()> {
    let missing: Vec<(&str, &str)> = unavailable_limits(mode, controllers).into_iter().filter(|(name, _)| is_set(res, name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let needs = missing.iter().map(|(l, c)| format!("{l} needs the {c} controller")).collect::<Vec<_>>().join(", ");
    let limits = missing.iter().map(|(l, _)| *l).collect::<Vec<_>>().join(", ");
    let mut ctls: Vec<&str> = missing.iter().map(|(_, c)| *c).collect();
    ctls.dedup();
    let have = if controllers.is_empty() { "none".to_string() } else { controllers.join(" ") };
    Err(bad(format!(
        "{needs}, which this host's cgroup {} hierarchy does not offer (it has: {have}): leave {limits} unset (`unlimited` lifts a \
         live one), or run ferry in a cgroup mode whose hierarchy has {} (FERRY_CGROUP_MODE, --cgroup-mode)",
        mode.as_str(),
        ctls.join(", ")
    )))
}

/// v1 `cpu.shares` for a `cpuunits` value (1000 units = 1024 shares), clamped to the kernel range.
pub fn cpu_shares(cpuunits: u64) -> u64 {
    (cpuunits.saturating_mul(1024) / 1000).clamp(2, 262_144)
}

/// v2 `cpu.weight` for a `cpuunits` value (1000 units = weight 100, the default), clamped to 1..10000.
pub fn cpu_weight(cpuunits: u64) -> u64 {
    (cpuunits / 10).clamp(1, 10_000)
}

/// The CFS quota in microseconds per [`CFS_PERIOD_US`]: the smaller of the two caps, or none.
pub fn cpu_quota_us(res: &Resources) -> Option<u64> {
    let by_limit = res.cpulimit.map(|p| p.saturating_mul(CFS_PERIOD_US / 100));
    let by_cpus = res.cpus.map(|n| n.saturating_mul(CFS_PERIOD_US));
    match (by_limit, by_cpus) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Block I/O weight for `ioprio` 0..7: 100 (lowest) to 1000 (highest), linear.
pub fn io_weight(ioprio: u8) -> u64 {
    100 + u64::from(ioprio.min(7)) * 900 / 7
}

/// The open-file limit to set as RLIMIT_NOFILE on the container's processes.
pub fn numfiles_rlimit(res: &Resources) -> Option<u64> {
    res.numfiles
}

fn all_cpus(ctx: &LimitContext) -> String {
    if !ctx.parent_cpus.trim().is_empty() {
        return ctx.parent_cpus.trim().to_string();
    }
    match ctx.ncpus {
        0 | 1 => "0".into(),
        n => format!("0-{}", n - 1),
    }
}

fn w(controller: &'static str, file: &str, value: impl ToString) -> CgroupWrite {
    CgroupWrite { controller, file: file.to_string(), value: value.to_string() }
}

fn need_device(res: &Resources, ctx: &LimitContext) -> Result<Option<(u32, u32)>> {
    if (res.iolimit.is_some() || res.iopslimit.is_some()) && ctx.block_device.is_none() {
        return Err(bad("iolimit/iopslimit need the block device that holds the private area, and none was found \
             (is it on a network or virtual filesystem?): unset them"));
    }
    Ok(ctx.block_device)
}

/// The writes for controllers the cgroup has. An unset limit of a missing controller needs
/// none: a cgroup without that controller is unlimited in it anyway ([`check_controllers`]
/// refused the set ones already).
fn only_offered(mut out: Vec<CgroupWrite>, ctx: &LimitContext) -> Vec<CgroupWrite> {
    out.retain(|w| ctx.controllers.iter().any(|c| c == w.controller));
    out
}

/// The writes that set `res` on a v1 host, in the order to apply them.
pub fn v1_writes(res: &Resources, ctx: &LimitContext) -> Result<Vec<CgroupWrite>> {
    validate(res, ctx)?;
    check_controllers(res, CgroupMode::V1, &ctx.controllers)?;
    let mut out = Vec::new();

    // cpuset: mems first, a cpuset without mems refuses tasks.
    let mems = if ctx.mems.trim().is_empty() { "0" } else { ctx.mems.trim() };
    out.push(w("cpuset", "cpuset.mems", mems));
    out.push(w("cpuset", "cpuset.cpus", res.cpumask.clone().unwrap_or_else(|| all_cpus(ctx))));

    // cpu: weight and cap.
    out.push(w("cpu", "cpu.shares", cpu_shares(res.cpuunits.unwrap_or(DEFAULT_CPUUNITS))));
    out.push(w("cpu", "cpu.cfs_period_us", CFS_PERIOD_US));
    out.push(w("cpu", "cpu.cfs_quota_us", cpu_quota_us(res).map_or("-1".to_string(), |q| q.to_string())));

    // memory: lift memsw, set mem, then set memsw (see the module docs for why).
    if res.swap.is_some() && !ctx.memsw {
        return Err(bad("swap cannot be limited on this host: the kernel does not account swap per cgroup \
             (no memory.memsw.limit_in_bytes; boot with swapaccount=1 to enable it): unset --swap"));
    }
    if ctx.memsw {
        out.push(w("memory", "memory.memsw.limit_in_bytes", "-1"));
    }
    out.push(w("memory", "memory.limit_in_bytes", res.ram.map_or("-1".to_string(), |r| r.to_string())));
    if ctx.memsw {
        if let (Some(ram), Some(swap)) = (res.ram, res.swap) {
            out.push(w("memory", "memory.memsw.limit_in_bytes", ram.saturating_add(swap)));
        }
    }

    out.push(w("pids", "pids.max", res.numproc.map_or("max".to_string(), |n| n.to_string())));

    // blkio: weight and throttles. "MAJ:MIN 0" removes a throttle rule.
    match (&ctx.io_weight_file, res.ioprio) {
        (Some(f), p) => out.push(w("blkio", f, io_weight(p.unwrap_or(DEFAULT_IOPRIO)))),
        (None, Some(_)) => {
            return Err(bad("ioprio cannot be applied: this host's blkio cgroup has neither blkio.bfq.weight nor blkio.weight: unset --ioprio"))
        }
        (None, None) => {}
    }
    if let Some((maj, min)) = need_device(res, ctx)? {
        let bps = res.iolimit.unwrap_or(0);
        let iops = res.iopslimit.unwrap_or(0);
        for (file, v) in [
            ("blkio.throttle.read_bps_device", bps),
            ("blkio.throttle.write_bps_device", bps),
            ("blkio.throttle.read_iops_device", iops),
            ("blkio.throttle.write_iops_device", iops),
        ] {
            out.push(w("blkio", file, format!("{maj}:{min} {v}")));
        }
    }
    Ok(only_offered(out, ctx))
}

/// The writes that set `res` on a v2 host, in the order to apply them. The controller field
/// names the v2 controller the file belongs to (it must be enabled in the parent's
/// `cgroup.subtree_control`).
pub fn v2_writes(res: &Resources, ctx: &LimitContext) -> Result<Vec<CgroupWrite>> {
    validate(res, ctx)?;
    check_controllers(res, CgroupMode::V2, &ctx.controllers)?;
    let mut out = Vec::new();

    // An empty cpuset.cpus on v2 means "inherit the parent's".
    out.push(w("cpuset", "cpuset.cpus", res.cpumask.clone().unwrap_or_default()));

    out.push(w("cpu", "cpu.weight", cpu_weight(res.cpuunits.unwrap_or(DEFAULT_CPUUNITS))));
    let quota = cpu_quota_us(res).map_or("max".to_string(), |q| q.to_string());
    out.push(w("cpu", "cpu.max", format!("{quota} {CFS_PERIOD_US}")));

    out.push(w("memory", "memory.max", res.ram.map_or("max".to_string(), |r| r.to_string())));
    // v2 limits swap on its own (not ram+swap), so no ordering constraint with memory.max.
    if ctx.memsw {
        out.push(w("memory", "memory.swap.max", res.swap.map_or("max".to_string(), |s| s.to_string())));
    } else if res.swap.is_some() {
        return Err(bad("swap cannot be limited on this host: memory.swap.max is missing (kernel built without \
             CONFIG_SWAP or swap accounting off): unset --swap"));
    }

    out.push(w("pids", "pids.max", res.numproc.map_or("max".to_string(), |n| n.to_string())));

    match (&ctx.io_weight_file, res.ioprio) {
        (Some(f), p) => {
            let weight = io_weight(p.unwrap_or(DEFAULT_IOPRIO));
            // io.weight's syntax is "default N"; io.bfq.weight accepts the bare number.
            let v = if f == "io.weight" { format!("default {weight}") } else { weight.to_string() };
            out.push(w("io", f, v));
        }
        (None, Some(_)) => {
            return Err(bad("ioprio cannot be applied: this host's cgroup has neither io.bfq.weight nor io.weight \
                 (is the io controller enabled?): unset --ioprio"))
        }
        (None, None) => {}
    }
    if let Some((maj, min)) = need_device(res, ctx)? {
        let bps = res.iolimit.map_or("max".to_string(), |v| v.to_string());
        let iops = res.iopslimit.map_or("max".to_string(), |v| v.to_string());
        out.push(w("io", "io.max", format!("{maj}:{min} rbps={bps} wbps={bps} riops={iops} wiops={iops}")));
    }
    Ok(only_offered(out, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Cgroup;
    use std::path::Path;

    fn ctx() -> LimitContext {
        LimitContext {
            ncpus: 2,
            block_device: Some((254, 0)),
            mems: "0".into(),
            parent_cpus: String::new(),
            memsw: true,
            io_weight_file: Some("blkio.bfq.weight".into()),
            memory_usage: None,
            controllers: super::super::V1_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
        }
    }
    fn ctx2() -> LimitContext {
        LimitContext {
            io_weight_file: Some("io.bfq.weight".into()),
            mems: String::new(),
            controllers: super::super::V2_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
            ..ctx()
        }
    }
    fn get<'a>(ws: &'a [CgroupWrite], file: &str) -> Vec<&'a str> {
        ws.iter().filter(|w| w.file == file).map(|w| w.value.as_str()).collect()
    }
    fn pos(ws: &[CgroupWrite], file: &str, value: &str) -> usize {
        ws.iter().position(|w| w.file == file && w.value == value).unwrap_or_else(|| panic!("{file}={value} in {ws:?}"))
    }

    #[test]
    fn v1_defaults_remove_every_limit() {
        let ws = v1_writes(&Resources::default(), &ctx()).unwrap();
        assert_eq!(get(&ws, "cpuset.mems"), ["0"]);
        assert_eq!(get(&ws, "cpuset.cpus"), ["0-1"]);
        assert_eq!(get(&ws, "cpu.shares"), ["1024"]);
        assert_eq!(get(&ws, "cpu.cfs_quota_us"), ["-1"]);
        assert_eq!(get(&ws, "memory.limit_in_bytes"), ["-1"]);
        assert_eq!(get(&ws, "memory.memsw.limit_in_bytes"), ["-1"]);
        assert_eq!(get(&ws, "pids.max"), ["max"]);
        assert_eq!(get(&ws, "blkio.bfq.weight"), [io_weight(DEFAULT_IOPRIO).to_string()]);
        assert_eq!(get(&ws, "blkio.throttle.write_bps_device"), ["254:0 0"]);
        assert_eq!(get(&ws, "blkio.throttle.read_iops_device"), ["254:0 0"]);
        assert!(pos(&ws, "cpuset.mems", "0") < pos(&ws, "cpuset.cpus", "0-1"));
    }

    #[test]
    fn v2_defaults_remove_every_limit() {
        let ws = v2_writes(&Resources::default(), &ctx2()).unwrap();
        assert_eq!(get(&ws, "cpuset.cpus"), [""]);
        assert_eq!(get(&ws, "cpu.weight"), ["100"]);
        assert_eq!(get(&ws, "cpu.max"), ["max 100000"]);
        assert_eq!(get(&ws, "memory.max"), ["max"]);
        assert_eq!(get(&ws, "memory.swap.max"), ["max"]);
        assert_eq!(get(&ws, "pids.max"), ["max"]);
        assert_eq!(get(&ws, "io.max"), ["254:0 rbps=max wbps=max riops=max wiops=max"]);
        assert!(ws.iter().all(|w| !w.file.starts_with("blkio")));
    }

    #[test]
    fn cpu_mappings() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(2000), 2048);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(MAX_CPUUNITS), 262_144);
        assert_eq!(cpu_weight(1000), 100);
        assert_eq!(cpu_weight(2000), 200);
        assert_eq!(cpu_weight(5), 1);
        assert_eq!(cpu_weight(MAX_CPUUNITS), 10_000);
        let r = Resources { cpuunits: Some(2000), cpulimit: Some(25), ..Default::default() };
        let ws = v1_writes(&r, &ctx()).unwrap();
        assert_eq!(get(&ws, "cpu.shares"), ["2048"]);
        assert_eq!(get(&ws, "cpu.cfs_period_us"), ["100000"]);
        assert_eq!(get(&ws, "cpu.cfs_quota_us"), ["25000"]);
        let ws = v2_writes(&r, &ctx2()).unwrap();
        assert_eq!(get(&ws, "cpu.weight"), ["200"]);
        assert_eq!(get(&ws, "cpu.max"), ["25000 100000"]);
    }

    #[test]
    fn smaller_cpu_cap_wins() {
        let r = Resources { cpulimit: Some(150), cpus: Some(1), ..Default::default() };
        assert_eq!(cpu_quota_us(&r), Some(100_000));
        let r = Resources { cpulimit: Some(50), cpus: Some(2), ..Default::default() };
        assert_eq!(cpu_quota_us(&r), Some(50_000));
        let r = Resources { cpus: Some(2), ..Default::default() };
        assert_eq!(get(&v1_writes(&r, &ctx()).unwrap(), "cpu.cfs_quota_us"), ["200000"]);
        assert_eq!(get(&v2_writes(&r, &ctx2()).unwrap(), "cpu.max"), ["200000 100000"]);
    }

    #[test]
    fn cpumask_and_mems() {
        let r = Resources { cpumask: Some("1".into()), ..Default::default() };
        let c = LimitContext { mems: "0-1".into(), ..ctx() };
        let ws = v1_writes(&r, &c).unwrap();
        assert_eq!(get(&ws, "cpuset.cpus"), ["1"]);
        assert_eq!(get(&ws, "cpuset.mems"), ["0-1"]);
        let c = LimitContext { mems: String::new(), ..ctx() };
        assert_eq!(get(&v1_writes(&r, &c).unwrap(), "cpuset.mems"), ["0"]);
        assert_eq!(get(&v2_writes(&r, &ctx2()).unwrap(), "cpuset.cpus"), ["1"]);
    }

    #[test]
    fn memory_order_always_valid_v1() {
        let r = Resources { ram: Some(64 << 20), swap: Some(32 << 20), ..Default::default() };
        let ws = v1_writes(&r, &ctx()).unwrap();
        let lift = pos(&ws, "memory.memsw.limit_in_bytes", "-1");
        let mem = pos(&ws, "memory.limit_in_bytes", &(64u64 << 20).to_string());
        let sw = pos(&ws, "memory.memsw.limit_in_bytes", &(96u64 << 20).to_string());
        assert!(lift < mem && mem < sw);
        // Simulate the kernel's rule (memsw >= mem) from any starting point.
        for (start_mem, start_sw) in [(u64::MAX, u64::MAX), (1 << 20, 2 << 20), (1 << 40, 1 << 40)] {
            let (mut m, mut s) = (start_mem, start_sw);
            for x in ws.iter().filter(|w| w.controller == "memory") {
                let v = if x.value == "-1" { u64::MAX } else { x.value.parse().unwrap() };
                if x.file == "memory.limit_in_bytes" {
                    assert!(v <= s, "mem {v} above memsw {s}");
                    m = v;
                } else {
                    assert!(v >= m, "memsw {v} below mem {m}");
                    s = v;
                }
            }
            assert_eq!((m, s), (64 << 20, 96 << 20));
        }
        // swap 0 means no swap: memsw == ram.
        let r = Resources { ram: Some(64 << 20), swap: Some(0), ..Default::default() };
        assert_eq!(get(&v1_writes(&r, &ctx()).unwrap(), "memory.memsw.limit_in_bytes"), ["-1", &(64u64 << 20).to_string()]);
        // ram only: swap stays unlimited.
        let r = Resources { ram: Some(64 << 20), ..Default::default() };
        assert_eq!(get(&v1_writes(&r, &ctx()).unwrap(), "memory.memsw.limit_in_bytes"), ["-1"]);
    }

    #[test]
    fn memory_v2_and_missing_swap_accounting() {
        let r = Resources { ram: Some(64 << 20), swap: Some(32 << 20), ..Default::default() };
        let ws = v2_writes(&r, &ctx2()).unwrap();
        assert_eq!(get(&ws, "memory.max"), [(64u64 << 20).to_string()]);
        assert_eq!(get(&ws, "memory.swap.max"), [(32u64 << 20).to_string()]);
        let no = LimitContext { memsw: false, ..ctx() };
        let e = v1_writes(&r, &no).unwrap_err().to_string();
        assert!(e.contains("swapaccount"), "{e}");
        assert!(v2_writes(&r, &LimitContext { memsw: false, ..ctx2() }).is_err());
        // Without swap asked, a host without memsw just gets no memsw writes.
        let r = Resources { ram: Some(64 << 20), ..Default::default() };
        let ws = v1_writes(&r, &no).unwrap();
        assert!(get(&ws, "memory.memsw.limit_in_bytes").is_empty());
        assert!(get(&v2_writes(&r, &LimitContext { memsw: false, ..ctx2() }).unwrap(), "memory.swap.max").is_empty());
    }

    #[test]
    fn pids_and_numfiles() {
        let r = Resources { numproc: Some(20), numfiles: Some(512), ..Default::default() };
        assert_eq!(get(&v1_writes(&r, &ctx()).unwrap(), "pids.max"), ["20"]);
        assert_eq!(get(&v2_writes(&r, &ctx2()).unwrap(), "pids.max"), ["20"]);
        assert_eq!(numfiles_rlimit(&r), Some(512));
        assert_eq!(numfiles_rlimit(&Resources::default()), None);
        // numfiles is not a cgroup file.
        assert!(v1_writes(&r, &ctx()).unwrap().iter().all(|w| !w.value.contains("512")));
    }

    #[test]
    fn io_weight_mapping_and_files() {
        assert_eq!(io_weight(0), 100);
        assert_eq!(io_weight(7), 1000);
        assert!(io_weight(3) < io_weight(4));
        let r = Resources { ioprio: Some(7), ..Default::default() };
        assert_eq!(get(&v1_writes(&r, &ctx()).unwrap(), "blkio.bfq.weight"), ["1000"]);
        let c = LimitContext { io_weight_file: Some("blkio.weight".into()), ..ctx() };
        assert_eq!(get(&v1_writes(&r, &c).unwrap(), "blkio.weight"), ["1000"]);
        assert_eq!(get(&v2_writes(&r, &ctx2()).unwrap(), "io.bfq.weight"), ["1000"]);
        let c = LimitContext { io_weight_file: Some("io.weight".into()), ..ctx2() };
        assert_eq!(get(&v2_writes(&r, &c).unwrap(), "io.weight"), ["default 1000"]);
        let none = LimitContext { io_weight_file: None, ..ctx() };
        assert!(v1_writes(&r, &none).unwrap_err().to_string().contains("ioprio"));
        assert!(v1_writes(&Resources::default(), &none).is_ok());
    }

    #[test]
    fn io_throttles() {
        let r = Resources { iolimit: Some(1 << 20), iopslimit: Some(100), ..Default::default() };
        let ws = v1_writes(&r, &ctx()).unwrap();
        assert_eq!(get(&ws, "blkio.throttle.read_bps_device"), ["254:0 1048576"]);
        assert_eq!(get(&ws, "blkio.throttle.write_bps_device"), ["254:0 1048576"]);
        assert_eq!(get(&ws, "blkio.throttle.read_iops_device"), ["254:0 100"]);
        assert_eq!(get(&ws, "blkio.throttle.write_iops_device"), ["254:0 100"]);
        let ws = v2_writes(&r, &ctx2()).unwrap();
        assert_eq!(get(&ws, "io.max"), ["254:0 rbps=1048576 wbps=1048576 riops=100 wiops=100"]);
        let r2 = Resources { iolimit: Some(1 << 20), ..Default::default() };
        assert_eq!(get(&v2_writes(&r2, &ctx2()).unwrap(), "io.max"), ["254:0 rbps=1048576 wbps=1048576 riops=max wiops=max"]);
        let nodev = LimitContext { block_device: None, ..ctx() };
        assert!(v1_writes(&r, &nodev).unwrap_err().to_string().contains("block device"));
        assert!(v2_writes(&r, &LimitContext { block_device: None, ..ctx2() }).is_err());
        // No device and no throttle: nothing to write, no error.
        let ws = v1_writes(&Resources::default(), &nodev).unwrap();
        assert!(ws.iter().all(|w| !w.file.contains("throttle")));
    }

    #[test]
    fn validation_errors() {
        let c = ctx();
        let cases: Vec<(Resources, &str)> = vec![
            (Resources { cpuunits: Some(0), ..Default::default() }, "cpuunits"),
            (Resources { cpuunits: Some(MAX_CPUUNITS + 1), ..Default::default() }, "cpuunits"),
            (Resources { cpulimit: Some(0), ..Default::default() }, "cpulimit 0"),
            (Resources { cpulimit: Some(201), ..Default::default() }, "2 CPUs"),
            (Resources { cpus: Some(0), ..Default::default() }, "cpus 0"),
            (Resources { cpus: Some(3), ..Default::default() }, "more than this host has"),
            (Resources { cpumask: Some("0-2".into()), ..Default::default() }, "CPU 2"),
            (Resources { cpumask: Some("x".into()), ..Default::default() }, "cpumask"),
            (Resources { cpumask: Some("".into()), ..Default::default() }, "cpumask"),
            (Resources { ram: Some(0), ..Default::default() }, "ram"),
            (Resources { ram: Some(4096), ..Default::default() }, "too small"),
            (Resources { swap: Some(1 << 20), ..Default::default() }, "swap needs a ram"),
            (Resources { numproc: Some(0), ..Default::default() }, "numproc 0"),
            (Resources { numfiles: Some(0), ..Default::default() }, "numfiles 0"),
            (Resources { diskspace: Some(0), ..Default::default() }, "diskspace 0"),
            (Resources { ioprio: Some(8), ..Default::default() }, "ioprio 8"),
            (Resources { iolimit: Some(0), ..Default::default() }, "iolimit 0"),
            (Resources { iopslimit: Some(0), ..Default::default() }, "iopslimit 0"),
        ];
        for (r, want) in cases {
            let e = validate(&r, &c).unwrap_err().to_string();
            assert!(e.contains(want), "{r:?}: {e}");
            assert!(v1_writes(&r, &c).is_err() && v2_writes(&r, &ctx2()).is_err());
        }
        let ok = Resources {
            cpuunits: Some(2000),
            cpulimit: Some(200),
            cpus: Some(2),
            cpumask: Some("0-1".into()),
            ram: Some(1 << 30),
            swap: Some(0),
            numproc: Some(1),
            numfiles: Some(1),
            diskspace: Some(1 << 30),
            ioprio: Some(0),
            iolimit: Some(1),
            iopslimit: Some(1),
        };
        validate(&ok, &c).unwrap();
    }

    #[test]
    fn ram_below_usage_refused() {
        let c = LimitContext { memory_usage: Some(100 << 20), ..ctx() };
        let r = Resources { ram: Some(64 << 20), ..Default::default() };
        let e = validate(&r, &c).unwrap_err().to_string();
        assert!(e.contains("64M") && e.contains("100M"), "{e}");
        validate(&Resources { ram: Some(128 << 20), ..Default::default() }, &c).unwrap();
    }

    #[test]
    fn probe_fake_v2_tree() {
        use crate::cgroups::{fake::FakeKernel, CgroupFs};
        let k = std::sync::Arc::new(FakeKernel::v2("/fake", &["cpu", "io", "memory", "pids"], true));
        let cg = Cgroup::with_fs(k.clone(), "/fake", "ferry/101", CgroupMode::V2);
        // Before the cgroup exists: what its parents offer.
        let before = LimitContext::probe(&cg, Path::new("/"));
        assert_eq!(before.controllers, ["cpu", "io", "memory", "pids"]);
        assert_eq!(before.memory_usage, None);
        cg.create().unwrap();
        k.set_counter(Path::new("/fake/ferry/101/memory.stat"), "anon 4096\nfile 1\n");
        let c = LimitContext::probe(&cg, Path::new("/"));
        assert!(c.memsw);
        assert_eq!(c.io_weight_file.as_deref(), Some("io.weight"));
        assert_eq!(c.memory_usage, Some(4096));
        assert!(c.ncpus >= 1);
        assert!(k.exists(Path::new("/fake/ferry/101/io.weight")));
        // The hybrid hosts' unified hierarchy: nothing to probe, no controllers.
        let k = std::sync::Arc::new(FakeKernel::v2("/fake", &["hugetlb"], false));
        let cg = Cgroup::with_fs(k, "/fake", "ferry/101", CgroupMode::V2);
        cg.create().unwrap();
        let c = LimitContext::probe(&cg, Path::new("/"));
        assert!(c.controllers.is_empty() && !c.memsw && c.io_weight_file.is_none() && c.memory_usage.is_none(), "{c:?}");
        // Defaults write nothing there; every set limit that needs a controller is refused.
        assert!(v2_writes(&Resources::default(), &c).unwrap().is_empty());
        assert!(v2_writes(&Resources { numfiles: Some(10), diskspace: Some(1 << 30), ..Default::default() }, &c).unwrap().is_empty());
    }

    #[test]
    fn probe_fake_v1_tree() {
        use crate::cgroups::fake::FakeKernel;
        let k = std::sync::Arc::new(FakeKernel::v1("/fake", &["cpuset", "memory", "blkio", "pids"], false));
        let cg = Cgroup::with_fs(k.clone(), "/fake", "ferry/101", CgroupMode::V1);
        cg.create().unwrap();
        cg.sibling("ferry").apply_writes(&[w("cpuset", "cpuset.cpus", "1")]).unwrap();
        k.set_counter(Path::new("/fake/memory/ferry/101/memory.stat"), "total_rss 12\n");
        let c = LimitContext::probe(&cg, Path::new("/"));
        assert_eq!(c.mems, "0");
        assert_eq!(c.parent_cpus, "1");
        // No cpumask: the container gets what its parent has, not CPUs the parent lacks.
        let ws = v1_writes(&Resources::default(), &LimitContext { ncpus: 2, ..c.clone() }).unwrap();
        assert_eq!(get(&ws, "cpuset.cpus"), ["1"]);
        assert!(!c.memsw);
        assert_eq!(c.io_weight_file.as_deref(), Some("blkio.weight"));
        assert_eq!(c.memory_usage, Some(12));
        let mut have = c.controllers.clone();
        have.sort();
        assert_eq!(have, ["blkio", "cpuset", "memory", "pids"]);
        // No cpu hierarchy here: its defaults are left out, a cpu limit refused.
        assert!(get(&ws, "cpu.shares").is_empty());
        let e = v1_writes(&Resources { cpuunits: Some(500), ..Default::default() }, &c).unwrap_err().to_string();
        assert!(e.contains("cpuunits needs the cpu controller") && e.contains("cgroup v1"), "{e}");
    }

    #[test]
    fn limits_without_their_controller_are_named_and_refused() {
        let hugetlb_only = vec!["hugetlb".to_string()];
        let res = Resources { ram: Some(64 << 20), numproc: Some(20), iolimit: Some(1 << 20), numfiles: Some(64), ..Default::default() };
        let e = check_controllers(&res, CgroupMode::V2, &hugetlb_only).unwrap_err().to_string();
        for want in [
            "ram needs the memory controller",
            "numproc needs the pids controller",
            "iolimit needs the io controller",
            "cgroup v2",
            "it has: hugetlb",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(!e.contains("numfiles"), "numfiles needs no controller: {e}");
        assert!(e.contains("FERRY_CGROUP_MODE"), "{e}");
        check_controllers(&Resources { numfiles: Some(64), diskspace: Some(1 << 30), ..Default::default() }, CgroupMode::V2, &[]).unwrap();
        // v1 names the blkio hierarchy.
        let e = check_controllers(&Resources { ioprio: Some(3), ..Default::default() }, CgroupMode::V1, &[]).unwrap_err().to_string();
        assert!(e.contains("ioprio needs the blkio controller") && e.contains("it has: none"), "{e}");
        // What `ferry check` lists: every controlled limit there, none with all controllers.
        assert_eq!(unavailable_limits(CgroupMode::V2, &hugetlb_only).len(), CONTROLLED_LIMITS.len());
        assert!(unavailable_limits(CgroupMode::V2, &ctx2().controllers).is_empty());
        assert_eq!(
            unavailable_limits(CgroupMode::V2, &["cpu".into(), "memory".into()]).iter().map(|x| x.0).collect::<Vec<_>>(),
            ["cpumask", "numproc", "ioprio", "iolimit", "iopslimit"]
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(crate::config::format_size(64 << 20), "64M");
        assert_eq!(crate::config::format_size(1536), "1.5K");
        assert_eq!(crate::config::format_size(10), "10B");
    }
}
