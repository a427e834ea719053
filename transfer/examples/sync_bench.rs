//! Sync directory A into directory B through ferry's protocol over an in-process pipe and print
//! what it cost, for scripts/bench.sh to compare with `rsync -a`.
//!
//! usage: sync_bench SRC DST [--pass N] [--link-dest DIR] [--no-xattrs] [--json]
//! Run it again after changing SRC to measure a later pass.

use std::path::PathBuf;

use ferry_transfer::sync::{self, LocalSyncOptions, ReceiveOptions, SyncOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut paths = Vec::new();
    let mut opts = LocalSyncOptions { sync: SyncOptions::default(), receive: ReceiveOptions::default() };
    let mut json = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pass" => opts.sync.pass = args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage()),
            "--link-dest" => opts.receive.link_dest = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            "--no-xattrs" => opts.sync.xattrs = false,
            "--fsync" => opts.receive.fsync = true,
            "--json" => json = true,
            "-h" | "--help" => usage(),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [src, dst] = paths.as_slice() else { usage() };
    match sync::sync_local_blocking(src, dst, &opts) {
        Ok(s) => {
            if json {
                println!(
                    "{{\"pass\":{},\"entries\":{},\"files_sent\":{},\"delta_files\":{},\"bytes_on_wire\":{},\"bytes_data\":{},\"deleted\":{},\"seconds\":{:.3}}}",
                    s.pass, s.entries_scanned, s.files_sent, s.delta_files, s.bytes_on_wire, s.bytes_data, s.deleted,
                    s.duration.as_secs_f64()
                );
            } else {
                println!(
                    "pass {}: {} entries, {} files sent ({} as deltas), {} deleted, {} bytes on the wire ({} file data), {:.3}s",
                    s.pass,
                    s.entries_scanned,
                    s.files_sent,
                    s.delta_files,
                    s.deleted,
                    s.bytes_on_wire,
                    s.bytes_data,
                    s.duration.as_secs_f64()
                );
            }
        }
        Err(e) => {
            eprintln!("sync_bench: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: sync_bench SRC DST [--pass N] [--link-dest DIR] [--no-xattrs] [--fsync] [--json]");
    std::process::exit(2);
}
