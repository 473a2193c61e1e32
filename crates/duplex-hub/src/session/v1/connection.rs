//! A duplex.v1 connection without its I/O (`docs/protocol.md`): the topics
//! it is subscribed to and the last offset sent of each, what its token and
//! its subscribe rate allow, and the frames that each request, delivery,
//! gap and presence event makes. Its session (`super`) asks the hub what a
//! request needs ([`Call`]), hands the answer back, and writes what this
//! queues ([`Out`]).
//!
//! Each subscription remembers the last offset sent, so that a message
//! that arrives twice (live and from history, when resuming over a
//! backplane) is sent once, none goes out of order, and one that skips
//! offsets tells of the gap instead of hiding it.

use std::collections::HashMap;
use std::sync::Arc;

use duplex_ws::{CloseCode, Message};
use tokio::time::Instant;

use crate::auth::Claims;
use crate::hub::{Delivery, HubError, Member, Opened, Published, Queued, Since};
use crate::name::TopicName;
use crate::v1::{
    ClientFrame, DELTA_FOSSIL, ErrorCode, Frame, Request, parse_request, payload_message,
};

/// The rule for a binary frame: duplex.v1 speaks JSON text, so a binary
/// one is closed with 1003 (RFC 6455 §7.4.1, data it cannot accept).
pub(crate) const BINARY: (CloseCode, &str) =
    (CloseCode::UNSUPPORTED_DATA, "duplex.v1 frames are text");

/// What the connection sends next, in order.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Frame),
    /// A message of a subscribed topic, in the `message` frame that every
    /// duplex.v1 subscriber of the delivery shares.
    Message(Arc<Delivery>),
    /// A text message as a delta from `base`, the one before it, in the
    /// frame every subscriber that asked for deltas shares (or whole, if
    /// the delta is not smaller).
    Delta {
        delivery: Arc<Delivery>,
        base: Arc<Delivery>,
    },
}

/// What a request needs of the hub before it can be answered.
#[derive(Debug)]
pub(crate) enum Call {
    /// Join the topic (and read what `since` resumes): answer with
    /// [`Connection::opened`].
    Subscribe {
        id: Option<u64>,
        topic: TopicName,
        since: Option<Since>,
        presence: bool,
        delta: bool,
        member: Member,
    },
    /// Answer with [`Connection::published`].
    Publish {
        id: Option<u64>,
        topic: TopicName,
        message: Message,
    },
    /// Answer with [`Connection::presence`].
    Presence { id: Option<u64>, topic: TopicName },
}

/// The rest of a resume, which the hub reads a page at a time so that a
/// long history is never all in memory: after `after`, up to `upto`, in
/// `epoch`. Answer with [`Connection::page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct More {
    pub(crate) topic: TopicName,
    pub(crate) epoch: Arc<str>,
    pub(crate) after: u64,
    pub(crate) upto: u64,
}

/// What a connection may do, from the hub's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_subscriptions: usize,
    /// Subscribes and unsubscribes a second.
    pub(crate) subscribe_rate: u32,
}

/// One subscribed topic; `M` is its place in the topic (the hub's
/// membership, which leaves the topic when dropped; nothing in tests).
#[derive(Debug)]
struct Subscribed<M> {
    _membership: M,
    epoch: Arc<str>,
    /// The last offset sent.
    last: u64,
    presence: bool,
    /// Whether it asked for deltas; `base`, the last message sent if a
    /// delta may follow it (none after a `subscribed` frame: the next
    /// message is whole).
    delta: bool,
    base: Option<Arc<Delivery>>,
}

impl<M> Subscribed<M> {
    /// Queues `delivery` as the subscription's next message: a delta from
    /// the one before when it asked for deltas and both are text.
    fn send(&mut self, out: &mut Vec<Out>, delivery: Arc<Delivery>) {
        self.last = delivery.offset();
        if !self.delta {
            out.push(Out::Message(delivery));
            return;
        }
        let base = self.base.replace(Arc::clone(&delivery)).filter(|base| {
            base.offset() + 1 == delivery.offset()
                && base.epoch() == delivery.epoch()
                && base.message().is_text()
                && delivery.message().is_text()
        });
        out.push(match base {
            Some(base) => Out::Delta { delivery, base },
            None => Out::Message(delivery),
        });
    }
}

