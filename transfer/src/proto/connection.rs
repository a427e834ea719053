//! `Connection`: one reader task and one writer task around a byte stream, routing control
//! messages (requests, replies, unsolicited messages) and multiplexed data streams.
//!
//! Backpressure: the writer takes frames from a bounded queue, so senders wait while the byte
//! stream is slow; each incoming data stream has a bounded queue, so the reader task waits (and
//! the peer's writes with it) while that stream's consumer is slow. Control messages nobody
//! has taken yet are bounded in bytes ([`ConnectionOptions::control_budget`]): the reader waits
//! for the consumer beyond that, and a peer that keeps it full for the idle timeout is refused. Consumers must therefore
//! read the streams they accept and drop the ones they do not want (dropped streams are
//! discarded). Frames arrive in the order they were sent, so a receiver that handles streams in
//! the order the sender wrote them never deadlocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::frame::{read_frame, FrameHeader, FrameKind, HEADER_LEN};
use super::handshake::{self, OurVersion, PeerInfo};
use super::messages::{Body, Envelope, ErrorReply};
use super::MAX_DATA_FRAME;
use crate::error::{Error, Result};

/// A test hook that may change a data frame's payload just before it is queued (stream id, bytes).
pub type TamperFn = Arc<dyn Fn(u32, &mut Vec<u8>) + Send + Sync>;

const OUT_QUEUE: usize = 32;
const CONTROL_QUEUE: usize = 1024;
/// Bytes of control messages received and not taken yet, by default.
pub const CONTROL_BUDGET: usize = 64 << 20;
const STREAM_QUEUE: usize = 8;
/// Read and write buffer of the byte stream.
const IO_BUFFER: usize = 256 << 10;
/// How many streams the peer may have started that we have not accepted yet. Beyond that the
/// reader waits for the consumer (bounding what a fast sender of many small files buffers).
const MAX_UNCLAIMED_STREAMS: usize = 32;

#[derive(Clone)]
pub struct ConnectionOptions {
    /// The connection is declared dead when nothing (not even a ping) arrives for this long.
    pub idle_timeout: Duration,
    /// The writer sends a ping when it has had nothing to send for this long.
    pub ping_interval: Duration,
    /// Limit for the handshake.
    pub handshake_timeout: Duration,
    /// Optional features announced in the handshake.
    pub features: Vec<String>,
    /// Test hook: alter outgoing data frames (simulates corruption in flight).
    pub tamper_data: Option<TamperFn>,
    /// Test hook: announce this protocol major instead of ours.
    pub announce_major: Option<u32>,
    /// At most this many bytes of control messages received and not taken yet (one message
    /// always fits): the reader waits for the consumer beyond that, and ends the connection
    /// when the consumer took nothing for `idle_timeout` meanwhile.
    pub control_budget: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(60),
            features: Vec::new(),
            tamper_data: None,
            announce_major: None,
            control_budget: CONTROL_BUDGET,
        }
    }
}

impl std::fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("idle_timeout", &self.idle_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("tamper_data", &self.tamper_data.is_some())
            .finish()
    }
}

/// Why the connection ended.
#[derive(Clone, Debug)]
enum Dead {
    Closed(String),
    Timeout(String),
    Protocol(String),
}

impl Dead {
    fn to_error(&self) -> Error {
        match self {
            Dead::Closed(m) => Error::PeerClosed(m.clone()),
            Dead::Timeout(m) => Error::Timeout(m.clone()),
            Dead::Protocol(m) => Error::Protocol(m.clone()),
        }
    }
}

enum StreamItem {
    Data(Vec<u8>),
    End,
    Abort(String),
}

struct Slot {
    tx: Option<mpsc::Sender<StreamItem>>,
    rx: Option<mpsc::Receiver<StreamItem>>,
    /// The local consumer dropped the stream: discard its frames.
    discard: bool,
}

impl Slot {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        Slot { tx: Some(tx), rx: Some(rx), discard: false }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Envelope>>,
    streams: HashMap<u32, Slot>,
    dead: Option<Dead>,
}

