//! The WebSocket connection state machine, after the opening handshake
//! (RFC 6455 §5–§7): received bytes in, events out; messages in, bytes out.
//!
//! It owns the rules that need state: masking by role (§5.1), continuation
//! sequencing with control frames interleaved (§5.4), the size limits, the
//! automatic pong (§5.5.2), the closing handshake (§7.1) and failing the
//! connection (§7.1.7). Frame headers, masking, UTF-8 and close bodies are
//! delegated to their own modules.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::broadcast::Broadcast;
use crate::close::{CloseFrame, MAX_REASON_LEN};
use crate::error::{ProtocolError, SendError};
use crate::extensions::deflate::{Deflate, DeflateError};
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::input::InputBuffer;
use crate::mask::apply_mask;
use crate::message::{Message, Reassembly, Utf8Bytes};
use crate::role::Role;
use crate::utf8::Utf8Validator;

/// Size limits on what the peer may send.
///
/// The defaults are those of tungstenite: large enough for any ordinary
/// application, small enough that one connection cannot exhaust a server.
///
/// Start from [`Default`] and set fields: the struct is non-exhaustive, so
/// that a later limit is not a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame payload accepted (default 16 MiB). Checked against
    /// the header, before any of the payload is buffered.
    pub max_frame_size: usize,
    /// The largest message accepted, after decompression (default 64 MiB).
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
        }
    }
}

/// Where the connection is in its life (RFC 6455 §4–§7). `CONNECTING` is the
/// opening handshake, which happens before a `Connection` exists.
///
/// Non-exhaustive: a state added later is not a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a Close frame and wait for the peer's.
    Closing,
    /// Both Close frames were exchanged, or the connection failed. The I/O
    /// layer writes what is pending and closes the TCP connection.
    Closed,
}

/// Something the peer did.
///
/// Exhaustive on purpose: a peer can send data, a ping, a pong or a Close
/// and nothing else (RFC 6455 §5.5–§5.6), so a `match` needs no wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping. The pong is already queued (§5.5.2).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's Close frame; `None` if it carried no status code (the
    /// browser reports that as 1005). If we had not sent a Close yet, the
    /// answer is already queued.
    Close(Option<CloseFrame>),
}

/// A data frame whose payload is still arriving.
#[derive(Debug)]
struct PartialFrame {
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    offset: usize,
}

/// An unfragmented, uncompressed data message whose payload is arriving in
/// the receive buffer, right after the (already consumed) header. It is
/// unmasked and, for text, validated in place as bytes arrive (§8.1: fail
/// fast), and handed out without a copy once whole.
#[derive(Debug)]
struct WholeFrame {
    mask: Option<[u8; 4]>,
    len: usize,
    /// Payload bytes at the front of the buffer already unmasked and checked.
    done: usize,
    /// `Some` for a text message.
    utf8: Option<Utf8Validator>,
}

/// Payloads at least this large that need no masking or compression are
/// queued by reference instead of being copied into the output buffer: an
/// echoed 16 KiB message is then written straight from the receive buffer.
/// Below it, a copy costs less than another slice in a vectored write.
const ATTACH_MIN: usize = 4 << 10;

/// A payload queued by reference, to be written right after the first `at`
/// bytes ever appended to the output buffer.
#[derive(Debug)]
struct Attached {
    at: u64,
    /// What is left to write of it.
    payload: Bytes,
}

/// One WebSocket connection, either end, with no I/O.
///
/// Feed it what the socket read ([`receive_data`](Self::receive_data) or
/// [`input_buffer`](Self::input_buffer)), drain
/// [`next_event`](Self::next_event), queue messages with
/// [`send`](Self::send) and friends, and write
/// [`pending_output`](Self::pending_output) to the socket.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    state: State,
    input: BytesMut,
    whole: Option<WholeFrame>,
    frame: Option<PartialFrame>,
    message: Option<Reassembly>,
    output: BytesMut,
    /// Bytes of `output` written so far (advanced past), ever.
    output_written: u64,
    /// Payloads that go out between bytes of `output`, in order.
    attached: VecDeque<Attached>,
    /// The length of every payload in `attached`, in total.
    attached_len: usize,
    /// Boxed: it is large, and most connections do without it.
    deflate: Option<Box<Deflate>>,
    /// Masking keys must be unpredictable (§5.3), so a CSPRNG, seeded once.
    /// Only clients mask; boxed so that a server's idle connection does not
    /// carry its few hundred bytes of state.
    rng: Option<Box<StdRng>>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    /// The I/O layer said it reads only to see the connection end
    /// ([`Connection::stop_reading`]).
    reading_stopped: bool,
    /// Reused buffer for compressing outgoing messages.
    scratch: Vec<u8>,
}

impl Connection {
    /// A connection in the `Open` state, as after a successful handshake.
    pub fn new(role: Role, limits: Limits) -> Self {
        Connection {
            role,
            limits,
            state: State::Open,
            input: BytesMut::new(),
            whole: None,
            frame: None,
            message: None,
            output: BytesMut::new(),
            output_written: 0,
            attached: VecDeque::new(),
            attached_len: 0,
            deflate: None,
            rng: (role == Role::Client).then(|| Box::new(StdRng::from_os_rng())),
            close_sent: false,
            close_received: false,
            failed: false,
            reading_stopped: false,
            scratch: Vec::new(),
        }
    }

    /// Enables permessage-deflate as negotiated in the handshake.
    pub fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate.map(Box::new);
        self
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Hands the connection bytes read from the socket.
    pub fn receive_data(&mut self, data: &[u8]) {
        if !self.ignores_input() {
            self.input.extend_from_slice(data);
        }
    }

