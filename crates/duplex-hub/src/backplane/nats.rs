//! The NATS JetStream engine (`nats://`): each topic is a stream of its
//! own, so that the stream's sequence is the topic's offset and every node
//! agrees on it without a script.
//!
//! A topic `name` is the stream `DUPLEX_{h}` on the subject `duplex.t.{h}`,
//! where `h` is the first 128 bits of its SHA-256 in hex (topic names may
//! hold `.` and `:`, which subjects and stream names give meaning to). The
//! stream keeps [`history_size`](crate::HubConfig::history_size) messages
//! for [`history_ttl`](crate::HubConfig::history_ttl), on file (it
//! outlives a `nats-server` restart). Its epoch is the time it was made:
//! a stream made anew (the server lost its store) starts a new epoch, and
//! its offsets start again from 1.
//!
//! A publish is one JetStream publish, whose acknowledgement carries the
//! offset. A node with local subscribers of a topic follows its stream with
//! an ordered consumer from the offset it stands at; the client recreates
//! the consumer after a reconnection from the last sequence it delivered,
//! so that a link lost to NATS loses nothing the stream still holds, and
//! what it no longer holds shows as a gap (`follow`). A stream that is
//! gone is made again and followed from its first offset, after the hub
//! tells its subscribers (`recovered: false`).
//!
//! A stream nobody follows, with nothing left in it, and last written to
//! longer ago than the history TTL is deleted by the node that finds it
//! so, as a Redis topic's keys expire: the number of streams follows the
//! topics in use.
//!
//! Presence: each member is the last message of a subject
//! `duplexp.{h}.{member}` in the stream `DUPLEX_PRESENCE`, whose messages
//! last [`PRESENCE_TTL`]; each node publishes its members again every
//! [`PRESENCE_REFRESH`], and joins and leaves also go out on core NATS
//! (`duplex.presence.{h}`), to the watchers of the topic on other nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType, Stream};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use duplex_ws::Message;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::follow::{self, History, PAGE};
use super::payload::{Decoded, decode, kind_and_bytes, message_of, presence_payload};
use super::redis::{PRESENCE_REFRESH, PRESENCE_TTL};
use super::state::{BackplaneError, BackplaneState, Master, Started};
use crate::auth::mask_url_password;
use crate::hub::{Delivery, Hub, HubError, Member, Opened, Pending, Since, Store, WeakHub};

/// How long connecting, or one request, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often streams nobody uses are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The header that says a message's kind (`t` or `b`).
const KIND: &str = "Duplex-Kind";
/// The stream of presence members.
const PRESENCE_STREAM: &str = "DUPLEX_PRESENCE";