struct Shared {
    state: Mutex<State>,
    dead_tx: watch::Sender<bool>,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    next_id: AtomicU64,
    next_stream: AtomicU32,
    /// Signalled when a stream is accepted or dropped (room for unclaimed streams).
    accepted: tokio::sync::Notify,
    /// Bytes of control messages received and not taken by `recv` yet.
    control_queued: AtomicUsize,
    /// Signalled when `recv` takes a control message.
    control_taken: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep going with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mark the connection dead (first reason wins) and wake everyone waiting on it.
    fn kill(&self, why: Dead) {
        let mut st = self.lock();
        if st.dead.is_none() {
            tracing::debug!(?why, "migration connection closed");
            st.dead = Some(why);
        }
        st.pending.clear();
        for slot in st.streams.values_mut() {
            slot.tx = None;
        }
        drop(st);
        self.dead_tx.send_replace(true);
        self.accepted.notify_one();
        self.control_taken.notify_one();
    }

    fn dead_error(&self) -> Error {
        self.lock().dead.as_ref().map(Dead::to_error).unwrap_or_else(|| Error::PeerClosed("the connection is closed".into()))
    }
}

struct Outgoing {
    kind: FrameKind,
    stream: u32,
    payload: Vec<u8>,
}

/// One end of a migration connection. Cheap to share by reference between tasks.
pub struct Connection {
    shared: Arc<Shared>,
    out: mpsc::Sender<Outgoing>,
    ctrl_rx: tokio::sync::Mutex<mpsc::Receiver<(Envelope, usize)>>,
    dead_rx: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: Mutex<Option<JoinHandle<()>>>,
    peer: PeerInfo,
    tamper: Option<TamperFn>,
    idle_timeout: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the tasks drops both halves of the byte stream: the peer sees EOF.
        self.reader.abort();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
    }
}

