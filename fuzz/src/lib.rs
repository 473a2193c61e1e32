//! What the `connection_server` and `connection_client` targets share: a
//! [`Connection`] driven by arbitrary bytes as an I/O layer would drive it,
//! with its invariants checked after every step.
//!
//! The input is a configuration byte and then a program of steps (see
//! [`run`]). Everything the connection writes is delivered to a peer
//! [`Connection`] of the other role with the same permessage-deflate
//! parameters, which must accept all of it and see exactly what was sent:
//! a connection never puts on the wire what a correct peer would reject.

use std::io::IoSlice;

use bytes::Bytes;
use duplex_proto::extensions::{Deflate, DeflateParams};
use duplex_proto::{
    CloseCode, CloseFrame, Connection, Event, Limits, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
    MAX_REASON_LEN, Message, ProtocolError, Role, SendError, State,
};

/// The write buffer of the simulated I/O layer: above it, it writes out
/// everything pending before it reads or processes more (back-pressure, as
/// `duplex` does).
pub const WRITE_BUFFER: usize = 16 << 10;

/// Something the connection put on the wire, as the peer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<u16>),
}

/// The configuration byte: bit 0 permessage-deflate, bit 1 small limits,
/// bits 2 and 3 no context takeover for the server and the client, bits 4–6
/// the window bits (8 + n) both ways, bit 7 a compression threshold of 64
/// bytes instead of 0.
struct Config {
    limits: Limits,
    deflate: Option<(DeflateParams, usize)>,
}

impl Config {
    fn from_byte(b: u8) -> Config {
        let mut limits = Limits::default();
        if b & 0b10 != 0 {
            limits.max_frame_size = 256;
            limits.max_message_size = 1024;
        } else {
            limits.max_frame_size = 32 << 10;
            limits.max_message_size = 64 << 10;
        }
        let deflate = (b & 1 != 0).then(|| {
            let bits = 8 + ((b >> 4) & 7);
            let params = DeflateParams {
                server_no_context_takeover: b & 0b100 != 0,
                client_no_context_takeover: b & 0b1000 != 0,
                server_max_window_bits: bits,
                client_max_window_bits: bits,
            };
            (params, if b & 0x80 != 0 { 64 } else { 0 })
        });
        Config { limits, deflate }
    }

    fn connection(&self, role: Role, limits: Limits) -> Connection {
        let deflate = self
            .deflate
            .map(|(params, threshold)| Deflate::new(role, params, 1, threshold));
        Connection::new(role, limits).with_deflate(deflate)
    }
}

/// The most one step can add to the pending output: the echo of the largest
/// message, compressed (DEFLATE's stored blocks add 5 bytes per 16 KiB, a
/// sync flush a few more), with its header; a control frame is smaller.
fn max_step_output(limits: Limits) -> usize {
    let m = limits.max_message_size;
    (m + m / 1024 + 64 + MAX_HEADER_LEN).max(MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD)
}

/// The most the receive buffer holds once every complete event was taken:
/// the start of a frame whose payload waits in it whole (at most a frame,
/// which the header was checked against), or an incomplete control frame.
fn max_input(limits: Limits) -> usize {
    limits
        .max_frame_size
        .min(limits.max_message_size)
        .max(MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD)
}

struct Harness {
    conn: Connection,
    peer: Connection,
    limits: Limits,
    /// What the peer must see, in order.
    expected: Vec<Sent>,
    /// What it saw.
    seen: Vec<Sent>,
    /// The connection failed or received a Close: no event may follow.
    finished: bool,
}

/// Reads from the front of the program.
struct Program<'a>(&'a [u8]);

impl<'a> Program<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    }
}

