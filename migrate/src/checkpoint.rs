//! Checkpoint into one ferry image file and restore from one: the runtime dumps into a CRIU
//! image directory ([`ferry_runtime::container::checkpoint_to_dir`]); this module wraps that
//! directory, the container's config and a summary into a dump-format image, written to a
//! temporary name and renamed into place, and unwraps it again for a restore (verified while
//! extracting, refused when it holds another container).

use ferry_dump_format as fmt;
use ferry_runtime::container::{self, CheckpointInfo, CheckpointMeta, CheckpointOpts, CheckpointSummary, RestoreInfo};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Host};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Section name of the container's config inside an image.
pub const CONFIG_SECTION: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] ferry_runtime::Error),
    #[error("container {ctid}: {op}: image {path}: {source}")]
    Image {
        ctid: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: fmt::Error,
    },
    #[error("container {ctid}: {op}: {msg}")]
    Other { ctid: String, op: &'static str, msg: String },
    /// A step of `op` failed (`what`, with the path it worked on), because of `source`.
    #[error("container {ctid}: {op}: {what}{}{source}", if what.is_empty() { "" } else { ": " })]
    Failed {
        ctid: String,
        op: &'static str,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing the image failed after the dump ended the container's processes: its CRIU
    /// images are kept (or could not be), `kept` says where and how to restore them.
    #[error("container {ctid}: checkpoint: {source}; {kept}")]
    ImagesKept {
        ctid: String,
        #[source]
        source: Box<Error>,
        kept: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Which class of failure this is (see `ferry_runtime::exit`).
    pub fn class(&self) -> ferry_runtime::exit::ErrorClass {
        match self {
            Error::Runtime(e) => e.class(),
            _ => ferry_runtime::exit::ErrorClass::Failed,
        }
    }
}

fn other(ctid: &str, op: &'static str, msg: impl Into<String>) -> Error {
    Error::Other { ctid: ctid.to_string(), op, msg: msg.into() }
}

fn failed(ctid: &str, op: &'static str, what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Failed { ctid: ctid.to_string(), op, what: what.into(), source: source.into() }
}

/// Where a long operation is: `phase` ("write", "extract"), bytes done of `total`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// Options of [`checkpoint_to_image`].
#[derive(Debug, Clone, Default)]
pub struct ImageOpts {
    pub checkpoint: CheckpointOpts,
    /// zstd level; None = the format's default (1). 0 stores uncompressed.
    pub compress: Option<i32>,
}

/// A finished checkpoint into an image file.
#[derive(Debug, Clone)]
pub struct ImageCheckpoint {
    pub checkpoint: CheckpointInfo,
    /// Writing the image file (compression, digests, fsync, rename).
    pub write_ms: u64,
    pub image_bytes: u64,
    pub path: PathBuf,
}

/// A finished restore from an image file.
#[derive(Debug, Clone)]
pub struct ImageRestore {
    pub restore: RestoreInfo,
    pub extract_ms: u64,
    /// The config was taken from the image (the host had none for this CTID).
    pub config_installed: bool,
}

/// A reader that reports how many bytes went through.
struct Counting<'a, R> {
    inner: R,
    done: &'a mut u64,
    total: u64,
    phase: &'static str,
    progress: &'a mut dyn FnMut(Progress),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.done += n as u64;
        (self.progress)(Progress { phase: self.phase, done: *self.done, total: self.total });
        Ok(n)
    }
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (u.release().to_string_lossy().into_owned(), u.machine().to_string_lossy().into_owned()),
        Err(_) => (String::new(), String::new()),
    }
}

fn cgroup_mode_name() -> String {
    let root = Path::new(ferry_runtime::cgroups::DEFAULT_CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        "v2".into()
    } else if root.join("unified").is_dir() {
        "hybrid".into()
    } else {
        "v1".into()
    }
}

fn image_id(ct: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let h = blake3::hash(format!("{ct}:{}:{}:{}", std::process::id(), t.as_secs(), t.subsec_nanos()).as_bytes());
    h.to_hex()[..32].to_string()
}

