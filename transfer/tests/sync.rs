//! File sync over the protocol, with real files (root needed for owners and device nodes).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferry_transfer::proto::{Body, ConnectionOptions};
use ferry_transfer::sync::{self, LocalSyncOptions, PassStats, ReceiveOptions, SyncOptions};
use ferry_transfer::Error;

const LIMIT: Duration = Duration::from_secs(120);

/// One pass from `src` to `dst` through an in-process connection pair.
async fn pass_with(src: &Path, dst: &Path, sync_opts: SyncOptions, client: ConnectionOptions) -> ferry_transfer::Result<PassStats> {
    run_pass(src, dst, sync_opts, client, None, None).await.map(|(stats, _)| stats)
}

/// [`pass_with`] through `sync_pass_from`: also what the destination holds afterwards.
async fn run_pass(
    src: &Path,
    dst: &Path,
    sync_opts: SyncOptions,
    client: ConnectionOptions,
    baseline: Option<sync::Baseline>,
    copies: Option<&mut sync::SentCopies>,
) -> ferry_transfer::Result<(PassStats, Option<sync::Baseline>)> {
    let (c, s) = pair(client, quick()).await;
    let dst = dst.to_path_buf();
    let server = tokio::spawn(async move {
        let begin = s.recv().await?;
        let r = sync::receive_pass(&s, &begin, &dst, &ReceiveOptions { fsync: true, ..Default::default() }).await;
        let _ = s.recv().await; // wait for the source to hang up
        r
    });
    let r = tokio::time::timeout(LIMIT, sync::sync_pass_from(&c, src, &sync_opts, baseline, copies)).await.expect("sync pass hung");
    let _ = c.close().await;
    let served = tokio::time::timeout(LIMIT, server).await.expect("receiver hung").expect("receiver panicked");
    if let (Err(e), Err(d)) = (&r, &served) {
        eprintln!("source: {e}\ndestination: {d}");
    }
    r
}

async fn pass(src: &Path, dst: &Path, n: u32) -> PassStats {
    pass_with(src, dst, SyncOptions { pass: n, ..Default::default() }, quick()).await.expect("sync pass")
}