impl Connection {
    /// The initiating side (the migration source) over one bidirectional stream.
    pub async fn client<S>(stream: S, opts: ConnectionOptions) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Self::client_split(r, w, opts).await
    }

    /// The accepting side (the migration destination) over one bidirectional stream.
    pub async fn server<S>(stream: S, opts: ConnectionOptions) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Self::server_split(r, w, opts).await
    }

    /// Both ends over an in-process pipe of `buffer` bytes, handshake done: (the initiating
    /// side, the accepting side). Local copies and tests speak the protocol this way.
    pub async fn pair(buffer: usize, client: ConnectionOptions, server: ConnectionOptions) -> Result<(Connection, Connection)> {
        let (a, b) = tokio::io::duplex(buffer);
        let (c, s) = tokio::join!(Self::client(a, client), Self::server(b, server));
        Ok((c?, s?))
    }

    /// Like [`Connection::client`] over separate halves (e.g. a child's stdout and stdin).
    pub async fn client_split<R, W>(r: R, w: W, opts: ConnectionOptions) -> Result<Connection>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(r, w, opts, true).await
    }

    /// Like [`Connection::server`] over separate halves (e.g. our own stdin and stdout).
    pub async fn server_split<R, W>(r: R, w: W, opts: ConnectionOptions) -> Result<Connection>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(r, w, opts, false).await
    }

    async fn start<R, W>(mut r: R, mut w: W, opts: ConnectionOptions, is_client: bool) -> Result<Connection>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let mut ours = OurVersion::default();
        if let Some(m) = opts.announce_major {
            ours.major = m;
        }
        let hs = async {
            if is_client {
                handshake::client(&mut r, &mut w, &ours, &opts.features).await
            } else {
                handshake::server(&mut r, &mut w, &ours, &opts.features).await
            }
        };
        let peer = tokio::time::timeout(opts.handshake_timeout, hs).await.map_err(|_| {
            Error::Timeout(format!("no handshake from the peer within {}s: is ferry running on the other host?", opts.handshake_timeout.as_secs()))
        })??;

        let (dead_tx, dead_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            dead_tx,
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            // Each side numbers its streams with its own parity so ids never collide.
            next_stream: AtomicU32::new(if is_client { 1 } else { 2 }),
            accepted: tokio::sync::Notify::new(),
            control_queued: AtomicUsize::new(0),
            control_taken: tokio::sync::Notify::new(),
        });
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE);
        // Buffered both ways: a small file is a few small frames, and one read or write
        // system call per frame (two to read one: header, then payload) cost more than the data.
        let r = tokio::io::BufReader::with_capacity(IO_BUFFER, r);
        let w = tokio::io::BufWriter::with_capacity(IO_BUFFER, w);
        let reader = tokio::spawn(reader_loop(r, shared.clone(), ctrl_tx, opts.idle_timeout, opts.control_budget));
        let writer = tokio::spawn(writer_loop(w, out_rx, shared.clone(), opts.ping_interval, dead_rx.clone()));
        Ok(Connection {
            shared,
            out: out_tx,
            ctrl_rx: tokio::sync::Mutex::new(ctrl_rx),
            dead_rx,
            reader,
            writer: Mutex::new(Some(writer)),
            peer,
            tamper: opts.tamper_data,
            idle_timeout: opts.idle_timeout,
        })
    }

    /// What the peer announced in the handshake.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Bytes written to the byte stream so far (headers included).
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes read from the byte stream so far (headers included).
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_in.load(Ordering::Relaxed)
    }

    /// Whether the connection has ended (EOF, error, timeout or goodbye).
    pub fn is_dead(&self) -> bool {
        self.shared.lock().dead.is_some()
    }

    async fn queue(&self, kind: FrameKind, stream: u32, payload: Vec<u8>) -> Result<()> {
        if self.is_dead() {
            return Err(self.shared.dead_error());
        }
        self.out.send(Outgoing { kind, stream, payload }).await.map_err(|_| self.shared.dead_error())
    }

    async fn send_envelope(&self, env: Envelope) -> Result<()> {
        self.queue(FrameKind::Control, 0, env.encode_to_vec()).await
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Send a message that expects no reply. Returns its id (for the peer's `reply`).
    pub async fn send(&self, body: Body) -> Result<u64> {
        let id = self.next_id();
        self.send_envelope(Envelope { id, reply_to: 0, body: Some(body) }).await?;
        Ok(id)
    }

    /// Send a request and wait for its reply. An `Error` reply becomes [`Error::Remote`].
    pub async fn request(&self, body: Body) -> Result<Body> {
        self.start_request(body).await?.reply().await
    }

    /// Send a request without waiting for its reply: several can be in flight at once (the
    /// peer answers them in the order it handles them). Await [`PendingReply::reply`] later.
    pub async fn start_request(&self, body: Body) -> Result<PendingReply> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(d) = &st.dead {
                return Err(d.to_error());
            }
            st.pending.insert(id, tx);
        }
        self.send_envelope(Envelope { id, reply_to: 0, body: Some(body) }).await?;
        Ok(PendingReply { id, rx, shared: self.shared.clone() })
    }

    /// [`Connection::request`] with a limit on the wait.
    pub async fn request_timeout(&self, body: Body, limit: Duration) -> Result<Body> {
        let name = body.name();
        tokio::time::timeout(limit, self.request(body))
            .await
            .map_err(|_| Error::Timeout(format!("no answer to {name} within {}s", limit.as_secs())))?
    }

    /// Answer the request whose envelope id is `to`.
    pub async fn reply(&self, to: u64, body: Body) -> Result<()> {
        let id = self.next_id();
        self.send_envelope(Envelope { id, reply_to: to, body: Some(body) }).await
    }

    /// Answer the request `to` with an error text.
    pub async fn reply_error(&self, to: u64, message: impl Into<String>) -> Result<()> {
        self.reply(to, Body::Error(ErrorReply { message: message.into() })).await
    }

    /// The next message from the peer that is not a reply to one of our requests.
    pub async fn recv(&self) -> Result<Envelope> {
        let mut rx = self.ctrl_rx.lock().await;
        let mut dead = self.dead_rx.clone();
        let got = tokio::select! {
            biased;
            m = rx.recv() => m,
            // Deliver what arrived before the end first.
            _ = dead.wait_for(|d| *d) => rx.try_recv().ok(),
        };
        let (env, size) = got.ok_or_else(|| self.shared.dead_error())?;
        self.shared.control_queued.fetch_sub(size, Ordering::Relaxed);
        self.shared.control_taken.notify_one();
        Ok(env)
    }

    /// [`Connection::recv`] with a limit on the wait.
    pub async fn recv_timeout(&self, limit: Duration) -> Result<Envelope> {
        tokio::time::timeout(limit, self.recv()).await.map_err(|_| Error::Timeout(format!("no message from the peer within {}s", limit.as_secs())))?
    }

    /// Start a new outgoing data stream. Tell the peer its id in a control message.
    pub fn open_stream(&self) -> StreamSender {
        let id = self.shared.next_stream.fetch_add(2, Ordering::Relaxed);
        StreamSender { id, out: self.out.clone(), shared: self.shared.clone(), tamper: self.tamper.clone(), finished: false, sent: 0 }
    }

    /// Take the incoming data stream `id` (its frames may already be queued).
    pub fn accept_stream(&self, id: u32) -> Result<StreamReceiver> {
        if id == 0 {
            return Err(Error::Protocol("data stream id 0 is reserved for control".into()));
        }
        let mut st = self.shared.lock();
        let dead = st.dead.is_some();
        let slot = st.streams.entry(id).or_insert_with(|| {
            let mut s = Slot::new();
            if dead {
                s.tx = None;
            }
            s
        });
        let rx = slot.rx.take().ok_or_else(|| Error::Protocol(format!("data stream {id} accepted twice")))?;
        drop(st);
        self.shared.accepted.notify_one();
        Ok(StreamReceiver { id, rx, shared: self.shared.clone(), dead_rx: self.dead_rx.clone(), done: false })
    }

    /// Say goodbye and wait (at most the idle timeout) until everything queued is written.
    pub async fn close(&self) -> Result<()> {
        self.queue(FrameKind::Goodbye, 0, Vec::new()).await?;
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = w {
            let abort = w.abort_handle();
            if tokio::time::timeout(self.idle_timeout, w).await.is_err() {
                abort.abort();
                return Err(Error::Timeout("the peer did not take our last messages".into()));
            }
        }
        Ok(())
    }
}

