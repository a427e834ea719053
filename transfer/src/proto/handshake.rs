//! The versioned handshake, exchanged before any frame:
//!
//! ```text
//! source → destination:  "FERRYMIG" u16 major u16 minor u32 len  Hello(len bytes)
//! destination → source:  "FERRYMIG" u16 major u16 minor u32 len  HelloAck(len bytes)
//! ```
//! The versions sit outside the prost message so that any future ferry can read them. The
//! destination refuses a different major in HelloAck.error (and closes); the source refuses one
//! too, so either side's message names both versions.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{Hello, HelloAck};
use super::FERRY_VERSION;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"FERRYMIG";
pub const PROTO_MAJOR: u32 = 1;
pub const PROTO_MINOR: u32 = 1;
const MAX_HELLO: usize = 64 << 10;
const HINT: &str = "is ferry installed and working on the other host (see --remote-ferry), and does ssh reach it?";

/// What the peer said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub proto_major: u32,
    pub proto_minor: u32,
    pub ferry_version: String,
    pub features: Vec<String>,
}

/// Versions a side announces; tests override them to simulate other releases.
#[derive(Clone, Debug)]
pub(crate) struct OurVersion {
    pub major: u32,
    pub minor: u32,
    pub ferry: String,
}

impl Default for OurVersion {
    fn default() -> Self {
        OurVersion { major: PROTO_MAJOR, minor: PROTO_MINOR, ferry: FERRY_VERSION.to_string() }
    }
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, major: u32, minor: u32, body: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(16 + body.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(major as u16).to_be_bytes());
    buf.extend_from_slice(&(minor as u16).to_be_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    let gone = |e: std::io::Error| Error::Handshake(format!("the peer went away before the handshake ({e}): {HINT}"));
    w.write_all(&buf).await.map_err(gone)?;
    w.flush().await.map_err(gone)?;
    Ok(())
}

async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, what: &str) -> Result<(u32, u32, Vec<u8>)> {
    let mut head = [0u8; 16];
    if let Err(e) = r.read_exact(&mut head).await {
        return Err(Error::Handshake(format!("the peer closed the connection before its {what} ({e}): {HINT}")));
    }
    if &head[..8] != MAGIC {
        return Err(Error::Handshake(format!(
            "the peer does not speak ferry's migration protocol (it sent {:?}); check that \
             --remote-ferry names ferry and that nothing (a login banner, a shell rc file) writes \
             to stdout on the other host",
            String::from_utf8_lossy(&head)
        )));
    }
    let major = u16::from_be_bytes([head[8], head[9]]) as u32;
    let minor = u16::from_be_bytes([head[10], head[11]]) as u32;
    let len = u32::from_be_bytes([head[12], head[13], head[14], head[15]]) as usize;
    if len > MAX_HELLO {
        return Err(Error::Handshake(format!("the peer's {what} is {len} bytes, more than {MAX_HELLO}")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| Error::Handshake(format!("the peer closed the connection during its {what}: {e}")))?;
    Ok((major, minor, body))
}

fn incompatible(ours: &OurVersion, major: u32, minor: u32, ferry: &str) -> String {
    format!(
        "incompatible protocol versions: this ferry {} speaks protocol {}.{}, the peer (ferry {}) \
         speaks {}.{}; install the same ferry release on both hosts",
        ours.ferry,
        ours.major,
        ours.minor,
        if ferry.is_empty() { "?" } else { ferry },
        major,
        minor
    )
}

/// The source (initiating) side.
pub(crate) async fn client<R, W>(r: &mut R, w: &mut W, ours: &OurVersion, features: &[String]) -> Result<PeerInfo>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = Hello { proto_major: ours.major, proto_minor: ours.minor, ferry_version: ours.ferry.clone(), features: features.to_vec() };
    write_msg(w, ours.major, ours.minor, &hello.encode_to_vec()).await?;
    let (major, minor, body) = read_msg(r, "handshake answer").await?;
    let ack = HelloAck::decode(&body[..]).map_err(|e| Error::BadHello { what: "HelloAck", source: e })?;
    if !ack.error.is_empty() {
        return Err(Error::Handshake(format!("the peer refused the connection: {}", ack.error)));
    }
    if major != ours.major {
        return Err(Error::Handshake(incompatible(ours, major, minor, &ack.ferry_version)));
    }
    Ok(PeerInfo { proto_major: major, proto_minor: minor, ferry_version: ack.ferry_version, features: ack.features })
}

/// The destination (accepting) side.
pub(crate) async fn server<R, W>(r: &mut R, w: &mut W, ours: &OurVersion, features: &[String]) -> Result<PeerInfo>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (major, minor, body) = read_msg(r, "handshake").await?;
    let hello = Hello::decode(&body[..]).map_err(|e| Error::BadHello { what: "Hello", source: e })?;
    let mut ack = HelloAck {
        proto_major: ours.major,
        proto_minor: ours.minor,
        ferry_version: ours.ferry.clone(),
        features: features.to_vec(),
        error: String::new(),
    };
    if major != ours.major {
        let msg = incompatible(ours, major, minor, &hello.ferry_version);
        ack.error = msg.clone();
        // Best effort: the refusal text helps the source's user; our own error is what matters.
        let _ = write_msg(w, ours.major, ours.minor, &ack.encode_to_vec()).await;
        return Err(Error::Handshake(msg));
    }
    write_msg(w, ours.major, ours.minor, &ack.encode_to_vec()).await?;
    Ok(PeerInfo { proto_major: major, proto_minor: minor, ferry_version: hello.ferry_version, features: hello.features })
}
