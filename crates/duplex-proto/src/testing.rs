//! A client and a server [`Connection`] wired to each other in memory, for
//! tests: quinn-proto's `tests/util.rs` `Pair`, for WebSocket.
//!
//! This module owns the test harness only, no protocol rule. A [`Pair`] is
//! made the way a real connection is: [`Pair::with_deflate`] runs the real
//! opening handshake (request, validation, response) and the real
//! permessage-deflate negotiation, so a test of compression exercises what
//! two peers would agree on. Bytes then move between the two ends with
//! [`Pair::deliver`] (any number of bytes, so a frame can arrive in pieces)
//! or [`Pair::drive`] (until neither end has anything to write), and every
//! event either end reports is kept, in order, until the test takes it.
//!
//! It is compiled for the crate's own tests and behind the `testing` cargo
//! feature for others (integration tests, the I/O crates' tests); it is not
//! part of the stable API.

use http::Uri;

use crate::extensions::deflate::Deflate;
use crate::extensions::{DeflateConfig, DeflateParams, parse_header};
use crate::handshake::{ClientRequest, MAX_HEAD_SIZE, server, write_request, write_response};
use crate::{Connection, Event, Limits, ProtocolError, Role};

/// What one end reported, in order: events, or the protocol error that
/// failed the connection.
pub type Events = Vec<Result<Event, ProtocolError>>;

/// A client and a server connected in memory. See the module docs.
#[derive(Debug)]
pub struct Pair {
    /// The end that sent the Upgrade request.
    pub client: Connection,
    /// The end that accepted it.
    pub server: Connection,
    /// The permessage-deflate parameters both ends agreed on, if they did.
    pub negotiated: Option<DeflateParams>,
    client_events: Events,
    server_events: Events,
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

impl Pair {
    /// Two ends with the default limits and no extension.
    pub fn new() -> Self {
        Pair::with_limits(Limits::default())
    }

    /// Two ends that both enforce `limits`, with no extension.
    pub fn with_limits(limits: Limits) -> Self {
        Pair::from_connections(
            Connection::new(Role::Client, limits),
            Connection::new(Role::Server, limits),
            None,
        )
    }

    /// Two ends that both negotiate permessage-deflate with `config`,
    /// through the opening handshake.
    ///
    /// # Panics
    ///
    /// If the handshake fails or the ends do not agree on deflate: that is a
    /// bug in the handshake or extension code, which the test should report.
    pub fn with_deflate(config: &DeflateConfig) -> Self {
        let pair = Pair::handshake(Limits::default(), Some(config), Some(config));
        assert!(
            pair.negotiated.is_some(),
            "permessage-deflate was not agreed"
        );
        pair
    }

    /// Two ends that enforce `limits` and negotiate through the opening
    /// handshake, each offering or accepting permessage-deflate with its own
    /// config if it has one (`None`: does not support it).
    ///
    /// # Panics
    ///
    /// If the handshake fails, or the two ends disagree on the outcome.
    pub fn handshake(
        limits: Limits,
        client_deflate: Option<&DeflateConfig>,
        server_deflate: Option<&DeflateConfig>,
    ) -> Self {
        // The client's request, on the wire.
        let mut request = ClientRequest::new(Uri::from_static("ws://localhost/"));
        if let Some(config) = client_deflate {
            request = request.extensions(config.client_offer());
        }
        let (request, handshake) = request.build().expect("the client builds its request");
        let mut wire = Vec::new();
        write_request(&request, &mut wire);

        // The server reads it and answers.
        let (request, len) = server::parse_request(&wire, MAX_HEAD_SIZE)
            .expect("the server parses the request")
            .expect("the request head is complete");
        assert_eq!(len, wire.len(), "nothing follows the request head");
        let info = server::validate_request(&request).expect("the request is an upgrade");
        let accepted = server_deflate.and_then(|config| {
            let values: Vec<&str> = info.extensions.iter().map(String::as_str).collect();
            let offers = parse_header(&values).expect("the client's offer parses");
            config.server_accept(&offers)
        });
        let answer = accepted.as_ref().map(|(_, answer)| answer.as_str());
        let response = server::response(&info, None, answer);
        let mut wire = Vec::new();
        write_response(&response, &mut wire);

        // The client reads the answer and applies it.
        let (response, _) = handshake
            .parse_response(&wire, MAX_HEAD_SIZE)
            .expect("the client accepts the response")
            .expect("the response head is complete");
        let values = handshake.negotiated(&response).extensions;
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let client_params = match client_deflate {
            Some(config) => config
                .client_accept(&values)
                .expect("the client accepts the server's answer"),
            None => None,
        };
        let server_params = accepted.map(|(params, _)| params);
        assert_eq!(client_params, server_params, "both ends agree");

        let codec = |role: Role, config: Option<&DeflateConfig>| {
            let config = config?;
            let params = client_params?;
            Some(
                Deflate::new(role, params, config.compression_level, config.threshold)
                    .keep_zlib_state(config.keep_zlib_state),
            )
        };
        Pair::from_connections(
            Connection::new(Role::Client, limits).with_deflate(codec(Role::Client, client_deflate)),
            Connection::new(Role::Server, limits).with_deflate(codec(Role::Server, server_deflate)),
            client_params,
        )
    }