/// One duplex.v1 connection's state.
#[derive(Debug)]
pub(crate) struct Connection<M> {
    client: Arc<str>,
    user: Option<Arc<str>>,
    claims: Option<Claims>,
    limits: Limits,
    subscriptions: HashMap<TopicName, Subscribed<M>>,
    churn: Bucket,
    out: Vec<Out>,
}

impl<M> Connection<M> {
    /// A connection with id `client`, its token's `claims` if the service
    /// checks tokens; `now` starts its subscribe rate.
    pub(crate) fn new(
        client: Arc<str>,
        claims: Option<Claims>,
        limits: Limits,
        now: Instant,
    ) -> Connection<M> {
        Connection {
            user: claims.as_ref().map(|c| Arc::from(c.subject())),
            client,
            claims,
            churn: Bucket::new(limits.subscribe_rate, limits.max_subscriptions, now),
            limits,
            subscriptions: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// The connection's id.
    pub(crate) fn client(&self) -> &Arc<str> {
        &self.client
    }

    /// What to send, in order, taken out (the buffer stays, for the next
    /// batch: this runs for every delivery batch).
    pub(crate) fn take_out(&mut self) -> std::vec::Drain<'_, Out> {
        self.out.drain(..)
    }

    /// Queues the `welcome` frame, the first on every connection.
    pub(crate) fn welcome(&mut self, ping_interval: std::time::Duration) {
        self.send(Frame::Welcome {
            version: 1,
            client: self.client.to_string(),
            ping_interval: ping_interval.as_secs().max(1),
        });
    }

    /// Queues the `ping` frame sent every ping interval.
    pub(crate) fn ping(&mut self) {
        self.send(Frame::Ping);
    }

    /// A text frame from the client: its answer is queued, or what the hub
    /// must do first is returned.
    pub(crate) fn request(&mut self, text: &str, now: Instant) -> Option<Call> {
        let request = match parse_request(text) {
            Ok(request) => request,
            Err(bad) => {
                self.send(Frame::error(bad.id, ErrorCode::BadRequest, bad.message));
                return None;
            }
        };
        let id = request.id();
        if matches!(
            request,
            Request::Subscribe { .. } | Request::Unsubscribe { .. }
        ) && !self.churn.take(now)
        {
            let rate = self.limits.subscribe_rate;
            self.send(Frame::error(
                id,
                ErrorCode::TooMany,
                format!("at most {rate} subscribes and unsubscribes a second"),
            ));
            return None;
        }
        match request {
            Request::Subscribe {
                topic,
                since,
                presence,
                delta,
                ..
            } => self.subscribe(id, topic, since.map(Since::from), presence, delta.is_some()),
            Request::Unsubscribe { topic, .. } => {
                let reply = if self.subscriptions.remove(&topic).is_some() {
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
                };
                self.send(reply);
                None
            }
            Request::Publish {
                topic, data, b64, ..
            } => {
                if self.claims.as_ref().is_some_and(|c| !c.may_publish(&topic)) {
                    return self.refuse(
                        id,
                        ErrorCode::Forbidden,
                        format!("token does not allow publishing on {topic}"),
                    );
                }
                let Some(message) = payload_message(data, b64) else {
                    return self.refuse(id, ErrorCode::BadRequest, "exactly one of data and b64");
                };
                Some(Call::Publish { id, topic, message })
            }
            Request::Presence { topic, .. } => {
                if !self.may_subscribe(&topic) {
                    return self.refuse(
                        id,
                        ErrorCode::Forbidden,
                        format!("token does not allow subscribing to {topic}"),
                    );
                }
                Some(Call::Presence { id, topic })
            }
            Request::Ping { .. } => {
                self.send(Frame::Pong { id });
                None
            }
        }
    }

    fn subscribe(
        &mut self,
        id: Option<u64>,
        topic: TopicName,
        since: Option<Since>,
        presence: bool,
        delta: bool,
    ) -> Option<Call> {
        if !self.may_subscribe(&topic) {
            return self.refuse(
                id,
                ErrorCode::Forbidden,
                format!("token does not allow subscribing to {topic}"),
            );
        }
        if self.subscriptions.contains_key(&topic) {
            return self.refuse(
                id,
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {topic}"),
            );
        }
        let max = self.limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            return self.refuse(
                id,
                ErrorCode::TooMany,
                format!("at most {max} subscriptions per connection"),
            );
        }
        let member = Member {
            client: Arc::clone(&self.client),
            user: self.user.clone(),
        };
        Some(Call::Subscribe {
            id,
            topic,
            since,
            presence,
            delta,
            member,
        })
    }