/// A topic's name in NATS.
fn hash(topic: &str) -> String {
    let digest = Sha256::digest(topic.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn stream_name(topic: &str) -> String {
    format!("DUPLEX_{}", hash(topic))
}

fn subject(topic: &str) -> String {
    format!("duplex.t.{}", hash(topic))
}

/// An epoch from the time a stream was made.
fn epoch_of(info: &stream::Info) -> Arc<str> {
    format!("{:x}", info.created.unix_timestamp_nanos()).into()
}

/// A topic this node follows: its local subscribers and the task that
/// delivers its stream.
#[derive(Debug, Default)]
struct Followed {
    count: usize,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct NatsStore {
    client: async_nats::Client,
    js: Context,
    hub: WeakHub,
    history_size: usize,
    history_ttl: Duration,
    max_message_size: usize,
    max_entry_size: usize,
    node: [u8; 16],
    /// The topics followed here, by name; and their names by hash, for
    /// the presence events of core NATS.
    followed: Mutex<HashMap<Arc<str>, Followed>>,
    hashes: Mutex<HashMap<String, Arc<str>>>,
    /// Held while a topic's following starts or stops.
    changes: tokio::sync::Mutex<()>,
}

/// What a request to NATS failing means for the caller.
fn unavailable(what: &str, e: impl std::fmt::Display) -> HubError {
    tracing::warn!(error = %e, "NATS: {what} failed");
    HubError::Unavailable
}

/// Starts the engine for `url` on `hub` (see [`Backplane::nats`](super::Backplane::nats)).
pub(super) async fn start(hub: &Hub, url: &str) -> Result<Started, BackplaneError> {
    let masked = || mask_url_password(url);
    if !url.starts_with("nats://") && !url.starts_with("tls://") {
        return Err(BackplaneError::InvalidUrl {
            url: masked(),
            reason: "a NATS URL is nats://host:port".into(),
        });
    }
    let unreachable = |reason: String| BackplaneError::Unreachable {
        url: masked(),
        reason,
    };
    let state = BackplaneState::connected("nats");
    let events = state.clone();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        events.set_publisher(true);
                        events.set_subscriber(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting");
                        events.set_publisher(false);
                        events.set_subscriber(false);
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let info = client.server_info();
    state.set_masters(vec![Master {
        address: format!("{}:{}", info.host, info.port),
        up: true,
    }]);
    let js = jetstream::new(client.clone());
    // JetStream must be on: without it, nothing answers this.
    js.get_or_create_stream(stream::Config {
        name: PRESENCE_STREAM.into(),
        subjects: vec!["duplexp.>".into()],
        max_messages_per_subject: 1,
        max_age: PRESENCE_TTL,
        storage: StorageType::Memory,
        ..Default::default()
    })
    .await
    .map_err(|e| unreachable(format!("is JetStream on (nats-server -js)? {e}")))?;
    let config = hub.config();
    // What a message may carry: the server's max_payload, less room for
    // the headers.
    let max_message_size = client.server_info().max_payload.saturating_sub(1024);
    if config.max_message_size > max_message_size {
        tracing::warn!(
            max_message_size = config.max_message_size,
            backplane = max_message_size,
            "messages over {max_message_size} bytes are refused (413): NATS's max_payload"
        );
    }
    let presence = client
        .subscribe("duplex.presence.>")
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let store = Arc::new(NatsStore {
        client,
        js,
        hub: hub.downgrade(),
        history_size: config.history_size,
        history_ttl: config.history_ttl,
        max_message_size,
        max_entry_size: config.max_message_size,
        node: hub.node(),
        followed: Mutex::new(HashMap::new()),
        hashes: Mutex::new(HashMap::new()),
        changes: tokio::sync::Mutex::new(()),
    });
    if !hub.attach(Arc::clone(&store) as Arc<dyn Store>) {
        return Err(BackplaneError::AlreadyAttached);
    }
    tracing::info!(url = masked(), engine = "nats", "backplane connected");
    let tasks = vec![
        tokio::spawn(keep(Arc::clone(&store), hub.clone(), state.clone())),
        tokio::spawn(presence_events(presence, Arc::clone(&store), hub.clone())),
    ];
    Ok((tasks, state))
}

impl NatsStore {
    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Followed>> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self, topic: &str) -> stream::Config {
        stream::Config {
            name: stream_name(topic),
            subjects: vec![subject(topic)],
            // NATS takes 0 for no limit: keep one, the offsets live on.
            max_messages: i64::try_from(self.history_size.max(1)).unwrap_or(i64::MAX),
            max_age: self.history_ttl,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            description: Some(format!("duplex topic {topic}")),
            ..Default::default()
        }
    }

    /// The topic's stream, made if there is none.
    async fn stream(&self, topic: &str) -> Result<Stream, HubError> {
        self.js
            .get_or_create_stream(self.config(topic))
            .await
            .map_err(|e| unavailable("opening a topic's stream", e))
    }

    /// The stream's epoch and last offset now.
    async fn standing_of(&self, stream: &mut Stream) -> Result<(Arc<str>, u64), HubError> {
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("reading a stream", e))?;
        Ok((epoch_of(info), info.state.last_sequence))
    }

    async fn publish(&self, topic: &str, message: &Message) -> Result<(Arc<str>, u64), HubError> {
        let (kind, data) = kind_and_bytes(message);
        let mut headers = HeaderMap::new();
        headers.insert(KIND, if kind == b't' { "t" } else { "b" });
        let payload = Bytes::copy_from_slice(data);
        let mut stream = self.stream(topic).await?;
        let ack = match self
            .js
            .publish_with_headers(subject(topic), headers.clone(), payload.clone())
            .await
        {
            Ok(pending) => pending.await,
            Err(e) => return Err(unavailable("publishing", e)),
        };
        let ack = match ack {
            Ok(ack) => ack,
            // The stream went between finding and publishing (a sweep):
            // made again, once.
            Err(_) => {
                stream = self.stream(topic).await?;
                self.js
                    .publish_with_headers(subject(topic), headers, payload)
                    .await
                    .map_err(|e| unavailable("publishing", e))?
                    .await
                    .map_err(|e| unavailable("publishing", e))?
            }
        };
        let (epoch, _) = self.standing_of(&mut stream).await?;
        Ok((epoch, ack.sequence))
    }

    async fn open(&self, topic: &str, since: Option<&Since>) -> Result<Opened, HubError> {
        let mut stream = self.stream(topic).await?;
        let (epoch, last) = self.standing_of(&mut stream).await?;
        let retained = match since {
            Some(s) if s.epoch.as_deref().is_none_or(|e| e == &*epoch) && s.offset < last => {
                self.read(&stream, topic, &epoch, s.offset + 1, last).await
            }
            _ => Vec::new(),
        };
        Ok(Opened::resume(epoch, last, since, retained))
    }

    /// Messages `from..=to` of the stream, [`PAGE`] at most; those it no
    /// longer holds are skipped.
    async fn read(
        &self,
        stream: &Stream,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Vec<Arc<Delivery>> {
        let topic: Arc<str> = topic.into();
        let mut out = Vec::new();
        let mut seq = from;
        while seq <= to && out.len() < PAGE {
            match stream.get_raw_message(seq).await {
                Ok(m) => {
                    let kind = m
                        .headers
                        .get(KIND)
                        .map_or(b'b', |k| k.as_str().bytes().next().unwrap_or(b'b'));
                    if m.payload.len() <= self.max_entry_size
                        && let Some(message) = message_of(kind, m.payload)
                    {
                        out.push(Arc::new(Delivery::new(
                            Arc::clone(&topic),
                            Arc::clone(epoch),
                            seq,
                            message,
                        )));
                    }
                }
                Err(e) => tracing::debug!(seq, error = %e, "not in the stream"),
            }
            seq += 1;
        }
        out
    }

    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        let mut stream = self.stream(topic).await?;
        let (now, _) = self.standing_of(&mut stream).await?;
        if now != *epoch {
            return Ok(Vec::new());
        }
        Ok(self.read(&stream, topic, epoch, from, to).await)
    }

    fn member_subject(topic: &str, member: &Member) -> Option<(String, String)> {
        let json = serde_json::to_string(member).ok()?;
        let id = hash(&json);
        Some((format!("duplexp.{}.{id}", hash(topic)), json))
    }

    async fn joined(&self, topic: &str, member: &Member) {
        let Some((subject, json)) = Self::member_subject(topic, member) else {
            return;
        };
        if let Ok(pending) = self.js.publish(subject, json.clone().into()).await {
            let _ = pending.await;
        }
        let event = presence_payload(self.node, true, &json);
        let _ = self
            .client
            .publish(format!("duplex.presence.{}", hash(topic)), event.into())
            .await;
    }

    async fn left(&self, topic: &str, member: &Member) {
        let Some((subject, json)) = Self::member_subject(topic, member) else {
            return;
        };
        if let Ok(stream) = self.js.get_stream(PRESENCE_STREAM).await {
            let _ = stream.purge().filter(subject).await;
        }
        let event = presence_payload(self.node, false, &json);
        let _ = self
            .client
            .publish(format!("duplex.presence.{}", hash(topic)), event.into())
            .await;
    }

    async fn presence(&self, topic: &str, limit: usize) -> Result<(usize, Vec<Member>), HubError> {
        let stream = self
            .js
            .get_stream(PRESENCE_STREAM)
            .await
            .map_err(|e| unavailable("reading presence", e))?;
        let mut subjects = stream
            .info_with_subjects(format!("duplexp.{}.*", hash(topic)))
            .await
            .map_err(|e| unavailable("reading presence", e))?;
        let mut names = Vec::new();
        while let Some(Ok((name, _))) = subjects.next().await {
            names.push(name);
        }
        let mut members = Vec::new();
        for name in names.iter().take(limit) {
            if let Ok(m) = stream.get_last_raw_message_by_subject(name).await
                && let Ok(member) = serde_json::from_slice(&m.payload)
            {
                members.push(member);
            }
        }
        Ok((names.len(), members))
    }

    /// Publishes this node's members again, before they expire.
    async fn refresh_presence(&self, hub: &Hub) {
        for (topic, members) in hub.all_members() {
            for member in &members {
                if let Some((subject, json)) = Self::member_subject(&topic, member)
                    && let Ok(pending) = self.js.publish(subject, json.into()).await
                {
                    let _ = pending.await;
                }
            }
        }
    }

    /// Starts delivering `topic`'s stream from where it stands now.
    async fn start_following(self: &Arc<Self>, topic: Arc<str>) -> Result<(), HubError> {
        let _changing = self.changes.lock().await;
        if self
            .followed()
            .get(&topic)
            .is_none_or(|f| f.task.is_some() || f.count == 0)
        {
            return Ok(());
        }
        let mut stream = self.stream(&topic).await?;
        let (epoch, last) = self.standing_of(&mut stream).await?;
        let messages = self.consume(&stream, &topic, last + 1).await?;
        let task = tokio::spawn(deliver(
            Arc::clone(self),
            Arc::clone(&topic),
            epoch,
            messages,
        ));
        self.hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash(&topic), Arc::clone(&topic));
        match self.followed().get_mut(&topic) {
            Some(f) => f.task = Some(task),
            None => task.abort(),
        }
        Ok(())
    }

    /// An ordered consumer of the topic's stream from `start`.
    async fn consume(
        &self,
        stream: &Stream,
        topic: &str,
        start: u64,
    ) -> Result<async_nats::jetstream::consumer::push::Ordered, HubError> {
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: subject(topic),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("following a topic", e))?;
        consumer
            .messages()
            .await
            .map_err(|e| unavailable("following a topic", e))
    }

    /// Deletes the streams nobody uses any more (see the module's doc).
    async fn sweep(&self) {
        let mut names = self.js.stream_names();
        let mut candidates = Vec::new();
        while let Some(Ok(name)) = names.next().await {
            if name.starts_with("DUPLEX_") && name != PRESENCE_STREAM {
                candidates.push(name);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ttl = self.history_ttl.as_secs();
        for name in candidates {
            let Ok(mut stream) = self.js.get_stream(&name).await else {
                continue;
            };
            let Ok(info) = stream.info().await else {
                continue;
            };
            let last = u64::try_from(info.state.last_timestamp.unix_timestamp()).unwrap_or(0);
            let idle = now.saturating_sub(last) > ttl;
            if info.state.messages == 0 && info.state.consumer_count == 0 && idle {
                tracing::debug!(stream = name, "deleting a stream nobody uses");
                let _ = self.js.delete_stream(&name).await;
            }
        }
    }
}

/// Delivers one topic's stream to the hub, in order, through the gap
/// rule of [`follow`]; after the consumer fails (the stream was deleted,
/// or NATS lost it), follows the stream as it is again.
async fn deliver(
    store: Arc<NatsStore>,
    topic: Arc<str>,
    mut epoch: Arc<str>,
    mut messages: async_nats::jetstream::consumer::push::Ordered,
) {
    let mut attempt = 0u32;
    loop {
        while let Some(next) = messages.next().await {
            let Some(hub) = store.hub.upgrade() else {
                return;
            };
            let Ok(m) = next else {
                break;
            };
            attempt = 0;
            let Ok(info) = m.info() else { continue };
            let offset = info.stream_sequence;
            let kind = m
                .headers
                .as_ref()
                .and_then(|h| h.get(KIND))
                .map_or(b'b', |k| k.as_str().bytes().next().unwrap_or(b'b'));
            if m.payload.len() > hub.config().max_message_size {
                hub.metrics().backplane_too_large();
                continue;
            }
            let Some(message) = message_of(kind, m.payload.clone()) else {
                continue;
            };
            hub.metrics().backplane_in();
            follow::receive(&*store, &hub, &topic, Arc::clone(&epoch), offset, message).await;
        }
        // Made again, or as it is now: from where this node stands if the
        // epoch is the same, else from the first offset of the new one
        // (the hub tells of the gap when it comes).
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100) * attempt.min(50)).await;
        let Some(hub) = store.hub.upgrade() else {
            return;
        };
        let Ok(mut stream) = store.stream(&topic).await else {
            continue;
        };
        let Ok((now, last)) = store.standing_of(&mut stream).await else {
            continue;
        };
        let start = match hub.expected(&topic) {
            Some((e, delivered)) if e == now => delivered + 1,
            _ => 1,
        };
        if now != epoch {
            tracing::warn!(
                topic = &*topic,
                "a topic's stream was made anew: a new epoch"
            );
            if last == 0 {
                hub.lost(&topic, Arc::clone(&now), 0);
            }
        }
        epoch = now;
        if let Ok(again) = store.consume(&stream, &topic, start).await {
            messages = again;
        }
    }
}

