//! The `WebSocket` type: the browser's WebSocket API over any async stream.
//!
//! It owns the socket and time; every protocol rule is the business of
//! [`duplex_proto::Connection`], which it drives: bytes read go into the
//! connection, events come out; messages go in, bytes to write come out.

use std::cell::Cell;
use std::fmt;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use duplex_proto::{
    Broadcast, CloseCode, CloseFrame, Connection, MAX_REASON_LEN, Message, Role, State,
};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::Error;
use crate::budget::{BudgetShare, MessageBudget};
#[cfg(feature = "hyper")]
use crate::server::shutdown::Fired;

/// The most a single read reserves for the rest of a large message whose
/// header announced its size, beyond the configured read buffer size. Large
/// enough that a 1 MiB message takes a few reads, not sixty-four; small enough
/// that a header that lies about a 16 MiB frame does not reserve 16 MiB.
const MAX_READ_AHEAD: usize = 1 << 20;

/// The most slices one vectored write takes: a few frames whose large
/// payloads were queued by reference, each between two runs of headers.
const MAX_WRITE_SLICES: usize = 16;

/// What a connection's first read goes through before it has a receive
/// buffer, so that an idle connection holds none.
const FIRST_READ: usize = 512;

/// What a compressed message may inflate to beyond what the shared message
/// budget has left: ordinary messages (a few KiB of JSON) still go through
/// while others' large messages hold the budget, and a connection's own
/// buffers are of this order anyway.
const UNCHARGED_INFLATE: usize = 16 << 10;

thread_local! {
    /// The receive buffer that the last read on this thread made ready and
    /// found nothing for, kept for the next read of any connection on the
    /// thread while it is still in cache (see `WebSocket::poll_read_fresh`).
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// The error of a poll that may still be pending (pending is fine: the
/// write finishes later, before the next read).
fn ready_now(poll: Poll<Result<(), Error>>) -> Result<(), Error> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Ok(()),
    }
}

/// What [`WebSocket::try_send_broadcast`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum TrySend {
    /// Written whole.
    Sent,
    /// Queued, and not all written: the connection's task must be woken to
    /// write the rest.
    Partly,
    /// Nothing done: the connection is busy (something is queued already),
    /// closing, or compresses for itself. Send it the usual way.
    Busy,
}

/// The four states of the browser's `readyState`, with the same numbers.
/// Not `#[non_exhaustive]`: the WebSocket standard fixes these four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// 0: the opening handshake is in progress.
    Connecting = 0,
    /// 1: messages can be sent and received.
    Open = 1,
    /// 2: the closing handshake is in progress.
    Closing = 2,
    /// 3: the connection is closed.
    Closed = 3,
}

/// What happened on a connection: the browser's four events. Not
/// `#[non_exhaustive]`: the WebSocket API has these four, and applications
/// match on them as a page sets its four handlers.
#[derive(Debug)]
pub enum Event {
    /// `onopen`: the first event of every connection.
    Open,
    /// `onmessage`: a whole text or binary message.
    Message(Message),
    /// `onerror`: the connection failed; a `Close` event follows.
    Error(Error),
    /// `onclose`: the last event. `code` is the peer's close code, 1005 if
    /// its Close frame had none, 1006 if the connection ended without the
    /// closing handshake (as the browser reports them).
    Close {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: String,
        /// Whether the closing handshake completed.
        was_clean: bool,
    },
}

/// Where the socket is, beyond the protocol's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Running,
    /// The protocol is closed; write what is pending and end the TCP
    /// connection (a client waits for the server to end it first).
    ShuttingDown,
    /// The connection is over; the `Close` event is still to be delivered.
    Ended,
    /// The `Close` event was delivered.
    Done,
}

/// Metadata fixed by the opening handshake.
#[derive(Debug, Clone, Default)]
pub(crate) struct Negotiated {
    pub(crate) url: String,
    pub(crate) protocol: Option<String>,
    pub(crate) extensions: Option<String>,
}

/// A WebSocket connection, either end, over a stream `S` (a TCP stream, a
/// TLS stream, anything `AsyncRead + AsyncWrite`).
///
/// Read events with [`next`](Self::next) (or as a [`Stream`]), or just
/// messages with [`recv`](Self::recv); send with [`send`](Self::send) (or as
/// a [`Sink`]); end with [`close`](Self::close).
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    negotiated: Negotiated,
    read_buffer_size: usize,
    write_high_water: usize,
    close_timeout: Duration,
    phase: Phase,
    open_delivered: bool,
    /// The protocol parsed everything received so far (its last
    /// `next_event` was `None`) and no byte was read since: asking it again
    /// would cost a call per wake-up and find nothing.
    parsed_all: bool,
    /// The `Close` event, decided when the protocol closes.
    close: Option<(CloseCode, String, bool)>,
    /// Runs while we wait for the peer's Close or for the TCP connection to end.
    close_timer: Option<Pin<Box<Sleep>>>,
    /// Keepalive pings, if on (boxed: most of it is the timer).
    keepalive: Option<Box<Keepalive>>,
    write_timeout: Option<Duration>,
    /// The server's shutdown, for a WebSocket of the server core: when it
    /// fires, the connection starts its closing handshake with 1001.
    #[cfg(feature = "hyper")]
    shutdown: Option<Fired>,
    /// The write timer: made the first time a write waits on a socket
    /// that takes nothing, and kept (re-armed, not made again: a large
    /// echo stalls now and then, and an allocation each time showed in
    /// tests/alloc.rs).
    write_timer: Option<Pin<Box<Sleep>>>,
    /// While a write waits: the value of `written` when the timer last
    /// started. `None` when no write waits.
    write_mark: Option<u64>,
    /// Bytes the socket has taken, for the write timer to see progress
    /// made by either half of a split connection.
    written: u64,
    eof: bool,
    /// How long a message may take once begun.
    fragment_timeout: Option<Duration>,
    /// When the message being received was first seen in progress.
    message_started: Option<tokio::time::Instant>,
    /// Runs while the socket is idle in the middle of a message.
    fragment_timer: Option<Pin<Box<Sleep>>>,
    /// This connection's share of the message budget, if it has one.
    budget: Option<BudgetShare>,
    /// The last read filled the receive buffer: it is still in cache, so
    /// the next read goes there rather than into the thread's spare.
    input_warm: bool,
    /// The fragment and write timers exist (see `make_timers`).
    timers_made: bool,
}

/// The keepalive state: when the next Ping is due, or which Pong is awaited
/// and until when.
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    /// Started on the first poll, in the runtime's context.
    timer: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last polled with. Until the deadline moves or
    /// the task changes, checking `is_elapsed` is enough: polling the
    /// `Sleep` on every message cost ~90 instructions per 20-byte echo.
    registered: Option<std::task::Waker>,
    /// The payload of the Ping in flight, if any.
    awaiting: Option<[u8; 4]>,
    /// Numbers the Pings, so that a stale Pong is not taken for the latest.
    sent: u32,
}

