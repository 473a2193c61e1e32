//! The `WebSocket` type: the browser's WebSocket API over any async stream.
//!
//! It owns the socket and time; every protocol rule is the business of
//! [`duplex_proto::Connection`], which it drives: bytes read go into the
//! connection, events come out; messages go in, bytes to write come out.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use duplex_proto::{CloseCode, CloseFrame, Connection, MAX_REASON_LEN, Message, Role, State};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::Error;
use crate::budget::BudgetShare;
#[cfg(feature = "hyper")]
use crate::budget::MessageBudget;
#[cfg(feature = "hyper")]
use crate::signal::Fired;

mod broadcast;
mod read;
mod split;
mod timers;
mod write;

pub use broadcast::{Fanout, TrySend};
pub use split::{WebSocketReader, WebSocketWriter};
use timers::Keepalive;

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

#[cfg(test)]
mod tests {
    use super::timers::KeepaliveDue;
    use super::*;
    use crate::budget::MessageBudget;
    use duplex_proto::Broadcast;
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
    async fn a_fanout_queues_without_writing_and_writes_what_the_socket_takes() {
        let broadcast = Broadcast::new(Message::from("pushed"));
        // Room for one frame: the second is left queued, partly written.
        let (mut server, mut client) = pair(10);
        assert!(server.try_queue_broadcast(&broadcast));
        assert!(server.buffered_amount() > 0, "queued, not written");
        assert_eq!(server.try_write_queued(), TrySend::Sent);
        assert_eq!(server.buffered_amount(), 0);
        assert!(server.try_queue_broadcast(&broadcast));
        assert!(server.try_queue_broadcast(&broadcast));
        assert_eq!(server.try_write_queued(), TrySend::Partly);
        assert!(server.buffered_amount() > 0);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                if let Some(Event::Message(m)) = client.next().await {
                    got.push(m);
                }
            }
            (got, client)
        });
        server.flush().await.unwrap();
        let (got, _client) = reader.await.unwrap();
        assert_eq!(got, vec![Message::from("pushed"); 3]);
        server.close(1000, "").await.unwrap();
        assert!(!server.try_queue_broadcast(&broadcast), "closing");
    }

    #[tokio::test]
    async fn a_fanout_queues_nothing_past_the_write_high_water_mark() {
        let (mut server, _peer) = stalling_server(None);
        let broadcast = Broadcast::new(Message::Binary(vec![0; 1024].into()));
        let mut queued = 0;
        while server.try_queue_broadcast(&broadcast) {
            queued += 1;
            assert!(queued < 10, "the 4 KiB high-water mark holds");
        }
        assert!(server.buffered_amount() >= 4096);
        assert_eq!(queued, 4);
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
