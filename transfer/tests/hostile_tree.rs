//! The sync against a source tree that plays the attacker, as a running container does while
//! the host reads it: what it swaps in between the scan and the reads (a symlink to a host file,
//! a symlink on the way, a FIFO) is never followed nor opened, and a sparse file costs its data,
//! not its size. The swap happens at a fixed point (`test_hooks::set_after_scan`): the race is
//! deterministic. Each case runs over a connection (a migration) and as a local sync (a
//! snapshot into the store).

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ferry_transfer::sync::{self, LocalSyncOptions, PassStats, ReceiveOptions, SyncOptions};
use ferry_transfer::test_hooks;

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Via {
    /// Over a protocol connection, as a migration.
    Connection,
    /// `sync_local`, as a snapshot into the store.
    Local,
}

async fn pass(src: &Path, dst: &Path, n: u32, via: Via) -> ferry_transfer::Result<PassStats> {
    let opts = SyncOptions { pass: n, ..Default::default() };
    let run = async {
        match via {
            Via::Local => sync::sync_local(src, dst, &LocalSyncOptions { sync: opts, receive: ReceiveOptions::default() }).await,
            Via::Connection => {
                let (c, s) = pair(quick(), quick()).await;
                let d = dst.to_path_buf();
                let server = tokio::spawn(async move {
                    let begin = s.recv().await?;
                    let r = sync::receive_pass(&s, &begin, &d, &ReceiveOptions { fsync: true, ..Default::default() }).await;
                    let _ = s.recv().await;
                    r
                });
                let r = sync::sync_pass(&c, src, &opts).await;
                let _ = c.close().await;
                let _ = server.await;
                r
            }
        }
    };
    tokio::time::timeout(LIMIT, run).await.expect("the sync pass hung")
}

/// Every regular file's contents under `dir`.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Replace `path` with a symlink to `target`, atomically (as `mv` does).
fn swap_for_symlink(path: &Path, target: &Path) {
    let tmp = path.with_extension("swap");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A container loops "write a regular file, move it over d/leak; make a symlink to a host file,
/// move it over d/leak" (and the same with a directory on the way). Between the scan (which saw
/// regular files) and the reads, the symlinks are in place: the host file's contents never reach
/// the destination; the next pass sends the symlinks as symlinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_after_the_scan_is_never_followed() {
    for via in [Via::Connection, Via::Local] {
        let tmp = tempdir();
        let (src, dst, host) = (tmp.path().join("src"), tmp.path().join("dst"), tmp.path().join("host"));
        write(&host.join("secret"), b"HOST SECRET: root only");
        write(&host.join("dir/leak2"), b"HOST SECRET in a host directory");
        write(&host.join("big-secret"), &[b'S'; 200 << 10]);
        write(&src.join("d/leak"), b"container data");
        write(&src.join("d/big"), &noise(200 << 10, 1));
        write(&src.join("sub/leak2"), b"container data too");
        let (h, s2) = (host.clone(), src.clone());
        test_hooks::set_after_scan(Some(Box::new(move |tree: &Path| {
            assert_eq!(tree, s2);
            swap_for_symlink(&tree.join("d/leak"), &h.join("secret"));
            swap_for_symlink(&tree.join("d/big"), &h.join("big-secret"));
            // A directory on the way: sub/ becomes a symlink to a host directory.
            std::fs::rename(tree.join("sub"), tree.join("sub.old")).unwrap();
            swap_for_symlink(&tree.join("sub"), &h.join("dir"));
        })));
        let first = pass(&src, &dst, 1, via).await;
        test_hooks::set_after_scan(None);
        first.unwrap_or_else(|e| panic!("{via:?}: pass 1: {e}"));
        for (p, data) in contents(&dst) {
            assert!(!data.windows(11).any(|w| w == b"HOST SECRET") && !data.starts_with(b"SSSS"), "{via:?}: host data in {}", p.display());
        }
        // The next pass sees the symlinks and sends them as what they are.
        pass(&src, &dst, 2, via).await.unwrap_or_else(|e| panic!("{via:?}: pass 2: {e}"));
        assert_eq!(std::fs::read_link(dst.join("d/leak")).unwrap(), host.join("secret"), "{via:?}");
        assert_eq!(std::fs::read_link(dst.join("d/big")).unwrap(), host.join("big-secret"), "{via:?}");
        assert_eq!(std::fs::read_link(dst.join("sub")).unwrap(), host.join("dir"), "{via:?}");
        assert_eq!(std::fs::read(dst.join("sub.old/leak2")).unwrap(), b"container data too");
        assert_same_tree(&src, &dst);
    }
}

