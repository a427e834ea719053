//! What the host offers the limits of a container ([`LimitContext::probe`]): online CPUs, NUMA
//! nodes, swap accounting, the I/O weight file, the whole disk under its private area, its
//! cgroup's controllers and the memory it holds that reclaim cannot take back.

use super::{Cgroup, CgroupMode, LimitContext};
use crate::config::parse_cpumask;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `(major, minor)` of the whole disk holding `path`: partitions resolve to their disk, loop
/// devices to the disk holding their backing file, btrfs (anonymous st_dev) to its device.
/// Throttles in the blkio/io controllers only act on whole disks with a request queue.
pub fn block_device_of(path: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    let dev = md.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let (maj, min) = if maj == 0 { mount_source_device(maj, min, path)? } else { (maj, min) };
    resolve_whole_disk(maj, min, 0)
}

/// For filesystems with an anonymous st_dev (btrfs): the device named as the mount's source.
fn mount_source_device(maj: u32, min: u32, path: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    let mi = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    let want = format!("{maj}:{min}");
    for line in mi.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.get(2) != Some(&want.as_str()) {
            continue;
        }
        let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
        let Some(source) = f.get(sep + 2) else { continue };
        if let Ok(m) = std::fs::metadata(source) {
            if m.file_type().is_block_device() {
                return Ok((libc::major(m.rdev()), libc::minor(m.rdev())));
            }
        }
    }
    Err(Error::NoBlockDevice { path: path.to_path_buf(), device: want })
}

fn resolve_whole_disk(maj: u32, min: u32, depth: u32) -> Result<(u32, u32)> {
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let real = std::fs::canonicalize(&sys).map_err(|e| Error::io("resolve block device", &sys, e))?;
    // A loop device: follow its backing file to the disk that holds it.
    if depth < 8 {
        if let Ok(backing) = std::fs::read_to_string(real.join("loop/backing_file")) {
            let backing = backing.trim();
            let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
            return block_device_of(Path::new(backing));
        }
        // A device-mapper or md device with exactly one underlying device: follow it.
        if let Ok(rd) = std::fs::read_dir(real.join("slaves")) {
            let slaves: Vec<_> = rd.flatten().collect();
            if slaves.len() == 1 {
                if let Some((a, b)) = read_dev(&slaves[0].path().join("dev")) {
                    return resolve_whole_disk(a, b, depth + 1);
                }
            }
        }
    }
    // A partition: its parent directory is the whole disk.
    if real.join("partition").exists() {
        if let Some(d) = real.parent().and_then(|p| read_dev(&p.join("dev"))) {
            return Ok(d);
        }
    }
    Ok((maj, min))
}

fn read_dev(p: &Path) -> Option<(u32, u32)> {
    let s = std::fs::read_to_string(p).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Number of online CPUs from `/sys/devices/system/cpu/online` (falls back to sysconf).
pub fn online_cpus() -> u32 {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/online") {
        if let Ok(v) = parse_cpumask(s.trim()) {
            if let Some(max) = v.iter().max() {
                return max + 1;
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Memory a cgroup holds that reclaim cannot take back (anon + swap), from its memory.stat.
/// v1 uses the hierarchical `total_rss`/`total_swap`, v2 `anon` (swap is separate there).
pub fn unreclaimable_memory(mode: CgroupMode, memory_stat: &str) -> u64 {
    let get = |k: &str| {
        memory_stat.lines().find_map(|l| l.split_once(' ').filter(|(n, _)| *n == k).and_then(|(_, v)| v.trim().parse::<u64>().ok())).unwrap_or(0)
    };
    match mode {
        CgroupMode::V1 => get("total_rss"),
        CgroupMode::V2 => get("anon"),
    }
}

impl LimitContext {
    /// Look at the host: online CPUs, NUMA nodes, swap accounting, which I/O weight file
    /// exists, the block device of `private_area`, the controllers the container's cgroup
    /// `cg` has (or gets when made), and (if the cgroup exists) its current unreclaimable
    /// memory.
    pub fn probe(cg: &Cgroup, private_area: &Path) -> LimitContext {
        let fs = cg.fs();
        let parent = cg.sibling(Path::new(cg.rel()).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default());
        let ncpus = online_cpus();
        let block_device = block_device_of(private_area).ok();
        // The first of `files` found in the first of `dirs` that has one.
        let first_with = |dirs: &[PathBuf], files: &[&str]| -> Option<String> {
            dirs.iter().find_map(|d| files.iter().find(|f| fs.exists(&d.join(f))).map(|f| f.to_string()))
        };
        let read = |p: PathBuf| fs.read(&p).ok().map(|s| s.trim().to_string());
        let controllers = cg.controllers();
        let memory_usage = read(cg.dir("memory").join("memory.stat")).map(|s| unreclaimable_memory(cg.mode(), &s));
        match cg.mode() {
            CgroupMode::V1 => {
                let cpuset_of_parent = |f: &str| {
                    [parent.dir("cpuset"), cg.root().join("cpuset")]
                        .into_iter()
                        .filter_map(|d| read(d.join(f)))
                        .find(|s| !s.is_empty())
                        .unwrap_or_default()
                };
                let mems = cpuset_of_parent("cpuset.mems");
                let parent_cpus = cpuset_of_parent("cpuset.cpus");
                let memsw = fs.exists(&cg.root().join("memory").join("memory.memsw.limit_in_bytes"));
                let io_weight_file = first_with(&[cg.dir("blkio"), parent.dir("blkio")], &["blkio.bfq.weight", "blkio.weight"]);
                LimitContext { ncpus, block_device, mems, parent_cpus, memsw, io_weight_file, memory_usage, controllers }
            }
            CgroupMode::V2 => {
                let dirs = [cg.dir(""), parent.dir("")];
                let memsw = first_with(&dirs, &["memory.swap.max"]).is_some();
                let io_weight_file = first_with(&dirs, &["io.bfq.weight", "io.weight"]);
                LimitContext {
                    ncpus,
                    block_device,
                    mems: String::new(),
                    parent_cpus: String::new(),
                    memsw,
                    io_weight_file,
                    memory_usage,
                    controllers,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_parsing() {
        let v1 = "cache 100\nrss 5\ntotal_cache 300\ntotal_rss 4096\ntotal_swap 7\n";
        assert_eq!(unreclaimable_memory(CgroupMode::V1, v1), 4096);
        let v2 = "anon 8192\nfile 100\n";
        assert_eq!(unreclaimable_memory(CgroupMode::V2, v2), 8192);
        assert_eq!(unreclaimable_memory(CgroupMode::V2, ""), 0);
    }

    #[test]
    fn block_device_of_root() {
        // Whatever disk holds "/" here, it resolves to something listed in /sys/dev/block.
        if let Ok((a, b)) = block_device_of(Path::new("/")) {
            assert!(Path::new(&format!("/sys/dev/block/{a}:{b}")).exists());
            assert!(!Path::new(&format!("/sys/dev/block/{a}:{b}/partition")).exists());
        } else {
            eprintln!("skipped: / has no block device here");
        }
    }
}
