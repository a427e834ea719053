//! The wire protocol: handshake versions, requests and replies, data streams, transports, and a
//! hostile peer.

mod common;

use std::time::Duration;

use common::*;
use ferry_transfer::proto::{
    Body, Connection, ConnectionOptions, Delete, FileCommit, FileEntry, FileKind, Hardlink, PutFile, StreamCheck, SyncBegin, SyncEnd, PROTO_MAJOR,
    PROTO_MINOR,
};
use ferry_transfer::sync::{self, ReceiveOptions};
use ferry_transfer::transport::Transport;
use ferry_transfer::Error;

#[tokio::test]
async fn newer_major_is_refused_naming_both_versions() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move { Connection::server(b, quick()).await.map(|_| ()) });
    let newer = ConnectionOptions { announce_major: Some(PROTO_MAJOR + 1), ..quick() };
    let client = Connection::client(a, newer).await.map(|_| ());
    let server = server.await.unwrap();
    let ours = format!("{PROTO_MAJOR}.{PROTO_MINOR}");
    let theirs = format!("{}.{PROTO_MINOR}", PROTO_MAJOR + 1);
    for (side, r) in [("destination", server), ("source", client)] {
        let err = r.expect_err("incompatible major accepted");
        let msg = err.to_string();
        assert!(matches!(err, Error::Handshake(_)), "{side}: {msg}");
        assert!(msg.contains(&ours) && msg.contains(&theirs) && msg.contains("incompatible"), "{side}: {msg}");
    }
}

#[tokio::test]
async fn handshake_reports_peer_versions() {
    let (c, s) = pair(quick(), quick()).await;
    assert_eq!(c.peer().proto_major, PROTO_MAJOR);
    assert_eq!(s.peer().ferry_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_replies_and_interleaved_streams() {
    let (c, s) = pair(quick(), quick()).await;
    let server = tokio::spawn(async move {
        // Answer two requests: one Ok with a stream id echoed, one error.
        let first = s.recv().await.unwrap();
        let Some(Body::ImageBegin(ib)) = first.body else { panic!("expected ImageBegin") };
        let mut rx = s.accept_stream(ib.stream).unwrap();
        let data = rx.read_to_end(64 << 20).await.unwrap_or_default();
        s.reply(
            first.id,
            Body::ImageEnd(ferry_transfer::proto::ImageEnd { size: data.len() as u64, blake3: blake3::hash(&data).as_bytes().to_vec() }),
        )
        .await
        .unwrap();
        let second = s.recv().await.unwrap();
        s.reply_error(second.id, "restore failed: criu said no").await.unwrap();
        let _ = s.recv().await;
    });
    // 5 MiB on a stream, sent concurrently with the request that announces it.
    let payload = noise(5 << 20, 5);
    let mut tx = c.open_stream();
    let id = tx.id();
    let p2 = payload.clone();
    let send = async move {
        tx.send(&p2).await.unwrap();
        tx.finish().await.unwrap();
    };
    let req = c.request(Body::ImageBegin(ferry_transfer::proto::ImageBegin {
        ctid: "101".into(),
        stream: id,
        size_hint: 0,
        compression: String::new(),
        tail_digest: false,
    }));
    let (reply, ()) = tokio::join!(req, send);
    let Body::ImageEnd(end) = reply.unwrap() else { panic!("expected ImageEnd") };
    assert_eq!(end.size, payload.len() as u64);
    assert_eq!(end.blake3, blake3::hash(&payload).as_bytes().to_vec());
    let err = c.request(Body::Restore(ferry_transfer::proto::Restore { ctid: "101".into(), from_image: true })).await.unwrap_err();
    assert!(matches!(&err, Error::Remote(m) if m.contains("criu said no")), "{err}");
    c.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
}

fn entry(p: &[u8], k: FileKind) -> FileEntry {
    FileEntry { path: p.to_vec(), kind: k as i32, mode: 0o755, ..Default::default() }
}

/// Send a 5-byte file at `p`, exactly as a source would.
async fn put(c: &Connection, p: &[u8]) {
    let mut st = c.open_stream();
    c.send(Body::PutFile(PutFile {
        entry: Some(FileEntry { size: 5, ..entry(p, FileKind::Regular) }),
        stream: st.id(),
        extents: vec![ferry_transfer::proto::Extent { offset: 0, len: 5 }],
        ..Default::default()
    }))
    .await
    .unwrap();
    st.send(b"owned").await.unwrap();
    st.finish().await.unwrap();
    c.send(Body::FileCommit(FileCommit { path: p.to_vec(), blake3: blake3::hash(b"owned").as_bytes().to_vec() })).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_never_escape_the_root() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    write(&outside.join("precious"), b"keep me");
    let (c, s) = pair(quick(), quick()).await;
    let r2 = root.clone();
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = sync::receive_pass(&s, &begin, &r2, &ReceiveOptions::default()).await;
        let _ = s.recv().await;
        r
    });
    let Body::SyncBeginAck(ack) =
        c.request(Body::SyncBegin(SyncBegin { pass: 1, ctid: String::new(), xattrs: false, no_summary: false, ..Default::default() })).await.unwrap()
    else {
        panic!("expected SyncBeginAck")
    };
    c.accept_stream(ack.manifest_stream).unwrap().read_to_end(1 << 20).await.unwrap();
    c.send(Body::Mkdir(entry(b"../escape-dir", FileKind::Directory))).await.unwrap();
    put(&c, b"../escaped-file").await;
    put(&c, outside.join("abs").as_os_str().as_encoded_bytes()).await;
    // A symlink to outside is a legitimate entry; writing through it is not.
    let mut link = entry(b"evil", FileKind::Symlink);
    link.symlink_target = outside.as_os_str().as_encoded_bytes().to_vec();
    c.send(Body::Symlink(link)).await.unwrap();
    put(&c, b"evil/owned").await;
    c.send(Body::Mkdir(entry(b"evil/sub", FileKind::Directory))).await.unwrap();
    c.send(Body::Hardlink(Hardlink { path: b"stolen".to_vec(), target: b"../outside/precious".to_vec() })).await.unwrap();
    c.send(Body::Delete(Delete { path: b"evil/precious".to_vec() })).await.unwrap();
    c.send(Body::Delete(Delete { path: b"../outside".to_vec() })).await.unwrap();
    put(&c, b"fine").await;
    let err = tokio::time::timeout(Duration::from_secs(30), c.request(Body::SyncEnd(SyncEnd { pass: 1, ..Default::default() })))
        .await
        .expect("no answer to SyncEnd")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("refused path") && msg.contains("escaped-file") && msg.contains("evil"), "{msg}");
    c.close().await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(30), server).await.expect("receiver hung").unwrap();
    assert!(served.is_err());
    // Nothing outside the root changed; the legitimate entries were made.
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
    let outside_names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|d| d.unwrap().file_name()).collect();
    assert_eq!(outside_names, vec![std::ffi::OsString::from("precious")]);
    let top: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|d| d.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!top.iter().any(|n| n.contains("escape")), "{top:?}");
    assert_eq!(std::fs::read(root.join("fine")).unwrap(), b"owned");
    assert!(std::fs::symlink_metadata(root.join("evil")).unwrap().file_type().is_symlink());
    assert!(!root.join("stolen").exists());
}