/// A FIFO swapped in after the scan: the pass neither hangs on it nor opens it (a writer waiting
/// for a reader stays blocked), it completes, and the next pass recreates the FIFO as a FIFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_swapped_in_after_the_scan_is_never_opened_and_goes_as_a_fifo_next() {
    for via in [Via::Connection, Via::Local] {
        let tmp = tempdir();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        write(&src.join("small"), b"batched");
        write(&src.join("big"), &noise(300 << 10, 2));
        let (tx, rx) = mpsc::channel();
        test_hooks::set_after_scan(Some(Box::new(move |tree: &Path| {
            for name in ["small", "big"] {
                std::fs::remove_file(tree.join(name)).unwrap();
                mkfifo(&tree.join(name));
            }
            // Someone waits to write into one: released only if the host opens it to read.
            let fifo = tree.join("big");
            let tx = tx.clone();
            std::thread::spawn(move || {
                let w = std::fs::OpenOptions::new().write(true).open(&fifo);
                let _ = tx.send(w.is_ok());
            });
        })));
        let first = pass(&src, &dst, 1, via).await;
        test_hooks::set_after_scan(None);
        first.unwrap_or_else(|e| panic!("{via:?}: pass 1: {e}"));
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "{via:?}: the FIFO was opened");
        pass(&src, &dst, 2, via).await.unwrap_or_else(|e| panic!("{via:?}: pass 2: {e}"));
        for name in ["small", "big"] {
            let ft = std::fs::symlink_metadata(dst.join(name)).unwrap().file_type();
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft), "{via:?}: {name} is {ft:?}");
        }
        assert_same_tree(&src, &dst);
        // Release the waiting writer.
        let _r = std::fs::File::open(src.join("big")).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    }
}

/// (offset, bytes) of each data extent of `path`.
fn data_of(path: &Path) -> (u64, Vec<(u64, Vec<u8>)>) {
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut out = Vec::new();
    for x in ferry_tree::extents::data_extents(&f, size) {
        let (off, len) = x.unwrap();
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, off).unwrap();
        out.push((off, buf));
    }
    (size, out)
}

/// A 4 GiB file holding 20 MiB of data in 5000 extents (more than any extent limit): the
/// destination and the snapshot store get about its data, the pass sends about its data and is
/// quick, and what arrives is the same data at the same places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_costs_its_data_not_its_size() {
    for via in [Via::Connection, Via::Local] {
        let tmp = tempdir();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        let size: u64 = 4 << 30;
        let islands = 5000u64;
        let f = std::fs::File::create(src.join("disk.img")).unwrap();
        f.set_len(size).unwrap();
        for i in 0..islands {
            f.write_all_at(&noise(4096, i), (i * (size / islands)) & !4095).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        let t0 = std::time::Instant::now();
        let s1 = pass(&src, &dst, 1, via).await.unwrap_or_else(|e| panic!("{via:?}: {e}"));
        let took = t0.elapsed();
        let md = std::fs::metadata(dst.join("disk.img")).unwrap();
        assert_eq!(md.len(), size);
        assert!(md.blocks() * 512 < 64 << 20, "{via:?}: the copy takes {} MiB on disk", (md.blocks() * 512) >> 20);
        assert!(s1.bytes_data < 32 << 20, "{via:?}: {s1:?}");
        assert!(s1.bytes_on_wire < 40 << 20, "{via:?}: {s1:?}");
        assert_eq!(data_of(&src.join("disk.img")), data_of(&dst.join("disk.img")), "{via:?}");
        eprintln!("{via:?}: 4 GiB sparse file with 20 MiB of data in {} ms", took.as_millis());

        // Changed in the middle: it goes again as its data (a delta would read its holes).
        let f = std::fs::OpenOptions::new().write(true).open(src.join("disk.img")).unwrap();
        f.write_all_at(b"changed", size / 2 + 12345).unwrap();
        drop(f);
        let s2 = pass(&src, &dst, 2, via).await.unwrap_or_else(|e| panic!("{via:?}: {e}"));
        assert_eq!((s2.files_sent, s2.delta_files), (1, 0), "{via:?}: {s2:?}");
        assert!(s2.bytes_data < 32 << 20, "{via:?}: {s2:?}");
        assert!(std::fs::metadata(dst.join("disk.img")).unwrap().blocks() * 512 < 64 << 20);
        assert_eq!(data_of(&src.join("disk.img")), data_of(&dst.join("disk.img")), "{via:?}");
    }
}
