//! The snapshot store of one container: `<data>/snapshots/<CTID>/<ID>/{meta.json, files/,
//! state.img}`. A snapshot is built in `.tmp-<ID>` and renamed into place when complete, so
//! listing (which skips dot-entries) never shows a half snapshot; stale tmp dirs are removed by
//! the next snapshot of that container.

use super::error::Cause;
use ferry_runtime::storage::btrfs;
use ferry_runtime::{Ctid, Host};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const META_FILE: &str = "meta.json";
pub const FILES_DIR: &str = "files";
pub const STATE_IMAGE: &str = "state.img";
pub const LAST_ERROR_FILE: &str = "last-error.json";
const TMP_PREFIX: &str = ".tmp-";

/// `meta.json` of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Holds the processes (`state.img`), not only the files.
    pub stateful: bool,
    /// Taken by the schedule (pruned by retention) rather than by hand.
    pub auto: bool,
    /// Bytes of the files (apparent sizes) when taken.
    pub files_bytes: u64,
    /// Bytes of `state.img`.
    pub state_bytes: u64,
    /// The file tree is a btrfs read-only subvolume.
    #[serde(default)]
    pub btrfs: bool,
    /// Milliseconds the container was frozen (stateful only).
    #[serde(default)]
    pub frozen_ms: u64,
    /// Milliseconds the whole snapshot took.
    #[serde(default)]
    pub total_ms: u64,
    /// Wall clock (unix nanoseconds) when it was completed: orders snapshots taken within
    /// one second (`created` may be a scheduler's clock; 0 in snapshots from older versions).
    #[serde(default)]
    pub taken_ns: u64,
}

/// Now, in unix nanoseconds.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The last failure of a scheduled snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub time: i64,
    pub error: String,
}

/// Disk use of one snapshot: `unique` blocks are its own, `shared` ones are also used by
/// another snapshot (hardlinks, or btrfs extents shared with other subvolumes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub unique: u64,
    pub shared: u64,
}

/// What `snapshot list` shows of a container's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub snapshots: Vec<Listed>,
    /// The last failure of a scheduled snapshot, if the last one failed.
    pub last_error: Option<LastError>,
    /// The container's snapshot schedule, if it has one (what `ferry_snapshot` compares).
    pub schedule: Option<ferry_runtime::config::SnapshotSchedule>,
}

/// One snapshot in a [`Listing`]: what its meta says and what it takes on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub id: String,
    pub name: Option<String>,
    pub created: i64,
    pub stateful: bool,
    pub auto: bool,
    pub files_bytes: u64,
    pub state_bytes: u64,
    /// Blocks of its own.
    pub size: u64,
    /// Blocks it shares with other snapshots.
    pub shared: u64,
    pub btrfs: bool,
    pub frozen_ms: u64,
    pub total_ms: u64,
}

/// The container's snapshots, oldest first, with their disk use.
pub fn listing(host: &Host, ct: &Ctid) -> Listing {
    let snapshots = list(host, ct)
        .into_iter()
        .map(|m| {
            let u = usage(&snap_dir(host, ct, &m.id));
            Listed {
                id: m.id,
                name: m.name,
                created: m.created,
                stateful: m.stateful,
                auto: m.auto,
                files_bytes: m.files_bytes,
                state_bytes: m.state_bytes,
                size: u.unique,
                shared: u.shared,
                btrfs: m.btrfs,
                frozen_ms: m.frozen_ms,
                total_ms: m.total_ms,
            }
        })
        .collect();
    let schedule = ferry_runtime::container::load_config(host, ct).ok().and_then(|c| c.snapshot_schedule);
    Listing { snapshots, last_error: last_error(host, ct), schedule }
}

pub fn store_dir(host: &Host, ct: &Ctid) -> PathBuf {
    host.snapshot_dir(ct)
}

pub fn snap_dir(host: &Host, ct: &Ctid, id: &str) -> PathBuf {
    host.snapshot_dir(ct).join(id)
}

pub fn tmp_dir(host: &Host, ct: &Ctid, id: &str) -> PathBuf {
    host.snapshot_dir(ct).join(format!("{TMP_PREFIX}{id}"))
}

/// A new snapshot id: creation time (sortable) and a short random tail (from the kernel's
/// random source; the time and pid as a fallback).
pub fn new_id(created: i64) -> String {
    let tail = ferry_tree::temp::temp_name(b"").map(|n| String::from_utf8_lossy(&n[..6]).into_owned()).unwrap_or_else(|_| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        blake3::hash(format!("{created}:{}:{}", std::process::id(), t.as_nanos()).as_bytes()).to_hex()[..6].to_string()
    });
    format!("{created}-{tail}")
}

/// Ids are plain names (also used as directory names).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && id.len() <= 100 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn load_meta(dir: &Path) -> Result<SnapshotMeta, Cause> {
    let p = dir.join(META_FILE);
    let t = std::fs::read_to_string(&p).map_err(|e| Cause::io("read", &p, e))?;
    serde_json::from_str(&t).map_err(|source| Cause::Damaged { path: p, source })
}

pub fn save_meta(dir: &Path, m: &SnapshotMeta) -> Result<(), Cause> {
    let p = dir.join(META_FILE);
    Ok(ferry_runtime::util::write_atomic(&p, &serde_json::to_vec_pretty(m).expect("meta serializes"))?)
}