/// Runs a program against a connection in `role`.
///
/// `data[0]` is the configuration (see [`Config`]); then each step is an
/// opcode byte `op` and its operands:
///
/// - `op % 4 == 0`: receive a chunk of `u16` (little-endian) bytes;
/// - `op % 4 == 1`: write up to `(op >> 2) * 64` pending bytes (0: all);
/// - `op % 4 == 2`: the application sends: `(op >> 2) % 6` is text, binary,
///   ping, pong (each with a length byte and the payload), Close without a
///   body, or Close with a code (`u16`), a reason length byte and the reason;
/// - `op % 4 == 3`: receive a chunk of `(op >> 2) + 1` bytes.
///
/// Every received message is echoed while the connection is open.
pub fn run(role: Role, data: &[u8]) {
    let mut program = Program(data);
    let Some(config) = program.byte() else {
        return;
    };
    let config = Config::from_byte(config);
    let peer_limits = Limits::default();
    let mut h = Harness {
        conn: config.connection(role, config.limits),
        peer: config.connection(role.peer(), peer_limits),
        limits: config.limits,
        expected: Vec::new(),
        seen: Vec::new(),
        finished: false,
    };
    while let Some(op) = program.byte() {
        match op % 4 {
            0 => {
                let n = usize::from(program.u16());
                h.receive(program.bytes(n));
            }
            1 => h.write(usize::from(op >> 2) * 64),
            2 => h.app_send((op >> 2) % 6, &mut program),
            _ => h.receive(program.bytes(usize::from(op >> 2) + 1)),
        }
        h.check();
    }
    // The I/O layer writes everything; the peer must have seen all we sent.
    h.write(0);
    h.check();
    assert_eq!(h.seen, h.expected, "the peer sees exactly what was sent");
}

impl Harness {
    /// Bytes from the network, then every event they complete, writing out
    /// everything pending whenever it is over the write buffer.
    fn receive(&mut self, chunk: &[u8]) {
        if self.conn.pending_output_len() > WRITE_BUFFER {
            self.write(0);
        }
        self.conn.receive_data(chunk);
        loop {
            let close_sent = self.conn.close_sent();
            let Some(event) = self.conn.next_event() else {
                break;
            };
            assert!(
                !self.finished,
                "an event after the connection finished: {event:?}"
            );
            match event {
                Ok(event) => self.on_event(event, close_sent),
                Err(e) => self.on_error(&e, close_sent),
            }
            self.check();
            if self.conn.pending_output_len() > WRITE_BUFFER {
                self.write(0);
            }
        }
        // Everything complete was taken: what is left is part of one frame.
        let input = self.conn.input_buffer().len();
        assert!(
            input <= max_input(self.limits),
            "{input} bytes left in the receive buffer"
        );
    }

    fn on_event(&mut self, event: Event, close_sent: bool) {
        match event {
            Event::Message(message) => {
                assert!(message.len() <= self.limits.max_message_size);
                if let Message::Text(text) = &message {
                    assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                }
                let result = self.conn.send(&message);
                self.sent(result, Sent::Message(message));
            }
            Event::Ping(payload) => {
                assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
                // §5.5.2: answered, unless a Close was sent (§5.5.1).
                if !close_sent {
                    self.expected.push(Sent::Pong(payload));
                }
            }
            Event::Pong(payload) => assert!(payload.len() <= MAX_CONTROL_PAYLOAD),
            Event::Close(frame) => {
                if let Some(frame) = &frame {
                    assert!(frame.code.is_valid_on_wire(), "{frame:?}");
                    assert!(frame.reason.len() <= MAX_REASON_LEN);
                }
                if !close_sent {
                    // §5.5.1: echoed.
                    self.expected.push(Sent::Close(frame.map(|f| f.code.0)));
                }
                assert!(self.conn.close_sent() && self.conn.close_received());
                assert_eq!(self.conn.state(), State::Closed);
                self.finished = true;
            }
        }
    }

    fn on_error(&mut self, e: &ProtocolError, close_sent: bool) {
        let code = e.close_code();
        assert!(
            [
                CloseCode::PROTOCOL_ERROR,
                CloseCode::INVALID_PAYLOAD,
                CloseCode::MESSAGE_TOO_BIG
            ]
            .contains(&code),
            "{e}: {code}"
        );
        if !close_sent {
            self.expected.push(Sent::Close(Some(code.0)));
        }
        assert!(self.conn.close_sent());
        assert_eq!(self.conn.state(), State::Closed);
        self.finished = true;
        // Nothing more comes out, whatever arrives.
        self.conn
            .receive_data(&[0x81, 0x80, 0, 0, 0, 0, 0x81, 0x00]);
        assert!(self.conn.next_event().is_none());
    }

    /// Records a send the connection accepted; checks one it refused.
    fn sent(&mut self, result: Result<(), SendError>, what: Sent) {
        match result {
            Ok(()) => self.expected.push(what),
            Err(SendError::Closed) => assert!(self.conn.close_sent()),
            Err(e) => panic!("{what:?} refused: {e}"),
        }
    }

