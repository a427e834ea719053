//! checkpoint, restore, suspend, resume, check, image inspect|verify.
//!
//! checkpoint and restore print one timing line on stdout (freeze, dump, write; extract,
//! restore) unless `--quiet`; images over [`PROGRESS_MIN`] show a progress bar on a terminal.

use super::list::human;
use anyhow::{Context, Result};
use ferry_migrate::checkpoint::{self as ckpt, ImageOpts, Progress};
use ferry_runtime::container::{self, CheckpointOpts};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{Ctid, Host};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Images smaller than this show no progress bar.
pub const PROGRESS_MIN: u64 = 256 << 20;

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    pub ctid: String,
    /// The image file to write (default: <data>/dump/<CTID>/dump.img).
    #[arg(long)]
    pub dumpfile: Option<PathBuf>,
    /// Write a plain CRIU image directory instead of an image file.
    #[arg(long, conflicts_with = "dumpfile")]
    pub images_dir: Option<PathBuf>,
    /// Leave the container running after the dump.
    #[arg(long)]
    pub keep_running: bool,
    /// zstd level of the image (0 = uncompressed, default 1, up to 19).
    #[arg(long, value_name = "LEVEL")]
    pub compress: Option<i32>,
    /// Allow unix sockets connected to peers outside the container.
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// No timing line.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    pub ctid: String,
    /// The image file to restore from (default: <data>/dump/<CTID>/dump.img).
    #[arg(long)]
    pub dumpfile: Option<PathBuf>,
    /// Restore from a plain CRIU image directory (made with `checkpoint --images-dir`).
    #[arg(long, conflicts_with = "dumpfile")]
    pub images_dir: Option<PathBuf>,
    /// Restore from a self-contained image (`ferry snapshot export`): a container this host
    /// does not have is created from it (config, files), then its processes are restored.
    #[arg(long, conflicts_with_all = ["dumpfile", "images_dir"])]
    pub from_image: Option<PathBuf>,
    /// With --from-image: when the processes cannot be restored (another kernel or CRIU),
    /// start the container from the image's files instead.
    #[arg(long, requires = "from_image")]
    pub cold: bool,
    /// With --from-image and --new-id: a clone of the image's container CTID beside it (an
    /// address another container here has must be dropped or changed).
    #[command(flatten)]
    pub clone: super::newid::NewIdArgs,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Describe an image: where it comes from, the container, its processes, its sections.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check every length and digest of an image.
    Verify { file: PathBuf },
}

pub fn default_dumpfile(h: &Host, ct: &Ctid) -> PathBuf {
    h.suspend_image(ct)
}

/// A progress bar on a terminal for large images, nothing otherwise.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
}