/// A tree with every kind of entry. Returns whether xattrs were set.
fn build_full_tree(src: &Path) -> bool {
    write(&src.join("empty"), b"");
    write(&src.join("small.txt"), b"hello ferry\n");
    write(&src.join("big.bin"), &noise(10 << 20, 1));
    write(&src.join("a/b/c/deep.txt"), b"deep");
    std::os::unix::fs::symlink("/etc/hostname", src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", src.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", src.join("dangling")).unwrap();
    write(&src.join("linked-1"), b"shared contents");
    std::fs::hard_link(src.join("linked-1"), src.join("a/linked-2")).unwrap();
    std::fs::hard_link(src.join("linked-1"), src.join("a/b/linked-3")).unwrap();
    mkfifo(&src.join("fifo"));
    mknod_char(&src.join("null-dev"), 1, 3);
    // Sparse: 100 MiB with two 4 KiB islands of data.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.join("sparse.img")).unwrap();
        f.set_len(100 << 20).unwrap();
        f.write_all_at(&noise(4096, 2), 10 << 20).unwrap();
        f.write_all_at(&noise(4096, 3), 90 << 20).unwrap();
    }
    let xattrs = try_set_xattr(&src.join("small.txt"), "user.ferry.test", b"value-1") && try_set_xattr(&src.join("a"), "user.ferry.dir", b"d");
    write(&src.join("setuid-bin"), b"#!/bin/true\n");
    nix::unistd::chown(&src.join("setuid-bin"), Some(1234.into()), Some(5678.into())).unwrap();
    chmod(&src.join("setuid-bin"), 0o4755);
    nix::unistd::chown(&src.join("a/b"), Some(1234.into()), Some(5678.into())).unwrap();
    chmod(&src.join("a/b"), 0o2750);
    std::os::unix::fs::lchown(src.join("rel-link"), Some(1234), Some(5678)).unwrap();
    chmod(&src.join("small.txt"), 0o600);
    set_mtime(&src.join("small.txt"), 1_000_000_000, 123_456_789);
    set_mtime(&src.join("rel-link"), 1_100_000_000, 5);
    for d in ["a/b/c", "a/b", "a", ""] {
        set_mtime(&src.join(d), 1_200_000_000, 42);
    }
    xattrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tree_round_trip_preserves_everything() {
    if !is_root() {
        eprintln!("skipped: needs root (owners, device nodes)");
        return;
    }
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    let xattrs = build_full_tree(&src);
    if !xattrs {
        eprintln!("note: user xattrs unsupported on {}: xattrs not checked", tmp.path().display());
    }

    let s1 = pass(&src, &dst, 1).await;
    assert_same_tree(&src, &dst);
    assert!(s1.files_sent >= 6, "{s1:?}");
    // Hardlinks are recreated, not copied: one data transfer for three names.
    assert_eq!(s1.links, 2, "{s1:?}");
    let dmd = std::fs::metadata(dst.join("linked-1")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(dmd.nlink(), 3);
    // Holes stay holes: 100 MiB apparent, a few KiB allocated.
    assert!(st_blocks(&dst.join("sparse.img")) * 512 < 1 << 20, "sparse file filled: {} blocks", st_blocks(&dst.join("sparse.img")));
    assert!(s1.bytes_data < 11 << 20, "sparse holes sent? {s1:?}");
    if xattrs {
        let x = read_xattrs(&dst.join("small.txt"));
        assert!(x.iter().any(|(n, v)| n == b"user.ferry.test" && v == b"value-1"));
    }
    let md = std::fs::metadata(dst.join("setuid-bin")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o4755, 1234, 5678));

    // An unchanged tree costs nothing but the manifests.
    let s2 = pass(&src, &dst, 2).await;
    assert_eq!(s2.changes(), 0, "{s2:?}");
    assert_eq!(s2.bytes_data, 0);
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pass_sends_only_changed_files() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..400 {
        write(&src.join(format!("d{}/f{i}", i % 10)), &noise(8192, i));
    }
    let s1 = pass(&src, &dst, 1).await;
    assert_eq!(s1.files_sent, 400);
    assert!(s1.bytes_on_wire > 400 * 8192);
    // Change 1% of the files (4), contents and mtime.
    for i in [3u64, 77, 150, 399] {
        write(&src.join(format!("d{}/f{i}", i % 10)), &noise(8192, i + 1000));
        set_mtime(&src.join(format!("d{}/f{i}", i % 10)), 1_600_000_000 + i as i64, 0);
    }
    let s2 = pass(&src, &dst, 2).await;
    assert_eq!(s2.files_sent, 4, "{s2:?}");
    assert_eq!(s2.bytes_data, 4 * 8192);
    // 4 files plus manifests (~400 entries each way): far below pass 1.
    assert!(s2.bytes_on_wire < 120 << 10, "{s2:?}");
    assert!(s2.bytes_on_wire * 10 < s1.bytes_on_wire, "pass 1 {s1:?} pass 2 {s2:?}");
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_changed_file_goes_as_delta() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut data = noise(20 << 20, 7);
    write(&src.join("disk.img"), &data);
    pass(&src, &dst, 1).await;
    // 1 KiB changed in the middle.
    for b in &mut data[10 << 20..(10 << 20) + 1024] {
        *b = !*b;
    }
    write(&src.join("disk.img"), &data);
    set_mtime(&src.join("disk.img"), 1_700_000_000, 0);
    let s2 = pass(&src, &dst, 2).await;
    assert_eq!((s2.files_sent, s2.delta_files), (1, 1), "{s2:?}");
    assert!(s2.bytes_on_wire < 1 << 20, "delta sent {} bytes on the wire for 1 KiB changed", s2.bytes_on_wire);
    assert_eq!(std::fs::read(dst.join("disk.img")).unwrap(), data);
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_type_changes_propagate() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("keep"), b"k");
    write(&src.join("gone-file"), b"x");
    write(&src.join("gone-dir/sub/f"), b"y");
    write(&src.join("becomes-link/f"), b"z");
    pass(&src, &dst, 1).await;
    std::fs::remove_file(src.join("gone-file")).unwrap();
    std::fs::remove_dir_all(src.join("gone-dir")).unwrap();
    std::fs::remove_dir_all(src.join("becomes-link")).unwrap();
    std::os::unix::fs::symlink("keep", src.join("becomes-link")).unwrap();
    let s2 = pass(&src, &dst, 2).await;
    assert_eq!(s2.deleted, 3, "{s2:?}");
    assert!(!dst.join("gone-file").exists() && !dst.join("gone-dir").exists());
    assert!(std::fs::symlink_metadata(dst.join("becomes-link")).unwrap().file_type().is_symlink());
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_flight_is_detected_and_names_the_file() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("victim.bin"), &noise(300_000, 9));
    let flipped = Arc::new(AtomicBool::new(false));
    let f = flipped.clone();
    let client = ConnectionOptions {
        tamper_data: Some(Arc::new(move |_stream, data: &mut Vec<u8>| {
            if data.len() > 1000 && !f.swap(true, Ordering::SeqCst) {
                data[1000] ^= 0x40;
            }
        })),
        ..quick()
    };
    let err = pass_with(&src, &dst, SyncOptions::default(), client).await.expect_err("corruption not detected");
    assert!(flipped.load(Ordering::SeqCst), "the hook never ran");
    let msg = err.to_string();
    assert!(msg.contains("victim.bin") && msg.contains("blake3"), "unclear error: {msg}");
    assert!(!dst.join("victim.bin").exists(), "corrupted file installed");
    // No temporary left visible after the next (clean) pass, which repairs the file.
    pass(&src, &dst, 2).await;
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_dying_mid_stream_gives_a_clear_error() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write(&src.join("big"), &noise(30 << 20, 11));
    let (c, s) = pair(quick(), quick()).await;
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        // Answer with an empty manifest, take the first file announcement, then die.
        let m = s.open_stream();
        s.reply(
            begin.id,
            Body::SyncBeginAck(ferry_transfer::proto::SyncBeginAck {
                manifest_stream: m.id(),
                entries: 0,
                compression: String::new(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        m.finish().await.unwrap();
        loop {
            let env = s.recv().await.unwrap();
            if matches!(env.body, Some(Body::PutFile(_))) {
                break;
            }
        }
        drop(s);
    });
    let r = tokio::time::timeout(Duration::from_secs(30), sync::sync_pass(&c, &src, &SyncOptions::default()))
        .await
        .expect("sync hung after the peer died");
    server.await.unwrap();
    let err = r.expect_err("sync succeeded without a peer");
    assert!(matches!(err, Error::PeerClosed(_)), "unexpected error: {err}");
    assert!(err.to_string().contains("connection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"x");
    let client = ConnectionOptions { idle_timeout: Duration::from_secs(2), ..quick() };
    // The destination handshakes, then neither answers nor pings.
    let server = ConnectionOptions { ping_interval: Duration::from_secs(3600), ..quick() };
    let (c, _s) = pair(client, server).await;
    let started = std::time::Instant::now();
    let r =
        tokio::time::timeout(Duration::from_secs(30), sync::sync_pass(&c, &src, &SyncOptions::default())).await.expect("hung instead of timing out");
    let err = r.expect_err("no error from a silent peer");
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(err.to_string().contains("nothing received"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sync_with_link_dest_shares_unchanged_files() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    for i in 0..50 {
        write(&src.join(format!("dir/f{i}")), &noise(100_000, i));
    }
    let snap1 = tmp.path().join("snap1");
    let snap2 = tmp.path().join("snap2");
    let s1 = sync::sync_local(&src, &snap1, &LocalSyncOptions::default()).await.unwrap();
    assert_eq!(s1.files_sent, 50);
    let opts = LocalSyncOptions { receive: ReceiveOptions { link_dest: Some(snap1.clone()), fsync: false }, ..Default::default() };
    let s2 = sync::sync_local(&src, &snap2, &opts).await.unwrap();
    assert_eq!((s2.files_sent, s2.links, s2.bytes_data), (0, 50, 0), "{s2:?}");
    assert_same_tree(&src, &snap2);
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(snap1.join("dir/f7")).unwrap().ino();
    let b = std::fs::metadata(snap2.join("dir/f7")).unwrap().ino();
    assert_eq!(a, b, "unchanged file not shared with the previous snapshot");
    // A change of metadata in a later pass into snap2 never alters snap1.
    chmod(&src.join("dir/f7"), 0o600);
    sync::sync_local(&src, &snap2, &opts).await.unwrap();
    assert_eq!(std::fs::metadata(snap1.join("dir/f7")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(std::fs::metadata(snap2.join("dir/f7")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn blocking_local_sync_works_without_a_runtime() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write(&src.join("x/y"), b"z");
    let stats = sync::sync_local_blocking(&src, &tmp.path().join("dst"), &LocalSyncOptions::default()).unwrap();
    assert_eq!(stats.files_sent, 1);
    assert_eq!(std::fs::read(tmp.path().join("dst/x/y")).unwrap(), b"z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_reach_the_total() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    for i in 0..5 {
        write(&src.join(format!("f{i}")), &noise(3 << 20, i));
    }
    let last = Arc::new(std::sync::Mutex::new(sync::Progress::default()));
    let l = last.clone();
    let opts = LocalSyncOptions {
        sync: SyncOptions { progress: Some(Arc::new(move |p: &sync::Progress| *l.lock().unwrap() = p.clone())), ..Default::default() },
        ..Default::default()
    };
    sync::sync_local(&src, &tmp.path().join("dst"), &opts).await.unwrap();
    let p = last.lock().unwrap().clone();
    assert_eq!((p.files_done, p.files_total), (5, 5));
    assert_eq!((p.bytes_done, p.bytes_total), (15 << 20, 15 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pass_is_repaired_by_the_next() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..20 {
        write(&src.join(format!("f{i}")), &noise(200_000, i));
    }
    // What a killed pass leaves: some files, a truncated one, a temporary file.
    write(&dst.join("f3"), &noise(200_000, 3));
    write(&dst.join("f4"), &noise(1000, 4));
    write(&dst.join(".ferry-part.f5.999.1"), b"partial");
    let s = pass(&src, &dst, 2).await;
    assert_eq!(s.files_sent, 20, "mtimes differ for f3, so it is sent too: {s:?}");
    assert!(!dst.join(".ferry-part.f5.999.1").exists(), "leftover temporary kept");
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterative_passes_stop_when_the_tree_is_quiet() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..100 {
        write(&src.join(format!("f{i}")), &noise(10_000, i));
    }
    let (c, s) = pair(quick(), quick()).await;
    let d2 = dst.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok(begin) = s.recv().await else { return };
            if sync::receive_pass(&s, &begin, &d2, &ReceiveOptions::default()).await.is_err() {
                return;
            }
        }
    });
    let policy = sync::IterationPolicy { max_passes: 5, max_changes: 0, max_bytes: 0 };
    let passes = sync::sync_iterative(&c, &src, &SyncOptions::default(), &policy).await.unwrap();
    // Pass 1 copies everything, pass 2 finds nothing left: done.
    assert_eq!(passes.len(), 2, "{passes:?}");
    assert_eq!((passes[0].files_sent, passes[1].changes()), (100, 0));
    assert_eq!(passes[1].pass, 2);
    c.close().await.unwrap();
    server.await.unwrap();
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_template_round_trip() {
    let tmp = tempdir();
    let template = match std::env::var("FERRY_TEST_TEMPLATE") {
        Ok(t) => std::path::PathBuf::from(t),
        Err(_) => {
            let dir = tmp.path().join("template");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-template.sh");
            let ok = std::process::Command::new("bash").arg(&script).arg("busybox").arg(&dir).status().is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: could not build a busybox template (scripts/install-deps.sh installs busybox-static)");
                return;
            }
            dir
        }
    };
    let dst = tmp.path().join("copy");
    let s1 = pass(&template, &dst, 1).await;
    assert!(s1.entries_scanned > 100, "{s1:?}");
    assert_same_tree(&template, &dst);
    assert_eq!(pass(&template, &dst, 2).await.changes(), 0);
}

/// Many changed files: their signatures are asked for ahead (several in flight), and files
/// that change, grow past the delta limit or vanish between the plan and their transfer are
/// still sent right (or skipped, then deleted by the next pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_delta_files_and_changes_between_plan_and_transfer() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let name = |i: u64| format!("d{}/f{i:03}", i % 7);
    for i in 0..120 {
        write(&src.join(name(i)), &noise(40_000, i));
    }
    pass(&src, &dst, 1).await;
    // 100 files change in the middle (delta candidates: more than the window of requests).
    for i in 0..100 {
        let p = src.join(name(i));
        let mut data = std::fs::read(&p).unwrap();
        data[20_000..20_100].copy_from_slice(&noise(100, 500 + i));
        write(&p, &data);
        set_mtime(&p, 1_650_000_000 + i as i64, 0);
    }
    // Right after the plan: f005 is rewritten, f050 grows past delta_max, f090 vanishes.
    let rewritten = noise(41_000, 9005);
    let grown = noise(300_000, 9050);
    let (s5, s50, s90) = (src.join(name(5)), src.join(name(50)), src.join(name(90)));
    let (r, g) = (rewritten.clone(), grown.clone());
    let changed = Arc::new(AtomicBool::new(false));
    let c = changed.clone();
    let opts = SyncOptions {
        pass: 2,
        delta_max: 200_000,
        progress: Some(Arc::new(move |p: &sync::Progress| {
            if p.files_done == 0 && !c.swap(true, Ordering::SeqCst) {
                std::fs::write(&s5, &r).unwrap();
                std::fs::write(&s50, &g).unwrap();
                std::fs::remove_file(&s90).unwrap();
            }
        })),
        ..Default::default()
    };
    let s2 = pass_with(&src, &dst, opts, quick()).await.expect("pass 2");
    assert!(changed.load(Ordering::SeqCst), "the plan was never reported");
    // 99 files went (f090 vanished), all but the grown one as deltas.
    assert_eq!((s2.files_sent, s2.delta_files), (99, 98), "{s2:?}");
    assert_eq!(std::fs::read(dst.join(name(5))).unwrap(), rewritten);
    assert_eq!(std::fs::read(dst.join(name(50))).unwrap(), grown);
    for i in [0u64, 17, 99] {
        assert_eq!(std::fs::read(dst.join(name(i))).unwrap(), std::fs::read(src.join(name(i))).unwrap());
    }
    // The next pass brings the times of the late changes and deletes the vanished file.
    let s3 = pass(&src, &dst, 3).await;
    assert_eq!(s3.deleted, 1, "{s3:?}");
    assert_same_tree(&src, &dst);
}

/// The source keeps several signature requests in flight: a destination that answers none
/// until it has seen a whole window still gets them all, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_requests_are_pipelined() {
    use ferry_transfer::proto::{FileEntry, FileKind, SignatureReply, SyncBeginAck, SyncEndAck};
    use prost::Message;
    let tmp = tempdir();
    let src = tmp.path().join("src");
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), &noise(32 << 10, i));
    }
    let (c, s) = pair(quick(), quick()).await;
    // A destination that claims an older copy of every file (so each is a delta candidate).
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let mut summary = Vec::new();
        FileEntry { kind: FileKind::Directory as i32, mode: 0o755, ..Default::default() }.encode_length_delimited(&mut summary).unwrap();
        for i in 0..40 {
            FileEntry {
                path: format!("f{i:02}").into_bytes(),
                kind: FileKind::Regular as i32,
                mode: 0o644,
                size: 32 << 10,
                mtime_ns: 1,
                ..Default::default()
            }
            .encode_length_delimited(&mut summary)
            .unwrap();
        }
        let mut m = s.open_stream();
        s.reply(begin.id, Body::SyncBeginAck(SyncBeginAck { manifest_stream: m.id(), entries: 41, put_files: true, ..Default::default() }))
            .await
            .unwrap();
        m.send(&summary).await.unwrap();
        m.finish().await.unwrap();
        // Take requests without answering until none comes for a while.
        let mut waiting = Vec::new();
        let mut asked = Vec::new();
        while let Ok(env) = s.recv_timeout(Duration::from_secs(1)).await {
            match env.body {
                Some(Body::GetSignature(g)) => {
                    asked.push(g.path);
                    waiting.push(env.id);
                }
                other => panic!("unexpected {:?} before any signature", other.map(|b| b.name())),
            }
        }
        let in_flight = waiting.len();
        for id in waiting {
            let reply = Body::SignatureReply(SignatureReply { signature: vec![] });
            s.reply(id, reply).await.unwrap();
        }
        // Then serve the rest: no copy to diff against, so every file comes whole.
        let mut whole = 0;
        loop {
            let env = s.recv().await.unwrap();
            match env.body {
                Some(Body::GetSignature(g)) => {
                    asked.push(g.path);
                    let reply = Body::SignatureReply(SignatureReply { signature: vec![] });
                    s.reply(env.id, reply).await.unwrap();
                }
                Some(Body::PutFiles(b)) => whole += b.entries.len(),
                Some(Body::SetMeta(_)) => {}
                Some(Body::SyncEnd(_)) => {
                    s.reply(env.id, Body::SyncEndAck(SyncEndAck::default())).await.unwrap();
                    break;
                }
                other => panic!("unexpected {:?}", other.map(|b| b.name())),
            }
        }
        let _ = s.recv().await;
        (in_flight, asked, whole)
    });
    let stats = tokio::time::timeout(LIMIT, sync::sync_pass(&c, &src, &SyncOptions::default())).await.expect("sync pass hung").expect("sync pass");
    let _ = c.close().await;
    let (in_flight, asked, whole) = server.await.unwrap();
    assert!(in_flight >= 8, "only {in_flight} signature requests in flight");
    let expected: Vec<Vec<u8>> = (0..40).map(|i| format!("f{i:02}").into_bytes()).collect();
    assert_eq!(asked, expected, "each file asked for once, in order");
    assert_eq!((whole, stats.files_sent, stats.delta_files), (40, 40, 0));
}

/// Small files travel in PutFiles batches; a file whose digest does not match is refused and
/// named, its neighbours in the batch are installed with their metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_small_file_with_a_bad_digest_is_refused() {
    use ferry_transfer::proto::{FileEntry, FileKind, PutFiles, SyncBegin, SyncEnd};
    let tmp = tempdir();
    let dst = tmp.path().join("dst");
    let (c, s) = pair(quick(), quick()).await;
    let d = dst.clone();
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = sync::receive_pass(&s, &begin, &d, &ReceiveOptions::default()).await;
        let _ = s.recv().await;
        r
    });
    let Body::SyncBeginAck(ack) = c.request(Body::SyncBegin(SyncBegin { pass: 1, xattrs: true, ..Default::default() })).await.unwrap() else {
        panic!("no SyncBeginAck");
    };
    assert!(ack.put_files, "the destination does not take batches");
    c.accept_stream(ack.manifest_stream).unwrap().read_to_end(1 << 20).await.unwrap();
    let file = |name: &str, size: usize| FileEntry {
        path: name.as_bytes().to_vec(),
        kind: FileKind::Regular as i32,
        mode: 0o640,
        uid: 0,
        gid: 0,
        mtime_ns: 1_500_000_000_123_456_789,
        size: size as u64,
        ..Default::default()
    };
    let (good, bad, empty) = (noise(5000, 1), noise(3000, 2), Vec::new());
    let mut batch = PutFiles { entries: vec![file("good", 5000), file("bad", 3000), file("empty", 0)], ..Default::default() };
    let mut all = Vec::new();
    for data in [&good, &bad, &empty] {
        all.extend_from_slice(data);
        batch.blake3.extend_from_slice(blake3::hash(data).as_bytes());
    }
    batch.data = all.into();
    batch.blake3[32] ^= 1; // the digest of "bad"
    c.send(Body::PutFiles(batch)).await.unwrap();
    let end = c.request(Body::SyncEnd(SyncEnd { pass: 1, ..Default::default() })).await;
    let _ = c.close().await;
    let served = server.await.unwrap();
    let err = end.expect_err("a corrupted file was accepted").to_string();
    assert!(err.contains("bad") && err.contains("blake3"), "{err}");
    assert!(served.is_err());
    assert!(!dst.join("bad").exists());
    assert_eq!(std::fs::read(dst.join("good")).unwrap(), good);
    assert_eq!(std::fs::read(dst.join("empty")).unwrap(), b"");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dst.join("good")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), 1_500_000_000);
    assert_eq!(md.mtime_nsec(), 123_456_789);
    // Nothing temporary left behind.
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A delta too big to travel inside its PutFile (over 1 MiB) goes on a data stream with its
/// FileCommit, and still rebuilds the file exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_delta_goes_on_a_stream() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut data = noise(8 << 20, 21);
    write(&src.join("big.img"), &data);
    pass(&src, &dst, 1).await;
    data[2 << 20..5 << 20].copy_from_slice(&noise(3 << 20, 22));
    write(&src.join("big.img"), &data);
    set_mtime(&src.join("big.img"), 1_700_000_100, 0);
    let s2 = pass(&src, &dst, 2).await;
    assert_eq!((s2.files_sent, s2.delta_files), (1, 1), "{s2:?}");
    assert!(s2.bytes_data > 1 << 20, "{s2:?}");
    assert!(s2.bytes_data < 4 << 20, "{s2:?}");
    assert_eq!(std::fs::read(dst.join("big.img")).unwrap(), data);
    assert_same_tree(&src, &dst);
}

