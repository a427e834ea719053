//! Streaming a checkpoint image (or any blob) across the connection with an end-to-end blake3
//! check: `ImageBegin` announces the stream, the bytes follow as they are produced, and the
//! `ImageEnd` request carries size and digest; the destination answers Ok only when both match.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{Body, Envelope, ImageBegin, ImageEnd, OkReply};
use super::{Connection, MAX_DATA_FRAME};
use crate::error::{Error, Result};

/// Send everything `reader` yields as the image of `ctid`. `progress(bytes_so_far)` is called
/// after each chunk. Returns the number of bytes sent once the destination confirmed them.
pub async fn send_image<R>(
    conn: &Connection,
    ctid: &str,
    mut reader: R,
    size_hint: u64,
    compression: &str,
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
    }))
    .await?;
    let mut hasher = blake3::Hasher::new();
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
    match conn
        .request(Body::ImageEnd(ImageEnd {
            size: total,
            blake3: hasher.finalize().as_bytes().to_vec(),
        }))
        .await?
    {
        Body::Ok(_) => Ok(total),
        other => Err(Error::Protocol(format!(
            "expected Ok after ImageEnd, got {}",
            other.name()
        ))),
    }
}

/// The destination's side: given the `ImageBegin` envelope, write the image into `writer`,
/// then check the `ImageEnd` request and answer it. Returns the image size. On a mismatch the
/// source's request fails with a message naming the container, and so does this function.
pub async fn receive_image<W>(conn: &Connection, begin: &Envelope, mut writer: W) -> Result<u64>
where
    W: AsyncWrite + Unpin,
{
    let Some(Body::ImageBegin(b)) = &begin.body else {
        return Err(Error::Protocol(
            "receive_image needs an ImageBegin message".into(),
        ));
    };
    let mut rx = conn.accept_stream(b.stream)?;
    let mut hasher = blake3::Hasher::new();
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
    let end = conn.recv().await?;
    let Some(Body::ImageEnd(ie)) = &end.body else {
        return Err(Error::Protocol(format!(
            "expected ImageEnd, got {}",
            end.body.as_ref().map(Body::name).unwrap_or("nothing")
        )));
    };
    let problem = if let Some(e) = write_error {
        Some(format!(
            "destination could not store the image of {}: {e}",
            b.ctid
        ))
    } else if ie.size != total || ie.blake3 != hasher.finalize().as_bytes() {
        Some(format!(
            "the image of {} arrived damaged ({} bytes received, {} sent, or blake3 mismatch)",
            b.ctid, total, ie.size
        ))
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
