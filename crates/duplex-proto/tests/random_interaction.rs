//! Random interleavings of what two correct peers may do, as in
//! quinn-proto's `random_interaction.rs`: both ends send text and binary
//! messages of any size, pings, pongs and a Close, while bytes move between
//! them in chunks of random sizes (so frames, headers included, arrive in
//! pieces), with permessage-deflate off, on with context takeover, and on
//! without it.
//!
//! A model of each direction says exactly which frames must arrive, in which
//! order: what the sender queued successfully, plus the answers it queued
//! itself (a pong for each ping it read before its Close, the echo of the
//! peer's Close). The invariants, checked after every step:
//! - what an end reported is a prefix of what the other end sent, and after
//!   a final drive it is all of it: every message sent before a Close arrives
//!   exactly once, in order and intact, and control frames keep their place
//!   between messages;
//! - no protocol error between two correct peers;
//! - a send succeeds exactly when the sender has not sent a Close;
//! - the state is `Open`, `Closing` or `Closed` as the Close frames sent and
//!   received say, and `Closed` on both ends once both Closes are through.
//!
//! The connection API sends each message as one frame, so fragmentation with
//! interleaved control frames on the receiving side is tested on crafted
//! frames in `src/connection.rs`.

use bytes::Bytes;
use duplex_proto::extensions::DeflateConfig;
use duplex_proto::testing::Pair;
use duplex_proto::{CloseCode, CloseFrame, Event, Limits, Message, Role, SendError, State};
use proptest::prelude::*;

/// One thing a test does to the pair.
#[derive(Debug, Clone)]
enum Action {
    /// `from` sends a text message of about `len` bytes.
    Text { from: Role, len: usize },
    /// `from` sends a binary message of `len` bytes.
    Binary { from: Role, len: usize },
    /// `from` sends a ping with `len` bytes of payload (at most 125).
    Ping { from: Role, len: usize },
    /// `from` sends an unsolicited pong (§5.5.3).
    Pong { from: Role, len: usize },
    /// `from` starts the closing handshake.
    Close {
        from: Role,
        frame: Option<CloseFrame>,
    },
    /// At most `max` of the bytes `from` has to write reach the other end.
    Deliver { from: Role, max: usize },
}

/// What the test knows of one end.
#[derive(Debug, Default)]
struct End {
    /// Every event this end's peer must report, in order: what this end
    /// queued.
    sent: Vec<Event>,
    /// How many of the peer's frames this end reported.
    received: usize,
    close_sent: bool,
    close_received: bool,
}

struct Model {
    pair: Pair,
    client: End,
    server: End,
    /// Makes every message's content different.
    counter: u64,
}

impl Model {
    fn end(&mut self, role: Role) -> &mut End {
        match role {
            Role::Client => &mut self.client,
            Role::Server => &mut self.server,
        }
    }

    fn apply(&mut self, action: Action) -> Result<(), TestCaseError> {
        self.counter += 1;
        let seed = self.counter;
        match action {
            Action::Text { from, len } => {
                let text = text(len, seed);
                let result = self.pair.end(from).send_text(&text);
                self.sent(from, result, Event::Message(Message::text(text)))?;
            }
            Action::Binary { from, len } => {
                let message = Message::binary(binary(len, seed));
                // Through `send`, so that large server payloads also take the
                // path that queues them by reference.
                let result = self.pair.end(from).send(&message);
                self.sent(from, result, Event::Message(message))?;
            }
            Action::Ping { from, len } => {
                let payload = Bytes::from(binary(len, seed));
                let result = self.pair.end(from).send_ping(&payload);
                self.sent(from, result, Event::Ping(payload))?;
            }
            Action::Pong { from, len } => {
                let payload = Bytes::from(binary(len, seed));
                let result = self.pair.end(from).send_pong(&payload);
                self.sent(from, result, Event::Pong(payload))?;
            }
            Action::Close { from, frame } => {
                let result = self.pair.end(from).send_close(frame.clone());
                self.sent(from, result, Event::Close(frame))?;
            }
            Action::Deliver { from, max } => {
                self.pair.deliver(from, max);
                self.take_events(from.peer())?;
            }
        }
        self.check_states()
    }

    /// Records a send `from` made: it must succeed exactly when `from` has
    /// not sent a Close, and then the peer must report `expected`.
    fn sent(
        &mut self,
        from: Role,
        result: Result<(), SendError>,
        expected: Event,
    ) -> Result<(), TestCaseError> {
        let is_close = matches!(expected, Event::Close(_));
        let end = self.end(from);
        if end.close_sent {
            prop_assert_eq!(result, Err(SendError::Closed));
        } else {
            prop_assert_eq!(result, Ok(()));
            end.sent.push(expected);
            if is_close {
                end.close_sent = true;
            }
        }
        Ok(())
    }

