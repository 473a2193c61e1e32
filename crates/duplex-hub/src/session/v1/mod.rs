//! A duplex.v1 connection's I/O (`docs/protocol.md`): one queue carries
//! every subscribed topic's messages and presence events to it, a `ping`
//! goes out every `ping_interval`, and what its requests need of the hub
//! is asked here. What it sends, and why, is `connection.rs`, without I/O.

mod connection;

use duplex_ws::{CloseCode, Message, ServerStream, WebSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use super::{Direct, Protocol, SLOW_CONSUMER, Step, Timeout};
use crate::auth::Claims;
use crate::expiry::Expiry;
use crate::hub::{Delivery, Hub, Inbox, Membership, Queued, Requester};
use crate::v1::MAX_PRESENCE_CLIENTS;
use connection::{BINARY, Call, Connection, Limits, More, Out};

/// What a connection's token allows, decided at the upgrade: `None` when
/// the service checks no tokens.
pub(crate) struct Token {
    pub(crate) claims: Claims,
    /// When the token expires.
    pub(crate) expiry: Expiry,
}

/// Runs a duplex.v1 connection until it closes: `welcome`, then requests
/// and their replies, the subscribed topics' messages and a `ping` every
/// `ping_interval` (see [`serve`](super::serve) for the rules that end it).
pub(crate) async fn run(
    ws: WebSocket<ServerStream>,
    hub: Hub,
    token: Option<Token>,
    requester: Option<Requester>,
) {
    let config = hub.config();
    let (inbox, queue) = Inbox::new(config.queue);
    let (claims, expiry) = match token {
        Some(Token { claims, expiry }) => (Some(claims), expiry),
        None => (None, Expiry::never()),
    };
    let limits = Limits {
        max_subscriptions: config.max_subscriptions,
        subscribe_rate: config.subscribe_rate,
    };
    let connection = Connection::new(hub.client_id(), claims, limits, Instant::now());
    let start = Instant::now() + config.ping_interval;
    let v1 = V1 {
        ping: tokio::time::interval_at(start, config.ping_interval),
        batch: config.queue,
        hub: hub.clone(),
        connection,
        inbox,
        queue,
        requester,
    };
    let socket = Direct::new(ws);
    super::serve(&socket, v1, hub, expiry).await;
}

struct V1 {
    hub: Hub,
    connection: Connection<Membership>,
    /// The connection's queue: the hub's end, which subscribing hands it,
    /// and this end.
    inbox: Inbox,
    queue: mpsc::Receiver<Queued>,
    /// At most this many queued items go out in one write.
    batch: usize,
    ping: Interval,
    requester: Option<Requester>,
}

enum Input {
    Queued(Option<Queued>),
    Ping,
}

impl std::fmt::Display for V1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "duplex.v1 client {}", self.connection.client())
    }
}

impl Protocol for V1 {
    type Input = Input;

    async fn start(&mut self, socket: &Direct, timeout: Timeout) -> Step {
        self.connection.welcome(self.hub.config().ping_interval);
        self.write(socket, timeout).await
    }

    async fn next(&mut self, _: &Direct) -> Input {
        tokio::select! {
            biased;
            item = self.queue.recv() => Input::Queued(item),
            _ = self.ping.tick() => Input::Ping,
        }
    }

    async fn input(&mut self, socket: &Direct, timeout: Timeout, input: Input) -> Step {
        let item = match input {
            Input::Ping => {
                self.connection.ping();
                return self.write(socket, timeout).await;
            }
            Input::Queued(Some(item)) => item,
            // Not while this holds the queue's sending end (`inbox`).
            Input::Queued(None) => {
                return Step::close((CloseCode::GOING_AWAY, ""), "its queue closed");
            }
        };
        // An overflow leaves the queue full, so it is seen here, without
        // a wake-up of its own to wait on.
        if self.inbox.lagged() {
            while self.queue.try_recv().is_ok() {}
            return Step::close(SLOW_CONSUMER, "a whole queue behind");
        }
        self.connection.forward(item);
        // What else is queued goes out in the same write.
        for _ in 1..self.batch {
            let Ok(next) = self.queue.try_recv() else {
                break;
            };
            self.connection.forward(next);
        }
        self.write(socket, timeout).await
    }