impl Bar {
    fn new() -> Bar {
        Bar { bar: None, tty: std::io::stderr().is_terminal() }
    }
    fn update(&mut self, p: Progress) {
        if !self.tty || p.total < PROGRESS_MIN {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(p.total);
            if let Ok(s) = indicatif::ProgressStyle::with_template("{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}") {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_message(p.phase);
            b
        });
        bar.set_position(p.done.min(p.total));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub fn checkpoint(h: &Host, a: CheckpointArgs) -> Result<u8> {
    let ct = super::ctid(h, &a.ctid)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "checkpoint")?;
    super::notices::warn(ferry_migrate::stale::thaw_stale(h, &lock));
    let copts = CheckpointOpts { keep_running: a.keep_running, ext_unix_sk: a.ext_unix_sk, ..CheckpointOpts::default() };
    if let Some(dir) = &a.images_dir {
        let info = container::checkpoint_to_dir(h, &lock, &cfg, dir, &copts).inspect_err(|_| ckpt::journal(h, ct.as_str(), None))?;
        ckpt::journal(h, ct.as_str(), Some(info.freeze_ms + info.dump_ms));
        if !a.quiet {
            println!(
                "container {ct} checkpointed to {}: freeze {} ms, dump {} ms, total {} ms{}",
                dir.display(),
                info.freeze_ms,
                info.dump_ms,
                info.total_ms,
                if a.keep_running { " (still running)" } else { "" }
            );
        }
        return Ok(0);
    }
    let file = a.dumpfile.clone().unwrap_or_else(|| default_dumpfile(h, &ct));
    do_checkpoint(h, &lock, &cfg, &file, ImageOpts { checkpoint: copts, compress: a.compress }, a.quiet)
}

fn do_checkpoint(h: &Host, lock: &ContainerLock, cfg: &ferry_runtime::ContainerConfig, file: &Path, opts: ImageOpts, quiet: bool) -> Result<u8> {
    let ct = lock.ctid();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("container {ct}: checkpoint: create {}", dir.display()))?;
    }
    let mut bar = Bar::new();
    let done = ckpt::checkpoint_to_image(h, lock, cfg, file, &opts, &mut |p| bar.update(p))?;
    drop(bar);
    if !quiet {
        let c = &done.checkpoint;
        println!(
            "container {ct} checkpointed to {}: freeze {} ms, dump {} ms, write {} ms, image {}{}",
            file.display(),
            c.freeze_ms,
            c.dump_ms,
            done.write_ms,
            human(done.image_bytes),
            if opts.checkpoint.keep_running { " (still running)" } else { "" }
        );
    }
    Ok(0)
}

pub fn restore(h: &Host, a: RestoreArgs) -> Result<u8> {
    if let (Some(img), Some(_)) = (&a.from_image, &a.clone.new_id) {
        return restore_clone(h, &a, img);
    }
    if a.clone.new_id.is_some() {
        super::exit::usage!("restore: --new-id clones an exported image: add --from-image FILE");
    }
    // --from-image may create the container: its CTID need not exist yet.
    let ct = super::ctid(h, &a.ctid).or_else(|_| super::new_ctid(&a.ctid))?;
    let lock = ContainerLock::acquire(h, &ct, "restore")?;
    if let Some(dir) = &a.images_dir {
        let cfg = container::load_config(h, &ct)?;
        let info = container::restore_from_dir(h, &lock, &cfg, dir)?;
        if !a.quiet {
            println!(
                "container {ct} restored from {} (pid {}): restore {} ms, total {} ms",
                dir.display(),
                info.state.pid,
                info.restore_ms,
                info.total_ms
            );
        }
        return Ok(0);
    }
    if let Some(img) = &a.from_image {
        return restore_from_export(h, &lock, img, a.cold, a.quiet);
    }
    match &a.dumpfile {
        Some(file) => do_restore(h, &lock, file, a.quiet),
        // From the default place it is a resume: the image goes, or the next start would
        // resume it again (as vzctl).
        None => {
            let file = default_dumpfile(h, &ct);
            do_restore(h, &lock, &file, a.quiet)?;
            std::fs::remove_file(&file).with_context(|| format!("container {ct}: restore: remove {}", file.display()))?;
            let _ = std::fs::remove_dir(h.dump_dir(&ct));
            Ok(0)
        }
    }
}