    /// The hub's answer to [`Call::Subscribe`]: the `subscribed` reply and
    /// the first page of what `since` resumes. `Some` when the history has
    /// more pages than came with it.
    pub(crate) fn opened(
        &mut self,
        id: Option<u64>,
        topic: TopicName,
        since: Option<&Since>,
        presence: bool,
        delta: bool,
        answer: Result<(M, Opened), HubError>,
    ) -> Option<More> {
        let (membership, opened) = match answer {
            Ok(opened) => opened,
            Err(e) => {
                self.send(hub_error(id, &e));
                return None;
            }
        };
        self.send(Frame::Subscribed {
            id,
            topic: topic.to_string(),
            epoch: opened.epoch.to_string(),
            offset: opened.offset,
            recovered: opened.recovered,
            delta: delta.then(|| DELTA_FOSSIL.to_owned()),
        });
        // Live messages with offsets up to here are history's (or were
        // published before a subscription without `since`).
        let last = match (since, opened.recovered) {
            (Some(since), Some(_)) if since.offset <= opened.offset => {
                let same = since.epoch.as_deref().is_none_or(|e| e == &*opened.epoch);
                if same { since.offset } else { opened.offset }
            }
            _ => opened.offset,
        };
        let more = More {
            topic: topic.clone(),
            epoch: Arc::clone(&opened.epoch),
            after: last,
            upto: opened.offset,
        };
        self.subscriptions.insert(
            topic,
            Subscribed {
                _membership: membership,
                epoch: opened.epoch,
                last,
                presence,
                delta,
                base: None,
            },
        );
        self.page(more, Ok(opened.history))
    }