    /// Checks the events `role` reported against what its peer sent, and
    /// records the answers `role` queued for them.
    fn take_events(&mut self, role: Role) -> Result<(), TestCaseError> {
        let events = self.pair.events(role);
        for event in events {
            let event = match event {
                Ok(event) => event,
                Err(e) => return Err(TestCaseError::fail(format!("{role:?} failed: {e}"))),
            };
            let index = self.end(role).received;
            let Some(expected) = self.end(role.peer()).sent.get(index) else {
                return Err(TestCaseError::fail(format!(
                    "{role:?} reported {event:?}, which was never sent"
                )));
            };
            prop_assert_eq!(&event, expected, "{:?}'s event {}", role, index);
            let end = self.end(role);
            end.received += 1;
            match event {
                // §5.5.2: answered, unless this end sent its Close already.
                Event::Ping(payload) if !end.close_sent => end.sent.push(Event::Pong(payload)),
                Event::Close(frame) => {
                    end.close_received = true;
                    // §5.5.1: answered with a Close echoing the code (and,
                    // here, the reason), unless this end sent one already.
                    if !end.close_sent {
                        end.close_sent = true;
                        end.sent.push(Event::Close(frame));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_states(&mut self) -> Result<(), TestCaseError> {
        for role in [Role::Client, Role::Server] {
            let (close_sent, close_received) = {
                let end = self.end(role);
                (end.close_sent, end.close_received)
            };
            let conn = self.pair.end(role);
            prop_assert_eq!(conn.close_sent(), close_sent, "{:?} close sent", role);
            prop_assert_eq!(
                conn.close_received(),
                close_received,
                "{:?} close received",
                role
            );
            let state = match (close_sent, close_received) {
                (false, false) => State::Open,
                (true, false) => State::Closing,
                (true, true) => State::Closed,
                (false, true) => {
                    return Err(TestCaseError::fail(format!(
                        "{role:?} received a Close without answering it"
                    )));
                }
            };
            prop_assert_eq!(conn.state(), state, "{:?} state", role);
        }
        Ok(())
    }

    /// Delivers everything both ways, closes from `closer` if neither end
    /// has, delivers again, and checks that everything sent arrived and both
    /// ends are closed.
    fn finish(&mut self, closer: Role) -> Result<(), TestCaseError> {
        self.drive()?;
        for role in [Role::Client, Role::Server] {
            let (sent, received) = (self.end(role).sent.len(), self.end(role.peer()).received);
            prop_assert_eq!(received, sent, "{:?} got all {:?} sent", role.peer(), role);
        }
        if !self.client.close_sent && !self.server.close_sent {
            let frame = Some(CloseFrame::new(CloseCode::NORMAL, "done"));
            self.apply(Action::Close {
                from: closer,
                frame,
            })?;
            self.drive()?;
        }
        for role in [Role::Client, Role::Server] {
            let end = self.end(role);
            prop_assert!(end.close_sent && end.close_received, "{:?} closed", role);
            let conn = self.pair.end(role);
            prop_assert_eq!(conn.state(), State::Closed);
            prop_assert!(!conn.wants_write(), "{:?} has nothing left to write", role);
        }
        Ok(())
    }

    /// Delivers both ways until neither end has anything to write, checking
    /// each delivery.
    fn drive(&mut self) -> Result<(), TestCaseError> {
        loop {
            let mut moved = 0;
            for from in [Role::Client, Role::Server] {
                moved += self.pair.deliver(from, usize::MAX);
                self.take_events(from.peer())?;
            }
            self.check_states()?;
            if moved == 0 {
                return Ok(());
            }
        }
    }
}

/// About `len` bytes of text (fewer if a multi-byte character would cross
/// `len`), mixing one- to four-byte characters so that chunks split them.
fn text(len: usize, seed: u64) -> String {
    const PIECES: [&str; 5] = ["a", "é", "€", "𝄞", "websocket "];
    let mut s = String::with_capacity(len);
    let mut i = seed as usize;
    loop {
        let piece = PIECES[i % PIECES.len()];
        if s.len() + piece.len() > len {
            return s;
        }
        s.push_str(piece);
        i += 1;
    }
}

/// `len` bytes that depend on `seed`, compressible or not depending on it.
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let noisy = seed.is_multiple_of(2);
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            if noisy {
                (x >> 56) as u8
            } else {
                (i % 7) as u8
            }
        })
        .collect()
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

/// Message sizes: empty, the 7-bit length form, the 16-bit form, and now
/// and then the 64-bit form (over 64 KiB).
fn message_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        10 => 1..=125usize,
        6 => 126..=4096usize,
        1 => 65_536..=70_000usize,
    ]
}

/// Valid close frames: no body, or a code that may be sent and a short
/// reason.
fn close_frame() -> impl Strategy<Value = Option<CloseFrame>> {
    let code = prop_oneof![1000..=1003u16, 1007..=1014u16, 3000..=4999u16];
    // At most 40 characters of at most 3 bytes: within the 123-byte limit.
    let frame = (code, "[a-z é€]{0,40}")
        .prop_map(|(code, reason)| Some(CloseFrame::new(CloseCode(code), reason)));
    prop_oneof![1 => Just(None), 3 => frame]
}

fn action() -> impl Strategy<Value = Action> {
    // Chunk sizes from one byte (a header in pieces) to everything pending.
    let chunk = prop_oneof![
        1..=4usize,
        5..=300usize,
        301..=20_000usize,
        Just(usize::MAX)
    ];
    prop_oneof![
        4 => (role(), message_len()).prop_map(|(from, len)| Action::Text { from, len }),
        4 => (role(), message_len()).prop_map(|(from, len)| Action::Binary { from, len }),
        2 => (role(), 0..=125usize).prop_map(|(from, len)| Action::Ping { from, len }),
        1 => (role(), 0..=125usize).prop_map(|(from, len)| Action::Pong { from, len }),
        1 => (role(), close_frame()).prop_map(|(from, frame)| Action::Close { from, frame }),
        10 => (role(), chunk).prop_map(|(from, max)| Action::Deliver { from, max }),
    ]
}

/// permessage-deflate off, on with context takeover (zlib state freed
/// between messages, as by default, or kept), on without it (both
/// directions, or the server's only), and on with a threshold so that
/// compressed and plain messages mix.
fn deflate() -> impl Strategy<Value = Option<DeflateConfig>> {
    let config = |server_nct: bool, client_nct: bool, threshold: usize, keep: bool| {
        let mut config = DeflateConfig::default();
        config.server_no_context_takeover = server_nct;
        config.client_no_context_takeover = client_nct;
        config.threshold = threshold;
        config.keep_zlib_state = keep;
        Some(config)
    };
    prop_oneof![
        Just(None),
        Just(config(false, false, 0, false)),
        Just(config(false, false, 0, true)),
        Just(config(true, true, 0, false)),
        Just(config(true, false, 0, false)),
        Just(config(false, false, 64, false)),
    ]
}

fn run(
    deflate: Option<DeflateConfig>,
    actions: Vec<Action>,
    closer: Role,
) -> Result<(), TestCaseError> {
    let pair = Pair::handshake(Limits::default(), deflate.as_ref(), deflate.as_ref());
    prop_assert_eq!(pair.negotiated.is_some(), deflate.is_some());
    let mut model = Model {
        pair,
        client: End::default(),
        server: End::default(),
        counter: 0,
    };
    for action in actions {
        model.apply(action)?;
    }
    model.finish(closer)
}

proptest! {
    // Debug builds compress and mask slowly: 128 cases of up to 60 actions
    // take about a second. PROPTEST_CASES=10000 searches harder.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_interaction(
        deflate in deflate(),
        actions in prop::collection::vec(action(), 0..60),
        closer in role(),
    ) {
        run(deflate, actions, closer)?;
    }
}

/// The race the model must get right: both ends close at once, with data and
/// pings still in flight both ways, delivered a byte at a time.
#[test]
fn simultaneous_close_with_traffic_in_flight() {
    use Action::*;
    let actions = vec![
        Text {
            from: Role::Client,
            len: 300,
        },
        Ping {
            from: Role::Server,
            len: 5,
        },
        Binary {
            from: Role::Server,
            len: 70_000,
        },
        Ping {
            from: Role::Client,
            len: 0,
        },
        Close {
            from: Role::Client,
            frame: Some(CloseFrame::new(CloseCode(4000), "bye")),
        },
        Close {
            from: Role::Server,
            frame: None,
        },
        Deliver {
            from: Role::Client,
            max: 1,
        },
        Deliver {
            from: Role::Server,
            max: 3,
        },
    ];
    for deflate in [None, Some(DeflateConfig::default())] {
        run(deflate, actions.clone(), Role::Client).unwrap();
    }
}