/// The source walks its tree while the destination walks its own: when the source's walk
/// fails, it ends the pass it already began, nothing changes there, and the connection serves
/// the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_walk_its_tree_ends_the_pass_cleanly() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("f"), b"data");
    write(&dst.join("kept"), b"old");
    let (c, s) = pair(quick(), quick()).await;
    let d = dst.clone();
    let server = tokio::spawn(async move {
        let mut passes = Vec::new();
        while let Ok(env) = s.recv().await {
            if !matches!(env.body, Some(Body::SyncBegin(_))) {
                break;
            }
            passes.push(sync::receive_pass(&s, &env, &d, &ReceiveOptions::default()).await);
        }
        passes
    });
    let err = sync::sync_pass(&c, &src.join("f"), &SyncOptions::default()).await.expect_err("a file is not a tree");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(dst.join("kept")).unwrap(), b"old");
    let s2 = sync::sync_pass(&c, &src, &SyncOptions { pass: 2, ..Default::default() }).await.expect("the next pass");
    assert_eq!((s2.files_sent, s2.deleted), (1, 1), "{s2:?}");
    let _ = c.close().await;
    let passes = server.await.unwrap();
    assert_eq!(passes.len(), 2);
    assert!(passes.iter().all(|p| p.is_ok()), "{passes:?}");
    assert_same_tree(&src, &dst);
}

