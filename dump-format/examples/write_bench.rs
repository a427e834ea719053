//! Write (and then read + verify) a directory as a ferry image and print the speed.
//!
//! cargo run --release -p ferry-dump-format --example write_bench -- DIR [--level N]
//!     [--workers N] [--store] [--sync] [--out FILE]
//!
//! Without --out the image goes to a temporary file that is removed afterwards. The last line
//! is JSON for scripts/bench.sh.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use ferry_dump_format::{verify, Manifest, Writer, WriterOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("write_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut out = None;
    let mut options = WriterOptions::default();
    let mut sync = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--level" => options.level = Some(args.next().ok_or("--level needs a value")?.parse()?),
            "--store" => options.level = None,
            "--sync" => sync = true,
            "--workers" => {
                options.workers = args.next().ok_or("--workers needs a value")?.parse()?
            }
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a value")?)),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            other => return Err(format!("unexpected argument {other:?}").into()),
        }
    }
    let dir = dir.ok_or(
        "usage: write_bench DIR [--level N] [--workers N] [--store] [--sync] [--out FILE]",
    )?;
    let scratch;
    let out = match out {
        Some(path) => path,
        None => {
            scratch = tempfile::Builder::new().prefix("ferry-bench").tempdir()?;
            scratch.path().join("image.fimg")
        }
    };

    let input_bytes: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();

    let start = Instant::now();
    let file = BufWriter::with_capacity(1 << 20, File::create(&out)?);
    let manifest = Manifest {
        image_id: "bench".into(),
        ..Default::default()
    };
    let mut writer = Writer::new(file, &manifest, options.clone())?;
    let sections = writer.write_dir(&dir)?.len();
    let mut file = writer.finish()?;
    file.flush()?;
    let file = file.into_inner()?;
    if sync {
        file.sync_all()?;
    }
    let write_secs = start.elapsed().as_secs_f64();
    let image_bytes = std::fs::metadata(&out)?.len();

    let start = Instant::now();
    verify(File::open(&out)?)?;
    let verify_secs = start.elapsed().as_secs_f64();

    let mb = input_bytes as f64 / 1e6;
    println!(
        "write:  {sections} files, {input_bytes} bytes in {write_secs:.3} s = {:.1} MB/s; image {image_bytes} bytes ({:.2}x), level {:?}, {} workers",
        mb / write_secs,
        input_bytes as f64 / image_bytes.max(1) as f64,
        options.level,
        options.workers
    );
    println!(
        "verify: {verify_secs:.3} s = {:.1} MB/s (uncompressed)",
        mb / verify_secs
    );
    println!(
        "{{\"input_bytes\":{input_bytes},\"image_bytes\":{image_bytes},\"write_secs\":{write_secs:.6},\"verify_secs\":{verify_secs:.6},\"write_mb_s\":{:.1},\"verify_mb_s\":{:.1}}}",
        mb / write_secs,
        mb / verify_secs
    );
    Ok(())
}