/// `restore --from-image`: create the container from the image when this host lacks it, then
/// restore its processes (or, with --cold, start it when that fails).
fn restore_from_export(h: &Host, lock: &ContainerLock, img: &Path, cold: bool, quiet: bool) -> Result<u8> {
    use ferry_migrate::snapshot as snap;
    let ct = lock.ctid();
    let contents = snap::image_contents(img).map_err(|e| anyhow::Error::new(e).context(format!("container {ct}: restore")))?;
    if contents.manifest.ctid != ct.as_str() {
        anyhow::bail!("container {ct}: restore: image {} holds container {}, not {ct}", img.display(), contents.manifest.ctid);
    }
    let exists = h.config_path(ct).exists();
    let (cfg, created) = if exists { (container::load_config(h, ct)?, false) } else { (snap::create_from_image(h, lock, img, &contents)?, true) };
    if !contents.has_processes {
        let st = container::start(h, lock, &cfg)?;
        if !quiet {
            println!(
                "container {ct}{} started from the files of {} (pid {}; the image holds no processes)",
                if created { " created and" } else { "" },
                img.display(),
                st.pid
            );
        }
        return Ok(0);
    }
    let mut bar = Bar::new();
    let res = ckpt::restore_from_image(h, lock, img, &mut |p| bar.update(p));
    drop(bar);
    match res {
        Ok(done) => {
            if !quiet {
                println!(
                    "container {ct}{} restored from {} (pid {}): extract {} ms, restore {} ms",
                    if created { " created and" } else { "" },
                    img.display(),
                    done.restore.state.pid,
                    done.extract_ms,
                    done.restore.restore_ms
                );
            }
            Ok(0)
        }
        Err(e) if cold => {
            eprintln!(
                "ferry: container {ct}: its processes cannot be restored here (image from kernel {} with CRIU {}, this host runs kernel {}): {e}",
                contents.manifest.kernel_release,
                contents.manifest.criu_version,
                nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
            );
            eprintln!("ferry: container {ct}: starting it cold from the image's files (--cold); its processes start afresh");
            let st = container::start(h, lock, &cfg)?;
            if !quiet {
                println!("container {ct} started cold from the files of {} (pid {})", img.display(), st.pid);
            }
            Ok(0)
        }
        Err(e) => {
            if created {
                snap::remove_created(h, &cfg);
            }
            Err(anyhow::anyhow!(
                "{e}\n{}add --cold to start the container from the image's files instead",
                if created { "nothing was left on this host; " } else { "" }
            ))
        }
    }
}

/// `restore --from-image IMG --new-id CT2 ORIG`: a clone of ORIG (the image's container)
/// as CT2 on this host, with its own MACs, name and addresses; the original is not touched.
fn restore_clone(h: &Host, a: &RestoreArgs, img: &Path) -> Result<u8> {
    use ferry_migrate::snapshot as snap;
    let from = super::new_ctid(&a.ctid)?;
    let contents = snap::image_contents(img).map_err(|e| anyhow::Error::new(e).context(format!("container {from}: restore")))?;
    let text = String::from_utf8_lossy(&contents.manifest.config_toml).into_owned();
    let orig = ferry_runtime::ContainerConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("container {from}: restore: the image's config: {e}"))?;
    let cfg = a.clone.config(&orig)?.expect("--new-id given");
    let ct = cfg.ctid.clone();
    if contents.manifest.ctid != from.as_str() {
        anyhow::bail!("container {ct}: restore: image {} holds container {}, not {from}", img.display(), contents.manifest.ctid);
    }
    if h.config_path(&ct).exists() {
        return Err(ferry_runtime::Error::Exists {
            ctid: ct.to_string(),
            op: "restore",
            msg: "container already exists; pick another --new-id or destroy it first".into(),
        }
        .into());
    }
    ferry_runtime::lookup::check_new_ctid(h, &ct)?;
    if let Some(n) = &cfg.name {
        ferry_runtime::lookup::check_name_free(h, &ct, n)?;
    }
    let taken = ferry_runtime::newid::addresses_taken_here(h, &cfg)?;
    if !taken.is_empty() {
        let list: Vec<String> = taken.iter().map(|(a, c)| format!("{a} (container {c})")).collect();
        return Err(super::exit::invalid!(
            "container {ct}: restore: its addresses {} are in use here; drop them with --ipdel (or --ipdel all) and give new ones with --ipadd",
            list.join(", ")
        ));
    }
    if contents.has_processes && !cfg.net.ipadd.is_empty() && orig.net.ipadd.is_empty() {
        super::exit::usage!(
            "container {ct}: restore: the image's processes have no venet interface to take --ipadd; restore without it, then `ferry set {ct} --ipadd IP`"
        );
    }
    let lock = ContainerLock::acquire(h, &ct, "restore")?;
    let contents =
        snap::ImageContents { manifest: ferry_dump_format::Manifest { config_toml: cfg.to_toml().into_bytes(), ..contents.manifest }, ..contents };
    let cfg = snap::create_from_image(h, &lock, img, &contents)?;
    let res = if contents.has_processes {
        let mut bar = Bar::new();
        let r = ckpt::restore_from_image_as(h, &lock, img, Some(from.as_str()), &mut |p| bar.update(p)).map(|d| d.restore.state.pid);
        drop(bar);
        r.map_err(anyhow::Error::from)
    } else {
        container::start(h, &lock, &cfg).map(|s| s.pid).map_err(anyhow::Error::from)
    };
    match res {
        Ok(pid) => {
            if !a.quiet {
                println!("container {ct} restored from {} as a clone of {from} (pid {pid})", img.display());
            }
            Ok(0)
        }
        Err(e) => {
            snap::remove_created(h, &cfg);
            Err(e.context("nothing of the clone was left on this host"))
        }
    }
}