    /// The end of the receive buffer, for an I/O layer that reads straight
    /// into it rather than through [`receive_data`](Self::receive_data):
    /// append-only, so that bytes the connection has checked already (a
    /// text frame's UTF-8) cannot change under it. Bytes appended are parsed
    /// by the next [`next_event`](Self::next_event).
    pub fn input_buffer(&mut self) -> InputBuffer<'_> {
        if self.ignores_input() {
            self.input.clear();
        }
        InputBuffer::new(&mut self.input)
    }

    /// Stops parsing for good: every byte received from now on is dropped.
    /// For an I/O layer that only waits for the peer to end the TCP
    /// connection after the closing handshake, reading what it may still
    /// send into nothing.
    pub fn stop_reading(&mut self) {
        self.reading_stopped = true;
        self.input.clear();
    }

    /// How many more bytes the message being received needs before it is
    /// whole (0 if none is in progress), so that an I/O layer can size its
    /// next read to take it in one go. Bounded by the frame size limit, which
    /// the header was checked against.
    pub fn bytes_needed(&self) -> usize {
        self.whole
            .as_ref()
            .map_or(0, |w| w.len.saturating_sub(self.input.len()))
    }

    /// Whether a data message is partly received: the header of its first
    /// frame arrived and its last byte has not (fragmented or not). An I/O
    /// layer, which owns the clock, times how long a peer may take to
    /// finish one (§5.4 sets no limit).
    pub fn message_in_progress(&self) -> bool {
        self.whole.is_some() || self.message.is_some()
    }

    /// Bytes held for the partly received message, 0 if none: the payload
    /// so far, after decompression (a small compressed frame may inflate to
    /// much more than it took on the wire), or for an unfragmented message
    /// the part of it in the receive buffer. What an I/O layer counts
    /// against a budget shared by many connections.
    pub fn message_bytes_held(&self) -> usize {
        match (&self.whole, &self.message) {
            (Some(whole), _) => self.input.len().min(whole.len),
            (None, Some(message)) => message.buf.len(),
            (None, None) => 0,
        }
    }

    /// Bounds what a compressed message received from now on may inflate
    /// to, below the message limit: an I/O layer with a budget shared by
    /// many connections gives each what the budget has left, so that a
    /// small compressed frame that arrives whole in one read cannot inflate
    /// past it. Past it the connection fails with
    /// [`ProtocolError::InflateBudget`] (1013). Without permessage-deflate
    /// nothing inflates and this does nothing.
    pub fn set_inflate_allowance(&mut self, bytes: usize) {
        if let Some(deflate) = &mut self.deflate {
            deflate.inflate_allowance = bytes;
        }
    }

    /// After a Close frame was received or the connection failed, further
    /// bytes mean nothing (§5.5.1) and are dropped.
    fn ignores_input(&self) -> bool {
        self.close_received || self.failed || self.reading_stopped
    }

    /// The next thing the peer did, if the buffered bytes complete one.
    ///
    /// `Some(Err(_))` means the peer broke the protocol: a Close frame with
    /// the matching code is queued, the state is `Closed`, and every later
    /// call returns `None`.
    pub fn next_event(&mut self) -> Option<Result<Event, ProtocolError>> {
        if self.ignores_input() {
            return None;
        }
        match self.parse_event() {
            Ok(event) => event.map(Ok),
            Err(e) => Some(Err(self.fail(e))),
        }
    }

    fn parse_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if self.whole.is_some() {
                return Ok(self.read_whole()?.map(Event::Message));
            }
            if self.frame.is_some() {
                match self.read_payload()? {
                    Payload::NeedMore => return Ok(None),
                    Payload::FrameDone => continue,
                    Payload::Message(m) => return Ok(Some(Event::Message(m))),
                }
            }
            let Some((header, header_len)) = FrameHeader::parse(&self.input)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            let len = header.payload_len as usize; // ≤ max_frame_size, checked
            if header.opcode.is_control() {
                // ≤ 125 bytes (checked by the header parser): wait for all.
                if self.input.len() < header_len + len {
                    return Ok(None);
                }
                self.input.advance(header_len);
                let mut payload = self.input.split_to(len);
                if let Some(key) = header.mask {
                    apply_mask(&mut payload, key, 0);
                }
                return self.on_control(header.opcode, payload.freeze()).map(Some);
            }
            self.input.advance(header_len);
            // The common case: an unfragmented, uncompressed message. Its
            // payload stays in the receive buffer, unmasked in place, and is
            // handed out without a copy.
            if header.fin && header.opcode != OpCode::Continuation && !header.rsv1 {
                self.whole = Some(WholeFrame {
                    mask: header.mask,
                    len,
                    done: 0,
                    utf8: (header.opcode == OpCode::Text).then(Utf8Validator::new),
                });
                continue;
            }
            if header.opcode != OpCode::Continuation {
                self.message = Some(Reassembly::new(header.opcode == OpCode::Text, header.rsv1));
            }
            self.frame = Some(PartialFrame {
                fin: header.fin,
                mask: header.mask,
                remaining: header.payload_len,
                offset: 0,
            });
        }
    }

    /// The rules a header breaks given the connection's state.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        // §5.2: RSV2 and RSV3 belong to no extension we implement.
        if header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        if header.rsv1 {
            if self.deflate.is_none() {
                return Err(ProtocolError::ReservedBits);
            }
            if header.opcode.is_control() || header.opcode == OpCode::Continuation {
                return Err(ProtocolError::Rsv1NotOnFirstFrame);
            }
        }
        // §5.1: clients mask, servers do not.
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            return Ok(());
        }
        // §5.4: fragments of one message are not interleaved with another.
        match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        let max_frame = self.limits.max_frame_size;
        if header.payload_len > max_frame as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: header.payload_len,
                max: max_frame,
            });
        }
        // Uncompressed sizes are known from the header: refuse before
        // buffering. Compressed ones are checked as they inflate.
        let so_far = self.message.as_ref().map_or(0, |m| m.buf.len());
        let compressed = header.rsv1 || self.message.as_ref().is_some_and(|m| m.compressed);
        let max = self.limits.max_message_size;
        if !compressed && so_far as u64 + header.payload_len > max as u64 {
            return Err(ProtocolError::MessageTooLarge { max });
        }
        Ok(())
    }

    /// Unmasks and validates what arrived of the [`WholeFrame`] in progress;
    /// once all of it is there, splits it off the buffer as the message.
    fn read_whole(&mut self) -> Result<Option<Message>, ProtocolError> {
        let whole = self.whole.as_mut().expect("a whole frame is in progress");
        let available = self.input.len().min(whole.len);
        if available > whole.done {
            let new = &mut self.input[whole.done..available];
            if let Some(key) = whole.mask {
                apply_mask(new, key, whole.done);
            }
            // §8.1: fail as soon as the text cannot be UTF-8.
            if let Some(utf8) = &mut whole.utf8 {
                utf8.feed(new).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            whole.done = available;
        }
        if whole.done < whole.len {
            return Ok(None);
        }
        let whole = self.whole.take().expect("a whole frame is in progress");
        let payload = self.input.split_to(whole.len).freeze();
        Ok(Some(match whole.utf8 {
            Some(utf8) => {
                utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Utf8Bytes::from_validated(payload))
            }
            None => Message::Binary(payload),
        }))
    }

    /// Consumes buffered payload of the data frame in progress.
    fn read_payload(&mut self) -> Result<Payload, ProtocolError> {
        let Connection {
            frame,
            input,
            message,
            deflate,
            limits,
            ..
        } = self;
        let partial = frame.as_mut().expect("a frame is in progress");
        let reassembly = message.as_mut().expect("a message is in progress");
        if partial.remaining > 0 {
            if input.is_empty() {
                return Ok(Payload::NeedMore);
            }
            let n = partial.remaining.min(input.len() as u64) as usize;
            let chunk = &mut input[..n];
            if let Some(key) = partial.mask {
                apply_mask(chunk, key, partial.offset);
            }
            if reassembly.compressed {
                let deflate = deflate
                    .as_mut()
                    .expect("RSV1 is only accepted with deflate");
                let (max, allowance) = (limits.max_message_size, deflate.inflate_allowance);
                deflate
                    .decompress(chunk, &mut reassembly.buf, max.min(allowance))
                    .map_err(|e| inflate_error(e, max, allowance))?;
            } else {
                reassembly.buf.extend_from_slice(chunk);
            }
            input.advance(n);
            partial.remaining -= n as u64;
            partial.offset += n;
            // §8.1: fail as soon as the text cannot be UTF-8.
            reassembly
                .validate_new()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if partial.remaining > 0 {
                return Ok(Payload::NeedMore);
            }
        }
        let fin = partial.fin;
        *frame = None;
        if !fin {
            return Ok(Payload::FrameDone);
        }
        let mut reassembly = message.take().expect("a message is in progress");
        if reassembly.compressed {
            let deflate = deflate
                .as_mut()
                .expect("RSV1 is only accepted with deflate");
            let (max, allowance) = (limits.max_message_size, deflate.inflate_allowance);
            deflate
                .finish_message(&mut reassembly.buf, max.min(allowance))
                .map_err(|e| inflate_error(e, max, allowance))?;
        }
        let message = reassembly
            .finish()
            .map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Payload::Message(message))
    }

    fn on_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Event, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: answer with the same payload, unless we already
                // sent a Close (§5.5.1: nothing follows a Close).
                if !self.close_sent {
                    self.write_frame(OpCode::Pong, false, &payload);
                }
                Ok(Event::Ping(payload))
            }
            OpCode::Pong => Ok(Event::Pong(payload)),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                self.close_received = true;
                self.input.clear();
                if !self.close_sent {
                    // §5.5.1: answer with a Close, echoing the status code;
                    // the reason too, so that both ends report the same close.
                    let body = frame.as_ref().map(CloseFrame::encode).unwrap_or_default();
                    self.write_frame(OpCode::Close, false, &body);
                    self.close_sent = true;
                }
                self.state = State::Closed;
                Ok(Event::Close(frame))
            }
            _ => unreachable!("only control opcodes reach on_control"),
        }
    }

    /// §7.1.7 "Fail the WebSocket Connection": send a Close with the fault's
    /// code if none was sent yet, and stop reading.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        tracing::debug!(role = ?self.role, %error, code = %error.close_code(), "failing the connection");
        if !self.close_sent {
            let body = CloseFrame::new(error.close_code(), error.to_string()).encode();
            self.write_frame(OpCode::Close, false, &body);
            self.close_sent = true;
        }
        self.failed = true;
        self.state = State::Closed;
        self.input.clear();
        self.whole = None;
        self.frame = None;
        self.message = None;
        error
    }

    /// Queues a data message.
    ///
    /// A large payload that goes out as it is (a server's, uncompressed) is
    /// not copied: the output keeps a reference to it until it is written.
    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        let attach = message.len() >= ATTACH_MIN
            && self.rng.is_none()
            && !self
                .deflate
                .as_ref()
                .is_some_and(|d| d.should_compress(message.len()));
        if !attach {
            return match message {
                Message::Text(text) => self.send_text(text),
                Message::Binary(data) => self.send_binary(data),
            };
        }
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.clone().into_bytes()),
            Message::Binary(data) => (OpCode::Binary, data.clone()),
        };
        self.attach_frame(opcode, false, payload)
    }

    /// Whether [`send_broadcast`](Self::send_broadcast) would compress
    /// `broadcast` for this connection alone (permessage-deflate whose
    /// parameters rule out the shared bytes), rather than send bytes that
    /// are the same for every connection.
    pub fn compresses_alone(&self, broadcast: &Broadcast) -> bool {
        self.deflate.as_deref().is_some_and(|deflate| {
            deflate.should_compress(broadcast.message().len())
                && broadcast.compressed_for(deflate).is_none()
        })
    }

    /// Queues a message sent to many connections: with the bytes the first
    /// connection that could compressed for all (see [`Broadcast`]) where
    /// this one's permessage-deflate parameters allow, as
    /// [`send`](Self::send) otherwise.
    pub fn send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), SendError> {
        let shared = self
            .deflate
            .as_deref()
            .and_then(|deflate| broadcast.compressed_for(deflate));
        let Some(compressed) = shared else {
            return self.send(broadcast.message());
        };
        let opcode = match broadcast.message() {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        };
        if compressed.len() < ATTACH_MIN || self.rng.is_some() {
            if self.close_sent {
                return Err(SendError::Closed);
            }
            self.write_frame(opcode, true, compressed);
            return Ok(());
        }
        self.attach_frame(opcode, true, compressed.clone())
    }

    /// Queues a frame whose payload goes out by reference.
    fn attach_frame(
        &mut self,
        opcode: OpCode,
        rsv1: bool,
        payload: Bytes,
    ) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let mut header = FrameHeader::new(opcode, payload.len(), None);
        header.rsv1 = rsv1;
        put_header(&mut self.output, &header);
        self.attached_len += payload.len();
        self.attached.push_back(Attached {
            at: self.output_written + self.output.len() as u64,
            payload,
        });
        Ok(())
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(OpCode::Text, text.as_bytes())
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(OpCode::Binary, data)
    }

    fn send_data(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if let Some(deflate) = &mut self.deflate
            && deflate.should_compress(payload.len())
        {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let result = deflate.compress(payload, &mut scratch);
            if result.is_ok() {
                self.write_frame(opcode, true, &scratch);
            }
            self.scratch = scratch;
            return result.map_err(|e| SendError::Compression(e.to_string()));
        }
        self.write_frame(opcode, false, payload);
        Ok(())
    }

    /// Queues a ping.
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues a pong (an unsolicited one is a heartbeat, §5.5.3).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong(payload.len()));
        }
        self.write_frame(opcode, false, payload);
        Ok(())
    }

    /// Starts the closing handshake (§7.1.2). `None` sends a Close with no
    /// body, which the peer reports as 1005.
    ///
    /// Any code valid on the wire is accepted here; the stricter browser rule
    /// for applications is the I/O layer's to apply.
    pub fn send_close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let body = match frame {
            Some(frame) => {
                if !frame.code.is_valid_on_wire() {
                    return Err(SendError::InvalidCloseCode(frame.code.0));
                }
                if frame.reason.len() > MAX_REASON_LEN {
                    return Err(SendError::ReasonTooLong(frame.reason.len()));
                }
                frame.encode()
            }
            None => Bytes::new(),
        };
        self.write_frame(OpCode::Close, false, &body);
        self.close_sent = true;
        self.state = if self.close_received {
            State::Closed
        } else {
            State::Closing
        };
        Ok(())
    }

    fn write_frame(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8]) {
        if self.rng.is_none() && payload.len() <= 125 {
            // A server's small frame, the echo of a chat message: a 2-byte
            // header (FIN, RSV1, opcode; the 7-bit length, no mask bit)
            // written directly, one reserve for it and the payload.
            self.output.reserve(2 + payload.len());
            let b0 = 0x80 | (u8::from(rsv1) << 6) | opcode.as_u8();
            self.output.extend_from_slice(&[b0, payload.len() as u8]);
            self.output.extend_from_slice(payload);
            return;
        }
        let mask = self.rng.as_mut().map(|rng| rng.random::<[u8; 4]>());
        let mut header = FrameHeader::new(opcode, payload.len(), mask);
        header.rsv1 = rsv1;
        self.output.reserve(header.len() + payload.len());
        put_header(&mut self.output, &header);
        let start = self.output.len();
        self.output.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.output[start..], key, 0);
        }
    }

    /// The next bytes to write to the socket: a prefix of everything
    /// pending (all of it unless a large payload was queued by reference;
    /// [`pending_output_vectored`](Self::pending_output_vectored) gives all).
    /// Empty when nothing is pending.
    pub fn pending_output(&self) -> &[u8] {
        match self.attached.front() {
            Some(a) if a.at == self.output_written => &a.payload,
            Some(a) => &self.output[..(a.at - self.output_written) as usize],
            None => &self.output,
        }
    }

    /// Fills `dst` with the pending bytes in order, as for a vectored write,
    /// and returns how many slices it used (all of them if more are pending).
    pub fn pending_output_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut from = 0usize; // position in `output`
        let mut push = |slice: &'a [u8]| {
            if !slice.is_empty() && n < dst.len() {
                dst[n] = IoSlice::new(slice);
                n += 1;
            }
        };
        for a in &self.attached {
            let at = (a.at - self.output_written) as usize;
            push(&self.output[from..at]);
            push(&a.payload);
            from = at;
        }
        push(&self.output[from..]);
        n
    }

    /// How many bytes are waiting to be written, in total.
    pub fn pending_output_len(&self) -> usize {
        self.output.len() + self.attached_len
    }

    /// Marks the first `n` pending bytes as written.
    pub fn advance_output(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.attached.front_mut() else {
                self.output_written += n as u64;
                if n == self.output.len() {
                    // All of it, as nearly every write of small echoes: the
                    // buffer starts again at its front, so the next frame
                    // needs no `reserve` to win back the room an `advance`
                    // would have left behind it.
                    self.output.clear();
                } else {
                    self.output.advance(n);
                }
                return;
            };
            if front.at == self.output_written {
                let k = n.min(front.payload.len());
                front.payload.advance(k);
                self.attached_len -= k;
                n -= k;
                if front.payload.is_empty() {
                    self.attached.pop_front();
                }
            } else {
                let k = n.min((front.at - self.output_written) as usize);
                self.output.advance(k);
                self.output_written += k as u64;
                n -= k;
            }
        }
    }

    /// Whether there is anything to write.
    pub fn wants_write(&self) -> bool {
        !self.output.is_empty() || !self.attached.is_empty()
    }

    /// Whether the closing handshake is done or the connection failed: once
    /// the pending output is written, the TCP connection should close
    /// (§7.1.1: the server first; a client waits a while for it).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether a Close frame was sent (so no more data may be).
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the peer's Close frame was received.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// See [`crate::fuzzing::reassembly_capacity`].
    #[cfg(feature = "fuzzing")]
    pub(crate) fn reassembly_capacity(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.buf.capacity())
    }
}