impl History for NatsStore {
    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        NatsStore::range(self, topic, epoch, from, to).await
    }

    async fn standing(
        &self,
        topic: &str,
        _epoch: &Arc<str>,
        _last: u64,
    ) -> Result<Option<(Arc<str>, u64)>, HubError> {
        let mut stream = self.stream(topic).await?;
        self.standing_of(&mut stream).await.map(Some)
    }
}

impl Store for NatsStore {
    fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn follow(self: Arc<Self>, topic: Arc<str>) -> Pending<'static, Result<(), HubError>> {
        let first = {
            let mut followed = self.followed();
            let f = followed.entry(Arc::clone(&topic)).or_default();
            f.count += 1;
            f.task.is_none()
        };
        Box::pin(async move {
            if first {
                self.start_following(topic).await?;
            }
            Ok(())
        })
    }

    fn unfollow(self: Arc<Self>, topic: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let topic = topic.to_owned();
        runtime.spawn(async move {
            let _changing = self.changes.lock().await;
            let task = {
                let mut followed = self.followed();
                let Some(f) = followed.get_mut(topic.as_str()) else {
                    return;
                };
                f.count = f.count.saturating_sub(1);
                if f.count > 0 {
                    return;
                }
                followed.remove(topic.as_str()).and_then(|f| f.task)
            };
            if let Some(task) = task {
                task.abort();
            }
            self.hashes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&hash(&topic));
        });
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Message,
    ) -> Pending<'a, Result<(Arc<str>, u64), HubError>> {
        Box::pin(NatsStore::publish(self, topic, message))
    }

    fn open<'a>(
        &'a self,
        topic: &'a str,
        since: Option<&'a Since>,
    ) -> Pending<'a, Result<Opened, HubError>> {
        Box::pin(NatsStore::open(self, topic, since))
    }

    fn range<'a>(
        &'a self,
        topic: &'a str,
        epoch: &'a Arc<str>,
        from: u64,
        to: u64,
    ) -> Pending<'a, Result<Vec<Arc<Delivery>>, HubError>> {
        Box::pin(NatsStore::range(self, topic, epoch, from, to))
    }

    fn joined<'a>(&'a self, topic: &'a str, member: &'a Member) -> Pending<'a, ()> {
        Box::pin(NatsStore::joined(self, topic, member))
    }

    fn left(self: Arc<Self>, topic: &str, member: Member) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let topic = topic.to_owned();
        runtime.spawn(async move { NatsStore::left(&self, &topic, &member).await });
    }

    fn presence<'a>(
        &'a self,
        topic: &'a str,
        limit: usize,
    ) -> Pending<'a, Result<(usize, Vec<Member>), HubError>> {
        Box::pin(NatsStore::presence(self, topic, limit))
    }
}