    fn app_send(&mut self, kind: u8, program: &mut Program<'_>) {
        if self.conn.pending_output_len() > WRITE_BUFFER {
            self.write(0);
        }
        let was_closed = self.conn.close_sent();
        if kind == 4 {
            let result = self.conn.send_close(None);
            return self.sent(result, Sent::Close(None));
        }
        if kind == 5 {
            let code = CloseCode(program.u16());
            let n = usize::from(program.byte().unwrap_or(0));
            let reason = String::from_utf8_lossy(program.bytes(n)).into_owned();
            let result = self
                .conn
                .send_close(Some(CloseFrame::new(code, reason.clone())));
            match result {
                Err(SendError::InvalidCloseCode(c)) => {
                    assert!(!was_closed && !code.is_valid_on_wire() && c == code.0)
                }
                Err(SendError::ReasonTooLong(n)) => {
                    assert!(!was_closed && code.is_valid_on_wire() && n > MAX_REASON_LEN)
                }
                other => {
                    assert!(
                        was_closed || (code.is_valid_on_wire() && reason.len() <= MAX_REASON_LEN)
                    );
                    self.sent(other, Sent::Close(Some(code.0)));
                }
            }
            return;
        }
        let n = usize::from(program.byte().unwrap_or(0));
        let payload = program.bytes(n);
        let (result, what) = match kind {
            0 => {
                let text = String::from_utf8_lossy(payload).into_owned();
                let result = self.conn.send_text(&text);
                (result, Sent::Message(Message::text(text)))
            }
            1 => (
                self.conn.send_binary(payload),
                Sent::Message(Message::binary(payload.to_vec())),
            ),
            _ => {
                let ping = kind == 2;
                let result = if ping {
                    self.conn.send_ping(payload)
                } else {
                    self.conn.send_pong(payload)
                };
                if let Err(SendError::ControlTooLong(n)) = result {
                    assert!(!was_closed && n == payload.len() && n > MAX_CONTROL_PAYLOAD);
                    return;
                }
                let payload = Bytes::copy_from_slice(payload);
                (
                    result,
                    if ping {
                        Sent::Ping(payload)
                    } else {
                        Sent::Pong(payload)
                    },
                )
            }
        };
        self.sent(result, what);
    }

    /// Writes up to `max` pending bytes (0: all) to the peer, which must
    /// accept every one of them.
    fn write(&mut self, max: usize) {
        loop {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = self.conn.pending_output_vectored(&mut slices);
            let prefix = self.conn.pending_output();
            assert_eq!(prefix.is_empty(), n == 0);
            assert_eq!(self.conn.wants_write(), n > 0);
            if n == 0 {
                return;
            }
            assert_eq!(prefix, &*slices[0], "pending_output is the first slice");
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            assert!(total <= self.conn.pending_output_len());
            if n < slices.len() {
                assert_eq!(total, self.conn.pending_output_len());
            }
            let mut budget = if max == 0 { usize::MAX } else { max };
            let mut written = Vec::new();
            for s in &slices[..n] {
                let k = s.len().min(budget);
                written.extend_from_slice(&s[..k]);
                budget -= k;
            }
            self.conn.advance_output(written.len());
            self.deliver(&written);
            if max != 0 {
                return;
            }
        }
    }

    fn deliver(&mut self, bytes: &[u8]) {
        self.peer.receive_data(bytes);
        while let Some(event) = self.peer.next_event() {
            let event = event.unwrap_or_else(|e| panic!("the peer rejects what was sent: {e}"));
            self.seen.push(match event {
                Event::Message(m) => Sent::Message(m),
                Event::Ping(p) => Sent::Ping(p),
                Event::Pong(p) => Sent::Pong(p),
                Event::Close(frame) => Sent::Close(frame.map(|f| f.code.0)),
            });
        }
        // The peer answers too (pongs, its Close), into the void: what it
        // writes is not the subject here.
        let pending = self.peer.pending_output_len();
        self.peer.advance_output(pending);
    }

    /// The invariants that hold between any two steps.
    fn check(&mut self) {
        let limits = self.limits;
        let pending = self.conn.pending_output_len();
        assert!(
            pending <= WRITE_BUFFER + max_step_output(limits),
            "{pending} bytes pending"
        );
        let held = duplex_proto::fuzzing::reassembly_capacity(&self.conn);
        assert!(
            held <= 2 * limits.max_message_size + 1,
            "{held} bytes held for one message"
        );
        let state = self.conn.state();
        assert_eq!(self.conn.is_closed(), state == State::Closed);
        if self.conn.close_sent() && self.conn.close_received() {
            assert_eq!(state, State::Closed);
        }
        if state == State::Open {
            assert!(!self.conn.close_sent() && !self.conn.close_received());
        }
        if self.finished {
            assert!(self.conn.next_event().is_none());
        }
    }
}
