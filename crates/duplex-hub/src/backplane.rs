//! The Redis backplane: every message published on one node reaches the
//! subscribers on every node.
//!
//! Each node publishes its messages to the Redis channel
//! `duplex:topic:{name}` and pattern-subscribes to `duplex:topic:*`. A
//! payload on the wire is [`MAGIC`], one kind byte (`t` text, `b` binary),
//! the 16-byte id of the node that published it, then the message bytes. A
//! node delivers its own messages locally at once and skips them when Redis
//! hands them back, so each subscriber gets each message once.
//!
//! Publishing never waits for Redis: messages go through a bounded queue to
//! one task that sends them; when the queue is full or Redis is down they are
//! dropped and counted (`duplex_backplane_dropped_total`), and both tasks
//! reconnect every second until Redis is back. Redis pub/sub is itself
//! at-most-once, so a backplane does not promise more.
//!
//! [`BackplaneState`] says whether both connections are up now, for a
//! health check (`GET /healthz` of [`HubService`](crate::HubService)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use duplex::{Message, Utf8Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::mask_url_password;
use crate::hub::{Hub, validate_topic};
use crate::metrics::Metrics;

/// The first bytes of every payload duplex puts on a Redis channel.
pub const MAGIC: &[u8; 3] = b"DX1";
/// Channel names are this prefix and the topic.
pub const CHANNEL_PREFIX: &str = "duplex:topic:";
/// Messages waiting to go to Redis, at most, before new ones are dropped.
const OUTBOUND_QUEUE: usize = 4096;
/// How long to wait between attempts to reach Redis again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the backplane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The Redis URL does not parse.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as given, its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis could not be reached, or refused the subscription.
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL as given, its password masked.
        url: String,
        /// The error.
        reason: String,
    },
    /// The hub already has a backplane.
    #[error("the hub already has a backplane")]
    AlreadyAttached,
}

/// A message on its way out, with its topic.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    queue: mpsc::Sender<(String, Bytes)>,
    node: [u8; 16],
}

impl Outbound {
    pub(crate) fn send(&self, topic: &str, message: &Message, metrics: &Metrics) {
        let payload = encode(self.node, message);
        if self.queue.try_send((topic.to_owned(), payload)).is_err() {
            metrics.backplane_dropped();
            tracing::debug!(
                topic,
                "backplane queue full or closed: message not sent to other nodes"
            );
        }
    }
}

/// Encodes a message for the wire: magic, kind, node id, payload.
pub fn encode(node: [u8; 16], message: &Message) -> Bytes {
    let (kind, bytes) = match message {
        Message::Text(text) => (b't', text.as_bytes()),
        Message::Binary(bytes) => (b'b', &bytes[..]),
    };
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + node.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&node);
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// Decodes a payload from the wire into the publishing node's id and the
/// message; `None` for anything that is not a well-formed duplex payload
/// (another program's, or text that is not UTF-8).
pub fn decode(payload: &[u8]) -> Option<([u8; 16], Message)> {
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let node: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let bytes = Bytes::copy_from_slice(&rest[16..]);
    let message = match kind {
        b't' => Message::Text(Utf8Bytes::try_from_bytes(bytes).ok()?),
        b'b' => Message::Binary(bytes),
        _ => return None,
    };
    Some((node, message))
}

/// Whether a payload carries a message over `max` bytes (its header, the
/// magic, the kind and the node id, not counted).
fn too_large(payload: &[u8], max: usize) -> bool {
    payload.len().saturating_sub(MAGIC.len() + 1 + 16) > max
}

/// Whether a [`Backplane`] reaches Redis now: cheap to clone, and it
/// follows the backplane as it loses Redis and reconnects.
#[derive(Debug, Clone)]
pub struct BackplaneState {
    inner: Arc<Connections>,
}

#[derive(Debug)]
struct Connections {
    publisher: AtomicBool,
    subscriber: AtomicBool,
}

impl BackplaneState {
    fn connected() -> BackplaneState {
        BackplaneState {
            inner: Arc::new(Connections {
                publisher: AtomicBool::new(true),
                subscriber: AtomicBool::new(true),
            }),
        }
    }

    /// Whether both connections to Redis, the one that publishes and the
    /// one that receives, are up.
    pub fn is_connected(&self) -> bool {
        self.inner.publisher.load(Ordering::Relaxed)
            && self.inner.subscriber.load(Ordering::Relaxed)
    }

    fn set_publisher(&self, up: bool) {
        self.inner.publisher.store(up, Ordering::Relaxed);
    }

    fn set_subscriber(&self, up: bool) {
        self.inner.subscriber.store(up, Ordering::Relaxed);
    }
}

/// The running backplane; dropping it stops its tasks.
#[derive(Debug)]
pub struct Backplane {
    tasks: Vec<JoinHandle<()>>,
    state: BackplaneState,
}