    /// A page of the history a resume reads (oldest first): `Some` with
    /// what to read next while the page brought the subscription closer to
    /// where it began. A page the hub could not read ends the resume: the
    /// rest comes live.
    pub(crate) fn page(
        &mut self,
        more: More,
        page: Result<Vec<Arc<Delivery>>, HubError>,
    ) -> Option<More> {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::info!(topic = %more.topic, error = %e, "resume cut short: the rest comes live");
                return None;
            }
        };
        let sub = self.subscriptions.get_mut(&more.topic)?;
        let before = sub.last;
        for delivery in page {
            if delivery.offset() > sub.last {
                sub.send(&mut self.out, delivery);
            }
        }
        if sub.last == before || sub.last >= more.upto {
            return None;
        }
        Some(More {
            after: sub.last,
            ..more
        })
    }

    /// The hub's answer to [`Call::Publish`].
    pub(crate) fn published(
        &mut self,
        id: Option<u64>,
        topic: &TopicName,
        answer: Result<Published, HubError>,
    ) {
        let reply = match answer {
            Ok(published) => Frame::Published {
                id,
                topic: topic.to_string(),
                epoch: published.epoch.to_string(),
                offset: published.offset,
            },
            Err(e) => hub_error(id, &e),
        };
        self.send(reply);
    }

    /// The hub's answer to [`Call::Presence`]: how many subscriptions the
    /// topic has and some of them.
    pub(crate) fn presence(
        &mut self,
        id: Option<u64>,
        topic: &TopicName,
        answer: Result<(usize, Vec<Member>), HubError>,
    ) {
        let reply = match answer {
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
        };
        self.send(reply);
    }

    /// A message, gap or presence event from the connection's queue.
    pub(crate) fn forward(&mut self, item: Queued) {
        match item {
            Queued::Message(delivery) => self.deliver(delivery),
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
                sub.base = None;
                self.send(gap_frame(&gap.topic, &gap.epoch, gap.offset));
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
                self.send(if event.joined {
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
                });
            }
        }
    }

    fn deliver(&mut self, delivery: Arc<Delivery>) {
        let Some(sub) = self.subscriptions.get_mut(delivery.topic()) else {
            // Queued before an unsubscribe.
            return;
        };
        if *sub.epoch != *delivery.epoch() {
            // The topic's offsets started again (its store lost them).
            sub.epoch = Arc::from(delivery.epoch());
            sub.last = delivery.offset().saturating_sub(1);
            sub.base = None;
            let frame = gap_frame(delivery.topic(), delivery.epoch(), sub.last);
            self.out.push(Out::Frame(frame));
        }
        if delivery.offset() > sub.last + 1 {
            // Something between was never delivered: say so rather than
            // skip it silently.
            tracing::info!(
                topic = delivery.topic(),
                after = sub.last,
                next = delivery.offset(),
                "a subscription missed messages"
            );
            sub.last = delivery.offset() - 1;
            sub.base = None;
            let frame = gap_frame(delivery.topic(), &sub.epoch, sub.last);
            self.out.push(Out::Frame(frame));
        }
        if delivery.offset() > sub.last {
            sub.send(&mut self.out, delivery);
        }
    }

    fn may_subscribe(&self, topic: &str) -> bool {
        self.claims.as_ref().is_none_or(|c| c.may_subscribe(topic))
    }

    fn send(&mut self, frame: Frame) {
        self.out.push(Out::Frame(frame));
    }

    /// Queues an `error` reply: the request has no effect.
    fn refuse(
        &mut self,
        id: Option<u64>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Option<Call> {
        self.send(Frame::error(id, code, message));
        None
    }
}

