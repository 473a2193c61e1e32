//! duplex-proto is the WebSocket protocol (RFC 6455) and its permessage-deflate
//! extension (RFC 7692) as deterministic state machines: bytes in, events
//! out; messages in, bytes out. It contains no networking code, no async and
//! no clock, so every rule can be tested without a socket, and any I/O layer
//! (tokio, a thread per connection, a fuzzer) can drive it.
//!
//! The driving loop has three verbs, like rustls:
//!
//! ```
//! use duplex_proto::{Connection, Event, Limits, Message, Role};
//!
//! let mut server = Connection::new(Role::Server, Limits::default());
//! // A masked text frame "Hello" from RFC 6455 §5.7, as read from a socket:
//! server.receive_data(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
//! while let Some(event) = server.next_event() {
//!     if let Event::Message(msg) = event.expect("the frame is valid") {
//!         assert_eq!(msg, Message::text("Hello"));
//!         server.send(&msg).expect("the connection is open"); // echo
//!     }
//! }
//! // Bytes to write to the socket: an unmasked "Hello".
//! assert_eq!(server.pending_output(), &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
//! ```
//!
//! The opening handshake (HTTP Upgrade) is in [`handshake`]; extension
//! negotiation and permessage-deflate in [`extensions`].
//!
//! Cargo features, none on by default: `testing` adds the `testing` module
//! (an in-memory client/server pair for tests); `bench-internals` exposes
//! what the benches time on their own; `fuzzing` what the fuzz targets
//! (`fuzz/`) check that the public API does not show. None is part of the
//! stable API.

#![warn(missing_docs, unreachable_pub)]

mod broadcast;
mod close;
mod close_code;
mod connection;
mod error;
pub mod extensions;
mod frame;
pub mod handshake;
mod input;
mod mask;
mod message;
mod role;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod utf8;

pub use broadcast::Broadcast;
pub use close::{CloseFrame, MAX_REASON_LEN};
pub use close_code::CloseCode;
pub use connection::{Connection, Event, Limits, State};
pub use error::{ProtocolError, SendError};
pub use frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
pub use input::InputBuffer;
pub use mask::apply_mask;
pub use message::{Message, Utf8Bytes};
pub use role::Role;

/// What the benches time on their own, which the connection otherwise keeps
/// to itself. Behind the `bench-internals` feature; not part of the API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::mask::{apply_mask_scalar, apply_mask_words};
    pub use crate::utf8::{InvalidUtf8, Utf8Validator};
}

/// What the fuzz targets check that the public API does not show. Behind the
/// `fuzzing` feature; not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::Connection;

    /// The bytes of memory a connection holds for the data message it is
    /// reassembling (fragmented or compressed): its buffer's capacity, 0 if
    /// none is in progress. The fuzz targets bound it by the message limit.
    pub fn reassembly_capacity(conn: &Connection) -> usize {
        conn.reassembly_capacity()
    }
}