/// Says which server this node reaches, every second; renews its
/// presence members, and sweeps streams nobody uses.
async fn keep(store: Arc<NatsStore>, hub: Hub, state: BackplaneState) {
    let mut look = tokio::time::interval(Duration::from_secs(1));
    let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = look.tick() => {
                let info = store.client.server_info();
                let up = store.client.connection_state() == async_nats::connection::State::Connected;
                state.set_masters(vec![Master {
                    address: format!("{}:{}", info.host, info.port),
                    up,
                }]);
            }
            _ = refresh.tick() => store.refresh_presence(&hub).await,
            _ = sweep.tick() => store.sweep().await,
        }
    }
}

/// Joins and leaves of other nodes, for the watchers of followed topics.
async fn presence_events(mut events: async_nats::Subscriber, store: Arc<NatsStore>, hub: Hub) {
    while let Some(event) = events.next().await {
        let Some(h) = event.subject.as_str().strip_prefix("duplex.presence.") else {
            continue;
        };
        let topic = store
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(h)
            .cloned();
        let (
            Some(topic),
            Some(Decoded::Presence {
                node,
                joined,
                member,
            }),
        ) = (topic, decode(&event.payload))
        else {
            continue;
        };
        if node != store.node {
            hub.presence_event(&topic, joined, member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_for_nats_whatever_the_topic() {
        for topic in ["news", "a.b", "a:b", "x".repeat(128).as_str()] {
            let (name, subject) = (stream_name(topic), subject(topic));
            assert_eq!(name.len(), "DUPLEX_".len() + 32, "{topic}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{name}"
            );
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
        }
        assert_ne!(stream_name("a.b"), stream_name("a:b"));
    }
}
