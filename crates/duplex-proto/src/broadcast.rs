//! One message for many connections, compressed at most once.
//!
//! A server that pushes the same message to thousands of subscribers with
//! permessage-deflate would normally compress it once per connection. Where
//! a connection negotiated `server_no_context_takeover` (RFC 7692 §7.1.1.1),
//! every message it sends starts from an empty window, so the compressed
//! form of a message does not depend on the connection: it can be made once
//! and its bytes sent to every such connection, as uWebSockets' shared
//! compressor does. A [`Broadcast`] carries the message and, made by the
//! first connection that can use them, those bytes;
//! [`Connection::send_broadcast`](crate::Connection::send_broadcast) sends
//! them where the connection's parameters allow
//! ([`Deflate::can_share`]) and compresses (or not) for itself otherwise.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::Message;
use crate::extensions::deflate::{Deflate, compress_once};

/// A message to send to many connections (share it with an `Arc`): see the
/// module docs.
#[derive(Debug)]
pub struct Broadcast {
    message: Message,
    /// Made once, by the first connection that can share them; `None` if
    /// compressing failed (every connection then compresses for itself).
    compressed: OnceLock<Option<Bytes>>,
}

impl Broadcast {
    /// A broadcast of `message`, not compressed yet.
    pub fn new(message: impl Into<Message>) -> Self {
        Broadcast {
            message: message.into(),
            compressed: OnceLock::new(),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether the shared compressed form was made (by a connection that
    /// could use it).
    pub fn is_compressed(&self) -> bool {
        matches!(self.compressed.get(), Some(Some(_)))
    }

    /// The shared compressed bytes for a connection whose codec is
    /// `deflate`, made now if this is the first to ask; `None` if that
    /// connection cannot share them or compressing failed.
    pub(crate) fn compressed_for(&self, deflate: &Deflate) -> Option<&Bytes> {
        if !deflate.can_share(self.message.len()) {
            return None;
        }
        self.compressed
            .get_or_init(|| {
                compress_once(self.message.as_bytes(), deflate.level())
                    .inspect_err(|e| tracing::debug!(error = %e, "compressing a broadcast failed"))
                    .ok()
                    .map(Bytes::from)
            })
            .as_ref()
    }
}

impl From<Message> for Broadcast {
    fn from(message: Message) -> Self {
        Broadcast::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::deflate::DeflateParams;
    use crate::testing::{drain_events, take_output};
    use crate::{Connection, Event, Limits, Role};

    /// A connection of `role` with permessage-deflate on these parameters.
    fn with_deflate(role: Role, params: DeflateParams) -> Connection {
        Connection::new(role, Limits::default())
            .with_deflate(Some(Deflate::new(role, params, 6, 0)))
    }

    fn no_context_takeover(server_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: server_bits,
            ..DeflateParams::default()
        }
    }

    /// What a peer with `params` makes of `wire`: the messages in it, and
    /// nothing else.
    fn receive(role: Role, params: DeflateParams, wire: &[u8]) -> Vec<Message> {
        let mut peer = with_deflate(role, params);
        peer.receive_data(wire);
        drain_events(&mut peer)
            .into_iter()
            .map(|event| match event {
                Ok(Event::Message(m)) => m,
                other => panic!("expected a message, got {other:?}"),
            })
            .collect()
    }

    /// JSON-like text that compresses well, `n` bytes.
    fn text(n: usize) -> Message {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!("{{\"id\":{i},\"price\":{}.25}},", i * 7 % 1000));
            i += 1;
        }
        s.truncate(n);
        Message::text(s)
    }

    #[test]
    fn connections_without_context_takeover_send_the_same_bytes_compressed_once() {
        let broadcast = Broadcast::new(text(2000));
        let params = no_context_takeover(15);
        let mut a = with_deflate(Role::Server, params);
        let mut b = with_deflate(Role::Server, params);
        assert!(!broadcast.is_compressed());
        a.send_broadcast(&broadcast).unwrap();
        assert!(broadcast.is_compressed());
        b.send_broadcast(&broadcast).unwrap();
        let (wire_a, wire_b) = (take_output(&mut a), take_output(&mut b));
        assert_eq!(wire_a, wire_b);
        assert_eq!(wire_a[0], 0xc1, "FIN, RSV1, text");
        assert!(wire_a.len() < 1000, "compressed: {} bytes", wire_a.len());
        assert_eq!(
            receive(Role::Client, params, &wire_a),
            [broadcast.message().clone()]
        );
        // The same bytes as the connection's own compression would make.
        let mut own = with_deflate(Role::Server, params);
        own.send(broadcast.message()).unwrap();
        assert_eq!(take_output(&mut own), wire_a);
    }

    #[test]
    fn a_large_compressed_broadcast_is_queued_by_reference_not_copied() {
        // Digits of a pseudo-random walk: compresses, but not below 4 KiB.
        let mut x = 1u64;
        let data: Vec<u8> = (0..64 << 10)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                b'0' + (x >> 60) as u8 % 10
            })
            .collect();
        let broadcast = Broadcast::new(Message::binary(data));
        let params = no_context_takeover(15);
        let mut a = with_deflate(Role::Server, params);
        let mut b = with_deflate(Role::Server, params);
        a.send_broadcast(&broadcast).unwrap();
        b.send_broadcast(&broadcast).unwrap();
        let payload = |conn: &Connection| {
            let mut slices = [std::io::IoSlice::new(&[]); 4];
            let n = conn.pending_output_vectored(&mut slices);
            assert_eq!(n, 2, "a header, then the payload by reference");
            slices[1].as_ptr()
        };
        assert_eq!(payload(&a), payload(&b));
        let wire = take_output(&mut a);
        assert_eq!(
            receive(Role::Client, params, &wire),
            [broadcast.message().clone()]
        );
    }

    #[test]
    fn with_context_takeover_each_connection_compresses_for_itself() {
        let broadcast = Broadcast::new(text(2000));
        let params = DeflateParams::default();
        let mut server = with_deflate(Role::Server, params);
        server.send_broadcast(&broadcast).unwrap();
        server.send_broadcast(&broadcast).unwrap();
        assert!(!broadcast.is_compressed());
        let wire = take_output(&mut server);
        let message = broadcast.message().clone();
        assert_eq!(
            receive(Role::Client, params, &wire),
            [message.clone(), message]
        );
    }

    #[test]
    fn a_smaller_window_shares_only_messages_that_fit_it() {
        let params = no_context_takeover(10);
        let mut server = with_deflate(Role::Server, params);
        let large = Broadcast::new(text(4000));
        server.send_broadcast(&large).unwrap();
        assert!(!large.is_compressed(), "4000 bytes do not fit 1 KiB");
        let small = Broadcast::new(text(1000));
        server.send_broadcast(&small).unwrap();
        assert!(small.is_compressed());
        let wire = take_output(&mut server);
        assert_eq!(
            receive(Role::Client, params, &wire),
            [large.message().clone(), small.message().clone()]
        );
    }

    #[test]
    fn without_deflate_or_below_the_threshold_it_is_sent_plain() {
        let broadcast = Broadcast::new(Message::binary(&b"plain"[..]));
        let mut plain = Connection::new(Role::Server, Limits::default());
        plain.send_broadcast(&broadcast).unwrap();
        assert_eq!(take_output(&mut plain), b"\x82\x05plain");
        let mut above = Connection::new(Role::Server, Limits::default()).with_deflate(Some(
            Deflate::new(Role::Server, no_context_takeover(15), 6, 100),
        ));
        above.send_broadcast(&broadcast).unwrap();
        assert_eq!(take_output(&mut above), b"\x82\x05plain");
        assert!(!broadcast.is_compressed());
    }

    #[test]
    fn a_client_masks_the_shared_bytes_without_changing_them() {
        let broadcast = Broadcast::new(text(2000));
        let params = no_context_takeover(15);
        let mut a = with_deflate(Role::Client, params);
        let mut b = with_deflate(Role::Client, params);
        a.send_broadcast(&broadcast).unwrap();
        b.send_broadcast(&broadcast).unwrap();
        for client in [&mut a, &mut b] {
            let wire = take_output(client);
            assert_eq!(wire[1] & 0x80, 0x80, "masked");
            assert_eq!(
                receive(Role::Server, params, &wire),
                [broadcast.message().clone()]
            );
        }
        assert!(broadcast.is_compressed());
    }

    #[test]
    fn nothing_is_sent_after_a_close() {
        let broadcast = Broadcast::new(text(100));
        let mut server = with_deflate(Role::Server, no_context_takeover(15));
        server.send_close(None).unwrap();
        assert!(server.send_broadcast(&broadcast).is_err());
    }
}
