//! Streaming a checkpoint image (or any blob) across the connection with an end-to-end check:
//! `ImageBegin` announces the stream, the bytes follow as they are produced, and the
//! `ImageEnd` request carries size and digest; the destination answers Ok only when both match.
//! The digest is blake3 of the stream, or (`StreamCheck::Tail`) the stream's last 32 bytes:
//! for a ferry image that is its whole-image digest, which the destination's extractor checks
//! with every section, so the stream need not be hashed a second time on each side.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{Body, Envelope, ImageBegin, ImageEnd, OkReply};
use super::{Connection, MAX_DATA_FRAME};
use crate::error::{Error, Result};

/// What `ImageEnd`'s digest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCheck {
    /// blake3 of the whole stream.
    Blake3,
    /// The stream's last 32 bytes: a ferry image's own whole-image digest, which its reader
    /// verifies (only for destinations that announce it, see `ImageBegin.tail_digest`).
    Tail,
}

/// Size and digest of a stream as it passes.
enum Digest {
    Blake3(Box<blake3::Hasher>),
    Tail(Last32),
}

impl Digest {
    fn new(check: StreamCheck) -> Self {
        match check {
            StreamCheck::Blake3 => Digest::Blake3(Box::default()),
            StreamCheck::Tail => Digest::Tail(Last32::default()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Digest::Blake3(h) => {
                h.update(b);
            }
            Digest::Tail(t) => t.note(b),
        }
    }
    fn finalize(&self) -> [u8; 32] {
        match self {
            Digest::Blake3(h) => *h.finalize().as_bytes(),
            Digest::Tail(t) => t.get(),
        }
    }
}

/// The last 32 bytes of a stream (zero-padded in front while fewer passed).
#[derive(Clone, Copy, Default)]
pub struct Last32([u8; 32]);

impl Last32 {
    pub fn note(&mut self, b: &[u8]) {
        if b.len() >= 32 {
            self.0.copy_from_slice(&b[b.len() - 32..]);
        } else {
            self.0.copy_within(b.len().., 0);
            self.0[32 - b.len()..].copy_from_slice(b);
        }
    }
    pub fn get(&self) -> [u8; 32] {
        self.0
    }
}

/// Send everything `reader` yields as the image of `ctid`. `progress(bytes_so_far)` is called
/// after each chunk. Returns the number of bytes sent once the destination confirmed them.
pub async fn send_image<R>(
    conn: &Connection,
    ctid: &str,
    mut reader: R,
    size_hint: u64,
    compression: &str,
    check: StreamCheck,
    mut progress: impl FnMut(u64),
) -> Result<u64>
where
    R: AsyncRead + Unpin,
{
    let mut stream = conn.open_stream();
    conn.send(Body::ImageBegin(ImageBegin {
        ctid: ctid.to_string(),
        stream: stream.id(),
        size_hint,
        compression: compression.to_string(),
        tail_digest: check == StreamCheck::Tail,
    }))
    .await?;
    let mut hasher = Digest::new(check);
    let mut buf = vec![0u8; MAX_DATA_FRAME];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let why = format!("reading the image of {ctid}: {e}");
                stream.abort(&why).await?;
                return Err(Error::io("reading the image of", ctid, e));
            }
        };
        hasher.update(&buf[..n]);
        stream.send(&buf[..n]).await?;
        total += n as u64;
        progress(total);
    }
    stream.finish().await?;
    match conn.request(Body::ImageEnd(ImageEnd { size: total, blake3: hasher.finalize().to_vec() })).await? {
        Body::Ok(_) => Ok(total),
        other => Err(Error::UnexpectedReply { expected: "Ok after ImageEnd", got: other.name() }),
    }
}

/// The destination's side: given the `ImageBegin` envelope, write the image into `writer`,
/// then check the `ImageEnd` request and answer it once `consumer` is done too: what `writer`
/// feeds (the image's reader) says whether the image it read was whole (`async { Ok(()) }`
/// when nothing reads it). `writer` is closed first, so the consumer sees the end of the
/// stream. Returns the image size. On a mismatch or the consumer's error the source's
/// request fails with a message naming the container, and so does this function.
pub async fn receive_image<W, F>(conn: &Connection, begin: &Envelope, mut writer: W, consumer: F) -> Result<u64>
where
    W: AsyncWrite + Unpin,
    F: std::future::Future<Output = std::result::Result<(), String>>,
{
    let Some(Body::ImageBegin(b)) = &begin.body else {
        return Err(Error::Protocol("receive_image needs an ImageBegin message".into()));
    };
    let mut rx = conn.accept_stream(b.stream)?;
    let mut hasher = Digest::new(if b.tail_digest { StreamCheck::Tail } else { StreamCheck::Blake3 });
    let mut total = 0u64;
    let mut write_error = None;
    while let Some(chunk) = rx.recv().await? {
        hasher.update(&chunk);
        total += chunk.len() as u64;
        if write_error.is_none() {
            if let Err(e) = writer.write_all(&chunk).await {
                write_error = Some(e);
            }
        }
    }
    if write_error.is_none() {
        if let Err(e) = writer.flush().await {
            write_error = Some(e);
        }
    }
    drop(writer);
    let consumed = consumer.await;
    let end = conn.recv().await?;
    let Some(Body::ImageEnd(ie)) = &end.body else {
        return Err(Error::UnexpectedReply { expected: "ImageEnd", got: end.body.as_ref().map(Body::name).unwrap_or("nothing") });
    };
    // The consumer's error first: a write fails because it stopped reading.
    let problem = if let Err(e) = consumed {
        Some(format!("the image of {} was refused: {e}", b.ctid))
    } else if let Some(e) = write_error {
        Some(format!("destination could not store the image of {}: {e}", b.ctid))
    } else if ie.size != total || ie.blake3 != hasher.finalize() {
        Some(format!("the image of {} arrived damaged ({} bytes received, {} sent, or blake3 mismatch)", b.ctid, total, ie.size))
    } else {
        None
    };
    match problem {
        Some(msg) => {
            conn.reply_error(end.id, msg.clone()).await?;
            Err(Error::Remote(msg))
        }
        None => {
            conn.reply(end.id, Body::Ok(OkReply {})).await?;
            Ok(total)
        }
    }
}
