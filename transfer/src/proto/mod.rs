//! ferry's migration protocol: a versioned handshake, then frames multiplexed over one byte
//! stream (the stdio of an ssh session, a pipe, or an in-process duplex).
//!
//! Frame layout (big endian): `[u8 kind][u32 stream id][u32 length][payload]`. Control frames
//! (stream 0) carry one prost [`Envelope`]; data frames carry at most [`MAX_DATA_FRAME`] bytes of
//! one data stream. docs/migration-protocol.md describes the message sequence.

mod connection;
pub mod frame;
mod handshake;
mod image;
pub mod messages;

pub use connection::{Connection, ConnectionOptions, PendingReply, StreamReceiver, StreamSender, TamperFn};
pub use handshake::{PeerInfo, PROTO_MAJOR, PROTO_MINOR};
pub use image::{receive_image, send_image, Last32, StreamCheck};
pub use messages::*;

/// The largest data frame payload: data streams are cut into frames of at most this size.
pub const MAX_DATA_FRAME: usize = 1 << 20;
/// The largest control frame payload (a manifest batch or an rsync signature fits easily).
pub const MAX_CONTROL_FRAME: usize = 16 << 20;
/// ferry's version, sent in the handshake.
pub const FERRY_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    /// The pipeline shares one connection between tasks (behind an Arc).
    #[test]
    fn connection_is_shareable_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<super::Connection>();
        shareable::<super::StreamSender>();
        shareable::<super::StreamReceiver>();
    }
}