#[tokio::test]
async fn transport_failure_shows_the_other_sides_message() {
    let argv: Vec<String> = ["sh", "-c", "echo 'sh: 1: ferry: not found' >&2; exit 127"].iter().map(|s| s.to_string()).collect();
    let mut t = Transport::local(&argv).unwrap();
    let err = match t.connect(quick()).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("ferry: not found") && err.contains("--remote-ferry"), "{err}");
}

#[tokio::test]
async fn transport_to_something_else_is_refused_clearly() {
    let argv: Vec<String> = ["sh", "-c", "echo 'Welcome to host b!'; sleep 5"].iter().map(|s| s.to_string()).collect();
    let mut t = Transport::local(&argv).unwrap();
    let err = match t.connect(quick()).await {
        Ok(_) => panic!("handshake with a shell"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not speak ferry's migration protocol") && err.contains("Welcome"), "{err}");
    t.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_stream_is_verified_end_to_end() {
    use ferry_transfer::proto::{receive_image, send_image};
    let image = noise(7 << 20 | 123, 21);
    let (c, s) = pair(quick(), quick()).await;
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let mut out = Vec::new();
        let n = ferry_transfer::proto::receive_image(&s, &begin, &mut out, async { Ok(()) }).await.unwrap();
        let _ = s.recv().await;
        (n, out)
    });
    let mut seen = 0;
    let sent = send_image(&c, "101", &image[..], image.len() as u64, "", StreamCheck::Blake3, |n| seen = n).await.unwrap();
    assert_eq!((sent, seen), (image.len() as u64, image.len() as u64));
    c.close().await.unwrap();
    let (n, out) = server.await.unwrap();
    assert_eq!(n, image.len() as u64);
    assert!(out == image, "image differs");

    // A damaged image is refused, naming the container, on both sides.
    let hook: ferry_transfer::proto::TamperFn = std::sync::Arc::new(|_, d: &mut Vec<u8>| d[0] ^= 1);
    let (c, s) = pair(ConnectionOptions { tamper_data: Some(hook), ..quick() }, quick()).await;
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = receive_image(&s, &begin, tokio::io::sink(), async { Ok(()) }).await;
        let _ = s.recv().await;
        r
    });
    let err = send_image(&c, "102", &image[..], 0, "", StreamCheck::Blake3, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("image of 102 arrived damaged"), "{err}");
    c.close().await.unwrap();
    assert!(server.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_checked_image_waits_for_its_reader() {
    use ferry_transfer::proto::{receive_image, send_image};
    let image = noise(3 << 20 | 77, 5);
    // Whole: size and last 32 bytes agree, and the reader's verdict is Ok.
    let (c, s) = pair(quick(), quick()).await;
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let mut out = Vec::new();
        let n = receive_image(&s, &begin, &mut out, async { Ok(()) }).await.unwrap();
        let _ = s.recv().await;
        (n, out)
    });
    let sent = send_image(&c, "103", &image[..], 0, "", StreamCheck::Tail, |_| {}).await.unwrap();
    assert_eq!(sent, image.len() as u64);
    c.close().await.unwrap();
    let (n, out) = server.await.unwrap();
    assert!(n == image.len() as u64 && out == image);

    // The end of the stream damaged: refused by the tail check alone.
    let hook: ferry_transfer::proto::TamperFn = std::sync::Arc::new(|_, d: &mut Vec<u8>| {
        if let Some(b) = d.last_mut() {
            *b ^= 1;
        }
    });
    let (c, s) = pair(ConnectionOptions { tamper_data: Some(hook), ..quick() }, quick()).await;
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = receive_image(&s, &begin, tokio::io::sink(), async { Ok(()) }).await;
        let _ = s.recv().await;
        r
    });
    let err = send_image(&c, "104", &image[..], 0, "", StreamCheck::Tail, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("image of 104 arrived damaged"), "{err}");
    c.close().await.unwrap();
    assert!(server.await.unwrap().is_err());

    // Whatever the reader of the image found wrong is the answer the source gets.
    let (c, s) = pair(quick(), quick()).await;
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = receive_image(&s, &begin, tokio::io::sink(), async { Err("section \"pages-1.img\": blake3 digest mismatch".to_string()) }).await;
        let _ = s.recv().await;
        r
    });
    let err = send_image(&c, "105", &image[..], 0, "", StreamCheck::Tail, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("image of 105 was refused") && err.to_string().contains("digest mismatch"), "{err}");
    c.close().await.unwrap();
    assert!(server.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_sees_a_source_that_dies_mid_file() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    let (c, s) = pair(quick(), quick()).await;
    let r2 = root.clone();
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        sync::receive_pass(&s, &begin, &r2, &ReceiveOptions::default()).await
    });
    let Body::SyncBeginAck(ack) =
        c.request(Body::SyncBegin(SyncBegin { pass: 1, ctid: String::new(), xattrs: false, no_summary: false, ..Default::default() })).await.unwrap()
    else {
        panic!("expected SyncBeginAck")
    };
    c.accept_stream(ack.manifest_stream).unwrap().read_to_end(1 << 20).await.unwrap();
    let mut st = c.open_stream();
    c.send(Body::PutFile(PutFile {
        entry: Some(FileEntry { size: 10 << 20, ..entry(b"half", FileKind::Regular) }),
        stream: st.id(),
        extents: vec![ferry_transfer::proto::Extent { offset: 0, len: 10 << 20 }],
        ..Default::default()
    }))
    .await
    .unwrap();
    st.send(&noise(3 << 20, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(st);
    drop(c);
    let r = tokio::time::timeout(Duration::from_secs(30), server).await.expect("destination hung").unwrap();
    let err = r.expect_err("destination finished a pass without its source");
    assert!(matches!(err, Error::PeerClosed(_) | Error::Remote(_)), "{err}");
    // Nothing half-written is visible under its real name.
    assert!(!root.join("half").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_source_gives_up_on_does_not_break_the_pass() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    let (c, s) = pair(quick(), quick()).await;
    let r2 = root.clone();
    let server = tokio::spawn(async move {
        let begin = s.recv().await.unwrap();
        let r = sync::receive_pass(&s, &begin, &r2, &ReceiveOptions::default()).await;
        let _ = s.recv().await;
        r
    });
    let Body::SyncBeginAck(ack) =
        c.request(Body::SyncBegin(SyncBegin { pass: 1, ctid: String::new(), xattrs: false, no_summary: false, ..Default::default() })).await.unwrap()
    else {
        panic!("expected SyncBeginAck")
    };
    c.accept_stream(ack.manifest_stream).unwrap().read_to_end(1 << 20).await.unwrap();
    let mut st = c.open_stream();
    c.send(Body::PutFile(PutFile {
        entry: Some(FileEntry { size: 100, ..entry(b"unreadable", FileKind::Regular) }),
        stream: st.id(),
        extents: vec![ferry_transfer::proto::Extent { offset: 0, len: 100 }],
        ..Default::default()
    }))
    .await
    .unwrap();
    st.send(&[1u8; 10]).await.unwrap();
    st.abort("unreadable: reading: Input/output error").await.unwrap();
    c.send(Body::FileCommit(FileCommit { path: b"unreadable".to_vec(), blake3: Vec::new() })).await.unwrap();
    put(&c, b"next").await;
    let err = c.request(Body::SyncEnd(SyncEnd { pass: 1, ..Default::default() })).await.unwrap_err();
    assert!(err.to_string().contains("Input/output error") && err.to_string().contains("1 entries failed"), "{err}");
    c.close().await.unwrap();
    assert!(server.await.unwrap().is_err());
    assert_eq!(std::fs::read(root.join("next")).unwrap(), b"owned");
    assert!(!root.join("unreadable").exists());
}
