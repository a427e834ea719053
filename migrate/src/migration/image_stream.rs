//! Moving a checkpoint image to the destination, by one of two channels:
//! - `ssh` (the default): ferry's image format written straight into a data stream of the
//!   control connection through a pipe (no temporary image file; compression on a thread
//!   overlaps with the transfer);
//! - `tcp`: a direct, unencrypted TCP connection beside the control connection, authenticated
//!   by a one-time token (see `ferry_transfer::datachan`), the image written raw into the socket.
//!
//! Either way the destination extracts the image into its images dir as it arrives (each chunk
//! and the whole image checked against their blake3 digests: a damaged image is never
//! restored), and both sides agree on size and digest over the control connection before the
//! restore is asked for.

use super::fault::{self, Faults};
use crate::error::{Error, Result};
use ferry_runtime::container::CheckpointMeta;
use ferry_runtime::ContainerConfig;
use ferry_transfer::datachan::{self, PortRange, Tail, Token};
use ferry_transfer::proto::messages::{Body, DataChannelOpen, DataChannelReady, Envelope, ImageEnd, OkReply};
use ferry_transfer::proto::{self, Connection};
use std::io::{BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the image travels (`ferry migrate --data-channel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelKind {
    /// Inside the ssh control connection (encrypted).
    #[default]
    Ssh,
    /// A direct TCP connection, unencrypted: trusted migration networks only.
    Tcp,
}

impl std::str::FromStr for ChannelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ssh" => Ok(ChannelKind::Ssh),
            "tcp" => Ok(ChannelKind::Tcp),
            _ => Err(format!("unknown data channel {s:?} (ssh or tcp)")),
        }
    }
}

/// The source's choice of channel.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataChannel {
    pub kind: ChannelKind,
    /// Ports the destination may listen on for `tcp` (default: any).
    pub ports: PortRange,
}

/// What one transfer moved.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// The image's size.
    pub image_bytes: u64,
    /// Bytes that crossed the network for it (framing, token included).
    pub wire_bytes: u64,
}

/// Announced in the handshake by a destination that serves `DataChannelOpen`.
pub const TCP_CHANNEL_FEATURE: &str = "data-channel-tcp";

/// Announced in the handshake by a destination that reads image format 2; to one that does
/// not (an older ferry), the image goes in format 1.
pub const IMAGE_FORMAT_2_FEATURE: &str = "image-format-2";

/// What a destination's ferry announces it serves.
pub fn receiver_features() -> Vec<String> {
    vec![TCP_CHANNEL_FEATURE.into(), IMAGE_FORMAT_2_FEATURE.into()]
}

/// The image format major the peer reads.
fn image_major(features: &[String]) -> u16 {
    if features.iter().any(|f| f == IMAGE_FORMAT_2_FEATURE) {
        ferry_dump_format::FORMAT_MAJOR
    } else {
        1
    }
}

/// Refuse, before anything changed, a channel the destination's ferry does not serve.
pub fn check_peer(conn: &Connection, channel: &DataChannel) -> Result<()> {
    if channel.kind == ChannelKind::Tcp && !conn.peer().features.iter().any(|f| f == TCP_CHANNEL_FEATURE) {
        return Err(Error::Migration(format!(
            "the destination's ferry ({}) cannot receive the image over a direct TCP connection; update it there or use --data-channel ssh",
            conn.peer().ferry_version
        )));
    }
    Ok(())
}

/// How long the destination waits for the source's data connection.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);
/// Connecting, and any single write or read on the data connection that makes no progress.
const DATA_TIMEOUT: Duration = Duration::from_secs(30);
/// Replies on the control connection around the data channel.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the destination looks for what went wrong after the source gave up the image.
const GAVE_UP_WAIT: Duration = Duration::from_secs(5);
/// Writes into the data socket (the image writer's 4 MiB chunks pass straight through).
const WRITE_BUFFER: usize = 1 << 20;

/// Send the CRIU images in `dir` as one ferry image over `channel`.
pub async fn send_image(conn: &Connection, dir: &Path, cfg: &ContainerConfig, level: i32, channel: &DataChannel, faults: Faults) -> Result<Sent> {
    let meta = CheckpointMeta::load(dir)?.ok_or_else(|| Error::Migration(format!("{} holds no ferry checkpoint of {}", dir.display(), cfg.ctid)))?;
    let format = ImageFormat { level, major: image_major(&conn.peer().features) };
    match channel.kind {
        ChannelKind::Ssh => {
            let before = conn.bytes_sent();
            let image_bytes = send_over_connection(conn, dir, cfg, meta, format, faults).await?;
            Ok(Sent { image_bytes, wire_bytes: conn.bytes_sent() - before })
        }
        ChannelKind::Tcp => send_over_tcp(conn, dir, cfg, meta, format, channel.ports, faults).await,
    }
}

/// How the image is written: zstd level (0 = stored) and format major.
#[derive(Clone, Copy)]
struct ImageFormat {
    level: i32,
    major: u16,
}

async fn send_over_connection(
    conn: &Connection,
    dir: &Path,
    cfg: &ContainerConfig,
    meta: CheckpointMeta,
    format: ImageFormat,
    faults: Faults,
) -> Result<u64> {
    let (tx, rx) = tokio::net::unix::pipe::pipe().map_err(|e| Error::io("create a pipe for", dir, e))?;
    let tx = tx.into_blocking_fd().map_err(|e| Error::io("create a pipe for", dir, e))?;
    let (cfg2, dir2) = (cfg.clone(), dir.to_path_buf());
    let writer = std::thread::spawn(move || {
        let out = BufWriter::with_capacity(WRITE_BUFFER, fault::damaged(faults, &dir2, std::fs::File::from(tx)));
        write_image(&cfg2, &meta, &dir2, out, format).map(drop)
    });
    // A destination reading format 2 checks the image's own digest; an older one hashes the stream.
    let check = if format.major >= 2 { proto::StreamCheck::Tail } else { proto::StreamCheck::Blake3 };
    let sent = proto::send_image(conn, cfg.ctid.as_str(), rx, 0, if format.level > 0 { "zstd" } else { "" }, check, |_| {}).await;
    let written = writer.join().map_err(|_| Error::Migration("the image writer panicked".into()))?;
    match (sent, written) {
        (Ok(n), Ok(())) => Ok(n),
        (_, Err(e)) => Err(Error::ImageWrite { ctid: cfg.ctid.to_string(), source: Box::new(e) }),
        (Err(e), Ok(())) => Err(e.into()),
    }
}

/// The image into `out`, flushed; returns `out`.
fn write_image<W: Write>(cfg: &ContainerConfig, meta: &CheckpointMeta, dir: &Path, out: BufWriter<W>, format: ImageFormat) -> Result<W> {
    let out = crate::checkpoint::write_image_to(cfg, meta, dir, out, Some(format.level), format.major, &mut |_| {})?;
    out.into_inner().map_err(|e| Error::Socket { what: "flushing the image".into(), source: e.into_error() })
}

async fn send_over_tcp(
    conn: &Connection,
    dir: &Path,
    cfg: &ContainerConfig,
    meta: CheckpointMeta,
    format: ImageFormat,
    ports: PortRange,
    faults: Faults,
) -> Result<Sent> {
    let ct = cfg.ctid.to_string();
    let open = DataChannelOpen { ctid: ct.clone(), port_first: ports.first.into(), port_last: ports.last.into() };
    let ready = match conn.request_timeout(Body::DataChannelOpen(open), REPLY_TIMEOUT).await? {
        Body::DataChannelReady(r) => r,
        other => return Err(Error::unexpected("DataChannelReady", other.name())),
    };
    let addr: SocketAddr =
        ready.address.parse().map_err(|_| Error::protocol(format!("the destination offered {:?} as its data channel address", ready.address)))?;
    let token = Token::from_slice(&fault::token(faults, ready.token))
        .ok_or_else(|| Error::protocol("the destination's data channel token is not 32 bytes"))?;
    let (cfg2, dir2) = (cfg.clone(), dir.to_path_buf());
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, [u8; 32])> {
        let s = datachan::connect(addr, &token, DATA_TIMEOUT).map_err(|source| Error::Socket { what: format!("connecting to {addr}"), source })?;
        s.set_write_timeout(Some(DATA_TIMEOUT)).map_err(|source| Error::Socket { what: "setting its write timeout".into(), source })?;
        let (t0, cpu0) = (std::time::Instant::now(), datachan::thread_cpu_time());
        let out = BufWriter::with_capacity(WRITE_BUFFER, Tail::new(fault::damaged(faults, &dir2, fault::cut(faults, &dir2, &s))));
        let tail = write_image(&cfg2, &meta, &dir2, out, format)?;
        // The destination reads to the end of the stream: tell it where that is.
        s.shutdown(Shutdown::Write).map_err(|source| Error::Socket { what: "ending the image".into(), source })?;
        tracing::info!(
            "{}: image sent over tcp: {} bytes in {} ms, {} ms of it in socket writes; {} ms on a CPU",
            cfg2.ctid,
            tail.bytes(),
            t0.elapsed().as_millis(),
            tail.io_time().as_millis(),
            (datachan::thread_cpu_time() - cpu0).as_millis()
        );
        Ok((tail.bytes(), tail.last32()))
    });
    let written = writer.await.map_err(|source| Error::Task { what: format!("writing the image of {ct}"), source })?;
    let (size, digest) = match &written {
        Ok((size, digest)) => (*size, digest.to_vec()),
        Err(_) => (0, Vec::new()),
    };
    // Also after a failed write (then without a digest): the destination's answer says what
    // went wrong on its side. The container is frozen meanwhile: do not wait long for that.
    let wait = if written.is_ok() { REPLY_TIMEOUT } else { GAVE_UP_WAIT * 2 };
    let confirmed = conn.request_timeout(Body::ImageEnd(ImageEnd { size, blake3: digest }), wait).await;
    match (written, confirmed) {
        (Ok(_), Ok(Body::Ok(_))) => Ok(Sent { image_bytes: size, wire_bytes: size + (datachan::MAGIC.len() + datachan::TOKEN_LEN) as u64 }),
        (Ok(_), Ok(other)) => Err(Error::unexpected("Ok after ImageEnd", other.name())),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(w), Err(ferry_transfer::Error::Remote(said))) => Err(Error::DataChannelSend { ctid: ct, addr, source: Box::new(w), said: Some(said) }),
        (Err(w), _) => Err(Error::DataChannelSend { ctid: ct, addr, source: Box::new(w), said: None }),
    }
}

// --- the destination's side ------------------------------------------------------------------

/// A fresh `<work>/images`, where the received image is extracted.
/// A new directory for the received CRIU images (the container's memory): 0700, an
/// unpredictable name, made exclusively; it goes with the work directory.
fn fresh_images_dir(work: &Path) -> Result<PathBuf> {
    ferry_runtime::util::private_dir(work)?;
    let dir = ferry_runtime::util::private_temp_dir(work, "images")?;
    Ok(dir.keep())
}

/// `ImageBegin` arrived on the control connection: extract the image into `<work>/images`
/// while it streams in (a pipe into the extractor's thread), answer its `ImageEnd`, and
/// return the directory.
pub async fn receive_over_connection(conn: &Connection, begin: &Envelope, work: &Path) -> Result<PathBuf> {
    let dir = fresh_images_dir(work)?;
    let (tx, rx) = tokio::net::unix::pipe::pipe().map_err(|e| Error::io("create a pipe for", &dir, e))?;
    let rx = rx.into_blocking_fd().map_err(|e| Error::io("create a pipe for", &dir, e))?;
    // Fewer wake-ups per MiB (best effort: the default 64 KiB works too).
    let _ = nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(&rx), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let dir2 = dir.clone();
    let extractor = tokio::task::spawn_blocking(move || ferry_dump_format::extract_to_dir(std::fs::File::from(rx), &dir2).map(drop));
    // ImageEnd is answered once the extractor checked the whole image (when it stops early on
    // a damaged one, writes into the pipe fail too): the source hears why.
    let verdict = async {
        match extractor.await {
            Ok(res) => res.map_err(|e| e.to_string()),
            Err(_) => Err("the image extractor panicked".to_string()),
        }
    };
    proto::receive_image(conn, begin, tx, verdict).await?;
    Ok(dir)
}

/// An image arriving on the data channel: its listener or connection, and the thread that
/// accepts, authenticates and extracts. Dropping it stops and joins that thread (nothing is
/// written into the images dir afterwards) and closes the listener and the connection.
pub struct IncomingImage {
    ctid: String,
    dir: PathBuf,
    cancel: Arc<AtomicBool>,
    socket: Arc<Mutex<Option<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    outcome: tokio::sync::oneshot::Receiver<std::result::Result<(u64, [u8; 32]), String>>,
}

impl IncomingImage {
    /// Stop waiting for the connection, and cut it if it is there.
    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(s) = self.socket.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for IncomingImage {
    fn drop(&mut self) {
        self.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `DataChannelOpen` arrived: listen, answer with the address and a fresh token, and start
/// waiting for the image (extracted into `<work>/images` as it streams in).
pub async fn open_data_channel(conn: &Connection, req: &Envelope, open: &DataChannelOpen, work: &Path, faults: Faults) -> Result<IncomingImage> {
    let res = listen(open, work, faults);
    let (incoming, address, token) = match res {
        Ok(r) => r,
        Err(e) => {
            conn.reply_error(req.id, e.to_string()).await?;
            return Err(e);
        }
    };
    let address = fault::data_address(faults, address);
    conn.reply(req.id, Body::DataChannelReady(DataChannelReady { address: address.to_string(), token: token.as_bytes().to_vec() })).await?;
    Ok(incoming)
}

fn listen(open: &DataChannelOpen, work: &Path, faults: Faults) -> Result<(IncomingImage, SocketAddr, Token)> {
    let ct = open.ctid.clone();
    let ports = match (u16::try_from(open.port_first), u16::try_from(open.port_last)) {
        (Ok(first), Ok(last)) if first <= last => PortRange { first, last },
        _ => return Err(Error::protocol(format!("bad data channel port range {}-{}", open.port_first, open.port_last))),
    };
    let ip = datachan::listen_address();
    let listener = datachan::bind(ip, ports).map_err(|source| Error::Listen { ctid: ct.clone(), ip, source })?;
    let address = listener.local_addr().map_err(|e| Error::io("listen for the image of", &ct, e))?;
    let token = Token::random().map_err(|e| Error::io("make a token for the image of", &ct, e))?;
    let dir = fresh_images_dir(work)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let socket = Arc::new(Mutex::new(None));
    let (tx, outcome) = tokio::sync::oneshot::channel();
    let (cancel2, socket2, dir2, token2) = (cancel.clone(), socket.clone(), dir.clone(), token.clone());
    let thread = std::thread::spawn(move || {
        let res = accept_and_extract(listener, &token2, &cancel2, &socket2, &dir2, faults);
        let _ = tx.send(res);
    });
    tracing::info!("{ct}: waiting for the image on {address}");
    Ok((IncomingImage { ctid: ct, dir, cancel, socket, thread: Some(thread), outcome }, address, token))
}

fn accept_and_extract(
    listener: std::net::TcpListener,
    token: &Token,
    cancel: &AtomicBool,
    socket: &Mutex<Option<TcpStream>>,
    dir: &Path,
    faults: Faults,
) -> std::result::Result<(u64, [u8; 32]), String> {
    let s = datachan::accept_authenticated(&listener, token, ACCEPT_WITHIN, cancel).map_err(|e| e.to_string())?;
    drop(listener); // exactly one connection
    *socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.try_clone().map_err(|e| e.to_string())?);
    if cancel.load(Ordering::SeqCst) {
        return Err("stopped waiting (the source gave up the image, or the migration ended)".into());
    }
    s.set_read_timeout(Some(DATA_TIMEOUT)).map_err(|e| e.to_string())?;
    let (t0, cpu0) = (std::time::Instant::now(), datachan::thread_cpu_time());
    let mut input = Tail::new(fault::dying(faults, s));
    ferry_dump_format::extract_to_dir(&mut input, dir).map_err(|e| e.to_string())?;
    // Whatever follows the image counts too: both ends must have seen the same stream.
    std::io::copy(&mut input, &mut std::io::sink()).map_err(|e| format!("reading to the end: {e}"))?;
    tracing::info!(
        "image received over tcp: {} bytes in {} ms, {} ms of it in socket reads; {} ms on a CPU",
        input.bytes(),
        t0.elapsed().as_millis(),
        input.io_time().as_millis(),
        (datachan::thread_cpu_time() - cpu0).as_millis()
    );
    Ok((input.bytes(), input.last32()))
}

/// The source's `ImageEnd` for an image on the data channel: wait for the extraction, answer
/// Ok when it succeeded and size and digest agree (Error otherwise), and return the images dir.
pub async fn finish_data_channel(conn: &Connection, req: &Envelope, end: &ImageEnd, mut incoming: IncomingImage) -> Result<PathBuf> {
    let ct = incoming.ctid.clone();
    let wait = if end.blake3.is_empty() {
        // The source could not send the image: stop waiting for it, and say what this side saw.
        incoming.cancel();
        GAVE_UP_WAIT
    } else {
        REPLY_TIMEOUT
    };
    let problem = match tokio::time::timeout(wait, &mut incoming.outcome).await {
        Err(_) => Some(format!("the image of {ct} did not arrive on the data channel within {REPLY_TIMEOUT:?}")),
        Ok(Err(_)) => Some(format!("receiving the image of {ct} on the data channel ended without a result")),
        Ok(Ok(Err(e))) => Some(format!("receiving the image of {ct} on the data channel failed: {e}")),
        Ok(Ok(Ok((size, digest)))) if size != end.size || digest[..] != end.blake3[..] => {
            Some(format!("the image of {ct} arrived damaged on the data channel ({size} bytes received, {} sent, or digest mismatch)", end.size))
        }
        Ok(Ok(Ok(_))) if end.blake3.is_empty() => Some(format!("the source gave up sending the image of {ct}")),
        Ok(Ok(Ok(_))) => None,
    };
    let dir = incoming.dir.clone();
    drop(incoming);
    match problem {
        Some(msg) => {
            conn.reply_error(req.id, msg.clone()).await?;
            Err(Error::Migration(msg))
        }
        None => {
            conn.reply(req.id, Body::Ok(OkReply {})).await?;
            Ok(dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_destination_gets_format_1() {
        assert_eq!(image_major(&[TCP_CHANNEL_FEATURE.to_string()]), 1);
        assert_eq!(image_major(&[]), 1);
        assert_eq!(image_major(&receiver_features()), ferry_dump_format::FORMAT_MAJOR);
        assert_ne!(image_major(&receiver_features()), 1);
    }
}
