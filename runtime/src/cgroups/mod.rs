//! Control groups: one interface ([`Cgroup`]), a v1 and a v2 backend chosen at run time by
//! what the host mounts, and a freezer. Everything takes a cgroupfs root so unit tests can
//! point it at a fake directory tree.
//!
//! Resource limits are translated to cgroup file writes by the pure functions in [`limits`],
//! which both backends apply; reading usage back is [`Cgroup::stats`].

pub mod limits;

/// Which cgroup layout a host uses for the controllers ferry needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Separate v1 hierarchies (cpu, cpuacct, cpuset, memory, devices, freezer, blkio, pids).
    V1,
    /// The unified v2 hierarchy with those controllers enabled.
    V2,
}

/// Usage read back from a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupStats {
    /// Processes and threads.
    pub numproc: u64,
    pub cputime_ns: u64,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// One write into a cgroup file: which controller (v1 hierarchy name; ignored on v2), which
/// file, what value. Produced by [`limits`], applied by a backend in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

/// Facts about the host that limit translation needs (kept out of the pure functions' inputs
/// from the filesystem so they can be unit tested).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitContext {
    /// Number of online CPUs.
    pub ncpus: u32,
    /// `major:minor` of the block device holding the private area, for I/O limits.
    pub block_device: Option<(u32, u32)>,
    /// v1 `cpuset.mems` to write (the parent's); empty means "0".
    pub mems: String,
    /// v1 `cpuset.cpus` written when no cpumask is set (the parent's); empty means all CPUs.
    pub parent_cpus: String,
    /// Swap is accounted per cgroup (v1 `memory.memsw.*`, v2 `memory.swap.max` exist).
    pub memsw: bool,
    /// The I/O weight file this host has: v1 `blkio.bfq.weight`/`blkio.weight`, v2
    /// `io.bfq.weight`/`io.weight`; None when there is none.
    pub io_weight_file: Option<String>,
    /// The container's current unreclaimable memory (anon), when it runs; a `ram` below it is
    /// refused.
    pub memory_usage: Option<u64>,
}