/// The dump-format summary of what the checkpoint saw.
pub fn format_summary(s: &CheckpointSummary) -> fmt::Summary {
    fmt::Summary {
        processes: s.processes.iter().map(|p| fmt::Process { pid: p.pid, ppid: p.ppid, command: p.command.clone() }).collect(),
        tcp_connections: s
            .tcp
            .iter()
            .map(|t| fmt::TcpConnection { local: t.local.clone(), remote: t.remote.clone(), state: t.state.clone() })
            .collect(),
        addresses: s.addresses.iter().map(|a| fmt::IfAddress { interface: a.interface.clone(), ips: a.ips.clone(), mac: a.mac.clone() }).collect(),
        memory_bytes: s.memory_bytes,
    }
}

/// Bytes in the regular files directly in `dir` (a CRIU image directory).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// Checkpoint a running container into the image file `path` (replaced atomically when it
/// exists). The CRIU images go to a temporary directory next to `path`, removed afterwards.
pub fn checkpoint_to_image(
    host: &Host,
    lock: &ContainerLock,
    cfg: &ContainerConfig,
    path: &Path,
    opts: &ImageOpts,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImageCheckpoint> {
    let ct = lock.ctid().as_str();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The CRIU images hold the container's memory: a directory of root's alone.
    let tmp = ferry_runtime::util::private_temp_dir(&parent, &format!("ferry-ckpt-{ct}"))
        .map_err(|e| failed(ct, "checkpoint", format!("create a work directory in {}", parent.display()), e))?;
    let images = tmp.path().join("criu");
    let info = container::checkpoint_to_dir(host, lock, cfg, &images, &opts.checkpoint).inspect_err(|_| journal(host, ct, None))?;

    // From here the container is gone (unless kept running): a failure to write the image
    // must not lose the dump, so the CRIU images are kept and named in the error.
    let t0 = Instant::now();
    match write_image(cfg, &info, &images, path, opts, progress) {
        Ok(image_bytes) => {
            journal(host, ct, Some(info.freeze_ms + info.dump_ms));
            Ok(ImageCheckpoint { checkpoint: info, write_ms: t0.elapsed().as_millis() as u64, image_bytes, path: path.to_path_buf() })
        }
        Err(e) => {
            journal(host, ct, None);
            if opts.checkpoint.keep_running {
                return Err(e);
            }
            let keep = host.dump_dir(lock.ctid()).join(format!("criu-{}", image_id(ct)));
            let kept = std::fs::create_dir_all(keep.parent().unwrap_or(Path::new("/"))).and_then(|_| std::fs::rename(&images, &keep)).is_ok();
            let where_ = if kept {
                format!("the CRIU images are kept in {}; `ferry restore {ct} --images-dir {}` restores them", keep.display(), keep.display())
            } else {
                "the CRIU images could not be kept".into()
            };
            Err(Error::ImagesKept { ctid: ct.to_string(), source: Box::new(e), kept: where_ })
        }
    }
}

/// Note a finished checkpoint in the host's event journal (`frozen_ms` None: it failed).
pub fn journal(host: &Host, ct: &str, frozen_ms: Option<u64>) {
    use ferry_runtime::events::{record, Event, Kind};
    record(host, &Event::now(Kind::Checkpoint, ct, frozen_ms.is_some(), frozen_ms));
}

fn write_image(
    cfg: &ContainerConfig,
    info: &CheckpointInfo,
    images: &Path,
    path: &Path,
    opts: &ImageOpts,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64> {
    let ct = cfg.ctid.as_str();
    // Mode 0600 from its creation (it holds the container's memory), an unpredictable name
    // created exclusively, renamed over `path` once complete.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = ferry_runtime::util::private_temp_file(dir, &path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .map_err(|e| failed(ct, "write image", "", e))?;
    let tmp_path = tmp.path().to_path_buf();
    let (file, tmp) = tmp.into_parts();
    let buf = write_image_to(cfg, &info.meta, images, std::io::BufWriter::with_capacity(1 << 20, file), opts.compress, fmt::FORMAT_MAJOR, progress)
        .map_err(|e| match e {
        Error::Image { ctid, op, source, .. } => Error::Image { ctid, op, path: path.to_path_buf(), source },
        e => e,
    })?;
    let file = buf.into_inner().map_err(|e| failed(ct, "write image", format!("flush {}", tmp_path.display()), e.into_error()))?;
    file.sync_all().map_err(|e| failed(ct, "write image", format!("fsync {}", tmp_path.display()), e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    tmp.persist(path).map_err(|e| failed(ct, "write image", format!("rename to {}", path.display()), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(len)
}

/// The manifest of a new image of `cfg` written on this host now (sections are listed by
/// the writer at the end).
pub fn new_manifest(cfg: &ContainerConfig, criu_version: &str, summary: Option<fmt::Summary>) -> fmt::Manifest {
    let ct = cfg.ctid.as_str();
    let (kernel, arch) = uname();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    fmt::Manifest {
        image_id: image_id(ct),
        parent_image_id: String::new(),
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        criu_version: criu_version.to_string(),
        kernel_release: kernel,
        architecture: arch,
        cgroup_mode: cgroup_mode_name(),
        source_host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        created_unix_secs: now.as_secs() as i64,
        created_nanos: now.subsec_nanos(),
        config_toml: cfg.to_toml().into_bytes(),
        sections: Vec::new(),
        summary,
        ctid: ct.to_string(),
    }
}

/// CRIU image files at least this large are mapped rather than read.
const MAP_AT_LEAST: usize = 1 << 20;
/// How much of a mapped file goes to the writer at once (the writer's chunk length: each
/// piece goes out as one chunk without a copy).
const MAPPED_PIECE: usize = 4 << 20;

/// Write the CRIU images in `images` with `cfg` and the checkpoint's `meta` as one ferry image
/// of format `major` (`fmt::FORMAT_MAJOR` unless the reader is an older ferry) into `out` (a
/// file, a pipe, a socket: nothing is seeked). Returns `out`.
pub fn write_image_to<W: Write>(
    cfg: &ContainerConfig,
    meta: &CheckpointMeta,
    images: &Path,
    out: W,
    compress: Option<i32>,
    major: u16,
    progress: &mut dyn FnMut(Progress),
) -> Result<W> {
    let ct = cfg.ctid.as_str();
    let manifest = new_manifest(cfg, &meta.criu_version, Some(format_summary(&meta.summary)));
    let mut wopts = fmt::WriterOptions { major, ..Default::default() };
    match compress {
        Some(0) => wopts.level = None,
        Some(l) => wopts.level = Some(l),
        None => {}
    }
    let img_err = |source: fmt::Error| Error::Image { ctid: ct.to_string(), op: "write image", path: images.to_path_buf(), source };
    let mut w = fmt::Writer::new(out, &manifest, wopts).map_err(img_err)?;
    w.add_bytes(fmt::SectionKind::Config, CONFIG_SECTION, false, cfg.to_toml().as_bytes()).map_err(img_err)?;
    let total = dir_size(images);
    let mut done = 0u64;
    let mut names: Vec<String> = std::fs::read_dir(images)
        .map_err(|e| failed(ct, "write image", format!("list {}", images.display()), e))?
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let p = images.join(&name);
        let f = File::open(&p).map_err(|e| failed(ct, "write image", format!("open {}", p.display()), e))?;
        let len = f.metadata().map(|m| m.len()).ok();
        // Large files (the memory pages) are hashed and sent straight from the page cache.
        let mapped = len
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n >= MAP_AT_LEAST)
            .and_then(std::num::NonZeroUsize::new)
            .and_then(|n| ferry_transfer::mapped::MappedFile::map(&f, n).ok());
        match mapped {
            Some(m) => {
                let mut section = w.start_section(fmt::SectionKind::CriuImage, &name, false, len).map_err(img_err)?;
                for piece in m.bytes().chunks(MAPPED_PIECE) {
                    section.write_bytes(piece).map_err(img_err)?;
                    done += piece.len() as u64;
                    progress(Progress { phase: "write", done, total });
                }
                section.finish().map_err(img_err)?;
            }
            None => {
                let r = Counting { inner: f, done: &mut done, total, phase: "write", progress: &mut *progress };
                w.add_reader(fmt::SectionKind::CriuImage, &name, false, r, len).map_err(img_err)?;
            }
        }
    }
    w.finish().map_err(img_err)
}

/// Restore a container from the image file `path`: verified while extracted to a temporary
/// directory under the data dir, refused when it holds another container. When this host has
/// no config for the CTID, the image's config is installed (the private area must be there).
pub fn restore_from_image(host: &Host, lock: &ContainerLock, path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<ImageRestore> {
    restore_from_image_as(host, lock, path, None, progress)
}

/// [`restore_from_image`] of an image of container `from` as the locked container, whose
/// config must be here (a clone: `restore --from-image --new-id`). The checkpoint is
/// retargeted to it (veth names); its addresses and MACs become the config's.
pub fn restore_from_image_as(
    host: &Host,
    lock: &ContainerLock,
    path: &Path,
    from: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImageRestore> {
    let ct = lock.ctid().as_str();
    let t0 = Instant::now();
    if container::status(host, lock.ctid())?.0 == container::Status::Running {
        return Err(ferry_runtime::Error::already_running(
            ct,
            "restore",
            format!("container is already running; stop it first with `ferry stop {ct}` or checkpoint it"),
        )
        .into());
    }
    let file = File::open(path).map_err(|e| failed(ct, "restore", format!("open image {}", path.display()), e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let img_err = |source: fmt::Error| Error::Image { ctid: ct.to_string(), op: "restore", path: path.to_path_buf(), source };
    let mut done = 0u64;
    let counting = Counting { inner: file, done: &mut done, total, phase: "extract", progress: &mut *progress };
    let mut reader = fmt::Reader::open(std::io::BufReader::with_capacity(1 << 20, counting)).map_err(img_err)?;
    let m = reader.manifest().clone();
    let clone = from.is_some_and(|f| f == m.ctid && f != ct);
    if m.ctid != ct && !clone {
        return Err(other(ct, "restore", format!("image {} holds container {}, not {ct}", path.display(), m.ctid)));
    }
    if clone && !host.config_path(lock.ctid()).exists() {
        return Err(other(ct, "restore", format!("restoring {} as {ct} needs the config of {ct} here first", m.ctid)));
    }
    // Config: this host's own (current limits), else the image's.
    let (cfg, config_installed) = match container::load_config(host, lock.ctid()) {
        Ok(c) => (c, false),
        Err(_) => {
            let text = String::from_utf8_lossy(&m.config_toml).into_owned();
            let c = ContainerConfig::from_toml(&text).map_err(|e| other(ct, "restore", format!("the image's config does not parse: {e}")))?;
            if c.ctid.as_str() != ct {
                return Err(other(ct, "restore", format!("image {} holds container {}, not {ct}", path.display(), c.ctid)));
            }
            (c, true)
        }
    };
    if !host.private_dir(lock.ctid()).exists() && !host.disk_image(lock.ctid()).exists() {
        return Err(other(
            ct,
            "restore",
            format!("no private area at {}: copy the container's files to this host first", host.private_dir(lock.ctid()).display()),
        ));
    }
    let work_parent = host.data_dir.join("dump").join(".work");
    let work = ferry_runtime::util::private_dir(&work_parent)
        .and_then(|()| ferry_runtime::util::private_temp_dir(&work_parent, &format!("ferry-rst-{ct}")))
        .map_err(|e| failed(ct, "restore", "create a work directory", e))?;
    fmt::extract_criu_images(&mut reader, work.path()).map_err(img_err)?;
    drop(reader);
    if clone {
        if let Some(meta) = CheckpointMeta::load(work.path())? {
            meta.retarget(&cfg)?.save(work.path())?;
        }
    }
    let extract_ms = t0.elapsed().as_millis() as u64;
    let mut cfg = cfg;
    if config_installed {
        // An unprivileged container gets a range of this host's pool (its own when free here).
        ferry_runtime::userns::pool::save_with_range(host, &mut cfg, &host.config_path(lock.ctid()))?;
    }
    let res = container::restore_from_dir(host, lock, &cfg, work.path());
    match res {
        Ok(restore) => Ok(ImageRestore { restore, extract_ms, config_installed }),
        Err(e) => {
            if config_installed {
                let _ = std::fs::remove_file(host.config_path(lock.ctid()));
            }
            Err(e.into())
        }
    }
}

/// Checkpoint the running container to its suspend image (`Host::suspend_image`), replacing
/// any earlier one atomically; it stops (vzctl's `suspend`).
pub fn suspend(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, progress: &mut dyn FnMut(Progress)) -> Result<ImageCheckpoint> {
    let file = host.suspend_image(lock.ctid());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(lock.ctid().as_str(), "suspend", format!("create {}", dir.display()), e))?;
    }
    checkpoint_to_image(host, lock, cfg, &file, &ImageOpts::default(), progress)
}

/// Restore the stopped container from its suspend image, then remove the image (vzctl's
/// `resume`).
pub fn resume(host: &Host, lock: &ContainerLock, progress: &mut dyn FnMut(Progress)) -> Result<ImageRestore> {
    let ct = lock.ctid();
    let file = host.suspend_image(ct);
    if container::status(host, ct)?.0 == container::Status::Running {
        return Err(ferry_runtime::Error::already_running(ct.as_str(), "resume", "container is already running").into());
    }
    if !file.exists() {
        return Err(other(ct.as_str(), "resume", format!("no suspend image at {}; suspend it first with `ferry suspend {ct}`", file.display())));
    }
    let done = restore_from_image(host, lock, &file, progress)?;
    std::fs::remove_file(&file).map_err(|e| failed(ct.as_str(), "resume", format!("remove {}", file.display()), e))?;
    let _ = std::fs::remove_dir(host.dump_dir(ct));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_runtime::container::{summary::ProcInfo, CheckpointMeta};
    use ferry_runtime::Ctid;

    fn info(dir: &Path) -> CheckpointInfo {
        CheckpointInfo {
            freeze_ms: 1,
            frozen_at: None,
            dump_ms: 2,
            total_ms: 3,
            images_dir: dir.to_path_buf(),
            log: dir.join("x.log"),
            meta: CheckpointMeta {
                ctid: "101".into(),
                veths: vec![("venet0".into(), "fv101".into())],
                ext_unix_sk: false,
                criu_version: "4.2.1".into(),
                summary: CheckpointSummary {
                    processes: vec![ProcInfo { pid: 1, ppid: 0, command: "init".into() }],
                    memory_bytes: 4096,
                    ..Default::default()
                },
                saved_resources: None,
                live_resources: None,
                isolation: None,
                system: None,
            },
            cleanup_error: None,
        }
    }

    #[test]
    fn image_round_trips_the_criu_directory_and_config() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("criu");
        std::fs::create_dir(&images).unwrap();
        std::fs::write(images.join("inventory.img"), b"inv").unwrap();
        std::fs::write(images.join("pages-1.img"), vec![7u8; 300_000]).unwrap();
        let cfg = ContainerConfig::new(Ctid::new("101").unwrap());
        let out = d.path().join("dump.img");
        let mut calls = Vec::new();
        let len = write_image(&cfg, &info(&images), &images, &out, &ImageOpts::default(), &mut |p| calls.push(p.done)).unwrap();
        assert_eq!(len, std::fs::metadata(&out).unwrap().len());
        assert_eq!(calls.last().copied(), Some(300_003), "progress reaches the total");
        assert!(std::fs::read_dir(d.path()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".tmp-")), "temp file left");

        let mut r = fmt::Reader::open(File::open(&out).unwrap()).unwrap();
        let m = r.manifest().clone();
        assert_eq!(m.ctid, "101");
        assert_eq!(m.criu_version, "4.2.1");
        assert_eq!(ContainerConfig::from_toml(std::str::from_utf8(&m.config_toml).unwrap()).unwrap(), cfg);
        assert_eq!(m.summary.unwrap().processes[0].command, "init");
        let back = d.path().join("back");
        std::fs::create_dir(&back).unwrap();
        fmt::extract_criu_images(&mut r, &back).unwrap();
        assert_eq!(std::fs::read(back.join("inventory.img")).unwrap(), b"inv");
        assert_eq!(std::fs::read(back.join("pages-1.img")).unwrap(), vec![7u8; 300_000]);
    }
}