fn do_restore(h: &Host, lock: &ContainerLock, file: &Path, quiet: bool) -> Result<u8> {
    let ct = lock.ctid();
    if !file.exists() {
        anyhow::bail!("container {ct}: restore: no image at {}; make one with `ferry checkpoint {ct}` or name it with --dumpfile", file.display());
    }
    let mut bar = Bar::new();
    let done = ckpt::restore_from_image(h, lock, file, &mut |p| bar.update(p))?;
    drop(bar);
    if !quiet {
        let r = &done.restore;
        println!(
            "container {ct} restored from {} (pid {}): extract {} ms, restore {} ms, total {} ms",
            file.display(),
            r.state.pid,
            done.extract_ms,
            r.restore_ms,
            done.extract_ms + r.total_ms
        );
    }
    Ok(0)
}

pub fn suspend(h: &Host, ct: &str, quiet: bool) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "suspend")?;
    super::notices::warn(ferry_migrate::stale::thaw_stale(h, &lock));
    // A dump left from an earlier `checkpoint --keep-running` is stale: replaced atomically.
    let file = default_dumpfile(h, &ct);
    do_checkpoint(h, &lock, &cfg, &file, ImageOpts::default(), quiet)
}

pub fn resume(h: &Host, ct: &str, quiet: bool) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    let lock = ContainerLock::acquire(h, &ct, "resume")?;
    let mut bar = Bar::new();
    let done = ckpt::resume(h, &lock, &mut |p| bar.update(p))?;
    drop(bar);
    if !quiet {
        let r = &done.restore;
        println!(
            "container {ct} resumed (pid {}): extract {} ms, restore {} ms, total {} ms",
            r.state.pid,
            done.extract_ms,
            r.restore_ms,
            done.extract_ms + r.total_ms
        );
    }
    Ok(0)
}

pub fn check(h: &Host, default_kind: ferry_runtime::config::ContainerKind, json: bool) -> Result<u8> {
    let work = h.run_dir.join("check");
    let table = ferry_runtime::criu::check::host_check(h, &work, default_kind);
    let _ = std::fs::remove_dir_all(&work);
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{table}");
    }
    Ok(0)
}

pub fn image(cmd: ImageCmd) -> Result<u8> {
    match cmd {
        ImageCmd::Inspect { file, json } => {
            let f = std::fs::File::open(&file).with_context(|| format!("open image {}", file.display()))?;
            let i = ferry_dump_format::inspect(std::io::BufReader::new(f)).with_context(|| format!("image {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{i}");
            }
        }
        ImageCmd::Verify { file } => {
            let f = std::fs::File::open(&file).with_context(|| format!("open image {}", file.display()))?;
            let r = ferry_dump_format::verify(std::io::BufReader::new(f)).with_context(|| format!("image {} is damaged", file.display()))?;
            println!("{r}");
        }
    }
    Ok(0)
}
