//! Time: keepalive (a Ping each interval, the connection failed with 1011
//! when its Pong is late), the closing handshake's timer, the fragment
//! timer, and the server's shutdown signal (a Close with 1001).

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use duplex_proto::{CloseCode, CloseFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::write::ready_now;
use super::{Event, Phase, WebSocket};
use crate::Error;

/// The keepalive state: when the next Ping is due, or which Pong is awaited
/// and until when.
pub(super) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    /// Started on the first poll, in the runtime's context.
    timer: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last polled with. Until the deadline moves or
    /// the task changes, checking `is_elapsed` is enough: polling the
    /// `Sleep` on every message cost ~90 instructions per 20-byte echo.
    registered: Option<std::task::Waker>,
    /// The payload of the Ping in flight, if any.
    pub(super) awaiting: Option<[u8; 4]>,
    /// Numbers the Pings, so that a stale Pong is not taken for the latest.
    pub(super) sent: u32,
}

/// What the keepalive timer asks for.
pub(super) enum KeepaliveDue {
    Nothing,
    /// Send this Ping payload now.
    Ping([u8; 4]),
    /// The awaited Pong did not come in time.
    TimedOut(Duration),
}

impl Keepalive {
    pub(super) fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            timer: None,
            registered: None,
            awaiting: None,
            sent: 0,
        }
    }

    pub(super) fn poll_due(&mut self, cx: &mut Context<'_>) -> KeepaliveDue {
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
    pub(super) fn on_pong(&mut self, payload: &[u8]) {
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

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn start_close_timer(&mut self) {
        if self.close_timer.is_none() {
            self.close_timer = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
        }
    }

    /// With the socket idle in the middle of a message, whether the
    /// fragment timeout has run out (the timer wakes the task when it does).
    pub(super) fn poll_fragment_timer(&mut self, cx: &mut Context<'_>) -> bool {
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
    pub(super) fn poll_server_shutdown(&mut self, _cx: &mut Context<'_>) -> bool {
        false
    }

    #[cfg(feature = "hyper")]
    pub(super) fn poll_server_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
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
    pub(super) fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Option<Event> {
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

    /// Makes the fragment and write timers at the first read that brings
    /// bytes, rather than at the first message that arrives in pieces or
    /// the first write that stalls, which may come at any point: the hot
    /// path then never allocates (tests/alloc.rs). Neither is armed until
    /// polled.
    #[cold]
    pub(super) fn make_timers(&mut self) {
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
}
