//! The final pass of a migration, alone: sync SRC into a fresh DST once (not timed), append to
//! every 100th file of SRC (as a running container appends to its logs), then run the pass a
//! migration runs while the container is frozen (from the first pass's baseline: no walk of
//! DST) and print what it took. SRC is left as it was.
//!
//! usage: final_pass_bench SRC DST [--json]

use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_transfer::proto::{Body, Connection, ConnectionOptions};
use ferry_transfer::sync::{self, ReceiveOptions, SyncOptions};

/// The regular files under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list the tree").flatten() {
            let t = e.file_type().expect("stat");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [src, dst] = paths.as_slice() else {
        eprintln!("usage: final_pass_bench SRC DST [--json]");
        std::process::exit(2);
    };
    let (src, dst) = (PathBuf::from(src), PathBuf::from(dst));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let (first, last) = rt.block_on(async {
        let (a, b) = tokio::io::duplex(4 << 20);
        let d = dst.clone();
        let server = tokio::spawn(async move {
            let conn = Connection::server(b, ConnectionOptions::default()).await?;
            while let Ok(begin) = conn.recv().await {
                if !matches!(begin.body, Some(Body::SyncBegin(_))) {
                    break;
                }
                sync::receive_pass(&conn, &begin, &d, &ReceiveOptions { fsync: true, ..Default::default() }).await?;
            }
            ferry_transfer::Result::<()>::Ok(())
        });
        let conn = Connection::client(a, ConnectionOptions::default()).await.expect("handshake");
        let mut copies = sync::SentCopies::default();
        let (first, baseline) =
            sync::sync_pass_from(&conn, &src, &SyncOptions { pass: 1, ..Default::default() }, None, Some(&mut copies)).await.expect("pass 1");
        // Past the settling second, as between a migration's passes.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let grown: Vec<(PathBuf, u64)> = files(&src).into_iter().step_by(100).map(|p| (p.clone(), std::fs::metadata(&p).unwrap().len())).collect();
        for (p, _) in &grown {
            std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(&[b'+'; 100]).unwrap();
        }
        let (last, _) =
            sync::sync_pass_from(&conn, &src, &SyncOptions { pass: 2, ..Default::default() }, baseline, Some(&mut copies)).await.expect("final pass");
        for (p, len) in grown {
            std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
        }
        let _ = conn.close().await;
        let _ = server.await;
        (first, last)
    });
    if json {
        println!(
            "{{\"entries\":{},\"files_sent\":{},\"append_files\":{},\"bytes_on_wire\":{},\"first_seconds\":{:.4},\"final_seconds\":{:.4}}}",
            last.entries_scanned,
            last.files_sent,
            last.append_files,
            last.bytes_on_wire,
            first.duration.as_secs_f64(),
            last.duration.as_secs_f64()
        );
    } else {
        println!(
            "first pass {:.1} ms; final pass (from the baseline): {} entries, {} files sent ({} as their tail), {} bytes on the wire, {:.1} ms",
            first.duration.as_secs_f64() * 1e3,
            last.entries_scanned,
            last.files_sent,
            last.append_files,
            last.bytes_on_wire,
            last.duration.as_secs_f64() * 1e3
        );
    }
}
