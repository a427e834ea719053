//! Write (and then read + verify) a directory as a ferry image and print the speed.
//!
//! cargo run --release -p ferry-dump-format --example write_bench -- DIR [--level N]
//!     [--workers N] [--store] [--sync] [--no-verify] [--out FILE]
//!
//! Without --out the image goes to a temporary file that is removed afterwards. The last line
//! is JSON for scripts/bench.sh.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use ferry_dump_format::{verify, Manifest, Writer, WriterOptions};

/// println! that does not panic when stdout is closed early.
macro_rules! out_line {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
    let mut check = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--level" => options.level = Some(args.next().ok_or("--level needs a value")?.parse()?),
            "--store" => options.level = None,
            "--sync" => sync = true,
            "--no-verify" => check = false,
            "--workers" => options.workers = args.next().ok_or("--workers needs a value")?.parse()?,
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a value")?)),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            other => return Err(format!("unexpected argument {other:?}").into()),
        }
    }
    let dir = dir.ok_or("usage: write_bench DIR [--level N] [--workers N] [--store] [--sync] [--no-verify] [--out FILE]")?;
    let scratch;
    let out = match out {
        Some(path) => path,
        None => {
            scratch = tempfile::Builder::new().prefix("ferry-bench").tempdir()?;
            scratch.path().join("image.fimg")
        }
    };

    let input_bytes: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum();

    let start = Instant::now();
    let file = Counting(BufWriter::with_capacity(1 << 20, File::create(&out)?), 0);
    let manifest = Manifest { image_id: "bench".into(), ..Default::default() };
    let mut writer = Writer::new(file, &manifest, options.clone())?;
    let sections = writer.write_dir(&dir)?.len();
    let Counting(mut file, image_bytes) = writer.finish()?;
    file.flush()?;
    let file = file.into_inner()?;
    if sync {
        file.sync_all()?;
    }
    let write_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    if check {
        verify(File::open(&out)?)?;
    }
    let verify_secs = if check { start.elapsed().as_secs_f64() } else { f64::NAN };

    let mb = input_bytes as f64 / 1e6;
    out_line!(
        "write:  {sections} files, {input_bytes} bytes in {write_secs:.3} s = {:.1} MB/s; image {image_bytes} bytes ({:.2}x), level {:?}, {} workers",
        mb / write_secs,
        input_bytes as f64 / image_bytes.max(1) as f64,
        options.level,
        options.workers
    );
    out_line!("verify: {verify_secs:.3} s = {:.1} MB/s (uncompressed)", mb / verify_secs);
    out_line!(
        "{{\"input_bytes\":{input_bytes},\"image_bytes\":{image_bytes},\"write_secs\":{write_secs:.6},\"verify_secs\":{verify_secs:.6},\"write_mb_s\":{:.1},\"verify_mb_s\":{:.1}}}",
        mb / write_secs,
        mb / verify_secs
    );
    Ok(())
}

/// Counts the bytes written (the output may be /dev/null).
struct Counting<W: Write>(W, u64);

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
