//! A peer on the wire that plays the attacker: message sequences that try to reach host files
//! through what they made in the tree, floods of control messages, a summary that decompresses
//! far beyond what it announced.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;
use ferry_transfer::proto::{
    Body, Connection, ConnectionOptions, Envelope, ErrorReply, FileEntry, FileKind, GetSignature, Hardlink, PutFile, SyncBegin, SyncBeginAck,
    SyncEnd, SyncEndAck,
};
use ferry_transfer::sync::{self, ReceiveOptions, SyncOptions};
use ferry_transfer::Error;
use prost::Message;

const LIMIT: Duration = Duration::from_secs(30);

fn entry(p: &[u8], k: FileKind, mode: u32) -> FileEntry {
    FileEntry { path: p.to_vec(), kind: k as i32, mode, mtime_ns: 1_000_000_000, ..Default::default() }
}

/// A destination receiving one pass into `root`; returns the source's side.
async fn destination(root: &Path) -> (Connection, tokio::task::JoinHandle<ferry_transfer::Result<sync::ReceiveStats>>) {
    let (c, s) = pair(quick(), quick()).await;
    let r = root.to_path_buf();
    let server = tokio::spawn(async move {
        let begin = s.recv().await?;
        let res = sync::receive_pass(&s, &begin, &r, &ReceiveOptions::default()).await;
        let _ = s.recv().await;
        res
    });
    let Body::SyncBeginAck(ack) = c.request(Body::SyncBegin(SyncBegin { pass: 1, ..Default::default() })).await.unwrap() else {
        panic!("expected SyncBeginAck")
    };
    c.accept_stream(ack.manifest_stream).unwrap().read_to_end(1 << 20).await.unwrap();
    (c, server)
}

/// Mkdir d, SetMeta d mode 04777, Symlink d -> a host file, SyncEnd: the directory's metadata,
/// applied at the end of the pass, must not reach the host file the symlink now names. Nor do a
/// signature, a delta's base, a hardlink or metadata reach it through symlinks the peer made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_source_cannot_reach_host_files_through_symlinks_it_made() {
    let tmp = tempdir();
    let (root, host) = (tmp.path().join("root"), tmp.path().join("host"));
    std::fs::create_dir_all(&root).unwrap();
    write(&host.join("file"), &noise(100_000, 1));
    std::fs::set_permissions(host.join("file"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(host.join("file")).unwrap();
    let host_file = host.join("file").as_os_str().as_encoded_bytes().to_vec();

    let (c, server) = destination(&root).await;
    c.send(Body::Mkdir(entry(b"d", FileKind::Directory, 0o755))).await.unwrap();
    c.send(Body::SetMeta(FileEntry { uid: 4321, gid: 4321, ..entry(b"d", FileKind::Directory, 0o4777) })).await.unwrap();
    c.send(Body::Symlink(FileEntry { symlink_target: host_file.clone(), ..entry(b"d", FileKind::Symlink, 0o777) })).await.unwrap();
    // Metadata for the symlink as if it were the file it names.
    c.send(Body::SetMeta(FileEntry { uid: 4321, ..entry(b"d", FileKind::Regular, 0o4777) })).await.unwrap();
    // Another name for what the symlink names.
    c.send(Body::Hardlink(Hardlink { path: b"stolen".to_vec(), target: b"d".to_vec() })).await.unwrap();
    // The host file's rsync signature (it tells what the file holds) ...
    let Body::SignatureReply(sig) = c.request(Body::GetSignature(GetSignature { path: b"d".to_vec(), block_size: 1024 })).await.unwrap() else {
        panic!("expected SignatureReply")
    };
    assert!(sig.signature.is_empty(), "the destination computed a signature through a symlink");
    // ... and a delta against it as the base.
    let delta = {
        let s = fast_rsync::Signature::calculate(b"", fast_rsync::SignatureOptions { block_size: 1024, crypto_hash_size: 8 });
        let mut d = Vec::new();
        fast_rsync::diff(&s.index(), b"whatever", &mut d).unwrap();
        d
    };
    let put = PutFile {
        entry: Some(FileEntry { size: 100_000, ..entry(b"d", FileKind::Regular, 0o644) }),
        delta: true,
        data: delta,
        blake3: vec![0; 32],
        ..Default::default()
    };
    c.send(Body::PutFile(put)).await.unwrap();
    let end = tokio::time::timeout(LIMIT, c.request(Body::SyncEnd(SyncEnd { pass: 1, ..Default::default() }))).await.expect("no answer to SyncEnd");
    let _ = c.close().await;
    let _ = tokio::time::timeout(LIMIT, server).await.expect("receiver hung");
    let err = end.expect_err("the hostile pass was accepted").to_string();
    assert!(err.contains("d"), "{err}");

    let after = std::fs::metadata(host.join("file")).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.gid(), after.nlink(), after.mtime()),
        (before.mode(), before.uid(), before.gid(), 1, before.mtime()),
        "the host file was changed through the tree"
    );
    assert_eq!(std::fs::read(host.join("file")).unwrap(), noise(100_000, 1));
    assert!(!root.join("stolen").exists());
    assert!(std::fs::symlink_metadata(root.join("d")).unwrap().file_type().is_symlink());
}