async fn pass_from(src: &Path, dst: &Path, n: u32, baseline: Option<sync::Baseline>) -> (PassStats, Option<sync::Baseline>) {
    run_pass(src, dst, SyncOptions { pass: n, ..Default::default() }, quick(), baseline, None).await.expect("sync pass")
}

async fn pass_tracking(
    src: &Path,
    dst: &Path,
    n: u32,
    baseline: Option<sync::Baseline>,
    copies: &mut sync::SentCopies,
) -> (PassStats, Option<sync::Baseline>) {
    run_pass(src, dst, SyncOptions { pass: n, ..Default::default() }, quick(), baseline, Some(copies)).await.expect("sync pass")
}

fn append(path: &Path, data: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_only_grew_goes_as_its_tail() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    // An append-only log, a file rewritten in place and then grown, a file replaced by a
    // shorter one and grown back past its old size, and one left alone.
    write(&src.join("db.log"), &noise(8 << 20, 1));
    write(&src.join("rewritten.bin"), &noise(4 << 20, 2));
    write(&src.join("replaced.bin"), &noise(2 << 20, 3));
    write(&src.join("still.bin"), &noise(1 << 20, 4));
    let mut copies = sync::SentCopies::default();
    let (s1, _) = pass_tracking(&src, &dst, 1, None, &mut copies).await;
    assert_eq!(s1.files_sent, 4, "{s1:?}");
    assert_eq!(copies.get(b"db.log").map(|c| c.len), Some(8 << 20));
    assert_eq!(copies.len(), 4);

    append(&src.join("db.log"), &noise(100_000, 5));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(src.join("rewritten.bin")).unwrap();
        f.write_all_at(b"changed in the middle", 2 << 20).unwrap();
        f.write_all_at(&noise(50_000, 6), 4 << 20).unwrap();
    }
    let mut grown = noise(2 << 20, 3);
    grown[10] ^= 1;
    grown.extend_from_slice(&noise(30_000, 7));
    std::fs::remove_file(src.join("replaced.bin")).unwrap();
    write(&src.join("replaced.bin"), &grown);
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let log_ino = ino(&dst.join("db.log"));
    let (s2, baseline) = pass_tracking(&src, &dst, 2, None, &mut copies).await;
    assert_same_tree(&src, &dst);
    assert_eq!(ino(&dst.join("db.log")), log_ino, "the log was rewritten, not appended to");
    assert_eq!((s2.files_sent, s2.delta_files, s2.append_files), (3, 3, 1), "{s2:?}");
    // The log's tail and the others' rsync deltas, nothing near the files' sizes.
    assert!(s2.bytes_data < 400_000, "{s2:?}");
    assert_eq!(copies.get(b"db.log").map(|c| c.len), Some((8 << 20) + 100_000));

    // The final pass of a migration (from the baseline, no walk of the destination) too.
    append(&src.join("db.log"), &noise(7_000, 8));
    let (s3, _) = pass_tracking(&src, &dst, 3, baseline, &mut copies).await;
    assert!(!s3.destination_walked);
    assert_eq!((s3.files_sent, s3.append_files), (1, 1), "{s3:?}");
    assert!(s3.bytes_data < 8_000, "{s3:?}");
    assert_same_tree(&src, &dst);

    // A destination copy that is not what was sent (changed there behind ferry's back): the
    // appended result does not match, the pass says so, and the copy is cut back as it was.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(dst.join("db.log")).unwrap();
        f.write_all_at(b"X", 5).unwrap();
    }
    let before = std::fs::metadata(dst.join("db.log")).unwrap().len();
    append(&src.join("db.log"), &noise(3_000, 9));
    let err = run_pass(&src, &dst, SyncOptions { pass: 4, ..Default::default() }, quick(), None, Some(&mut copies)).await.unwrap_err();
    assert!(err.to_string().contains("db.log") && err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(std::fs::metadata(dst.join("db.log")).unwrap().len(), before, "not cut back");
    assert!(copies.is_empty(), "a failed pass must drop what it knew of the destination");
    // A full pass repairs it with a signature delta.
    let (s4, _) = pass_tracking(&src, &dst, 4, None, &mut copies).await;
    assert_eq!(s4.append_files, 0, "{s4:?}");
    assert_same_tree(&src, &dst);

    // A deleted file is forgotten: created anew, it goes whole, not as a tail.
    std::fs::remove_file(src.join("still.bin")).unwrap();
    pass_tracking(&src, &dst, 5, None, &mut copies).await;
    assert!(copies.get(b"still.bin").is_none());
    write(&src.join("still.bin"), &noise(1 << 20, 4));
    let (s6, _) = pass_tracking(&src, &dst, 6, None, &mut copies).await;
    assert_eq!((s6.files_sent, s6.append_files), (1, 0), "{s6:?}");
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_from_the_previous_baseline_skips_the_destination_walk_and_misses_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root (owners, device nodes)");
        return;
    }
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    build_full_tree(&src);
    let (s1, baseline) = pass_from(&src, &dst, 1, None).await;
    assert!(s1.destination_walked && s1.files_sent >= 6, "{s1:?}");
    let baseline = baseline.expect("a clean pass leaves a baseline");

    // Every kind of change a running container makes between two passes.
    write(&src.join("small.txt"), b"hello again\n");
    set_mtime(&src.join("small.txt"), 1_000_000_100, 0);
    write(&src.join("a/new.txt"), b"new");
    std::fs::remove_file(src.join("empty")).unwrap();
    std::fs::hard_link(src.join("big.bin"), src.join("a/big-link")).unwrap();
    chmod(&src.join("setuid-bin"), 0o755);
    std::fs::remove_file(src.join("a/b/c/deep.txt")).unwrap();
    std::fs::create_dir(src.join("a/b/c/deep.txt")).unwrap();
    write(&src.join("a/b/c/deep.txt/inside"), b"was a file");
    std::fs::remove_file(src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("somewhere/else", src.join("dangling")).unwrap();
    std::fs::remove_file(src.join("a/linked-2")).unwrap();
    write(&src.join("a/linked-2"), b"no longer shared");

    let (s2, after) = pass_from(&src, &dst, 2, Some(baseline)).await;
    assert!(!s2.destination_walked, "the destination walked its tree: {s2:?}");
    assert!(s2.changes() >= 8, "{s2:?}");
    assert!(after.is_some());
    assert_same_tree(&src, &dst);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dst.join("a/big-link")).unwrap().ino(), std::fs::metadata(dst.join("big.bin")).unwrap().ino());
    // A full pass (the destination walks its tree again) finds nothing left to do.
    let s3 = pass(&src, &dst, 3).await;
    assert!(s3.destination_walked);
    assert_eq!(s3.changes(), 0, "the baseline pass missed something: {s3:?}");
}