/// What the keepalive timer asks for.
enum KeepaliveDue {
    Nothing,
    /// Send this Ping payload now.
    Ping([u8; 4]),
    /// The awaited Pong did not come in time.
    TimedOut(Duration),
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            timer: None,
            registered: None,
            awaiting: None,
            sent: 0,
        }
    }

    fn poll_due(&mut self, cx: &mut Context<'_>) -> KeepaliveDue {
        let interval = self.interval;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if let Some(waker) = &self.registered
            && waker.will_wake(cx.waker())
            && !timer.is_elapsed()
        {
            return KeepaliveDue::Nothing;
        }
        if timer.as_mut().poll(cx).is_pending() {
            self.registered = Some(cx.waker().clone());
            return KeepaliveDue::Nothing;
        }
        if self.awaiting.is_some() {
            return KeepaliveDue::TimedOut(self.timeout);
        }
        self.sent = self.sent.wrapping_add(1);
        let payload = self.sent.to_be_bytes();
        self.awaiting = Some(payload);
        let deadline = tokio::time::Instant::now() + self.timeout;
        timer.as_mut().reset(deadline);
        // Registers the new deadline with the timer.
        let _ = timer.as_mut().poll(cx);
        self.registered = Some(cx.waker().clone());
        KeepaliveDue::Ping(payload)
    }

    /// A Pong came: if it answers the Ping in flight, the next is due one
    /// interval from now.
    fn on_pong(&mut self, payload: &[u8]) {
        if self.awaiting.is_some_and(|p| p[..] == *payload) {
            self.awaiting = None;
            if let Some(timer) = &mut self.timer {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.interval);
                // Polled, so registered, again by the next `poll_due`.
                self.registered = None;
            }
        }
    }
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("role", &self.conn.role())
            .field("url", &self.negotiated.url)
            .field("state", &self.conn.state())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream whose opening handshake is done. `leftover` holds any
    /// bytes read past the handshake: they are the first frames.
    pub(crate) fn from_parts(
        stream: S,
        conn: Connection,
        config: &crate::Config,
        negotiated: Negotiated,
        leftover: &[u8],
    ) -> Self {
        let mut conn = conn;
        conn.receive_data(leftover);
        WebSocket {
            stream,
            conn,
            negotiated,
            read_buffer_size: config.read_buffer_size.max(256),
            write_high_water: config.write_buffer_high_water,
            close_timeout: config.close_timeout,
            phase: Phase::Running,
            open_delivered: false,
            parsed_all: false,
            close: None,
            close_timer: None,
            keepalive: config
                .ping_interval
                .map(|interval| Box::new(Keepalive::new(interval, config.ping_timeout))),
            write_timeout: config.write_timeout,
            #[cfg(feature = "hyper")]
            shutdown: None,
            write_timer: None,
            write_mark: None,
            written: 0,
            eof: false,
            fragment_timeout: config.fragment_timeout,
            message_started: None,
            fragment_timer: None,
            budget: config.message_budget.clone().map(BudgetShare::new),
            input_warm: false,
            timers_made: false,
        }
    }

    /// Wraps a stream on which the handshake was done elsewhere (e.g. by
    /// hyper's upgrade), with no extensions negotiated.
    pub fn from_raw(stream: S, role: Role, config: &crate::Config) -> Self {
        let conn = Connection::new(role, config.limits());
        Self::from_parts(stream, conn, config, Negotiated::default(), &[])
    }

    /// Starts the closing handshake with 1001 ("going away") once
    /// `shutdown` fires, as Python websockets' server does on close: the
    /// application sees the Close event from `next` as for any other close.
    #[cfg(feature = "hyper")]
    pub(crate) fn close_on(&mut self, shutdown: Fired) {
        self.shutdown = Some(shutdown);
    }

    /// Counts this connection's partly received messages against
    /// `budget`, unless its config named one already.
    #[cfg(feature = "hyper")]
    pub(crate) fn share_budget(&mut self, budget: &MessageBudget) {
        if self.budget.is_none() {
            self.budget = Some(BudgetShare::new(budget.clone()));
        }
    }

    /// `readyState`.
    pub fn ready_state(&self) -> ReadyState {
        match (self.phase, self.conn.state()) {
            (Phase::Done | Phase::Ended, _) => ReadyState::Closed,
            (_, State::Open) => ReadyState::Open,
            _ => ReadyState::Closing,
        }
    }

    /// `bufferedAmount`: bytes queued by `send` and not yet written to the
    /// socket (frame headers included).
    pub fn buffered_amount(&self) -> usize {
        self.conn.pending_output_len()
    }

    /// `protocol`: the subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.negotiated.protocol.as_deref()
    }

    /// `extensions`: the negotiated `Sec-WebSocket-Extensions` value, if any.
    pub fn extensions(&self) -> Option<&str> {
        self.negotiated.extensions.as_deref()
    }

    /// `url`: the URL a client connected to, or the request target a server
    /// accepted.
    pub fn url(&self) -> &str {
        &self.negotiated.url
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.conn.role()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// `send(data)`: queues a text or binary message and writes it out.
    ///
    /// Waits while more than the write buffer's high-water mark is queued.
    /// To batch many small messages into one write, use [`feed`](Self::feed).
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without writing it yet, so that several go out in
    /// one write: it is written by the next [`flush`](Self::flush) or
    /// [`send`](Self::send), or by [`next`](Self::next) once no received
    /// event is left to return without reading (so an echo loop that feeds
    /// each message it receives writes all the replies to one read at once).
    ///
    /// Waits, writing, while more than the write buffer's high-water mark is
    /// queued.
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        std::future::poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.conn.send(&message)?;
        Ok(())
    }

    /// Sends a message that many connections send, compressing it at most
    /// once for all of them (see [`Broadcast`]): the way to fan one message
    /// out to many subscribers with permessage-deflate.
    pub async fn send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        self.feed_broadcast(broadcast).await?;
        self.flush().await
    }

    /// [`feed`](Self::feed) for a [`Broadcast`].
    pub async fn feed_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.conn.send_broadcast(broadcast)?;
        Ok(())
    }

    /// The synchronous half of [`feed_broadcast`](Self::feed_broadcast),
    /// for code that polls (after [`Sink::poll_ready`] was ready): queues
    /// `broadcast` without writing it.
    pub fn start_send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Err(Error::Closed);
        }
        self.conn.send_broadcast(broadcast)?;
        Ok(())
    }

    /// Sends `broadcast` from outside the connection's own task, if the
    /// connection is idle: open, with nothing queued, and sending bytes
    /// that every connection shares (no compression of its own). Writes
    /// what the socket takes at once and never waits.
    ///
    /// This is how a publisher fans a message out to thousands of
    /// subscribers in one pass, as uWebSockets' publish does, instead of
    /// waking each subscriber's task to write one frame: an idle
    /// subscriber costs its write and little else. What the socket did not
    /// take stays queued ([`TrySend::Partly`]): the connection's own task
    /// must then be woken to finish the write with [`flush`](Self::flush).
    /// (Over a stream that does not buffer, plain TCP, [`next`](Self::next)
    /// finishes it too, as it writes what is queued before reading; a TLS
    /// stream may hold accepted bytes until it is flushed.)
    pub fn try_send_broadcast(&mut self, broadcast: &Broadcast) -> TrySend {
        if self.phase != Phase::Running
            || self.conn.close_sent()
            || self.conn.wants_write()
            || self.conn.compresses_alone(broadcast)
            || self.conn.send_broadcast(broadcast).is_err()
        {
            return TrySend::Busy;
        }
        // Not the caller's task: nobody is to be woken from here (the
        // caller wakes the connection's task if bytes are left), and the
        // caller's cooperative budget must not make the write look full.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut write = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(
            |cx| self.poll_write_pending(cx)
        )));
        match write.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => TrySend::Sent,
            // An error stays for the connection's task to meet at its next
            // write or read, which ends the connection.
            Poll::Ready(Err(_)) | Poll::Pending => TrySend::Partly,
        }
    }

    /// Writes everything queued and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// Sends a ping with `payload` (at most 125 bytes).
    pub async fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.conn.send_ping(&payload.into())?;
        std::future::poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// `close(code, reason)`: starts the closing handshake. The `Close` event
    /// arrives from [`next`](Self::next) once the peer answers (or after the
    /// close timeout).
    ///
    /// As in the browser, an application may only use 1000 or 3000–4999, and
    /// a reason of at most 123 bytes. Closing twice is not an error.
    pub async fn close(&mut self, code: impl Into<CloseCode>, reason: &str) -> Result<(), Error> {
        let code = code.into();
        if !code.is_allowed_for_application() {
            return Err(Error::InvalidCloseCode(code));
        }
        self.close_with(code, reason).await
    }

    /// Starts the closing handshake with any code valid on the wire, e.g.
    /// 1001 when a server shuts down or 1008 for a policy violation.
    pub async fn close_with(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::CloseReasonTooLong(reason.len()));
        }
        if self.conn.close_sent() {
            return Ok(());
        }
        self.conn
            .send_close(Some(CloseFrame::new(code, reason.to_owned())))?;
        self.start_close_timer();
        std::future::poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// The next event; `None` after the `Close` event.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next message, like Python websockets' `recv`: `Ok(None)` once the
    /// connection closed normally (1000, 1001 or 1005), an error if it
    /// failed or closed with another code.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match self.next().await {
                Some(Event::Open) => {}
                Some(Event::Message(m)) => return Ok(Some(m)),
                Some(Event::Error(e)) => {
                    // The Close event follows; consume it so the socket ends.
                    while self.next().await.is_some() {}
                    return Err(e);
                }
                Some(Event::Close {
                    code: CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS,
                    ..
                }) => {
                    return Ok(None);
                }
                Some(Event::Close { .. }) | None => return Err(Error::Closed),
            }
        }
    }

    fn start_close_timer(&mut self) {
        if self.close_timer.is_none() {
            self.close_timer = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
        }
    }

    /// Room to queue a message: waits, writing, while the pending output
    /// is over the high-water mark.
    #[inline]
    fn poll_ready_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.conn.close_sent() || self.phase != Phase::Running {
            return Poll::Ready(Err(Error::Closed));
        }
        let high_water = self.write_high_water;
        if self.conn.pending_output_len() < high_water {
            // The path of nearly every message: kept small enough to inline.
            return Poll::Ready(Ok(()));
        }
        self.poll_write_until(cx, |conn| conn.pending_output_len() < high_water)
    }

    /// Everything queued written and flushed, for the application.
    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_until(cx, |conn| !conn.wants_write()))?;
        Pin::new(&mut self.stream)
            .poll_flush(cx)
            .map_err(Error::from)
    }

    /// Writes until `done`, on behalf of the application, bounded by the
    /// write timeout: the wait fails when the socket takes no byte for that
    /// long. (The reading side needs no such bound: it never waits on a
    /// write, and keepalive covers a silent peer.)
    fn poll_write_until(
        &mut self,
        cx: &mut Context<'_>,
        done: impl Fn(&Connection) -> bool,
    ) -> Poll<Result<(), Error>> {
        while !done(&self.conn) {
            match self.poll_write_some(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.write_mark = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return self.poll_write_stalled(cx),
            }
        }
        self.write_mark = None;
        Poll::Ready(Ok(()))
    }

    /// The socket is full: start the write timer, or restart it if bytes
    /// went out since it started, and fail the connection when it runs out.
    fn poll_write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        let written = self.written;
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.write_mark != Some(written) {
            // Started, or bytes went out since: the wait starts again.
            self.write_mark = Some(written);
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        self.write_mark = None;
        tracing::info!(role = ?self.conn.role(), ?timeout,
            "failing the connection: the peer stopped reading");
        // No Close frame: the socket would not take it.
        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
        self.phase = Phase::Ended;
        Poll::Ready(Err(Error::WriteTimeout(timeout)))
    }

    /// Writes once from the pending output: one vectored write when large
    /// payloads were queued by reference between frame headers.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Only with a payload queued by reference is the output in more
        // than one piece: small echoes skip gathering slices.
        let whole = self.conn.pending_output().len() == self.conn.pending_output_len();
        let n = if whole || !self.stream.is_write_vectored() {
            ready!(Pin::new(&mut self.stream).poll_write(cx, self.conn.pending_output()))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let count = self.conn.pending_output_vectored(&mut slices);
            ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?
        };
        if n == 0 {
            return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
        }
        self.conn.advance_output(n);
        self.written = self.written.wrapping_add(n as u64);
        Poll::Ready(Ok(()))
    }

    /// Writes all pending output and flushes the stream.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.conn.wants_write() {
            ready!(self.poll_write_some(cx))?;
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// The heart of the reading side.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if !self.open_delivered {
            self.open_delivered = true;
            return Poll::Ready(Some(Event::Open));
        }
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::ShuttingDown => return self.poll_shutdown(cx),
                Phase::Ended => {
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(self.close_event()));
                }
                Phase::Running => {}
            }
            if self.parsed_all {
                // Nothing new to parse: straight to writing and reading.
            } else if let Some(event) = self.conn.next_event() {
                match event {
                    Ok(duplex_proto::Event::Message(m)) => {
                        if self.message_started.is_some() {
                            self.message_done();
                        }
                        return Poll::Ready(Some(Event::Message(m)));
                    }
                    Ok(duplex_proto::Event::Ping(_)) => continue,
                    Ok(duplex_proto::Event::Pong(payload)) => {
                        if let Some(keepalive) = &mut self.keepalive {
                            keepalive.on_pong(&payload);
                        }
                        continue;
                    }
                    Ok(duplex_proto::Event::Close(frame)) => {
                        let (code, reason) = match frame {
                            Some(f) => (f.code, f.reason),
                            None => (CloseCode::NO_STATUS, String::new()),
                        };
                        self.close = Some((code, reason, true));
                        self.phase = Phase::ShuttingDown;
                        continue;
                    }
                    Err(e) => {
                        tracing::info!(role = ?self.conn.role(), error = %e, code = %e.close_code(),
                            "failing the connection: the peer broke the protocol");
                        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                        self.phase = Phase::ShuttingDown;
                        return Poll::Ready(Some(Event::Error(Error::Protocol(e))));
                    }
                }
            } else {
                self.parsed_all = true;
            }
            // Nothing left to parse: before waiting for the socket, write
            // what is queued (pongs and Close answers from the protocol,
            // messages fed by the application) in one go. A full socket
            // must not stop reading.
            if self.conn.wants_write()
                && let Poll::Ready(Err(e)) = self.poll_write_pending(cx)
            {
                return Poll::Ready(Some(self.abort(e)));
            }
            if let Some(timer) = &mut self.close_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                tracing::debug!("closing handshake timed out");
                self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                self.phase = Phase::Ended;
                continue;
            }
            // A message in progress: is it on time, and does it fit the
            // budget? Checked before each read, so a message grows by at
            // most one read past either.
            if (self.message_started.is_some() || self.conn.message_in_progress())
                && let Some(event) = self.check_partial_message()
            {
                return Poll::Ready(Some(event));
            }
            // Back-pressure on the reading side: what the protocol answers by
            // itself (Pongs, the Close) and what the application echoes
            // queue up for a peer that sends but does not read. Past the
            // write buffer, read nothing more from it until the socket
            // takes some (its writability wakes this task): a flood then
            // costs the write buffer, not memory without bound.
            // The write timeout bounds that wait as it bounds a send's.
            let over_high_water = self.conn.pending_output_len() >= self.write_high_water;
            let read = match if over_high_water {
                match self.poll_write_stalled(cx) {
                    // The connection is over; the Close event follows.
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Event::Error(e))),
                    _ => Poll::Pending,
                }
            } else {
                self.poll_read(cx)
            } {
                Poll::Ready(read) => read,
                // The socket is idle: the time to see to keepalive. (Not
                // before each read: a connection with bytes waiting is alive,
                // and the check would cost every message.)
                Poll::Pending => {
                    if self.poll_server_shutdown(cx) {
                        // The Close is queued: write it, and read on until
                        // the peer answers or the close timer runs out.
                        continue;
                    }
                    if self.poll_fragment_timer(cx) {
                        // Out of time: the check above fails it.
                        continue;
                    }
                    return match self.poll_keepalive(cx) {
                        Some(event) => Poll::Ready(Some(event)),
                        None => Poll::Pending,
                    };
                }
            };
            match read {
                Ok(0) => {
                    // The TCP connection ended without a Close frame.
                    self.eof = true;
                    self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(self.close_event()));
                }
                Ok(_) => {
                    self.parsed_all = false;
                    self.set_inflate_allowance();
                }
                Err(e) => return Poll::Ready(Some(self.abort(e))),
            }
        }
    }

    /// Before parsing what a read brought: a compressed message may inflate
    /// only as far as the budget has left (plus a small allowance every
    /// connection has, so that ordinary messages go through a budget held
    /// by others' large ones), even when it arrived whole in this read and
    /// so is never seen partly received.
    fn set_inflate_allowance(&mut self) {
        if let Some(share) = &self.budget {
            let budget = share.budget();
            let left = budget.limit().saturating_sub(budget.used());
            self.conn
                .set_inflate_allowance(share.held() + left + UNCHARGED_INFLATE);
        }
    }

    /// The message in progress is whole (or gone): its clock stops and its
    /// share of the budget goes back.
    fn message_done(&mut self) {
        // The timer stays, to be reset for the next message: dropping it
        // here allocated one per large message (tests/alloc.rs). It is only
        // polled while a message is in progress; if it fires meanwhile, the
        // task wakes once for nothing.
        self.message_started = None;
        if let Some(share) = &mut self.budget {
            share.resize(0);
        }
    }

    /// Before a read in the middle of a message: fails the connection if
    /// the message is late (1008) or needs more of the budget than is left
    /// (1013).
    fn check_partial_message(&mut self) -> Option<Event> {
        if !self.conn.message_in_progress() {
            self.message_done();
            return None;
        }
        let now = tokio::time::Instant::now();
        let started = *self.message_started.get_or_insert(now);
        if let Some(timeout) = self.fragment_timeout
            && now.duration_since(started) >= timeout
        {
            return Some(self.fail_message(
                CloseCode::POLICY_VIOLATION,
                "message not finished in time",
                Error::MessageTimeout(timeout),
            ));
        }
        let held = self.conn.message_bytes_held();
        if let Some(share) = &mut self.budget
            && !share.resize(held)
        {
            let limit = share.budget().limit();
            return Some(self.fail_message(
                CloseCode::TRY_AGAIN_LATER,
                "server busy: message budget exhausted",
                Error::MessageBudget { limit, held },
            ));
        }
        None
    }

    /// Fails the connection over the message in progress: a Close with
    /// `code` goes out, the TCP connection ends, and the application sees
    /// `error` and then a Close event reported as 1006, as for any failure.
    fn fail_message(&mut self, code: CloseCode, reason: &str, error: Error) -> Event {
        tracing::info!(role = ?self.conn.role(), %error, %code, "failing the connection");
        // Fails only if a Close was sent already: then it stands.
        let _ = self.conn.send_close(Some(CloseFrame::new(code, reason)));
        self.message_started = None;
        self.fragment_timer = None;
        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
        self.phase = Phase::ShuttingDown;
        Event::Error(error)
    }

    /// With the socket idle in the middle of a message, whether the
    /// fragment timeout has run out (the timer wakes the task when it does).
    fn poll_fragment_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(started), Some(timeout)) = (self.message_started, self.fragment_timeout) else {
            return false;
        };
        let deadline = started + timeout;
        let timer = self
            .fragment_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether the server's shutdown just fired and a Close with 1001 was
    /// queued. Looked at only when the socket is idle, like keepalive: a
    /// connection that still has messages to read finishes them first.
    #[cfg(not(feature = "hyper"))]
    fn poll_server_shutdown(&mut self, _cx: &mut Context<'_>) -> bool {
        false
    }

    #[cfg(feature = "hyper")]
    fn poll_server_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(shutdown) = &mut self.shutdown else {
            return false;
        };
        if Pin::new(shutdown).poll(cx).is_pending() {
            return false;
        }
        self.shutdown = None;
        if self.conn.close_sent() {
            return false;
        }
        tracing::debug!(role = ?self.conn.role(), "server shutting down: closing with 1001");
        // Cannot fail: no Close was sent yet, and the reason is short.
        let _ = self.conn.send_close(Some(CloseFrame::new(
            CloseCode::GOING_AWAY,
            "server shutting down",
        )));
        self.start_close_timer();
        true
    }

    /// Sends a keepalive Ping when one is due; fails the connection when
    /// the last one went unanswered. Only while open: once a Close is sent,
    /// the close timer bounds the wait instead.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        if self.conn.close_sent() {
            return None;
        }
        match self.keepalive.as_mut()?.poll_due(cx) {
            KeepaliveDue::Nothing => None,
            KeepaliveDue::Ping(payload) => {
                // Queued; written with the rest before the next read. Cannot
                // fail: no Close was sent, and the payload is 4 bytes.
                let _ = self.conn.send_ping(&payload);
                if let Err(e) = ready_now(self.poll_write_pending(cx)) {
                    return Some(self.abort(e));
                }
                None
            }
            KeepaliveDue::TimedOut(timeout) => {
                tracing::info!(role = ?self.conn.role(), ?timeout,
                    "failing the connection: keepalive ping timed out");
                // §7.1.7: fail the connection; 1011 as Python websockets
                // sends. Our side reports 1006, as the closing handshake
                // cannot complete with a peer that does not answer.
                let _ = self.conn.send_close(Some(CloseFrame::new(
                    CloseCode::INTERNAL_ERROR,
                    "keepalive ping timeout",
                )));
                self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                self.phase = Phase::ShuttingDown;
                Some(Event::Error(Error::KeepaliveTimeout(timeout)))
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        // Room for a read buffer's worth or, inside a message whose header
        // said how large it is, for exactly the rest of it: a large message
        // then comes in few reads, and the buffer settles at the size that
        // holds one (asking for more would make `reserve` move the partial
        // message within the buffer, or grow it again later).
        let size = match self.conn.bytes_needed() {
            0 => self.read_buffer_size,
            needed => needed.min(MAX_READ_AHEAD),
        };
        let read = if self.conn.input_buffer().is_empty() {
            self.poll_read_fresh(cx, size)
        } else {
            // The rest of a frame: into the buffer that holds its start.
            self.poll_read_buffered(cx, size)
        };
        if !self.timers_made && matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.make_timers();
        }
        read
    }

    /// A read with every byte received so far parsed: into whichever
    /// buffer is likely still in cache. That is the connection's own when
    /// its last read filled it; otherwise the thread's spare ([`SPARE`]),
    /// which the last read on this thread that found nothing left behind.
    /// So connections that take turns on a thread (an echo of 16 KiB
    /// messages to 500 clients) read, unmask and write from one buffer
    /// that stays in cache, rather than from 500 that the messages keep
    /// pushing out of it; and an idle connection holds no buffer.
    fn poll_read_fresh(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<Result<usize, Error>> {
        let mut spare = SPARE.take().unwrap_or_default();
        let mut buf = self.conn.input_buffer();
        // `try_reclaim` fails while a message read earlier still refers to
        // the buffer (an echo not written yet, a message the application
        // kept): that one is not reused.
        if !(self.input_warm && buf.try_reclaim(size)) && spare.try_reclaim(size) {
            buf.swap_empty(&mut spare);
        }
        let read = if buf.capacity() == 0 {
            self.poll_read_first(cx, size)
        } else {
            self.poll_read_buffered(cx, size)
        };
        let filled = matches!(read, Poll::Ready(Ok(n)) if n > 0);
        if !filled {
            // Nothing came: the buffer just made ready becomes the
            // thread's spare, for the next read of any connection, and
            // this connection keeps what the thread had (mostly nothing).
            let mut buf = self.conn.input_buffer();
            if buf.capacity() > 0 {
                buf.swap_empty(&mut spare);
            }
        }
        self.input_warm = filled;
        if spare.capacity() > 0 {
            SPARE.set(Some(spare));
        }
        read
    }

    /// A read into the receive buffer, with room for `size` more bytes.
    fn poll_read_buffered(
        &mut self,
        cx: &mut Context<'_>,
        size: usize,
    ) -> Poll<Result<usize, Error>> {
        let mut buf = self.conn.input_buffer();
        buf.reserve(size);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut buf).map_err(Error::from)
    }

    /// A read with no receive buffer at hand: into the stack, allocating
    /// only once bytes arrived, so that an idle connection holds none.
    fn poll_read_first(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<Result<usize, Error>> {
        let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut first = ReadBuf::uninit(&mut first);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut first))?;
        if !first.filled().is_empty() {
            let mut buf = self.conn.input_buffer();
            buf.reserve(size);
            buf.extend_from_slice(first.filled());
        }
        Poll::Ready(Ok(first.filled().len()))
    }

    /// Makes the fragment and write timers at the first read that brings
    /// bytes, rather than at the first message that arrives in pieces or
    /// the first write that stalls, which may come at any point: the hot
    /// path then never allocates (tests/alloc.rs). Neither is armed until
    /// polled.
    #[cold]
    fn make_timers(&mut self) {
        self.timers_made = true;
        let now = tokio::time::Instant::now();
        if let Some(timeout) = self.fragment_timeout
            && self.fragment_timer.is_none()
        {
            self.fragment_timer = Some(Box::pin(tokio::time::sleep_until(now + timeout)));
        }
        if let Some(timeout) = self.write_timeout
            && self.write_timer.is_none()
        {
            self.write_timer = Some(Box::pin(tokio::time::sleep_until(now + timeout)));
        }
    }

    /// After the protocol closed: write what is pending (the Close answer),
    /// then end the TCP connection. §7.1.1: the server closes first; the
    /// client waits for that, up to the close timeout.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Poll::Ready(Err(_)) = self.poll_write_pending(cx) {
            self.phase = Phase::Done;
            return Poll::Ready(Some(self.close_event()));
        }
        if self.conn.wants_write() {
            // Pending: wait for the socket, bounded by the close timer.
            self.start_close_timer();
            if let Some(timer) = &mut self.close_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                self.phase = Phase::Done;
                return Poll::Ready(Some(self.close_event()));
            }
            return Poll::Pending;
        }
        if self.conn.role() == Role::Client && !self.eof {
            self.start_close_timer();
            loop {
                if let Some(timer) = &mut self.close_timer
                    && timer.as_mut().poll(cx).is_ready()
                {
                    break;
                }
                // Whatever still comes is read into nothing.
                self.conn.stop_reading();
                let mut buf = self.conn.input_buffer();
                buf.reserve(1024);
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        // Errors here change nothing: the connection is over either way.
        let _ = ready!(Pin::new(&mut self.stream).poll_shutdown(cx));
        self.phase = Phase::Done;
        Poll::Ready(Some(self.close_event()))
    }

    fn close_event(&mut self) -> Event {
        let (code, reason, was_clean) =
            self.close
                .take()
                .unwrap_or((CloseCode::ABNORMAL, String::new(), false));
        Event::Close {
            code,
            reason,
            was_clean,
        }
    }

    /// A socket error: the connection is over, abnormally.
    fn abort(&mut self, e: Error) -> Event {
        tracing::debug!(error = %e, "connection aborted");
        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
        // The Close event comes on the next poll.
        self.phase = Phase::Ended;
        Event::Error(e)
    }

    /// Splits into a reading half and a writing half that can be used from
    /// different tasks.
    pub fn split(self) -> (WebSocketWriter<S>, WebSocketReader<S>) {
        let (sink, stream) = futures_util::StreamExt::split(self);
        (WebSocketWriter { sink }, WebSocketReader { stream })
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_inner(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().conn.send(&item).map_err(Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_inner(cx)
    }

    /// Sends a Close frame with 1000 (if none was sent) and flushes it.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.conn.close_sent() {
            this.conn
                .send_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
            this.start_close_timer();
        }
        this.poll_flush_inner(cx)
    }
}