    fn from_connections(
        client: Connection,
        server: Connection,
        negotiated: Option<DeflateParams>,
    ) -> Self {
        Pair {
            client,
            server,
            negotiated,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// The end of role `role`.
    pub fn end(&mut self, role: Role) -> &mut Connection {
        match role {
            Role::Client => &mut self.client,
            Role::Server => &mut self.server,
        }
    }

    /// Moves at most `max` of the bytes `from` has to write to the other
    /// end, which then parses what it can (possibly nothing, if a frame is
    /// still incomplete); its events are kept. Returns how many bytes moved.
    pub fn deliver(&mut self, from: Role, max: usize) -> usize {
        let (sender, receiver, events) = match from {
            Role::Client => (&mut self.client, &mut self.server, &mut self.server_events),
            Role::Server => (&mut self.server, &mut self.client, &mut self.client_events),
        };
        let mut moved = 0;
        while moved < max && sender.wants_write() {
            let chunk = sender.pending_output();
            let n = chunk.len().min(max - moved);
            receiver.receive_data(&chunk[..n]);
            sender.advance_output(n);
            moved += n;
        }
        events.extend(drain_events(receiver));
        moved
    }

    /// Delivers everything the client has to write, and returns every event
    /// the server reported and the test did not take yet.
    pub fn deliver_to_server(&mut self) -> Events {
        self.deliver(Role::Client, usize::MAX);
        self.server_events()
    }

    /// Delivers everything the server has to write, and returns every event
    /// the client reported and the test did not take yet.
    pub fn deliver_to_client(&mut self) -> Events {
        self.deliver(Role::Server, usize::MAX);
        self.client_events()
    }

    /// Delivers both ways until neither end has anything to write (answers,
    /// such as pongs and Close replies, included).
    pub fn drive(&mut self) {
        self.drive_in_chunks(&[usize::MAX]);
    }

    /// Like [`drive`](Self::drive), in chunks: each delivery moves at most
    /// the next size of `sizes` (cycled), so frames arrive in pieces.
    ///
    /// # Panics
    ///
    /// If `sizes` is empty or holds a 0, with which nothing would move.
    pub fn drive_in_chunks(&mut self, sizes: &[usize]) {
        assert!(
            !sizes.is_empty() && !sizes.contains(&0),
            "chunk sizes must be positive"
        );
        let mut sizes = sizes.iter().copied().cycle();
        loop {
            let to_server = self.deliver(Role::Client, sizes.next().expect("cycled"));
            let to_client = self.deliver(Role::Server, sizes.next().expect("cycled"));
            if to_server == 0 && to_client == 0 {
                return;
            }
        }
    }

    /// Takes the events the client reported so far.
    pub fn client_events(&mut self) -> Events {
        std::mem::take(&mut self.client_events)
    }

    /// Takes the events the server reported so far.
    pub fn server_events(&mut self) -> Events {
        std::mem::take(&mut self.server_events)
    }

    /// Takes the events the end of role `role` reported so far.
    pub fn events(&mut self, role: Role) -> Events {
        match role {
            Role::Client => self.client_events(),
            Role::Server => self.server_events(),
        }
    }
}

/// Everything `conn` has to write, as a socket would take it.
pub fn take_output(conn: &mut Connection) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(conn.pending_output_len());
    while conn.wants_write() {
        let chunk = conn.pending_output();
        assert!(!chunk.is_empty(), "wants_write with nothing pending");
        bytes.extend_from_slice(chunk);
        conn.advance_output(chunk.len());
    }
    bytes
}

/// Every event the bytes `conn` has received so far complete.
pub fn drain_events(conn: &mut Connection) -> Events {
    std::iter::from_fn(|| conn.next_event()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn plain_pair_agrees_on_nothing() {
        let pair = Pair::handshake(Limits::default(), None, Some(&DeflateConfig::default()));
        assert_eq!(pair.negotiated, None);
        assert!(!pair.client.is_compressed() && !pair.server.is_compressed());
    }

    #[test]
    fn deflate_pair_agrees_through_the_handshake() {
        let pair = Pair::with_deflate(&DeflateConfig::default());
        assert_eq!(pair.negotiated, Some(DeflateParams::default()));
        assert!(pair.client.is_compressed() && pair.server.is_compressed());
        let pair = Pair::with_deflate(&DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        });
        let params = pair.negotiated.expect("agreed");
        assert!(params.server_no_context_takeover);
        assert!(!params.client_no_context_takeover);
    }

    #[test]
    fn drive_answers_pings_and_keeps_events_in_order() {
        let mut pair = Pair::new();
        pair.client.send_text("a").unwrap();
        pair.client.send_ping(b"p").unwrap();
        pair.client.send_binary(&[1; 300]).unwrap();
        pair.drive_in_chunks(&[1, 7]);
        assert_eq!(
            pair.server_events(),
            vec![
                Ok(Event::Message(Message::text("a"))),
                Ok(Event::Ping(bytes::Bytes::from_static(b"p"))),
                Ok(Event::Message(Message::binary(vec![1; 300]))),
            ]
        );
        assert_eq!(
            pair.client_events(),
            vec![Ok(Event::Pong(bytes::Bytes::from_static(b"p")))]
        );
        assert!(pair.server_events().is_empty());
    }
}
