//! Small command line over the library, for trying images by hand and for scripts until the
//! `ferry image` commands exist:
//!
//! image_tool pack CRIU_DIR OUT | unpack FILE DIR | verify FILE | inspect FILE [--json]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use ferry_dump_format::{extract_to_dir, inspect, verify, Manifest, Writer, WriterOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["pack", dir, out] => pack(Path::new(dir), Path::new(out)),
        ["unpack", file, dir] => File::open(file)
            .map_err(Into::into)
            .and_then(|f| extract_to_dir(f, Path::new(dir)).map_err(Into::into))
            .map(|m| println!("extracted image {} into {dir}", m.image_id)),
        ["verify", file] => File::open(file).map_err(Into::into).and_then(|f| verify(f).map_err(Into::into)).map(|report| println!("{report}")),
        ["inspect", file, rest @ ..] => File::open(file).map_err(Into::into).and_then(|f| inspect(f).map_err(Into::into)).and_then(|i| {
            if rest == ["--json"] {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{i}");
            }
            Ok(())
        }),
        _ => Err("usage: image_tool pack DIR OUT | unpack FILE DIR | verify FILE | inspect FILE [--json]".into()),
    };
    if let Err(e) = result {
        eprintln!("image_tool: {e}");
        std::process::exit(1);
    }
}

fn pack(dir: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let manifest =
        Manifest { image_id: format!("manual-{}", created.as_secs()), created_unix_secs: i64::try_from(created.as_secs())?, ..Default::default() };
    let mut writer = Writer::new(BufWriter::new(File::create(out)?), &manifest, WriterOptions::default())?;
    let sections = writer.write_dir(dir)?;
    writer.finish()?.flush()?;
    println!("wrote {} sections to {}", sections.len(), out.display());
    Ok(())
}