/// Every complete snapshot of the container, oldest first (dot-entries and damaged ones are
/// left out).
pub fn list(host: &Host, ct: &Ctid) -> Vec<SnapshotMeta> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(store_dir(host, ct)) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Ok(m) = load_meta(&e.path()) {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.taken_ns.cmp(&b.taken_ns)).then(a.id.cmp(&b.id)));
    out
}

/// Remove a snapshot directory (a btrfs subvolume inside it first).
pub fn remove_dir(dir: &Path) -> Result<(), Cause> {
    let files = dir.join(FILES_DIR);
    if btrfs::is_subvolume(&files) {
        btrfs::delete(&files)?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Cause::io("remove", dir, e)),
    }
}

/// Remove `.tmp-*` leftovers of interrupted snapshots. The caller holds the container lock, so
/// none of them is in progress. Returns how many were removed.
pub fn remove_stale_tmp(host: &Host, ct: &Ctid) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(store_dir(host, ct)) else { return 0 };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) && remove_dir(&e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

pub fn record_error(host: &Host, ct: &Ctid, time: i64, error: &str) {
    let dir = store_dir(host, ct);
    let _ = std::fs::create_dir_all(&dir);
    let e = LastError { time, error: error.to_string() };
    let _ = ferry_runtime::util::write_atomic(&dir.join(LAST_ERROR_FILE), &serde_json::to_vec_pretty(&e).expect("serializes"));
}

pub fn clear_error(host: &Host, ct: &Ctid) {
    let _ = std::fs::remove_file(store_dir(host, ct).join(LAST_ERROR_FILE));
}

pub fn last_error(host: &Host, ct: &Ctid) -> Option<LastError> {
    let t = std::fs::read_to_string(store_dir(host, ct).join(LAST_ERROR_FILE)).ok()?;
    serde_json::from_str(&t).ok()
}

/// Bytes of blocks of a tree: a file with several links counts as shared (another snapshot
/// holds the same inode), once per tree.
pub fn hardlink_usage(dir: &Path) -> Usage {
    let mut u = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            }
            if !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            let bytes = md.blocks() * 512;
            if md.is_file() && md.nlink() > 1 {
                u.shared += bytes;
            } else {
                u.unique += bytes;
            }
        }
    }
    u
}

/// `btrfs filesystem du -s --raw`: (exclusive, set shared) bytes of a subvolume.
pub fn parse_btrfs_du(out: &str) -> Option<Usage> {
    let line = out.lines().nth(1)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(Usage { unique: f.get(1)?.parse().ok()?, shared: f.get(2)?.parse().ok()? })
}

pub fn usage(dir: &Path) -> Usage {
    let files = dir.join(FILES_DIR);
    let mut u = if btrfs::is_subvolume(&files) {
        std::process::Command::new("btrfs")
            .args(["filesystem", "du", "-s", "--raw"])
            .arg(&files)
            .output()
            .ok()
            .and_then(|o| parse_btrfs_du(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default()
    } else {
        hardlink_usage(&files)
    };
    // state.img and meta.json are always this snapshot's own.
    for f in [STATE_IMAGE, META_FILE] {
        if let Ok(md) = std::fs::metadata(dir.join(f)) {
            u.unique += md.blocks() * 512;
        }
    }
    u
}

/// Apparent bytes of the regular files of a tree.
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id(1700000000);
        assert!(id.starts_with("1700000000-") && valid_id(&id));
        assert!(!valid_id(".tmp-1") && !valid_id("../x") && !valid_id(""));
    }

    #[test]
    fn btrfs_du_parse() {
        let out = "     Total   Exclusive  Set shared  Filename\n 104857600       16384   104841216  /x/files\n";
        assert_eq!(parse_btrfs_du(out), Some(Usage { unique: 16384, shared: 104841216 }));
        assert_eq!(parse_btrfs_du("junk"), None);
    }

    #[test]
    fn list_skips_tmp_and_hardlinks_count_shared() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path(), d.path().join("run"), "ferry-tx");
        let ct = Ctid::new("101").unwrap();
        let base = store_dir(&host, &ct);
        // Within one second the completion time decides, not the random part of the id.
        for (id, created, taken_ns) in [("2-b", 2, 5), ("1-a", 1, 9), ("2-a", 2, 7)] {
            let dir = base.join(id);
            std::fs::create_dir_all(dir.join(FILES_DIR)).unwrap();
            let m = SnapshotMeta {
                id: id.into(),
                name: None,
                created,
                stateful: false,
                auto: true,
                files_bytes: 0,
                state_bytes: 0,
                btrfs: false,
                frozen_ms: 0,
                total_ms: 0,
                taken_ns,
            };
            save_meta(&dir, &m).unwrap();
        }
        std::fs::create_dir_all(base.join(".tmp-3-c/files")).unwrap();
        let ids: Vec<String> = list(&host, &ct).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec!["1-a", "2-b", "2-a"]);
        std::fs::write(base.join("1-a/files/f"), vec![7u8; 65536]).unwrap();
        std::fs::hard_link(base.join("1-a/files/f"), base.join("2-b/files/f")).unwrap();
        let u = hardlink_usage(&base.join("2-b/files"));
        assert!(u.shared >= 65536, "{u:?}");
        assert_eq!(remove_stale_tmp(&host, &ct), 1);
        assert!(!base.join(".tmp-3-c").exists());
        record_error(&host, &ct, 5, "boom");
        assert_eq!(last_error(&host, &ct).unwrap().error, "boom");
        clear_error(&host, &ct);
        assert!(last_error(&host, &ct).is_none());
    }
}
