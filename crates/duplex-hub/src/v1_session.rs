//! A duplex.v1 connection (`docs/protocol.md`): its subscriptions, their
//! offsets, requests and their replies in order, pings, and what its token
//! allows per operation. One queue carries every subscribed topic's
//! messages and presence events to the connection; a connection that falls
//! a whole queue behind is closed with 1008 "slow consumer", as a raw one.
//!
//! Each subscription remembers the last offset sent, so that a message
//! that arrives twice (live and from history, when resuming over Redis) is
//! sent once, and none goes out of order.

use std::collections::HashMap;
use std::sync::Arc;

use duplex_ws::{CloseCode, Event, Message, ServerStream, WebSocket};
use tokio::sync::mpsc;

use crate::auth::Claims;
use crate::expiry::Expiry;
use crate::hub::{Delivery, Hub, HubError, Inbox, Member, Membership, Queued, Requester, Since};
use crate::name::TopicName;
use crate::session::{Open, SLOW_CONSUMER, within};
use crate::v1::{
    ClientFrame, ErrorCode, Frame, MAX_PRESENCE_CLIENTS, Request, parse_request, payload_message,
};

/// What a connection's token allows, decided at the upgrade: `None` when
/// the service checks no tokens.
pub(crate) struct Token {
    pub(crate) claims: Claims,
    /// When the token expires.
    pub(crate) expiry: Expiry,
}

/// One subscribed topic.
struct Subscribed {
    _membership: Membership,
    epoch: Arc<str>,
    /// The last offset sent.
    last: u64,
    presence: bool,
}

/// The state of one connection.
struct Connection {
    hub: Hub,
    client: Arc<str>,
    user: Option<Arc<str>>,
    claims: Option<Claims>,
    inbox: Inbox,
    subscriptions: HashMap<TopicName, Subscribed>,
    /// Who it is for the topics it makes.
    requester: Option<Requester>,
    /// Subscribes and unsubscribes it may still make now
    /// ([`HubConfig::subscribe_rate`](crate::HubConfig::subscribe_rate)).
    churn: Bucket,
}

/// A token bucket: `rate` a second, at most `burst` saved up.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    /// `rate` a second, in bursts of twice as many plus `subscriptions`:
    /// a client that reconnects subscribes to all its topics at once.
    fn new(rate: u32, subscriptions: usize) -> Bucket {
        let rate = f64::from(rate.max(1));
        let burst = 2.0 * rate + subscriptions as f64;
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: tokio::time::Instant::now(),
        }
    }

    /// Takes one if there is one.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Runs a duplex.v1 connection until it closes: `welcome`, then requests