/// A request sent with [`Connection::start_request`] whose reply has not been taken yet.
/// Dropping it discards the reply when it comes.
pub struct PendingReply {
    id: u64,
    rx: oneshot::Receiver<Envelope>,
    shared: Arc<Shared>,
}

impl PendingReply {
    /// The reply; an `Error` reply becomes [`Error::Remote`].
    pub async fn reply(mut self) -> Result<Body> {
        let env = (&mut self.rx).await.map_err(|_| self.shared.dead_error())?;
        match env.body {
            Some(Body::Error(e)) => Err(Error::Remote(e.message)),
            Some(b) => Ok(b),
            None => Err(Error::Protocol(format!("empty reply to request {}", self.id))),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

/// The sending half of one data stream. Dropping it without `finish` aborts the stream.
pub struct StreamSender {
    id: u32,
    out: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    tamper: Option<TamperFn>,
    finished: bool,
    sent: u64,
}

impl StreamSender {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Payload bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    async fn push(&self, kind: FrameKind, payload: Vec<u8>) -> Result<()> {
        self.out.send(Outgoing { kind, stream: self.id, payload }).await.map_err(|_| self.shared.dead_error())
    }

    /// Send bytes (cut into frames of at most [`MAX_DATA_FRAME`]); waits while the link is busy.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_DATA_FRAME) {
            let mut payload = chunk.to_vec();
            if let Some(t) = &self.tamper {
                t(self.id, &mut payload);
            }
            self.sent += payload.len() as u64;
            self.push(FrameKind::Data, payload).await?;
        }
        Ok(())
    }

    /// End the stream normally.
    pub async fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.push(FrameKind::End, Vec::new()).await
    }