/// The writing half of a split [`WebSocket`].
pub struct WebSocketWriter<S> {
    sink: futures_util::stream::SplitSink<WebSocket<S>, Message>,
}

impl<S> WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends a message.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        futures_util::SinkExt::send(&mut self.sink, message.into()).await
    }

    /// Sends a Close frame with 1000; the reading half sees the `Close` event.
    pub async fn close(&mut self) -> Result<(), Error> {
        futures_util::SinkExt::close(&mut self.sink).await
    }

    /// Puts the halves back together.
    pub fn reunite(self, reader: WebSocketReader<S>) -> WebSocket<S> {
        self.sink
            .reunite(reader.stream)
            .expect("halves of the same WebSocket")
    }
}

impl<S> Sink<Message> for WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.sink).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

/// The reading half of a split [`WebSocket`].
pub struct WebSocketReader<S> {
    stream: futures_util::stream::SplitStream<WebSocket<S>>,
}

impl<S> WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The next event; `None` after the `Close` event.
    pub async fn next(&mut self) -> Option<Event> {
        futures_util::StreamExt::next(&mut self.stream).await
    }
}

impl<S> Stream for WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn config(interval: Option<u64>, timeout: u64) -> crate::Config {
        crate::Config::default()
            .ping_interval(interval.map(Duration::from_millis))
            .ping_timeout(Duration::from_millis(timeout))
    }

    /// The next event is a Close reported as 1006, and the last.
    async fn expect_abnormal_close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
        match ws.next().await {
            Some(Event::Close {
                code, was_clean, ..
            }) => assert_eq!((code.0, was_clean), (1006, false)),
            other => panic!("expected Close, got {other:?}"),
        }
        assert!(ws.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_pings_a_live_peer_and_the_connection_stays_open() {
        let (a, b) = tokio::io::duplex(64 << 10);
        let mut server = WebSocket::from_raw(a, Role::Server, &config(Some(50), 100));
        // The client answers Pings by itself while it is read.
        let mut client = WebSocket::from_raw(b, Role::Client, &config(None, 1));
        let client_task = tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(event) = client.next().await {
                events.push(event);
            }
            events
        });
        assert!(matches!(server.next().await, Some(Event::Open)));
        // Ten intervals: ten Pings, ten Pongs, no timeout.
        let quiet = tokio::time::timeout(Duration::from_millis(500), server.next()).await;
        assert!(
            quiet.is_err(),
            "no event while pings are answered: {quiet:?}"
        );
        assert!(server.keepalive.as_ref().unwrap().sent >= 9);
        server.close(1000, "done").await.unwrap();
        while let Some(event) = server.next().await {
            if let Event::Close {
                code, was_clean, ..
            } = event
            {
                assert_eq!((code.0, was_clean), (1000, true));
            }
        }
        let events = client_task.await.unwrap();
        assert!(
            matches!(
                events.last(),
                Some(Event::Close {
                    code: CloseCode(1000),
                    was_clean: true,
                    ..
                })
            ),
            "{events:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_failed_with_1011_after_the_timeout() {
        let (a, mut peer) = tokio::io::duplex(64 << 10);
        let mut server = WebSocket::from_raw(a, Role::Server, &config(Some(50), 100));
        assert!(matches!(server.next().await, Some(Event::Open)));
        let started = tokio::time::Instant::now();
        match server.next().await {
            Some(Event::Error(Error::KeepaliveTimeout(t))) => {
                assert_eq!(t, Duration::from_millis(100));
            }
            other => panic!("expected a keepalive timeout, got {other:?}"),
        }
        // One interval to the Ping, one timeout for its Pong.
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        // The Close is written and, as a server, the TCP connection ended.
        expect_abnormal_close(&mut server).await;
        // The peer got the Ping (0x89, 4-byte payload) and then a Close
        // with 1011 (0x03f3).
        let mut wire = Vec::new();
        peer.read_to_end(&mut wire).await.unwrap();
        assert_eq!(&wire[..6], &[0x89, 4, 0, 0, 0, 1]);
        let close = &wire[6..];
        assert_eq!(&close[..2], &[0x88, 24]);
        assert_eq!(&close[2..4], &[0x03, 0xf3]);
        assert_eq!(&close[4..], b"keepalive ping timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_or_unsolicited_pong_does_not_count() {
        let mut keepalive = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(keepalive.poll_due(&mut cx), KeepaliveDue::Nothing));
        tokio::time::advance(Duration::from_secs(1)).await;
        let KeepaliveDue::Ping(payload) = keepalive.poll_due(&mut cx) else {
            panic!("a Ping is due");
        };
        keepalive.on_pong(b"other");
        keepalive.on_pong(&[0, 0, 0, 0]);
        assert_eq!(keepalive.awaiting, Some(payload));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            keepalive.poll_due(&mut cx),
            KeepaliveDue::TimedOut(_)
        ));
        keepalive.on_pong(&payload);
        assert_eq!(keepalive.awaiting, None);
    }

    /// A server whose writes wait once 4 KiB are queued, with `timeout`,
    /// over a pipe that holds 1 KiB.
    fn stalling_server(
        timeout: Option<u64>,
    ) -> (WebSocket<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, peer) = tokio::io::duplex(1024);
        let config = config(None, 1)
            .write_timeout(timeout.map(Duration::from_millis))
            .write_buffer_high_water(4096);
        (WebSocket::from_raw(a, Role::Server, &config), peer)
    }

    /// A server and a client over an in-memory pipe of `capacity` bytes.
    fn pair(capacity: usize) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
        let (a, b) = tokio::io::duplex(capacity);
        let config = config(None, 1);
        (
            WebSocket::from_raw(a, Role::Server, &config),
            WebSocket::from_raw(b, Role::Client, &config),
        )
    }

    #[tokio::test]
    async fn try_send_broadcast_writes_only_to_an_idle_connection() {
        let broadcast = Broadcast::new(Message::from("pushed"));
        // Room for one frame: the second is left queued, partly written.
        let (mut server, mut client) = pair(10);
        assert_eq!(server.try_send_broadcast(&broadcast), TrySend::Sent);
        assert_eq!(server.buffered_amount(), 0);
        assert_eq!(server.try_send_broadcast(&broadcast), TrySend::Partly);
        assert!(server.buffered_amount() > 0);
        // Something is queued: nothing more is taken.
        assert_eq!(server.try_send_broadcast(&broadcast), TrySend::Busy);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(Event::Message(m)) = client.next().await {
                    got.push(m);
                }
            }
            (got, client)
        });
        server.flush().await.unwrap();
        let (got, _client) = reader.await.unwrap();
        assert_eq!(got, vec![Message::from("pushed"); 2]);
        server.close(1000, "").await.unwrap();
        assert_eq!(server.try_send_broadcast(&broadcast), TrySend::Busy);
    }

    #[tokio::test]
    async fn ready_state_follows_the_browser_from_open_to_closed() {
        let (mut server, mut client) = pair(1 << 16);
        assert_eq!(client.ready_state(), ReadyState::Open);
        assert_eq!(client.ready_state() as u8, 1);
        let echo = tokio::spawn(async move {
            while let Ok(Some(message)) = server.recv().await {
                server.send(message).await.unwrap();
            }
            server.ready_state()
        });
        client.close(1000, "bye").await.unwrap();
        assert_eq!(client.ready_state(), ReadyState::Closing);
        assert_eq!(client.ready_state() as u8, 2);
        loop {
            match client.next().await {
                Some(Event::Close { code, .. }) => {
                    assert_eq!(code, 1000);
                    break;
                }
                Some(_) => {}
                None => panic!("no close event"),
            }
        }
        assert_eq!(client.ready_state(), ReadyState::Closed);
        assert_eq!(client.ready_state() as u8, 3);
        assert_eq!(echo.await.unwrap(), ReadyState::Closed);
        assert!(matches!(client.send("late").await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn buffered_amount_counts_what_is_queued_until_it_is_written() {
        // A pipe that holds 64 bytes, and a peer that reads nothing yet.
        let (mut server, mut client) = pair(64);
        assert_eq!(server.buffered_amount(), 0);
        server.feed(vec![1u8; 1000]).await.unwrap();
        // 1000 bytes of payload and a 4-byte header, none written yet.
        assert_eq!(server.buffered_amount(), 1004);
        let flushed = tokio::spawn(async move {
            server.flush().await.unwrap();
            server.buffered_amount()
        });
        assert_eq!(
            client.recv().await.unwrap(),
            Some(Message::binary(vec![1u8; 1000]))
        );
        assert_eq!(flushed.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn split_halves_work_from_two_tasks_and_reunite() {
        let (server, mut client) = pair(1 << 16);
        let (mut writer, mut reader) = server.split();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                if let Some(Event::Message(m)) = reader.next().await {
                    got.push(m);
                }
            }
            (reader, got)
        });
        let client_task = tokio::spawn(async move {
            for i in 0..3 {
                client.send(format!("up {i}")).await.unwrap();
            }
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(Event::Message(m)) = client.next().await {
                    got.push(m);
                }
            }
            (client, got)
        });
        writer.send("down 0").await.unwrap();
        writer.send("down 1").await.unwrap();
        let (reader, up) = reading.await.unwrap();
        let (mut client, down) = client_task.await.unwrap();
        assert_eq!(up, ["up 0", "up 1", "up 2"].map(Message::text));
        assert_eq!(down, ["down 0", "down 1"].map(Message::text));

        let mut server = writer.reunite(reader);
        server.send("whole again").await.unwrap();
        assert_eq!(
            client.recv().await.unwrap(),
            Some(Message::text("whole again"))
        );
    }

    #[tokio::test]
    async fn a_ping_flood_from_a_peer_that_does_not_read_is_not_read_past_the_write_buffer() {
        let (mut server, mut peer) = stalling_server(None);
        // Masked Pings with 125 bytes each: every one asks for a Pong.
        let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
        ping.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][usize::from(i) % 4]));
        let mut sent = 0usize;
        let flood = async {
            loop {
                peer.write_all(&ping).await.unwrap();
                sent += ping.len();
            }
        };
        let serve = async { while server.next().await.is_some() {} };
        tokio::select! {
            () = flood => unreachable!(),
            () = serve => panic!("the server closed"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        // Without the bound the server reads the flood as fast as it comes,
        // and the Pongs pile up by megabytes in 300 ms.
        let bound = 4096 + crate::Config::default().read_buffer_size;
        assert!(
            server.buffered_amount() <= bound,
            "{} queued",
            server.buffered_amount()
        );
        assert!(sent < 64 << 10, "the peer could write {sent} bytes");
    }

    #[tokio::test]
    async fn a_flood_from_a_peer_that_does_not_read_ends_at_the_write_timeout() {
        let (mut server, mut peer) = stalling_server(Some(100));
        let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
        ping.resize(6 + 125, b'p');
        let flood = async {
            while peer.write_all(&ping).await.is_ok() {}
            std::future::pending::<()>().await;
        };
        let serve = async {
            loop {
                match server.next().await {
                    Some(Event::Error(e)) => break e,
                    Some(_) => {}
                    None => panic!("closed without an error"),
                }
            }
        };
        let error = tokio::select! {
            () = flood => unreachable!(),
            e = serve => e,
            () = tokio::time::sleep(Duration::from_secs(5)) => panic!("no write timeout"),
        };
        assert!(matches!(error, Error::WriteTimeout(_)), "{error:?}");
        expect_abnormal_close(&mut server).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_timeout() {
        let (mut server, _peer) = stalling_server(Some(100));
        let started = tokio::time::Instant::now();
        let error = loop {
            if let Err(e) = server.feed(vec![7u8; 1000]).await {
                break e;
            }
        };
        assert!(
            matches!(error, Error::WriteTimeout(t) if t == Duration::from_millis(100)),
            "{error:?}"
        );
        // The pipe filled at once; nothing was taken for 100 ms after.
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        match server.next().await {
            Some(Event::Open) => {}
            other => panic!("expected Open, got {other:?}"),
        }
        expect_abnormal_close(&mut server).await;
        assert!(matches!(server.send("more").await, Err(Error::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_timed_out() {
        let (mut server, mut peer) = stalling_server(Some(100));
        // 512 bytes every 80 ms: slower than the sender, never silent for
        // the whole timeout.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_millis(80)).await;
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        for _ in 0..20 {
            server.send(vec![7u8; 1000]).await.unwrap();
        }
        drop(server);
        // 20 frames of a 4-byte header and 1000 bytes.
        assert_eq!(reader.await.unwrap(), 20 * 1004);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_write_timeout_a_stalled_write_waits() {
        let (mut server, _peer) = stalling_server(None);
        let stalled = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                server.feed(vec![7u8; 1000]).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        })
        .await;
        assert!(stalled.is_err(), "{stalled:?}");
    }

    /// A masked client frame (with a zero key, so the payload reads as
    /// is) of at most 125 bytes: `b0` is FIN and the opcode.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![b0, 0x80 | u8::try_from(payload.len()).unwrap(), 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    /// The close code of the first Close frame in what a server wrote.
    fn close_code_on_wire(wire: &[u8]) -> Option<u16> {
        let mut at = 0;
        while at + 2 <= wire.len() {
            let len = usize::from(wire[at + 1] & 0x7f);
            if wire[at] == 0x88 {
                return Some(u16::from_be_bytes([wire[at + 2], wire[at + 3]]));
            }
            at += 2 + len;
        }
        None
    }

    /// The next events until the connection's error.
    async fn until_error<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Error {
        loop {
            match ws.next().await {
                Some(Event::Error(e)) => return e,
                Some(_) => {}
                None => panic!("closed without an error"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_message_fails_with_1008_after_the_fragment_timeout() {
        let (a, mut peer) = tokio::io::duplex(64 << 10);
        let config = config(None, 1).fragment_timeout(Some(Duration::from_millis(100)));
        let mut server = WebSocket::from_raw(a, Role::Server, &config);
        // A first fragment, then a Ping every 30 ms and never the rest:
        // the connection is busy, and the message still runs out of time.
        peer.write_all(&client_frame(0x01, b"begun")).await.unwrap();
        let started = tokio::time::Instant::now();
        let pinging = tokio::spawn(async move {
            while peer
                .write_all(&client_frame(0x89, b"still here"))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            peer
        });
        let error = until_error(&mut server).await;
        assert!(
            matches!(error, Error::MessageTimeout(t) if t == Duration::from_millis(100)),
            "{error:?}"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(100) && elapsed <= Duration::from_millis(130),
            "{elapsed:?}"
        );
        expect_abnormal_close(&mut server).await;
        drop(server);
        let mut peer = pinging.await.unwrap();
        let mut wire = Vec::new();
        peer.read_to_end(&mut wire).await.unwrap();
        assert_eq!(close_code_on_wire(&wire), Some(1008));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_peer_in_the_middle_of_a_message_is_failed_on_time() {
        let (a, mut peer) = tokio::io::duplex(64 << 10);
        let config = config(None, 1).fragment_timeout(Some(Duration::from_secs(30)));
        let mut server = WebSocket::from_raw(a, Role::Server, &config);
        // Only the header of a 100-byte message, then silence.
        peer.write_all(&[0x82, 0x80 | 100, 0, 0, 0, 0])
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let error = until_error(&mut server).await;
        assert!(matches!(error, Error::MessageTimeout(_)), "{error:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn messages_finished_in_time_are_not_failed() {
        let (a, mut peer) = tokio::io::duplex(64 << 10);
        let config = config(None, 1).fragment_timeout(Some(Duration::from_millis(100)));
        let mut server = WebSocket::from_raw(a, Role::Server, &config);
        assert!(matches!(server.next().await, Some(Event::Open)));
        // Five messages of two fragments 60 ms apart, one after another:
        // 600 ms in all, each message well within its 100 ms.
        let sending = tokio::spawn(async move {
            for _ in 0..5 {
                peer.write_all(&client_frame(0x01, b"ab")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
                peer.write_all(&client_frame(0x80, b"cd")).await.unwrap();
            }
            peer
        });
        for _ in 0..5 {
            match server.next().await {
                Some(Event::Message(m)) => assert_eq!(m, Message::text("abcd")),
                other => panic!("expected a message, got {other:?}"),
            }
        }
        let _peer = sending.await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_secs(1), server.next()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }

    #[tokio::test]
    async fn the_connection_past_the_budget_fails_with_1013_and_shares_come_back() {
        let budget = MessageBudget::new(1000);
        let config = config(None, 1).message_budget(Some(budget.clone()));
        let (a, mut peer_a) = tokio::io::duplex(64 << 10);
        let (b, mut peer_b) = tokio::io::duplex(64 << 10);
        let mut server_a = WebSocket::from_raw(a, Role::Server, &config);
        let mut server_b = WebSocket::from_raw(b, Role::Server, &config);
        // A holds 600 bytes of an unfinished message (five fragments).
        peer_a
            .write_all(&client_frame(0x02, &[1; 120]))
            .await
            .unwrap();
        for _ in 0..4 {
            peer_a
                .write_all(&client_frame(0x00, &[1; 120]))
                .await
                .unwrap();
        }
        assert!(matches!(server_a.next().await, Some(Event::Open)));
        let idle = tokio::time::timeout(Duration::from_millis(50), server_a.next()).await;
        assert!(idle.is_err(), "{idle:?}");
        assert_eq!(budget.used(), 600);
        // B asks for 500 more: over the budget, B is failed, A is not.
        peer_b
            .write_all(&client_frame(0x02, &[2; 125]))
            .await
            .unwrap();
        for _ in 0..3 {
            peer_b
                .write_all(&client_frame(0x00, &[2; 125]))
                .await
                .unwrap();
        }
        let error = until_error(&mut server_b).await;
        assert!(
            matches!(error, Error::MessageBudget { limit: 1000, held } if held > 400),
            "{error:?}"
        );
        expect_abnormal_close(&mut server_b).await;
        drop(server_b);
        let mut wire = Vec::new();
        peer_b.read_to_end(&mut wire).await.unwrap();
        assert_eq!(close_code_on_wire(&wire), Some(1013));
        assert_eq!(budget.used(), 600, "B's share came back");
        // A finishes its message: its share comes back too.
        peer_a.write_all(&client_frame(0x80, b"!")).await.unwrap();
        match server_a.next().await {
            Some(Event::Message(m)) => assert_eq!(m.len(), 601),
            other => panic!("expected A's message, got {other:?}"),
        }
        assert_eq!(budget.used(), 0);
        // And one that closes in the middle of a message gives its back.
        peer_a
            .write_all(&client_frame(0x02, &[3; 100]))
            .await
            .unwrap();
        let idle = tokio::time::timeout(Duration::from_millis(50), server_a.next()).await;
        assert!(idle.is_err(), "{idle:?}");
        assert_eq!(budget.used(), 100);
        drop(peer_a);
        expect_abnormal_close(&mut server_a).await;
        drop(server_a);
        assert_eq!(budget.used(), 0);
    }

    /// A server connection and the raw peer that writes its frames.
    fn server_and_peer() -> (WebSocket<DuplexStream>, DuplexStream) {
        let (a, peer) = tokio::io::duplex(64 << 10);
        (WebSocket::from_raw(a, Role::Server, &config(None, 1)), peer)
    }

    /// Polls once, as a runtime would on a wake-up: the connection reads
    /// on until the socket has nothing more.
    async fn poll_once(ws: &mut WebSocket<DuplexStream>) {
        std::future::poll_fn(|cx| {
            assert!(ws.poll_event(cx).is_pending(), "expected no event");
            Poll::Ready(())
        })
        .await;
    }

    /// The peer sends `payload` in one binary frame; the payload the
    /// connection reads.
    async fn deliver(
        ws: &mut WebSocket<DuplexStream>,
        peer: &mut DuplexStream,
        payload: &[u8],
    ) -> Bytes {
        peer.write_all(&client_frame(0x82, payload)).await.unwrap();
        loop {
            match ws.next().await {
                Some(Event::Open) => {}
                Some(Event::Message(Message::Binary(b))) => return b,
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connections_take_turns_with_one_receive_buffer() {
        let (mut a, mut peer_a) = server_and_peer();
        let (mut b, mut peer_b) = server_and_peer();
        let from_a = deliver(&mut a, &mut peer_a, b"to a").await;
        let at = from_a.as_ptr();
        drop(from_a);
        // Nothing more for A: its buffer becomes the thread's, and A,
        // idle, holds none.
        poll_once(&mut a).await;
        assert_eq!(a.conn.input_buffer().capacity(), 0);
        let from_b = deliver(&mut b, &mut peer_b, b"to b").await;
        assert_eq!(from_b, &b"to b"[..]);
        assert_eq!(from_b.as_ptr(), at, "B read into the buffer A read into");
    }

    #[tokio::test]
    async fn a_buffer_that_a_kept_message_refers_to_is_not_read_into() {
        let (mut a, mut peer_a) = server_and_peer();
        let (mut b, mut peer_b) = server_and_peer();
        let kept = deliver(&mut a, &mut peer_a, b"to a").await;
        poll_once(&mut a).await;
        let from_b = deliver(&mut b, &mut peer_b, b"to b").await;
        assert_eq!(from_b, &b"to b"[..]);
        assert_eq!(kept, &b"to a"[..]);
        let kept_range = kept.as_ptr_range();
        assert!(!kept_range.contains(&from_b.as_ptr()));
    }

    #[tokio::test]
    async fn echoes_still_being_written_keep_their_bytes() {
        // A pipe that takes 1 KiB: the echoes of three 8 KiB messages,
        // queued by reference to the receive buffer, wait while the
        // messages after them are read.
        let (a, mut peer) = tokio::io::duplex(1024);
        let mut server = WebSocket::from_raw(a, Role::Server, &config(None, 1));
        let payload = |i: u8| -> Vec<u8> { (0..8192u32).map(|j| j as u8 ^ i).collect() };
        let peer_task = tokio::spawn(async move {
            for i in 0..3 {
                // 8192 bytes, masked with a zero key.
                let mut frame = vec![0x82, 0x80 | 126, 0x20, 0x00, 0, 0, 0, 0];
                frame.extend(payload(i));
                peer.write_all(&frame).await.unwrap();
            }
            let mut wire = vec![0u8; 3 * (4 + 8192)];
            peer.read_exact(&mut wire).await.unwrap();
            wire
        });
        let mut echoed = 0;
        while echoed < 3 {
            match server.next().await {
                Some(Event::Open) => {}
                Some(Event::Message(m)) => {
                    server.feed(m).await.unwrap();
                    echoed += 1;
                }
                other => panic!("expected a message, got {other:?}"),
            }
        }
        server.flush().await.unwrap();
        let wire = peer_task.await.unwrap();
        for (i, frame) in (0..3).zip(wire.chunks(4 + 8192)) {
            assert_eq!(frame[..4], [0x82, 126, 0x20, 0x00]);
            assert!(frame[4..] == payload(i), "echo {i} changed");
        }
    }

    #[test]
    fn keepalive_is_on_by_default_and_can_be_turned_off() {
        let (a, _b) = tokio::io::duplex(64);
        let ws = WebSocket::from_raw(a, Role::Server, &crate::Config::default());
        assert!(ws.keepalive.is_some());
        let (a, _b) = tokio::io::duplex(64);
        let ws = WebSocket::from_raw(a, Role::Server, &config(None, 1));
        assert!(ws.keepalive.is_none());
    }
}
