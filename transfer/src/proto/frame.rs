//! Frame header encoding and the bounded frame reader.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{MAX_CONTROL_FRAME, MAX_DATA_FRAME};
use crate::error::{Error, Result};

pub const HEADER_LEN: usize = 9;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A prost `Envelope` (stream id 0).
    Control = 1,
    /// Bytes of a data stream.
    Data = 2,
    /// The data stream ends normally (empty payload).
    End = 3,
    /// The sender gave up on the data stream; the payload is the reason (UTF-8).
    StreamAbort = 4,
    /// Keepalive, sent when the writer is idle; empty payload.
    Ping = 5,
    /// The sender closes the connection on purpose; nothing follows.
    Goodbye = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Control,
            2 => FrameKind::Data,
            3 => FrameKind::End,
            4 => FrameKind::StreamAbort,
            5 => FrameKind::Ping,
            6 => FrameKind::Goodbye,
            _ => return None,
        })
    }

    /// The largest payload the reader accepts for this kind, checked before allocating.
    pub fn max_len(self) -> usize {
        match self {
            FrameKind::Control => MAX_CONTROL_FRAME,
            FrameKind::Data => MAX_DATA_FRAME,
            FrameKind::StreamAbort => 64 << 10,
            FrameKind::End | FrameKind::Ping | FrameKind::Goodbye => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub stream: u32,
    pub len: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.kind as u8;
        b[1..5].copy_from_slice(&self.stream.to_be_bytes());
        b[5..9].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self> {
        let kind = FrameKind::from_u8(b[0]).ok_or_else(|| Error::Protocol(format!("unknown frame kind {}", b[0])))?;
        let stream = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let len = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        if len as usize > kind.max_len() {
            return Err(Error::Protocol(format!("{kind:?} frame of {len} bytes exceeds the limit of {} bytes", kind.max_len())));
        }
        if (kind == FrameKind::Control) != (stream == 0) && kind != FrameKind::Ping && kind != FrameKind::Goodbye {
            return Err(Error::Protocol(format!("{kind:?} frame on stream {stream}")));
        }
        Ok(FrameHeader { kind, stream, len })
    }
}

/// Read one frame. `Ok(None)` on a clean EOF at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(FrameHeader, Vec<u8>)>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut hb[got..]).await.map_err(|e| Error::PeerClosed(format!("reading from the peer: {e}")))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::PeerClosed("the peer closed the connection in the middle of a frame".into()));
        }
        got += n;
    }
    let header = FrameHeader::decode(&hb)?;
    // The length was bounded by decode, so this allocation is bounded too.
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| Error::PeerClosed(format!("the peer closed the connection in the middle of a {:?} frame: {e}", header.kind)))?;
    Ok(Some((header, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = FrameHeader { kind: FrameKind::Data, stream: 7, len: 1234 };
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let h = FrameHeader { kind: FrameKind::Data, stream: 7, len: (MAX_DATA_FRAME + 1) as u32 };
        assert!(FrameHeader::decode(&h.encode()).is_err());
        let mut b = h.encode();
        b[0] = 99;
        assert!(FrameHeader::decode(&b).is_err());
        let c = FrameHeader { kind: FrameKind::Control, stream: 3, len: 1 };
        assert!(FrameHeader::decode(&c.encode()).is_err());
    }

    #[tokio::test]
    async fn reader_stops_at_eof() {
        let h = FrameHeader { kind: FrameKind::Data, stream: 1, len: 3 };
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut r = &bytes[..];
        let (hh, p) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((hh, p.as_slice()), (h, &b"abc"[..]));
        assert!(read_frame(&mut r).await.unwrap().is_none());
        let mut cut = &bytes[..5];
        assert!(matches!(read_frame(&mut cut).await, Err(Error::PeerClosed(_))));
    }
}