    async fn message(&mut self, socket: &Direct, timeout: Timeout, message: Message) -> Step {
        let Message::Text(text) = message else {
            return Step::close(BINARY, "a binary frame");
        };
        let Some(call) = self.connection.request(text.as_str(), Instant::now()) else {
            return self.write(socket, timeout).await;
        };
        match call {
            Call::Subscribe {
                id,
                topic,
                since,
                presence,
                delta,
                member,
            } => {
                let opened = self
                    .hub
                    .open(
                        &topic,
                        &self.inbox,
                        Some(member),
                        since.as_ref(),
                        presence,
                        self.requester.as_ref(),
                    )
                    .await;
                let more =
                    self.connection
                        .opened(id, topic, since.as_ref(), presence, delta, opened);
                self.resume(socket, timeout, more).await
            }
            Call::Publish { id, topic, message } => {
                let published = self
                    .hub
                    .publish_checked(&topic, message, self.requester.as_ref())
                    .await;
                self.connection.published(id, &topic, published);
                self.write(socket, timeout).await
            }
            Call::Presence { id, topic } => {
                let presence = self.hub.presence(&topic, MAX_PRESENCE_CLIENTS).await;
                self.connection.presence(id, &topic, presence);
                self.write(socket, timeout).await
            }
        }
    }
}

impl V1 {
    /// Writes each page of a resume before the next is read from the hub.
    async fn resume(&mut self, socket: &Direct, timeout: Timeout, mut more: Option<More>) -> Step {
        loop {
            if let Step::Stalled = self.write(socket, timeout).await {
                return Step::Stalled;
            }
            let Some(next) = more else {
                return Step::Write;
            };
            let page = self
                .hub
                .history_page(&next.topic, &next.epoch, next.after, next.upto)
                .await;
            more = self.connection.page(next, page);
        }
    }

    /// Puts what the connection queued into the socket's output; a write
    /// that does not finish within the send timeout stalls it.
    async fn write(&mut self, socket: &Direct, timeout: Timeout) -> Step {
        let connection = &mut self.connection;
        let written = timeout
            .within(async {
                for out in connection.take_out() {
                    match out {
                        Out::Frame(frame) => socket.feed(frame.to_message()).await?,
                        Out::Message(delivery) => {
                            socket
                                .feed_broadcast(delivery.wrapped(message_frame))
                                .await?;
                        }
                        Out::Delta { delivery, base } => {
                            let frame = match delivery.delta(&base, delta_frame) {
                                Some(frame) => frame,
                                None => delivery.wrapped(message_frame),
                            };
                            socket.feed_broadcast(frame).await?;
                        }
                    }
                }
                Ok(())
            })
            .await;
        if written { Step::Write } else { Step::Stalled }
    }
}

/// A delivery as duplex.v1's `message` frame (made once per delivery, for
/// every v1 subscriber: [`Delivery::wrapped`]).
fn message_frame(delivery: &Delivery) -> Message {
    Message::text(crate::v1::message_frame(
        delivery.topic(),
        delivery.offset(),
        delivery.message(),
    ))
}

/// A text delivery as a `message` frame with its delta from `base`, the
/// topic's message before it (made once per delivery, for every v1
/// subscriber that asked for deltas: [`Delivery::delta`]); `None` when the
/// delta is not smaller than the message.
fn delta_frame(base: &Delivery, delivery: &Delivery) -> Option<Message> {
    let (Message::Text(base), Message::Text(text)) = (base.message(), delivery.message()) else {
        return None;
    };
    let delta = crate::delta::encode(base.as_bytes(), text.as_bytes(), true);
    if delta.len() >= text.len() {
        return None;
    }
    // Between texts every literal is whole characters: always UTF-8.
    let delta = String::from_utf8(delta).ok()?;
    Some(Message::text(crate::v1::delta_frame(
        delivery.topic(),
        delivery.offset(),
        delta,
    )))
}