    /// End the stream with an error the receiver will see.
    pub async fn abort(mut self, reason: &str) -> Result<()> {
        self.finished = true;
        let mut r = reason.as_bytes().to_vec();
        r.truncate(FrameKind::StreamAbort.max_len());
        self.push(FrameKind::StreamAbort, r).await
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.out.try_send(Outgoing { kind: FrameKind::StreamAbort, stream: self.id, payload: b"the sender dropped the stream".to_vec() });
        }
    }
}

/// The receiving half of one data stream.
pub struct StreamReceiver {
    id: u32,
    rx: mpsc::Receiver<StreamItem>,
    shared: Arc<Shared>,
    dead_rx: watch::Receiver<bool>,
    done: bool,
}

impl StreamReceiver {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next chunk, or `None` when the sender finished the stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut dead = self.dead_rx.clone();
        let item = tokio::select! {
            biased;
            m = self.rx.recv() => m,
            _ = dead.wait_for(|d| *d) => self.rx.try_recv().ok(),
        };
        match item {
            Some(StreamItem::Data(d)) => Ok(Some(d)),
            Some(StreamItem::End) => {
                self.done = true;
                Ok(None)
            }
            Some(StreamItem::Abort(why)) => {
                self.done = true;
                Err(Error::Remote(format!("the peer aborted data stream {}: {why}", self.id)))
            }
            None => Err(self.shared.dead_error()),
        }
    }

    /// Everything up to the end of the stream, refusing more than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(chunk) = self.recv().await? {
            if all.len() + chunk.len() > limit {
                return Err(Error::Protocol(format!("data stream {} exceeds {limit} bytes", self.id)));
            }
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if self.done {
            st.streams.remove(&self.id);
        } else if let Some(slot) = st.streams.get_mut(&self.id) {
            slot.discard = true;
            slot.tx = None;
        }
        drop(st);
        self.shared.accepted.notify_one();
    }
}

async fn reader_loop<R>(mut r: R, shared: Arc<Shared>, ctrl_tx: mpsc::Sender<(Envelope, usize)>, idle: Duration, budget: usize)
where
    R: AsyncRead + Unpin,
{
    let why = loop {
        let frame = match tokio::time::timeout(idle, read_frame(&mut r)).await {
            Err(_) => {
                break Dead::Timeout(format!("nothing received from the peer for {}s (the other host or the link may be down)", idle.as_secs()))
            }
            Ok(Err(Error::Protocol(m))) => break Dead::Protocol(m),
            Ok(Err(e)) => break Dead::Closed(e.to_string()),
            Ok(Ok(None)) => break Dead::Closed("the peer closed the connection (end of stream)".into()),
            Ok(Ok(Some(f))) => f,
        };
        let (h, payload): (FrameHeader, Vec<u8>) = frame;
        let size = payload.len();
        shared.bytes_in.fetch_add(super::frame::HEADER_LEN as u64 + payload.len() as u64, Ordering::Relaxed);
        match h.kind {
            FrameKind::Ping => {}
            FrameKind::Goodbye => break Dead::Closed("the peer closed the connection".into()),
            FrameKind::Control => {
                // From owned bytes: `bytes` fields of type Bytes (a PutFiles batch's data)
                // then share the frame's buffer instead of being copied out of it.
                let env = match Envelope::decode(prost::bytes::Bytes::from(payload)) {
                    Ok(e) => e,
                    Err(e) => break Dead::Protocol(format!("undecodable control message: {e}")),
                };
                if env.reply_to != 0 {
                    let waiter = shared.lock().pending.remove(&env.reply_to);
                    match waiter {
                        Some(w) => {
                            let _ = w.send(env);
                        }
                        None => {
                            tracing::debug!(reply_to = env.reply_to, "reply to no pending request")
                        }
                    }
                } else {
                    if let Err(why) = wait_for_control_room(&shared, size, budget, idle).await {
                        break why;
                    }
                    shared.control_queued.fetch_add(size, Ordering::Relaxed);
                    if ctrl_tx.send((env, size)).await.is_err() {
                        tracing::debug!("control message dropped: nobody receives anymore");
                    }
                }
            }
            FrameKind::Data | FrameKind::End | FrameKind::StreamAbort => {
                let item = match h.kind {
                    FrameKind::Data => StreamItem::Data(payload),
                    FrameKind::End => StreamItem::End,
                    _ => StreamItem::Abort(String::from_utf8_lossy(&payload).into_owned()),
                };
                let last = !matches!(item, StreamItem::Data(_));
                // A new stream waits until the consumer has taken enough of the earlier ones.
                loop {
                    let room = {
                        let st = shared.lock();
                        let unclaimed = st.streams.values().filter(|s| s.rx.is_some()).count();
                        st.dead.is_some() || st.streams.contains_key(&h.stream) || unclaimed < MAX_UNCLAIMED_STREAMS
                    };
                    if room {
                        break;
                    }
                    shared.accepted.notified().await;
                }
                let tx = {
                    let mut st = shared.lock();
                    let slot = st.streams.entry(h.stream).or_insert_with(Slot::new);
                    let tx = if slot.discard { None } else { slot.tx.clone() };
                    if last {
                        slot.tx = None;
                        if slot.rx.is_none() && slot.discard {
                            st.streams.remove(&h.stream);
                        }
                    }
                    tx
                };
                if let Some(tx) = tx {
                    if tx.send(item).await.is_err() {
                        if let Some(slot) = shared.lock().streams.get_mut(&h.stream) {
                            slot.discard = true;
                        }
                    }
                }
            }
        }
    };
    shared.kill(why);
    drop(ctrl_tx);
}