/// A token bucket: `rate` a second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// `rate` a second, in bursts of twice as many plus `subscriptions`:
    /// a client that reconnects subscribes to all its topics at once.
    fn new(rate: u32, subscriptions: usize, now: Instant) -> Bucket {
        let rate = f64::from(rate.max(1));
        let burst = 2.0 * rate + subscriptions as f64;
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one if there is one.
    fn take(&mut self, now: Instant) -> bool {
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

/// The unprompted `subscribed` frame that says messages were lost: what
/// follows comes after `offset` of `epoch`.
fn gap_frame(topic: &str, epoch: &str, offset: u64) -> Frame {
    Frame::Subscribed {
        id: None,
        topic: topic.to_owned(),
        epoch: epoch.to_owned(),
        offset,
        recovered: Some(false),
        delta: None,
    }
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

/// One rule a test, each on one screen: a connection (of membership `()`)
/// is fed requests and deliveries, and what it queues is read back.
#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::hub::{Gap, PresenceEvent};

    const LIMITS: Limits = Limits {
        max_subscriptions: 2,
        subscribe_rate: 1,
    };

    fn connection(claims: Option<Claims>) -> Connection<()> {
        Connection::new(Arc::from("c1"), claims, LIMITS, Instant::now())
    }

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).unwrap()
    }

    fn delivery(topic: &str, epoch: &str, offset: u64) -> Arc<Delivery> {
        Arc::new(Delivery::new(
            topic.into(),
            epoch.into(),
            offset,
            Message::text(format!("m{offset}")),
        ))
    }

    /// What was queued, messages as `"m<offset>"` and frames as themselves.
    fn sent(c: &mut Connection<()>) -> Vec<Result<Frame, String>> {
        c.take_out()
            .map(|out| match out {
                Out::Frame(frame) => Ok(frame),
                Out::Message(d) => Err(format!("m{}", d.offset())),
                Out::Delta { delivery, base } => {
                    Err(format!("d{}<-{}", delivery.offset(), base.offset()))
                }
            })
            .collect()
    }

    fn error_code(c: &mut Connection<()>) -> ErrorCode {
        match sent(c).as_slice() {
            [Ok(Frame::Error { code, .. })] => *code,
            other => panic!("expected one error, got {other:?}"),
        }
    }

    /// Subscribes to `name` in epoch "e" at offset `at`, with no history.
    fn subscribed(c: &mut Connection<()>, name: &str, at: u64) {
        let request = format!(r#"{{"op":"subscribe","topic":"{name}","presence":true}}"#);
        assert!(matches!(
            c.request(&request, Instant::now()),
            Some(Call::Subscribe { .. })
        ));
        let opened = Opened::resume("e".into(), at, None, Vec::new());
        assert_eq!(
            c.opened(None, topic(name), None, true, false, Ok(((), opened))),
            None
        );
        c.take_out();
    }

    #[test]
    fn welcome_names_the_client_and_the_ping_interval() {
        let mut c = connection(None);
        c.welcome(Duration::from_millis(200));
        let welcome = Frame::Welcome {
            version: 1,
            client: "c1".into(),
            ping_interval: 1,
        };
        assert_eq!(sent(&mut c), [Ok(welcome)]);
    }

    #[test]
    fn a_bad_request_is_answered_with_its_id_and_does_nothing() {
        let mut c = connection(None);
        assert!(
            c.request(r#"{"op":"fly","id":7}"#, Instant::now())
                .is_none()
        );
        assert!(matches!(
            sent(&mut c).as_slice(),
            [Ok(Frame::Error {
                id: Some(7),
                code: ErrorCode::BadRequest,
                ..
            })]
        ));
    }

    #[test]
    fn subscribes_beyond_the_rate_are_refused_until_it_refills() {
        let mut c = connection(None);
        let start = Instant::now();
        // A burst of twice the rate plus the subscription limit: 4.
        for _ in 0..4 {
            c.request(r#"{"op":"unsubscribe","topic":"t"}"#, start);
            assert_eq!(error_code(&mut c), ErrorCode::NotSubscribed);
        }
        c.request(r#"{"op":"unsubscribe","topic":"t"}"#, start);
        assert_eq!(error_code(&mut c), ErrorCode::TooMany);
        c.request(
            r#"{"op":"unsubscribe","topic":"t"}"#,
            start + Duration::from_secs(1),
        );
        assert_eq!(error_code(&mut c), ErrorCode::NotSubscribed);
    }

    #[test]
    fn a_token_limits_subscribe_presence_and_publish_to_its_topics() {
        let claims = Claims::new("ann", SystemTime::now() + Duration::from_secs(60))
            .subscribe(["news.*"])
            .publish(["chat"]);
        let mut c = connection(Some(claims));
        for refused in [
            r#"{"op":"subscribe","topic":"chat"}"#,
            r#"{"op":"presence","topic":"chat"}"#,
            r#"{"op":"publish","topic":"news.a","data":"x"}"#,
        ] {
            assert!(c.request(refused, Instant::now()).is_none());
            assert_eq!(error_code(&mut c), ErrorCode::Forbidden, "{refused}");
        }
        let call = c.request(r#"{"op":"subscribe","topic":"news.a"}"#, Instant::now());
        let Some(Call::Subscribe { member, .. }) = call else {
            panic!("expected a subscribe, got {call:?}");
        };
        assert_eq!(member.user.as_deref(), Some("ann"));
        let call = c.request(
            r#"{"op":"publish","topic":"chat","data":"x"}"#,
            Instant::now(),
        );
        assert!(matches!(call, Some(Call::Publish { .. })));
    }

    #[test]
    fn a_second_subscribe_and_one_past_the_limit_are_refused() {
        let mut c = connection(None);
        subscribed(&mut c, "a", 0);
        c.request(r#"{"op":"subscribe","topic":"a"}"#, Instant::now());
        assert_eq!(error_code(&mut c), ErrorCode::AlreadySubscribed);
        subscribed(&mut c, "b", 0);
        c.request(r#"{"op":"subscribe","topic":"c"}"#, Instant::now());
        assert_eq!(error_code(&mut c), ErrorCode::TooMany);
    }

    #[test]
    fn a_publish_needs_exactly_one_payload_and_is_answered_with_its_offset() {
        let mut c = connection(None);
        c.request(r#"{"op":"publish","topic":"t"}"#, Instant::now());
        assert_eq!(error_code(&mut c), ErrorCode::BadRequest);
        let published = Published {
            epoch: "e".into(),
            offset: 9,
            delivered: 0,
        };
        c.published(Some(1), &topic("t"), Ok(published));
        c.published(Some(2), &topic("t"), Err(HubError::Unavailable));
        let out = sent(&mut c);
        let [
            Ok(Frame::Published { offset: 9, .. }),
            Ok(Frame::Error { code, .. }),
        ] = out.as_slice()
        else {
            panic!("expected published and error");
        };
        assert_eq!(*code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_resume_sends_history_once_then_only_newer_live_messages() {
        let mut c = connection(None);
        let since = Since {
            epoch: Some("e".into()),
            offset: 1,
        };
        let history = vec![delivery("t", "e", 2), delivery("t", "e", 3)];
        let opened = Opened::resume("e".into(), 3, Some(&since), history);
        assert_eq!(
            c.opened(
                Some(5),
                topic("t"),
                Some(&since),
                false,
                false,
                Ok(((), opened))
            ),
            None
        );
        // Live copies of what history sent are dropped; the next one goes.
        for offset in [2, 3, 4] {
            c.forward(Queued::Message(delivery("t", "e", offset)));
        }
        let out = sent(&mut c);
        assert!(matches!(
            out[0],
            Ok(Frame::Subscribed {
                id: Some(5),
                offset: 3,
                recovered: Some(true),
                ..
            })
        ));
        assert_eq!(
            out[1..],
            [Err("m2".into()), Err("m3".into()), Err("m4".into())]
        );
    }

    #[test]
    fn a_long_history_is_read_a_page_at_a_time_until_where_it_began() {
        let mut c = connection(None);
        let since = Since {
            epoch: None,
            offset: 0,
        };
        let opened = Opened::resume("e".into(), 4, Some(&since), vec![delivery("t", "e", 1)]);
        let more = c.opened(
            None,
            topic("t"),
            Some(&since),
            false,
            false,
            Ok(((), opened)),
        );
        let more = more.expect("three more to read");
        assert_eq!((more.after, more.upto), (1, 4));
        let more = c.page(more, Ok(vec![delivery("t", "e", 2), delivery("t", "e", 3)]));
        let more = more.expect("one more to read");
        assert_eq!(c.page(more, Ok(vec![delivery("t", "e", 4)])), None);
        let messages: Vec<_> = sent(&mut c).into_iter().skip(1).collect();
        assert_eq!(messages, ["m1", "m2", "m3", "m4"].map(|m| Err(m.into())));
    }

    #[test]
    fn a_skipped_offset_or_a_new_epoch_is_told_before_the_message() {
        let mut c = connection(None);
        subscribed(&mut c, "t", 1);
        c.forward(Queued::Message(delivery("t", "e", 4)));
        c.forward(Queued::Message(delivery("t", "f", 1)));
        let gap = |epoch: &str, offset| Ok(gap_frame("t", epoch, offset));
        assert_eq!(
            sent(&mut c),
            [gap("e", 3), Err("m4".into()), gap("f", 0), Err("m1".into())]
        );
    }

    #[test]
    fn a_gap_is_told_unless_everything_up_to_it_was_sent() {
        let mut c = connection(None);
        subscribed(&mut c, "t", 5);
        let gap = |offset| {
            Queued::Gap(Arc::new(Gap {
                topic: "t".into(),
                epoch: "e".into(),
                offset,
            }))
        };
        c.forward(gap(5));
        assert!(sent(&mut c).is_empty());
        c.forward(gap(8));
        c.forward(Queued::Message(delivery("t", "e", 9)));
        assert_eq!(sent(&mut c), [Ok(gap_frame("t", "e", 8)), Err("m9".into())]);
    }

    #[test]
    fn presence_events_go_only_to_subscriptions_that_watch() {
        let mut c = connection(None);
        subscribed(&mut c, "watched", 0);
        let event = |topic: &str| {
            Queued::Presence(Arc::new(PresenceEvent {
                topic: topic.into(),
                joined: true,
                member: Member {
                    client: "c2".into(),
                    user: None,
                },
            }))
        };
        c.forward(event("watched"));
        c.forward(event("elsewhere"));
        let join = Frame::Join {
            topic: "watched".into(),
            client: "c2".into(),
            user: None,
        };
        assert_eq!(sent(&mut c), [Ok(join)]);
    }

    #[test]
    fn after_unsubscribing_nothing_more_of_the_topic_is_sent() {
        let mut c = connection(None);
        subscribed(&mut c, "t", 0);
        c.request(r#"{"op":"unsubscribe","id":3,"topic":"t"}"#, Instant::now());
        c.forward(Queued::Message(delivery("t", "e", 1)));
        let unsubscribed = Frame::Unsubscribed {
            id: Some(3),
            topic: "t".into(),
        };
        assert_eq!(sent(&mut c), [Ok(unsubscribed)]);
    }

    #[test]
    fn deltas_follow_a_whole_text_message_and_stop_at_a_gap_or_binary() {
        let mut c = connection(None);
        c.request(
            r#"{"op":"subscribe","topic":"t","delta":"fossil"}"#,
            Instant::now(),
        );
        let since = Since {
            epoch: None,
            offset: 0,
        };
        let history = vec![delivery("t", "e", 1), delivery("t", "e", 2)];
        let opened = Opened::resume("e".into(), 2, Some(&since), history);
        c.opened(
            Some(1),
            topic("t"),
            Some(&since),
            false,
            true,
            Ok(((), opened)),
        );
        let out = sent(&mut c);
        assert!(matches!(&out[0], Ok(Frame::Subscribed { delta: Some(d), .. }) if d == "fossil"));
        // The first message after `subscribed` is whole, even from history.
        assert_eq!(out[1..], [Err("m1".into()), Err("d2<-1".into())]);
        c.forward(Queued::Message(delivery("t", "e", 3)));
        let binary = Message::binary(vec![1u8]);
        c.forward(Queued::Message(Arc::new(Delivery::new(
            "t".into(),
            "e".into(),
            4,
            binary,
        ))));
        c.forward(Queued::Message(delivery("t", "e", 5)));
        c.forward(Queued::Message(delivery("t", "e", 6)));
        c.forward(Queued::Message(delivery("t", "e", 8)));
        c.forward(Queued::Message(delivery("t", "e", 9)));
        c.forward(Queued::Message(delivery("t", "f", 1)));
        assert_eq!(
            sent(&mut c),
            [
                Err("d3<-2".into()),
                Err("m4".into()),
                Err("m5".into()),
                Err("d6<-5".into()),
                Ok(gap_frame("t", "e", 7)),
                Err("m8".into()),
                Err("d9<-8".into()),
                Ok(gap_frame("t", "f", 0)),
                Err("m1".into()),
            ]
        );
        // Without asking, every message is whole.
        subscribed(&mut c, "u", 0);
        c.forward(Queued::Message(delivery("u", "e", 1)));
        c.forward(Queued::Message(delivery("u", "e", 2)));
        assert_eq!(sent(&mut c), [Err("m1".into()), Err("m2".into())]);
    }

    #[test]
    fn a_refused_subscribe_leaves_no_subscription() {
        let mut c = connection(None);
        c.request(r#"{"op":"subscribe","topic":"t"}"#, Instant::now());
        let refused = Err(HubError::TooManyTopics(1));
        assert_eq!(
            c.opened(Some(1), topic("t"), None, false, false, refused),
            None
        );
        assert_eq!(error_code(&mut c), ErrorCode::TooMany);
        c.forward(Queued::Message(delivery("t", "e", 1)));
        assert!(sent(&mut c).is_empty());
    }
}