enum Payload {
    NeedMore,
    FrameDone,
    Message(Message),
}

fn put_header(out: &mut BytesMut, header: &FrameHeader) {
    let mut buf = [0u8; crate::frame::MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

/// Past `max` (the message limit) or the budget's `allowance`, whichever
/// was lower.
fn inflate_error(e: DeflateError, max: usize, allowance: usize) -> ProtocolError {
    match e {
        DeflateError::TooLarge if allowance < max => ProtocolError::InflateBudget { allowance },
        DeflateError::TooLarge => ProtocolError::MessageTooLarge { max },
        other => ProtocolError::InflateFailed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close_code::CloseCode;
    use crate::extensions::DeflateConfig;
    use crate::testing::{Pair, drain_events};
    use proptest::prelude::*;

    /// A raw frame as a peer would send it: `b0` is FIN/RSV/opcode.
    fn raw(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut header = FrameHeader::new(OpCode::Binary, payload.len(), mask);
        header.fin = b0 & 0x80 != 0;
        let mut buf = [0u8; crate::frame::MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        buf[0] = b0;
        out.extend_from_slice(&buf[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// A masked frame, as a client sends.
    fn c(b0: u8, payload: &[u8]) -> Vec<u8> {
        raw(b0, payload, Some([0x11, 0x22, 0x33, 0x44]))
    }

    fn server_events(bytes: &[u8]) -> (Connection, Vec<Result<Event, ProtocolError>>) {
        let mut server = Connection::new(Role::Server, Limits::default());
        server.receive_data(bytes);
        let events = drain_events(&mut server);
        (server, events)
    }

    /// The close code the connection queued last.
    fn sent_close_code(conn: &Connection) -> Option<u16> {
        let out = conn.pending_output();
        let mut pos = 0;
        let mut code = None;
        while let Some((h, n)) = FrameHeader::parse(&out[pos..]).unwrap() {
            let mut body = out[pos + n..pos + n + h.payload_len as usize].to_vec();
            if let Some(key) = h.mask {
                apply_mask(&mut body, key, 0);
            }
            if h.opcode == OpCode::Close {
                code = Some(if body.len() >= 2 {
                    u16::from_be_bytes([body[0], body[1]])
                } else {
                    1005
                });
            }
            pos += n + h.payload_len as usize;
        }
        code
    }

    fn fails_with(bytes: &[u8], code: u16) {
        let (server, events) = server_events(bytes);
        let err = events
            .iter()
            .find_map(|e| e.as_ref().err())
            .unwrap_or_else(|| panic!("no error in {events:?}"));
        assert_eq!(err.close_code().0, code, "{err}");
        assert_eq!(sent_close_code(&server), Some(code));
        assert_eq!(server.state(), State::Closed);
    }

    #[test]
    fn echo_both_ways() {
        let mut p = Pair::new();
        p.client.send_text("hello").unwrap();
        p.client.send_binary(&[1, 2, 3]).unwrap();
        assert_eq!(
            p.deliver_to_server(),
            vec![
                Ok(Event::Message(Message::text("hello"))),
                Ok(Event::Message(Message::binary(vec![1, 2, 3])))
            ]
        );
        p.server.send_text("hi").unwrap();
        assert_eq!(
            p.deliver_to_client(),
            vec![Ok(Event::Message(Message::text("hi")))]
        );
    }

    #[test]
    fn clients_mask_and_servers_do_not() {
        let mut p = Pair::new();
        p.client.send_text("x").unwrap();
        assert_eq!(p.client.pending_output()[1] & 0x80, 0x80);
        p.server.send_text("x").unwrap();
        assert_eq!(p.server.pending_output(), &[0x81, 0x01, b'x']);
    }

    #[test]
    fn unmasked_client_frame_fails_1002() {
        fails_with(&raw(0x81, b"hi", None), 1002);
    }

    #[test]
    fn masked_server_frame_fails_1002() {
        let mut client = Connection::new(Role::Client, Limits::default());
        client.receive_data(&c(0x81, b"hi"));
        let err = client.next_event().unwrap().unwrap_err();
        assert_eq!(err, ProtocolError::MaskedFrame);
        assert_eq!(sent_close_code(&client), Some(1002));
    }

    #[test]
    fn reserved_bits_and_opcodes_fail_1002() {
        fails_with(&c(0xc1, b"rsv1"), 1002); // RSV1 without deflate
        fails_with(&c(0xa1, b"rsv2"), 1002);
        fails_with(&c(0x91, b"rsv3"), 1002);
        fails_with(&c(0x83, b""), 1002);
        fails_with(&c(0x8b, b""), 1002);
    }

    #[test]
    fn fragments_with_interleaved_ping() {
        let mut bytes = c(0x01, b"Hel");
        bytes.extend(c(0x89, b"ping"));
        bytes.extend(c(0x00, b"lo "));
        bytes.extend(c(0x80, "wörld".as_bytes()));
        let (server, events) = server_events(&bytes);
        assert_eq!(
            events,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"ping"))),
                Ok(Event::Message(Message::text("Hello wörld"))),
            ]
        );
        // The automatic pong is unmasked and echoes the payload.
        assert_eq!(
            server.pending_output(),
            &[0x8a, 0x04, b'p', b'i', b'n', b'g']
        );
    }

    #[test]
    fn continuation_rules() {
        fails_with(&c(0x80, b"orphan"), 1002);
        let mut bytes = c(0x01, b"a");
        bytes.extend(c(0x81, b"b"));
        fails_with(&bytes, 1002);
        let mut bytes = c(0x02, b"a");
        bytes.extend(c(0x02, b"b"));
        fails_with(&bytes, 1002);
    }

    #[test]
    fn control_frame_rules() {
        fails_with(&c(0x09, b"fragmented ping"), 1002);
        fails_with(&c(0x89, &[0u8; 126]), 1002);
    }

    #[test]
    fn invalid_utf8_fails_1007_at_the_first_bad_fragment() {
        // The second fragment makes the text invalid; the message is not
        // finished, yet the connection fails there.
        let mut bytes = c(0x01, "κόσμε".as_bytes());
        bytes.extend(c(0x00, &[0xed, 0xa0, 0x80]));
        let (server, events) = server_events(&bytes);
        assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)]);
        assert_eq!(sent_close_code(&server), Some(1007));
        fails_with(&c(0x81, &[0xff]), 1007);
    }

    #[test]
    fn invalid_utf8_fails_inside_a_partial_frame() {
        // Only part of one frame has arrived: the bad byte is already there.
        let frame = c(0x81, &[b'a', 0xff, b'b', b'c', b'd']);
        let (server, events) = server_events(&frame[..frame.len() - 2]);
        assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)]);
        assert_eq!(sent_close_code(&server), Some(1007));
    }

    #[test]
    fn limits_fail_1009_before_buffering() {
        let limits = Limits {
            max_frame_size: 10,
            max_message_size: 15,
        };
        let mut server = Connection::new(Role::Server, limits);
        // Only the header of an 11-byte frame: refused at once.
        server.receive_data(&c(0x82, &[0; 11])[..6]);
        assert_eq!(
            server.next_event(),
            Some(Err(ProtocolError::FrameTooLarge { len: 11, max: 10 }))
        );
        assert_eq!(sent_close_code(&server), Some(1009));

        let mut server = Connection::new(Role::Server, limits);
        let mut bytes = c(0x02, &[0; 10]);
        bytes.extend(c(0x80, &[0; 6]));
        server.receive_data(&bytes);
        assert_eq!(
            server.next_event(),
            Some(Err(ProtocolError::MessageTooLarge { max: 15 }))
        );
        assert_eq!(sent_close_code(&server), Some(1009));
    }

    #[test]
    fn closing_handshake_client_first() {
        let mut p = Pair::new();
        p.client
            .send_close(Some(CloseFrame::new(CloseCode(4000), "bye")))
            .unwrap();
        assert_eq!(p.client.state(), State::Closing);
        assert_eq!(
            p.deliver_to_server(),
            vec![Ok(Event::Close(Some(CloseFrame::new(
                CloseCode(4000),
                "bye"
            ))))]
        );
        assert_eq!(p.server.state(), State::Closed);
        assert!(p.server.close_sent());
        assert_eq!(
            p.deliver_to_client(),
            vec![Ok(Event::Close(Some(CloseFrame::new(
                CloseCode(4000),
                "bye"
            ))))]
        );
        assert_eq!(p.client.state(), State::Closed);
        assert_eq!(p.client.send_text("late"), Err(SendError::Closed));
    }

    #[test]
    fn closing_handshake_race() {
        let mut p = Pair::new();
        p.client
            .send_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
            .unwrap();
        p.server
            .send_close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")))
            .unwrap();
        let to_server = p.deliver_to_server();
        let to_client = p.deliver_to_client();
        assert_eq!(to_server.len(), 1);
        assert_eq!(to_client.len(), 1);
        assert_eq!(p.client.state(), State::Closed);
        assert_eq!(p.server.state(), State::Closed);
        // Neither answered the other's Close a second time.
        assert!(!p.client.wants_write() && !p.server.wants_write());
    }

    #[test]
    fn empty_close_is_answered_with_empty_close() {
        let (server, events) = server_events(&c(0x88, b""));
        assert_eq!(events, vec![Ok(Event::Close(None))]);
        assert_eq!(server.pending_output(), &[0x88, 0x00]);
    }

    #[test]
    fn close_body_rules() {
        fails_with(&c(0x88, &[0x03]), 1002);
        fails_with(&c(0x88, &[0x03, 0xed]), 1002); // 1005 on the wire
        fails_with(&c(0x88, &[0x03, 0xe8, 0xff]), 1007);
    }

    #[test]
    fn nothing_is_read_after_a_close() {
        let mut bytes = c(0x88, &[0x03, 0xe8]);
        bytes.extend(c(0x81, b"after"));
        let (_, events) = server_events(&bytes);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn no_pong_after_close_sent() {
        let mut server = Connection::new(Role::Server, Limits::default());
        server.send_close(None).unwrap();
        server.advance_output(server.pending_output().len());
        server.receive_data(&c(0x89, b"p"));
        assert_eq!(
            server.next_event(),
            Some(Ok(Event::Ping(Bytes::from_static(b"p"))))
        );
        assert!(!server.wants_write());
    }

    #[test]
    fn send_rules() {
        let mut client = Connection::new(Role::Client, Limits::default());
        assert_eq!(
            client.send_ping(&[0; 126]),
            Err(SendError::ControlTooLong(126))
        );
        assert_eq!(
            client.send_close(Some(CloseFrame::new(CloseCode(1005), ""))),
            Err(SendError::InvalidCloseCode(1005))
        );
        assert_eq!(
            client.send_close(Some(CloseFrame::new(CloseCode(1000), "x".repeat(124)))),
            Err(SendError::ReasonTooLong(124))
        );
        client.send_close(None).unwrap();
        assert_eq!(client.send_close(None), Err(SendError::Closed));
        assert_eq!(client.send_ping(b""), Err(SendError::Closed));
    }

    #[test]
    fn large_server_payloads_are_queued_without_a_copy() {
        let mut p = Pair::new();
        let big = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        p.server.send_text("small first").unwrap();
        p.server.send(&Message::Binary(big.clone())).unwrap();
        p.server.send_ping(b"after").unwrap();
        // The payload is referenced, not copied into the output buffer.
        assert_eq!(p.server.pending_output_len(), 13 + 4 + 20_000 + 7);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = p.server.pending_output_vectored(&mut slices);
        assert_eq!(n, 3);
        assert_eq!(slices[1].as_ptr(), big.as_ptr());
        let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat.len(), p.server.pending_output_len());
        // Written in odd pieces, the bytes are the same frames.
        let mut written = Vec::new();
        while p.server.wants_write() {
            let chunk = p.server.pending_output();
            let k = chunk.len().min(997);
            written.extend_from_slice(&chunk[..k]);
            p.server.advance_output(k);
        }
        assert_eq!(written, flat);
        assert_eq!(p.server.pending_output_len(), 0);
        p.client.receive_data(&written);
        assert_eq!(
            drain_events(&mut p.client),
            vec![
                Ok(Event::Message(Message::text("small first"))),
                Ok(Event::Message(Message::Binary(big))),
                Ok(Event::Ping(Bytes::from_static(b"after"))),
            ]
        );
        // A client masks, so it always copies.
        p.client.send(&Message::binary(vec![0u8; 20_000])).unwrap();
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(p.client.pending_output_vectored(&mut slices), 1);
    }

    #[test]
    fn a_message_in_progress_and_the_bytes_it_holds() {
        let mut server = Connection::new(Role::Server, Limits::default());
        assert!(!server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 0);
        // A first fragment of 3 bytes, then a Ping between fragments.
        server.receive_data(&c(0x02, b"abc"));
        assert_eq!(server.next_event(), None);
        assert!(server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 3);
        server.receive_data(&c(0x89, b"p"));
        assert_eq!(
            server.next_event(),
            Some(Ok(Event::Ping(Bytes::from_static(b"p"))))
        );
        assert!(server.message_in_progress());
        // Part of the last fragment: 2 of its 4 bytes.
        let last = c(0x80, b"defg");
        server.receive_data(&last[..last.len() - 2]);
        assert_eq!(server.next_event(), None);
        assert_eq!(server.message_bytes_held(), 5);
        server.receive_data(&last[last.len() - 2..]);
        assert_eq!(
            server.next_event(),
            Some(Ok(Event::Message(Message::binary(&b"abcdefg"[..]))))
        );
        assert!(!server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 0);

        // An unfragmented message whose payload is still arriving: only
        // its header counts as started, then what of it was received.
        // (2 bytes, a 16-bit length, the mask.)
        let whole = c(0x82, &[7u8; 300]);
        server.receive_data(&whole[..8]);
        assert_eq!(server.next_event(), None);
        assert!(server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 0);
        server.receive_data(&whole[8..108]);
        assert_eq!(server.next_event(), None);
        assert_eq!(server.message_bytes_held(), 100);
        server.receive_data(&whole[108..]);
        assert!(matches!(server.next_event(), Some(Ok(Event::Message(_)))));
        assert!(!server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 0);
    }

    #[test]
    fn a_compressed_fragment_holds_its_inflated_size() {
        let mut p = Pair::with_deflate(&DeflateConfig::default());
        // 64 KiB of zeros compresses to a few hundred bytes.
        p.client.send_binary(&vec![0u8; 64 << 10]).unwrap();
        let wire = p.client.pending_output().to_vec();
        assert!(wire.len() < 1024, "{} bytes on the wire", wire.len());
        // Sent again as a first fragment: FIN cleared, no continuation yet.
        let mut fragment = wire;
        fragment[0] &= 0x7f;
        p.server.receive_data(&fragment);
        assert_eq!(p.server.next_event(), None);
        assert!(p.server.message_in_progress());
        assert!(
            p.server.message_bytes_held() >= 60 << 10,
            "{} held",
            p.server.message_bytes_held()
        );
    }

    #[test]
    fn a_message_that_arrives_whole_inflates_no_further_than_the_allowance() {
        let mut p = Pair::with_deflate(&DeflateConfig::default());
        p.client.send_binary(&vec![0u8; 64 << 10]).unwrap();
        let wire = p.client.pending_output().to_vec();
        p.client.advance_output(wire.len());
        // Within the allowance: whole, as ever.
        p.server.set_inflate_allowance(64 << 10);
        p.server.receive_data(&wire);
        assert!(
            matches!(p.server.next_event(), Some(Ok(Event::Message(m))) if m.len() == 64 << 10)
        );
        // Past it, although within the message limit: the server is busy.
        p.client.send_binary(&vec![0u8; 64 << 10]).unwrap();
        let wire = p.client.pending_output().to_vec();
        p.client.advance_output(wire.len());
        p.server.set_inflate_allowance(1 << 10);
        p.server.receive_data(&wire);
        let err = p.server.next_event().unwrap().unwrap_err();
        assert_eq!(err, ProtocolError::InflateBudget { allowance: 1 << 10 });
        assert_eq!(err.close_code(), CloseCode::TRY_AGAIN_LATER);
    }

    #[test]
    fn a_failed_connection_holds_no_message() {
        let mut server = Connection::new(Role::Server, Limits::default());
        server.receive_data(&c(0x01, b"abc"));
        assert_eq!(server.next_event(), None);
        assert_eq!(server.message_bytes_held(), 3);
        // A new message before the first is finished: §5.4, 1002.
        server.receive_data(&c(0x81, b"x"));
        assert!(matches!(server.next_event(), Some(Err(_))));
        assert!(!server.message_in_progress());
        assert_eq!(server.message_bytes_held(), 0);
    }

    #[test]
    fn bytes_needed_tracks_a_large_frame() {
        let mut server = Connection::new(Role::Server, Limits::default());
        let frame = c(0x82, &[5; 10_000]);
        server.receive_data(&frame[..100]);
        assert_eq!(server.next_event(), None);
        // Header (8 bytes with the mask) consumed; 92 payload bytes in.
        assert_eq!(server.bytes_needed(), 10_000 - 92);
        server.receive_data(&frame[100..]);
        assert!(matches!(server.next_event(), Some(Ok(Event::Message(_)))));
        assert_eq!(server.bytes_needed(), 0);
    }

    #[test]
    fn large_message_streams_through_small_reads() {
        let mut p = Pair::new();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        p.client.send_binary(&big).unwrap();
        p.drive_in_chunks(&[1000]);
        assert_eq!(
            p.server_events(),
            vec![Ok(Event::Message(Message::binary(big)))]
        );
    }

    #[test]
    fn deflate_context_takeover_shortens_a_repeated_message() {
        let text = r#"{"symbol":"DPLX","bid":101.25,"ask":101.50}"#.repeat(3);
        let expected = vec![Ok(Event::Message(Message::text(text.clone())))];
        for no_context_takeover in [false, true] {
            let config = DeflateConfig {
                server_no_context_takeover: no_context_takeover,
                client_no_context_takeover: no_context_takeover,
                ..DeflateConfig::default()
            };
            let mut p = Pair::with_deflate(&config);
            for role in [Role::Client, Role::Server] {
                let mut sizes = Vec::new();
                for _ in 0..2 {
                    p.end(role).send_text(&text).unwrap();
                    sizes.push(p.end(role).pending_output_len());
                    p.deliver(role, usize::MAX);
                    assert_eq!(p.events(role.peer()), expected);
                }
                assert!(sizes[0] < text.len(), "{role:?} compressed: {sizes:?}");
                if no_context_takeover {
                    assert_eq!(sizes[0], sizes[1], "{role:?} starts afresh");
                } else {
                    assert!(sizes[1] < sizes[0], "{role:?} refers back: {sizes:?}");
                }
            }
        }
    }

    #[test]
    fn only_context_takeover_makes_a_broadcast_compressed_alone() {
        let text = r#"{"symbol":"DPLX","bid":101.25,"ask":101.50}"#.repeat(3);
        let broadcast = Broadcast::new(Message::text(text));
        assert!(!Pair::new().server.compresses_alone(&broadcast));
        for (no_context_takeover, alone) in [(false, true), (true, false)] {
            let config = DeflateConfig {
                server_no_context_takeover: no_context_takeover,
                ..DeflateConfig::default()
            };
            let p = Pair::with_deflate(&config);
            assert_eq!(p.server.compresses_alone(&broadcast), alone);
        }
        // Below the compression threshold nothing is compressed at all.
        let config = DeflateConfig {
            threshold: 64,
            ..DeflateConfig::default()
        };
        let small = Broadcast::new(Message::text("hi"));
        assert!(!Pair::with_deflate(&config).server.compresses_alone(&small));
    }

    #[test]
    fn deflate_pings_between_compressed_messages() {
        let mut p = Pair::with_deflate(&DeflateConfig::default());
        p.client.send_text("one one one").unwrap();
        p.client.send_ping(b"p").unwrap();
        p.client.send_binary(&[9; 1000]).unwrap();
        p.drive_in_chunks(&[3]);
        assert_eq!(
            p.server_events(),
            vec![
                Ok(Event::Message(Message::text("one one one"))),
                Ok(Event::Ping(Bytes::from_static(b"p"))),
                Ok(Event::Message(Message::binary(vec![9; 1000]))),
            ]
        );
        assert_eq!(
            p.client_events(),
            vec![Ok(Event::Pong(Bytes::from_static(b"p")))]
        );
    }

    proptest! {
        /// Any split of the byte stream gives the same events.
        #[test]
        fn any_split_gives_the_same_events(splits in proptest::collection::vec(0usize..400, 0..8)) {
            let mut bytes = c(0x01, "κόσμε ".as_bytes());
            bytes.extend(c(0x89, b"ping"));
            bytes.extend(c(0x80, &[b'x'; 150]));
            bytes.extend(c(0x82, &[7; 300]));
            bytes.extend(c(0x88, &[0x03, 0xe8]));
            let (_, expected) = server_events(&bytes);
            let mut server = Connection::new(Role::Server, Limits::default());
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s.min(bytes.len())).collect();
            cuts.sort();
            let mut events = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                server.receive_data(&bytes[last..cut]);
                events.extend(drain_events(&mut server));
                last = cut;
            }
            prop_assert_eq!(events, expected);
        }

        /// Arbitrary bytes never panic, and a failure always queues a Close.
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for role in [Role::Client, Role::Server] {
                let mut conn = Connection::new(role, Limits::default());
                conn.receive_data(&bytes);
                let events = drain_events(&mut conn);
                if events.iter().any(|e| e.is_err()) {
                    prop_assert!(conn.close_sent());
                }
            }
        }

        /// Messages of any size round-trip between a client and a server,
        /// both ways.
        #[test]
        fn messages_round_trip(data in proptest::collection::vec(any::<u8>(), 0..70_000), text in "\\PC{0,50}") {
            let mut p = Pair::new();
            p.client.send_binary(&data).unwrap();
            p.client.send_text(&text).unwrap();
            let events = p.deliver_to_server();
            prop_assert_eq!(&events, &vec![
                Ok(Event::Message(Message::binary(data.clone()))),
                Ok(Event::Message(Message::text(text.clone()))),
            ]);
            for event in events {
                if let Ok(Event::Message(m)) = event {
                    p.server.send(&m).unwrap();
                }
            }
            prop_assert_eq!(p.deliver_to_client(), vec![
                Ok(Event::Message(Message::binary(data))),
                Ok(Event::Message(Message::text(text))),
            ]);
        }
    }
}
