//! One loop for every topic WebSocket, raw and duplex.v1 alike, and the
//! rules that hold for all of them: a batch that takes longer than the
//! hub's `send_timeout` to write drops the connection (a peer that stopped
//! reading), one a whole queue behind is closed with 1008 "slow consumer",
//! a token that expires closes it with 1008 "token expired", and once the
//! close has begun nothing more is read as a request or sent.
//!
//! What the connection speaks is a [`Protocol`]: `raw` (a topic's messages
//! as they are; what the subscriber sends is published) and `v1`
//! (duplex.v1, whose rules are a state machine without I/O,
//! `v1/connection.rs`). The socket is a [`Direct`](direct::Direct), which a
//! raw subscriber's publishers may write to themselves.

mod direct;
pub(crate) mod raw;
pub(crate) mod v1;

use std::task::Poll;

use duplex_ws::{CloseCode, Event, Message};

use crate::expiry::Expiry;
use crate::hub::Hub;
pub(crate) use direct::Direct;

/// The slow-consumer rule, for raw and duplex.v1 subscribers alike: one a
/// whole queue behind is closed with 1008 "slow consumer" rather than let
/// the publisher wait or memory grow.
pub(crate) const SLOW_CONSUMER: (CloseCode, &str) = (CloseCode::POLICY_VIOLATION, "slow consumer");

/// What a protocol made of an input.
#[derive(Debug)]
pub(crate) enum Step {
    /// Whatever it made is in the connection's output: write it.
    Write,
    /// Begin the closing handshake; `why` is for the log.
    Close {
        code: CloseCode,
        reason: &'static str,
        why: &'static str,
    },
    /// A write took longer than the send timeout: drop the connection.
    Stalled,
}

impl Step {
    pub(crate) fn close(rule: (CloseCode, &'static str), why: &'static str) -> Step {
        Step::Close {
            code: rule.0,
            reason: rule.1,
            why,
        }
    }
}

/// What a topic WebSocket speaks: the session loop waits on the socket,
/// on [`next`](Protocol::next) and on the token's expiry, and hands each
/// input to the protocol. Its `Display` names the connection in the loop's
/// log lines (a field, not a span: a span per subscriber costs memory for
/// each of ten thousand idle ones, and an enter and exit per wake-up).
pub(crate) trait Protocol: std::fmt::Display {
    /// What the protocol waits on besides the socket: its queue, its
    /// timers.
    type Input;

    /// The first frames, before anything is read.
    async fn start(&mut self, _socket: &Direct, _timeout: Timeout) -> Step {
        Step::Write
    }

    /// Waits for its next input; with `socket` to put deliveries into its
    /// output on the way (under the lock the publishers share).
    async fn next(&mut self, socket: &Direct) -> Self::Input;

    /// Handles an input from [`next`](Self::next).
    async fn input(&mut self, socket: &Direct, timeout: Timeout, input: Self::Input) -> Step;

    /// Handles a message the client sent.
    async fn message(&mut self, socket: &Direct, timeout: Timeout, message: Message) -> Step;
}

/// The hub's send timeout, for a protocol that writes in several steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeout(std::time::Duration);

impl Timeout {
    /// Whether `write` finished within the timeout (see [`within`]).
    async fn within(self, write: impl Future<Output = Result<(), duplex_ws::Error>>) -> bool {
        within(self.0, write).await
    }
}

/// Runs a topic WebSocket on `socket` speaking `protocol` until it closes
/// (the server core closes it with 1001 when it shuts down), or drops it
/// for a write that did not finish within the hub's send timeout.
pub(crate) async fn serve<P: Protocol>(
    socket: &Direct,
    mut protocol: P,
    hub: Hub,
    mut expiry: Expiry,
) {
    let _open = Open::new(&hub);
    let timeout = Timeout(hub.config().send_timeout);
    let mut step = Some(protocol.start(socket, timeout).await);
    let mut closing = false;
    loop {
        match step.take() {
            // A flush fails only once the connection is closing; its
            // Close event follows from `next`.
            Some(Step::Write) if timeout.within(socket.flush()).await => {}
            Some(Step::Write | Step::Stalled) => {
                tracing::info!(connection = %protocol, timeout = ?timeout.0, "dropping a subscriber that stopped reading");
                hub.metrics().lagged_closed();
                return;
            }
            Some(Step::Close { code, reason, why }) => {
                tracing::info!(connection = %protocol, code = code.0, reason, "closing: {why}");
                closing = true;
                socket.close(code, reason).await;
            }
            None => {}
        }
        step = tokio::select! {
            // In this order, not at random: a wake-up then polls the
            // socket and the queue, and not the timers.
            biased;
            event = socket.next() => match event {
                // Nothing more is taken in once the close has begun.
                Some(Event::Message(_)) if closing => None,
                Some(Event::Message(message)) => {
                    Some(protocol.message(socket, timeout, message).await)
                }
                Some(Event::Error(e)) => {
                    tracing::info!(connection = %protocol, error = %e, "connection failed");
                    None
                }
                Some(Event::Open | Event::Close { .. }) => None,
                None => break,
            },
            input = protocol.next(socket), if !closing => {
                Some(protocol.input(socket, timeout, input).await)
            }
            () = expiry.fired(), if !closing => Some(Step::close(
                (Expiry::CODE, Expiry::REASON),
                "its token expired",
            )),
        };
    }
}

/// Whether `write` finished within `timeout` (its own error means the
/// connection is closing; its Close event follows).
///
/// Nearly every write completes at once, into the socket's buffer: it is
/// polled once before a timer is armed, so that only a write that waits
/// pays for one. Arming a timer for every delivery (insert into and remove
/// from the runtime's timer wheel, under its lock) was a visible share of
/// the cost of fanning a message out to thousands of subscribers.
async fn within(
    timeout: std::time::Duration,
    write: impl Future<Output = Result<(), duplex_ws::Error>>,
) -> bool {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if first.is_ready() {
        return true;
    }
    tokio::time::timeout(timeout, write).await.is_ok()
}

/// Counts an open topic connection in `/metrics` for as long as it lives.
pub(crate) struct Open(Hub);

impl Open {
    pub(crate) fn new(hub: &Hub) -> Open {
        hub.metrics().connection_opened();
        Open(hub.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}