/// and their replies, the subscribed topics' messages and a `ping` every
/// `ping_interval`. Closed with 1003 on a binary frame, 1008 when it falls
/// behind by a whole queue or its token expires; dropped without a closing
/// handshake when a write takes longer than the hub's `send_timeout`.
pub(crate) async fn run(
    mut ws: WebSocket<ServerStream>,
    hub: Hub,
    token: Option<Token>,
    requester: Option<Requester>,
) {
    let _open = Open::new(&hub);
    let config = hub.config().clone();
    let (inbox, mut queue) = Inbox::new(config.queue);
    let (claims, mut expiry) = match token {
        Some(Token { claims, expiry }) => (Some(claims), expiry),
        None => (None, Expiry::never()),
    };
    let mut connection = Connection {
        client: hub.client_id(),
        user: claims.as_ref().map(|c| Arc::from(c.subject())),
        hub,
        claims,
        inbox,
        subscriptions: HashMap::new(),
        requester,
        churn: Bucket::new(config.subscribe_rate, config.max_subscriptions),
    };
    let welcome = Frame::Welcome {
        version: 1,
        client: connection.client.to_string(),
        ping_interval: config.ping_interval.as_secs().max(1),
    };
    if !within(config.send_timeout, ws.send(welcome.to_message())).await {
        return;
    }
    let start = tokio::time::Instant::now() + config.ping_interval;
    let mut ping = tokio::time::interval_at(start, config.ping_interval);
    let mut closing = false;
    loop {
        tokio::select! {
            // In this order, not at random: a delivery's wake-up then polls
            // the socket and the queue, and not the timers.
            biased;
            event = ws.next() => match event {
                Some(Event::Message(_)) if closing => {}
                Some(Event::Message(Message::Binary(_))) => {
                    tracing::info!(client = %connection.client, "closing a duplex.v1 connection that sent a binary frame");
                    closing = true;
                    let _ = ws.close_with(CloseCode::UNSUPPORTED_DATA, "duplex.v1 frames are text").await;
                }
                Some(Event::Message(Message::Text(text))) => {
                    let written = async {
                        connection.request(&mut ws, text.as_str()).await;
                        ws.flush().await
                    };
                    if !within(config.send_timeout, written).await {
                        return;
                    }
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            },
            item = queue.recv(), if !closing => {
                let Some(item) = item else { break };
                // An overflow leaves the queue full, so it is seen here,
                // without a wake-up of its own to wait on.
                if connection.inbox.lagged() {
                    tracing::info!(client = %connection.client, queue = config.queue, "closing a slow subscriber");
                    closing = true;
                    drain(&mut queue);
                    let _ = ws.close_with(SLOW_CONSUMER.0, SLOW_CONSUMER.1).await;
                    continue;
                }
                let batch = async {
                    connection.forward(&mut ws, item).await;
                    // What else is queued goes out in the same write.
                    for _ in 1..config.queue {
                        let Ok(next) = queue.try_recv() else { break };
                        connection.forward(&mut ws, next).await;
                    }
                    ws.flush().await
                };
                if !within(config.send_timeout, batch).await {
                    tracing::info!(client = %connection.client, "dropping a subscriber that stopped reading");
                    connection.hub.metrics().lagged_closed();
                    return;
                }
            }
            _ = ping.tick(), if !closing => {
                if !within(config.send_timeout, ws.send(Frame::Ping.to_message())).await {
                    return;
                }
            }
            () = expiry.fired(), if !closing => {
                tracing::info!(client = %connection.client, "closing a duplex.v1 connection whose token expired");
                closing = true;
                let _ = ws.close_with(Expiry::CODE, Expiry::REASON).await;
            }
        }
    }
}

fn drain(queue: &mut mpsc::Receiver<Queued>) {
    while queue.try_recv().is_ok() {}
}

impl Connection {
    /// Answers one request (and, for a subscribe, sends what it resumes).
    async fn request(&mut self, ws: &mut WebSocket<ServerStream>, text: &str) {
        let request = match parse_request(text) {
            Ok(request) => request,
            Err(bad) => {
                let _ = ws
                    .feed(Frame::error(bad.id, ErrorCode::BadRequest, bad.message).to_message())
                    .await;
                return;
            }
        };
        let id = request.id();
        if matches!(
            request,
            Request::Subscribe { .. } | Request::Unsubscribe { .. }
        ) && !self.churn.take()
        {
            let rate = self.hub.config().subscribe_rate;
            let refusal = Frame::error(
                id,
                ErrorCode::TooMany,
                format!("at most {rate} subscribes and unsubscribes a second"),
            );
            let _ = ws.feed(refusal.to_message()).await;
            return;
        }
        let reply = match request {
            Request::Subscribe {
                topic,
                since,
                presence,
                ..
            } => {
                let since = since.map(|s| Since {
                    epoch: s.epoch,
                    offset: s.offset,
                });
                return self.subscribe(ws, id, topic, since, presence).await;
            }
            Request::Unsubscribe { topic, .. } => {
                if self.subscriptions.remove(&topic).is_some() {
                    Frame::Unsubscribed {
                        id,
                        topic: topic.to_string(),
                    }
                } else {
                    Frame::error(
                        id,
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {topic}"),
                    )
                }
            }
            Request::Publish {
                topic, data, b64, ..
            } => self.publish(id, topic, data, b64).await,
            Request::Presence { topic, .. } => self.presence(id, topic).await,
            Request::Ping { .. } => Frame::Pong { id },
        };
        let _ = ws.feed(reply.to_message()).await;
    }

    async fn subscribe(
        &mut self,
        ws: &mut WebSocket<ServerStream>,
        id: Option<u64>,
        topic: TopicName,
        since: Option<Since>,
        presence: bool,
    ) {
        let refusal = if self
            .claims
            .as_ref()
            .is_some_and(|c| !c.may_subscribe(&topic))
        {
            Some(Frame::error(
                id,
                ErrorCode::Forbidden,
                format!("token does not allow subscribing to {topic}"),
            ))
        } else if self.subscriptions.contains_key(&topic) {
            Some(Frame::error(
                id,
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {topic}"),
            ))
        } else if self.subscriptions.len() >= self.hub.config().max_subscriptions {
            Some(Frame::error(
                id,
                ErrorCode::TooMany,
                format!(
                    "at most {} subscriptions per connection",
                    self.hub.config().max_subscriptions
                ),
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = ws.feed(refusal.to_message()).await;
            return;
        }
        let member = Member {
            client: Arc::clone(&self.client),
            user: self.user.clone(),
        };
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
        let (membership, opened) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = ws.feed(hub_error(id, &e).to_message()).await;
                return;
            }
        };
        let reply = Frame::Subscribed {
            id,
            topic: topic.to_string(),
            epoch: opened.epoch.to_string(),
            offset: opened.offset,
            recovered: opened.recovered,
        };
        let _ = ws.feed(reply.to_message()).await;
        // Live messages with offsets up to here are history's (or were
        // published before a subscription without `since`).
        let mut last = match (&since, opened.recovered) {
            (Some(since), Some(_)) if since.offset <= opened.offset => {
                let same = since.epoch.as_deref().is_none_or(|e| e == &*opened.epoch);
                if same { since.offset } else { opened.offset }
            }
            _ => opened.offset,
        };
        let mut page = opened.history;
        loop {
            let before = last;
            for delivery in &page {
                if delivery.offset() > last {
                    let _ = ws.feed_broadcast(delivery.wrapped(message_frame)).await;
                    last = delivery.offset();
                }
            }
            // Over Redis the history comes a page at a time, so that a
            // long one is never all in memory.
            if last == before || last >= opened.offset {
                break;
            }
            page = match self
                .hub
                .history_page(&topic, &opened.epoch, last, opened.offset)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::info!(%topic, error = %e, "resume cut short: the rest comes live");
                    break;
                }
            };
        }
        self.subscriptions.insert(
            topic,
            Subscribed {
                _membership: membership,
                epoch: opened.epoch,
                last,
                presence,
            },
        );
    }

    async fn publish(
        &mut self,
        id: Option<u64>,
        topic: TopicName,
        data: Option<String>,
        b64: Option<String>,
    ) -> Frame {
        if self.claims.as_ref().is_some_and(|c| !c.may_publish(&topic)) {
            return Frame::error(
                id,
                ErrorCode::Forbidden,
                format!("token does not allow publishing on {topic}"),
            );
        }
        let Some(message) = payload_message(data, b64) else {
            return Frame::error(id, ErrorCode::BadRequest, "exactly one of data and b64");
        };
        match self
            .hub
            .publish_checked(&topic, message, self.requester.as_ref())
            .await
        {
            Ok(published) => Frame::Published {
                id,
                topic: topic.to_string(),
                epoch: published.epoch.to_string(),
                offset: published.offset,
            },
            Err(e) => hub_error(id, &e),
        }
    }

    async fn presence(&mut self, id: Option<u64>, topic: TopicName) -> Frame {
        if self
            .claims
            .as_ref()
            .is_some_and(|c| !c.may_subscribe(&topic))
        {
            return Frame::error(
                id,
                ErrorCode::Forbidden,
                format!("token does not allow subscribing to {topic}"),
            );
        }
        match self.hub.presence(&topic, MAX_PRESENCE_CLIENTS).await {
            Ok((count, members)) => Frame::Presence {
                id,
                topic: topic.to_string(),
                count: count as u64,
                clients: members
                    .into_iter()
                    .map(|m| ClientFrame {
                        client: m.client.to_string(),
                        user: m.user.map(|u| u.to_string()),
                    })
                    .collect(),
            },
            Err(e) => hub_error(id, &e),
        }
    }

    /// Sends a queued message or presence event of a subscribed topic.
    async fn forward(&mut self, ws: &mut WebSocket<ServerStream>, item: Queued) {
        match item {
            Queued::Message(delivery) => {
                let Some(sub) = self.subscriptions.get_mut(delivery.topic()) else {
                    // Queued before an unsubscribe.
                    return;
                };
                if *sub.epoch != *delivery.epoch() {
                    // The topic's offsets started again (Redis lost them).
                    sub.epoch = Arc::from(delivery.epoch());
                    sub.last = delivery.offset().saturating_sub(1);
                    let frame = Frame::Subscribed {
                        id: None,
                        topic: delivery.topic().to_owned(),
                        epoch: delivery.epoch().to_owned(),
                        offset: sub.last,
                        recovered: Some(false),
                    };
                    let _ = ws.feed(frame.to_message()).await;
                }
                if delivery.offset() > sub.last + 1 {
                    // Something between was never delivered: say so
                    // rather than skip it silently.
                    tracing::info!(
                        topic = delivery.topic(),
                        after = sub.last,
                        next = delivery.offset(),
                        "a subscription missed messages"
                    );
                    sub.last = delivery.offset() - 1;
                    let _ = ws
                        .feed(gap_frame(delivery.topic(), &sub.epoch, sub.last))
                        .await;
                }
                if delivery.offset() > sub.last {
                    sub.last = delivery.offset();
                    let _ = ws.feed_broadcast(delivery.wrapped(message_frame)).await;
                }
            }
            Queued::Gap(gap) => {
                let Some(sub) = self.subscriptions.get_mut(&*gap.topic) else {
                    return;
                };
                if *sub.epoch == *gap.epoch && gap.offset <= sub.last {
                    // This connection had everything up to there already.
                    return;
                }
                sub.epoch = Arc::clone(&gap.epoch);
                sub.last = gap.offset;
                let _ = ws.feed(gap_frame(&gap.topic, &gap.epoch, gap.offset)).await;
            }
            Queued::Presence(event) => {
                if !self
                    .subscriptions
                    .get(&*event.topic)
                    .is_some_and(|s| s.presence)
                {
                    return;
                }
                let (topic, client, user) = (
                    event.topic.to_string(),
                    event.member.client.to_string(),
                    event.member.user.as_ref().map(|u| u.to_string()),
                );
                let frame = if event.joined {
                    Frame::Join {
                        topic,
                        client,
                        user,
                    }
                } else {
                    Frame::Leave {
                        topic,
                        client,
                        user,
                    }
                };
                let _ = ws.feed(frame.to_message()).await;
            }
        }
    }
}

/// The unprompted `subscribed` frame that says messages were lost: what
/// follows comes after `offset` of `epoch`.
fn gap_frame(topic: &str, epoch: &str, offset: u64) -> Message {
    Frame::Subscribed {
        id: None,
        topic: topic.to_owned(),
        epoch: epoch.to_owned(),
        offset,
        recovered: Some(false),
    }
    .to_message()
}

/// The `error` reply for a hub's refusal.
fn hub_error(id: Option<u64>, error: &HubError) -> Frame {
    let code = match error {
        HubError::InvalidTopic(_) => ErrorCode::BadRequest,
        HubError::TooManyTopics(_) | HubError::TooManyTopicsForClient(_) => ErrorCode::TooMany,
        HubError::TooLarge(_) => ErrorCode::TooLarge,
        HubError::Unavailable | HubError::Refused(_) => ErrorCode::Unavailable,
    };
    Frame::error(id, code, error.to_string())
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