impl Drop for Backplane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Backplane {
    /// Connects `hub` to the Redis at `url` (`redis://host:port/db`) and
    /// starts relaying. Fails, with the URL and the reason, if Redis cannot
    /// be reached now; once started, it reconnects by itself.
    pub async fn redis(hub: &Hub, url: &str) -> Result<Backplane, BackplaneError> {
        let client = redis::Client::open(url).map_err(|e| BackplaneError::InvalidUrl {
            url: mask_url_password(url),
            reason: e.to_string(),
        })?;
        let unreachable = |reason: String| BackplaneError::Unreachable {
            url: mask_url_password(url),
            reason,
        };
        let publisher = connect_publisher(&client).await.map_err(unreachable)?;
        let subscriber = connect_subscriber(&client).await.map_err(unreachable)?;
        let (queue, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        if !hub.attach(Outbound {
            queue,
            node: hub.node(),
        }) {
            return Err(BackplaneError::AlreadyAttached);
        }
        tracing::info!(url = mask_url_password(url), "backplane connected");
        let state = BackplaneState::connected();
        let tasks = vec![
            tokio::spawn(publish_loop(
                client.clone(),
                publisher,
                outbound,
                hub.clone(),
                state.clone(),
            )),
            tokio::spawn(subscribe_loop(
                client,
                subscriber,
                hub.clone(),
                state.clone(),
            )),
        ];
        Ok(Backplane { tasks, state })
    }

    /// Whether the backplane reaches Redis now, as a handle that stays
    /// current.
    pub fn state(&self) -> BackplaneState {
        self.state.clone()
    }
}

async fn connect_publisher(
    client: &redis::Client,
) -> Result<redis::aio::MultiplexedConnection, String> {
    within_connect_timeout(client.get_multiplexed_async_connection()).await
}

async fn connect_subscriber(client: &redis::Client) -> Result<redis::aio::PubSub, String> {
    within_connect_timeout(async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")).await?;
        Ok(pubsub)
    })
    .await
}

/// `work` bounded by [`CONNECT_TIMEOUT`], its error as text.
async fn within_connect_timeout<T>(
    work: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Sends queued messages to Redis. When the connection fails it reconnects
/// every [`RECONNECT_DELAY`], whether or not messages are waiting (so that
/// the state is current for health checks), and drops the messages queued
/// meanwhile: they are not held back for a Redis that may stay down.
async fn publish_loop(
    client: redis::Client,
    connection: redis::aio::MultiplexedConnection,
    mut outbound: mpsc::Receiver<(String, Bytes)>,
    hub: Hub,
    state: BackplaneState,
) {
    let mut connection = Some(connection);
    loop {
        let Some(c) = connection.as_mut() else {
            match connect_publisher(&client).await {
                Ok(c) => {
                    tracing::info!("backplane publisher reconnected");
                    state.set_publisher(true);
                    connection = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backplane down: messages not sent to other nodes");
                    while outbound.try_recv().is_ok() {
                        hub.metrics().backplane_dropped();
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
            continue;
        };
        let Some((topic, payload)) = outbound.recv().await else {
            return;
        };
        let channel = format!("{CHANNEL_PREFIX}{topic}");
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&payload[..])
            .query_async(c)
            .await;
        match sent {
            Ok(_) => hub.metrics().backplane_out(),
            Err(e) => {
                tracing::warn!(error = %e, "backplane publish failed; reconnecting");
                hub.metrics().backplane_dropped();
                state.set_publisher(false);
                connection = None;
            }
        }
    }
}

/// Delivers other nodes' messages locally; resubscribes when the
/// connection ends.
async fn subscribe_loop(
    client: redis::Client,
    pubsub: redis::aio::PubSub,
    hub: Hub,
    state: BackplaneState,
) {
    let node = hub.node();
    let max_message_size = hub.config().max_message_size;
    let mut pubsub = Some(pubsub);
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match connect_subscriber(&client).await {
                Ok(p) => {
                    tracing::info!("backplane subscriber reconnected");
                    state.set_subscriber(true);
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backplane down; retrying");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(msg) = messages.next().await {
            let Some(topic) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                continue;
            };
            if validate_topic(topic).is_err() {
                continue;
            }
            let payload = msg.get_payload_bytes();
            if too_large(payload, max_message_size) {
                // Not decoded (a copy), not queued for every subscriber.
                hub.metrics().backplane_too_large();
                tracing::warn!(
                    topic,
                    bytes = payload.len(),
                    max = max_message_size,
                    "dropped a message from the backplane over the message size limit"
                );
                continue;
            }
            match decode(payload) {
                Some((from, _)) if from == node => {}
                Some((_, message)) => {
                    hub.metrics().backplane_in();
                    hub.deliver(topic, &message);
                }
                None => tracing::debug!(channel = msg.get_channel_name(), "not a duplex payload"),
            }
        }
        state.set_subscriber(false);
        tracing::warn!("backplane subscription ended; reconnecting");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let node = [7u8; 16];
        for message in [
            Message::text("héllo"),
            Message::binary(vec![0u8, 255, 1]),
            Message::text(""),
        ] {
            assert_eq!(decode(&encode(node, &message)), Some((node, message)));
        }
    }

    #[test]
    fn the_size_cap_counts_the_message_not_the_header() {
        let node = [9u8; 16];
        let at_limit = encode(node, &Message::binary(vec![0u8; 100]));
        assert!(!too_large(&at_limit, 100));
        let over = encode(node, &Message::text("x".repeat(101)));
        assert!(too_large(&over, 100));
        assert!(!too_large(b"", 0));
    }

    #[test]
    fn foreign_or_broken_payloads_are_ignored() {
        let node = [1u8; 16];
        let good = encode(node, &Message::text("x"));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&good[..10]), None, "truncated node id");
        let mut bad_kind = good.to_vec();
        bad_kind[3] = b'z';
        assert_eq!(decode(&bad_kind), None);
        let mut bad_utf8 = encode(node, &Message::binary(vec![0xff, 0xfe])).to_vec();
        bad_utf8[3] = b't';
        assert_eq!(decode(&bad_utf8), None);
    }

    #[tokio::test]
    async fn a_bad_url_or_an_absent_redis_fails_at_start() {
        let hub = Hub::new(crate::HubConfig::default());
        let err = Backplane::redis(&hub, "not a url").await.unwrap_err();
        assert!(matches!(err, BackplaneError::InvalidUrl { .. }), "{err}");
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}/");
        let err = Backplane::redis(&hub, &url).await.unwrap_err();
        assert!(matches!(err, BackplaneError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
    }
}