/// Wait until `size` more bytes of control messages fit in `budget` (a message always fits in
/// an empty queue). A consumer that takes nothing for `idle` meanwhile ends the connection: the
/// peer sends more control messages than this side takes.
async fn wait_for_control_room(shared: &Shared, size: usize, budget: usize, idle: Duration) -> std::result::Result<(), Dead> {
    loop {
        let queued = shared.control_queued.load(Ordering::Relaxed);
        if queued == 0 || queued + size <= budget || shared.lock().dead.is_some() {
            return Ok(());
        }
        if tokio::time::timeout(idle, shared.control_taken.notified()).await.is_err() {
            return Err(Dead::Protocol(format!(
                "the peer sent more control messages than this side takes: {queued} bytes of them wait (the limit is {budget}) and none was taken for {}s",
                idle.as_secs()
            )));
        }
    }
}

async fn writer_loop<W>(mut w: W, mut rx: mpsc::Receiver<Outgoing>, shared: Arc<Shared>, ping: Duration, mut dead: watch::Receiver<bool>)
where
    W: AsyncWrite + Unpin,
{
    loop {
        let item = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep(ping) => Some(Outgoing { kind: FrameKind::Ping, stream: 0, payload: Vec::new() }),
            _ = dead.wait_for(|d| *d) => None,
        };
        let Some(item) = item else { break };
        let goodbye = item.kind == FrameKind::Goodbye;
        let header = FrameHeader { kind: item.kind, stream: item.stream, len: item.payload.len() as u32 };
        let res = async {
            w.write_all(&header.encode()).await?;
            w.write_all(&item.payload).await?;
            // Flushed when nothing else is queued: frames sent in a burst share writes.
            if goodbye || rx.is_empty() {
                w.flush().await?;
            }
            std::io::Result::Ok(())
        }
        .await;
        if let Err(e) = res {
            shared.kill(Dead::Closed(format!("writing to the peer: {e}")));
            return;
        }
        shared.bytes_out.fetch_add((HEADER_LEN + item.payload.len()) as u64, Ordering::Relaxed);
        if goodbye {
            let _ = w.shutdown().await;
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}