/// A raw peer: the handshake by hand, then whatever frames it likes.
async fn raw_client(opts: ConnectionOptions) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<ferry_transfer::Result<Connection>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(Connection::server(b, opts));
    let hello = ferry_transfer::proto::Hello {
        proto_major: ferry_transfer::proto::PROTO_MAJOR,
        proto_minor: ferry_transfer::proto::PROTO_MINOR,
        ferry_version: "hostile".into(),
        features: Vec::new(),
    }
    .encode_to_vec();
    let mut msg = b"FERRYMIG".to_vec();
    msg.extend_from_slice(&(ferry_transfer::proto::PROTO_MAJOR as u16).to_be_bytes());
    msg.extend_from_slice(&(ferry_transfer::proto::PROTO_MINOR as u16).to_be_bytes());
    msg.extend_from_slice(&(hello.len() as u32).to_be_bytes());
    msg.extend_from_slice(&hello);
    a.write_all(&msg).await.unwrap();
    let mut head = [0u8; 16];
    a.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut ack = vec![0u8; len];
    a.read_exact(&mut ack).await.unwrap();
    (a, server)
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A peer sends control messages of 16 MiB (the largest frame) as fast as it can, which this
/// side does not take: it buffers a bounded amount (not 1024 of them), and the connection ends
/// with an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_control_messages_is_refused_with_a_clear_error() {
    use tokio::io::AsyncWriteExt;
    let rss_before = vm_kib("VmRSS:");
    let opts = ConnectionOptions { idle_timeout: Duration::from_secs(3), ..quick() };
    let (mut raw, server) = raw_client(opts).await;
    let victim = server.await.unwrap().unwrap();
    let flood = tokio::spawn(async move {
        let env = Envelope { id: 1, reply_to: 0, body: Some(Body::Error(ErrorReply { message: "x".repeat((16 << 20) - 64) })) }.encode_to_vec();
        let mut frame = vec![1u8];
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&(env.len() as u32).to_be_bytes());
        frame.extend_from_slice(&env);
        for _ in 0..64 {
            if raw.write_all(&frame).await.is_err() {
                break;
            }
        }
        raw
    });
    // This side waits for an answer the peer never gives, taking no unsolicited message.
    let err = tokio::time::timeout(Duration::from_secs(60), victim.request(Body::Done(Default::default())))
        .await
        .expect("the flooded side never gave up")
        .expect_err("the flood was answered");
    let grown_mib = vm_kib("VmHWM:").saturating_sub(rss_before) >> 10;
    let msg = err.to_string();
    eprintln!("refused: {msg}");
    assert!(matches!(err, Error::Protocol(_)) && msg.contains("control messages") && msg.contains("limit"), "{msg}");
    assert!(grown_mib < 400, "the flooded side grew by {grown_mib} MiB");
    drop(victim);
    let _ = flood.await;
}

/// A destination announces one entry and a summary of 100 bytes, then streams a compressed
/// summary that inflates to millions of entries: the source refuses it before building them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_beyond_its_announcement_is_refused() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"data");
    // 2 MiB of zeros: two million empty entries once decoded.
    let bomb = zstd::bulk::compress(&vec![0u8; 2 << 20], 19).unwrap();
    assert!(bomb.len() < 4096);
    for announce_bytes in [false, true] {
        let (c, s) = pair(quick(), quick()).await;
        let bomb = bomb.clone();
        let dest = tokio::spawn(async move {
            while let Ok(env) = s.recv().await {
                match env.body {
                    Some(Body::SyncBegin(_)) => {
                        let mut st = s.open_stream();
                        let mut ack =
                            SyncBeginAck { manifest_stream: st.id(), entries: 1, compression: "zstd".into(), put_files: true, ..Default::default() };
                        if announce_bytes {
                            ack.summary_bytes = 100;
                        }
                        s.reply(env.id, Body::SyncBeginAck(ack)).await.unwrap();
                        st.send(&bomb).await.unwrap();
                        st.finish().await.unwrap();
                    }
                    Some(Body::SyncEnd(_)) => s.reply(env.id, Body::SyncEndAck(SyncEndAck::default())).await.unwrap(),
                    Some(Body::PutFile(_)) => {
                        let _ = s.recv().await; // its FileCommit
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
        let rss_before = vm_kib("VmRSS:");
        let r = tokio::time::timeout(LIMIT, sync::sync_pass(&c, &src, &SyncOptions::default())).await.expect("the source hung");
        let grown_mib = vm_kib("VmHWM:").saturating_sub(rss_before) >> 10;
        let err = r.expect_err("the inflated summary was taken");
        let msg = err.to_string();
        assert!(matches!(err, Error::Protocol(_)) && msg.contains("announced"), "{msg}");
        assert!(grown_mib < 200, "the source grew by {grown_mib} MiB");
        eprintln!("refused: {msg}");
        let _ = c.close().await;
        dest.abort();
    }
}
