//! The Redis backplane: every node of a cluster assigns the same offsets,
//! serves the same history, and delivers every message in the same order.
//!
//! A topic's state lives in four Redis keys, `duplex:{name}:epoch`,
//! `:offset`, `:stream` and `:presence`. A publish is one Lua script
//! (atomic): it makes the epoch if there is none, `INCR`s the offset,
//! `XADD`s the message to the stream with the id `{offset}-0` (`MAXLEN`
//! [`HubConfig::history_size`](crate::HubConfig::history_size)), sets
//! every key to expire [`history_ttl`](crate::HubConfig::history_ttl)
//! after this publish (the epoch and offset of a topic that a node has
//! subscribers for are kept alive by that node), and `PUBLISH`es the message with its epoch and
//! offset on the channel `duplex:topic:{name}`. As scripts run one at a
//! time, every node receives a topic's messages in offset order, and a
//! node delivers its own publishes when Redis hands them back too, not
//! before: one order for everyone.
//!
//! A subscriber that resumes is subscribed locally first, then reads the
//! stream after its offset (a second script, which also makes the epoch if
//! there is none); the session skips offsets it already sent. Pub/sub is
//! at-most-once: a node that receives offset N+2 after N fills N+1 from the
//! stream before delivering N+2. The age limit is applied on reading: an
//! entry older than the TTL is not served.
//!
//! Presence: each duplex.v1 subscription is a member of the topic's sorted
//! set, scored by when it expires; every node refreshes its own members
//! every [`PRESENCE_REFRESH`] so that those of a node that died leave
//! within [`PRESENCE_TTL`]. Joins and leaves also go out on the topic's
//! channel, for the watchers on other nodes.
//!
//! When Redis is down, publishing and subscribing fail with
//! [`HubError::Unavailable`], and both connections reconnect (the
//! subscription with exponential backoff and jitter, 100 ms to 5 s). An
//! error reply (out of memory, a script error) fails only the command it
//! answers ([`HubError::Refused`]). Once the subscription is back, a node
//! catches up every topic it has subscribers for: it delivers what the
//! stream holds after its last delivery, and tells subscribers of a gap
//! where it does not; a Redis that holds fewer offsets than a node
//! delivered (it came back from an older snapshot) starts the topic's
//! offsets again, so that none is given out twice.
//!
//! A message larger than half of Redis's pub/sub output buffer hard limit
//! (`client-output-buffer-limit pubsub`, 32 MiB by default) is refused
//! before it is sent ([`HubError::TooLarge`], 413 for a `POST`): Redis
//! would drop every node's subscription over it.
//! [`BackplaneState`] says whether both are up now, for a health check
//! (`GET /healthz` of [`HubService`](crate::HubService)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use duplex_ws::{Message, Utf8Bytes};
use futures_util::StreamExt;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use crate::auth::mask_url_password;
use crate::hub::{Delivery, Hub, HubError, Member, Opened, Since, new_epoch, validate_topic};

/// The first bytes of every message payload duplex puts on a channel.
pub const MAGIC: &[u8; 3] = b"DX2";
/// The first bytes of a presence event on a channel.
pub const PRESENCE_MAGIC: &[u8; 3] = b"DXP";
/// Channel names are this prefix and the topic.
pub const CHANNEL_PREFIX: &str = "duplex:topic:";
/// How often a node renews its presence members.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// How long a presence member lasts without being renewed.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How long to wait between attempts to reach Redis again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long connecting to Redis, or one command, may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

const PUBLISH_SCRIPT: &str = r"
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms)
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[8]) then
    return redis.error_reply('TOOMANY topics')
  end
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch)
end
local offset = string.format('%d', redis.call('INCR', KEYS[2]))
local now = string.format('%d', ms)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], offset .. '-0', 'k', ARGV[2], 'd', ARGV[3], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ms + tonumber(ARGV[5]), ARGV[9])
redis.call('PUBLISH', ARGV[6], ARGV[7] .. offset .. ':' .. epoch .. ':' .. ARGV[3])
return {epoch, offset}
";

const OPEN_SCRIPT: &str = r"
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms)
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[5]) then
    return redis.error_reply('TOOMANY topics')
  end
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch, 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[4], ms + tonumber(ARGV[2]), ARGV[6])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local now = string.format('%d', ms)
local since = tonumber(ARGV[3])
local entries = {}
if since >= 0 and since < last then
  entries = redis.call('XRANGE', KEYS[3], string.format('%d', since + 1) .. '-0', '+', 'COUNT', ARGV[4])
end
return {epoch, string.format('%d', last), now, entries}
";

/// Starts a topic's offsets again (a new epoch) when Redis holds fewer
/// than a node delivered in the same epoch: Redis came back from an older
/// snapshot, and would otherwise give out offsets that were used already.
const RESET_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch == ARGV[1] and last < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  redis.call('DEL', KEYS[2], KEYS[3])
  return {ARGV[3], '0'}
end
return {epoch or '', string.format('%d', last)}
";

/// Stream entries read with one command: a resume or a gap of any length
/// costs memory for this many at a time.
pub(crate) const PAGE: usize = 100;

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

fn key(topic: &str, what: &str) -> String {
    format!("duplex:{{{topic}}}:{what}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a node keeps of Redis: the connection for commands, the scripts,
/// the history limits.
#[derive(Debug)]
pub(crate) struct Store {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    state: BackplaneState,
    publish: redis::Script,
    open: redis::Script,
    reset: redis::Script,
    history_size: usize,
    history_ttl_ms: u64,
    node: [u8; 16],
    /// See [`pubsub_limit`].
    max_message_size: usize,
    /// [`HubConfig::max_topics`](crate::HubConfig::max_topics), counted
    /// over every node in [`TOPICS_KEY`].
    max_topics: usize,
}

/// Every topic Redis holds, scored by when it expires: so that
/// `max_topics` bounds the cluster, not each node (a topic is made by the
/// scripts only while fewer are there).
const TOPICS_KEY: &str = "duplex:topics";

/// Whether `e` is Redis's answer to a command (which failed that command)
/// rather than a connection that broke.
fn is_reply(e: &redis::RedisError) -> bool {
    !(e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout())
        && matches!(
            e.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        )
}

/// What Redis assumes when `CONFIG GET` is refused (managed Redis renames
/// it): its default pub/sub output buffer hard limit, 32 MiB.
const DEFAULT_PUBSUB_HARD_LIMIT: usize = 32 << 20;

/// The largest message the backplane may carry, from Redis's
/// `client-output-buffer-limit` for pub/sub clients: Redis drops a
/// subscriber connection whose output buffer passes the hard limit, and
/// with it every message on its way to that node. A message takes room
/// twice there when a node reads it while the next is written, so the
/// limit is half the hard limit (16 MiB by Redis's default of 32 MiB), less
/// the payload's header; without a hard limit, the soft one bounds it the
/// same way; with neither, nothing does.
fn pubsub_limit(config: Option<&str>) -> usize {
    let mut hard = DEFAULT_PUBSUB_HARD_LIMIT;
    if let Some(config) = config {
        let words: Vec<&str> = config.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("pubsub"))
            && let (Some(h), Some(soft)) = (words.get(at + 1), words.get(at + 2))
        {
            let (h, soft) = (size_of_config(h), size_of_config(soft));
            hard = match (h, soft) {
                (Some(0), Some(0)) => return usize::MAX,
                (Some(0), Some(soft)) => soft,
                (Some(h), _) => h,
                _ => DEFAULT_PUBSUB_HARD_LIMIT,
            };
        }
    }
    (hard / 2).saturating_sub(PAYLOAD_HEADER)
}

/// The most bytes duplex puts in front of a payload on a channel: magic,
/// kind, node id, offset and epoch.
const PAYLOAD_HEADER: usize = 3 + 1 + 16 + 64;

/// A size in Redis's configuration: bytes, or with `kb`, `mb`, `gb` (or
/// `k`, `m`, `g`, powers of ten).
fn size_of_config(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: usize = digits.parse().ok()?;
    let scale = match &lower[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

impl Store {
    fn connection(&self) -> Result<MultiplexedConnection, HubError> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(HubError::Unavailable)
    }

    /// Makes a new command connection if there is none; whether there is
    /// one now.
    async fn reconnect(&self, hub: &Hub) -> bool {
        if self.connection().is_ok() {
            return true;
        }
        match connect_commands(&self.client).await {
            Ok(c) => {
                tracing::info!("backplane reconnected");
                *self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(c);
                self.state.set_publisher(true);
                self.refresh_presence(hub).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "backplane down: nothing is published");
                false
            }
        }
    }

    /// Forgets a connection that failed; the keeper makes a new one.
    fn failed(&self, error: &redis::RedisError) {
        tracing::warn!(%error, "Redis command failed; reconnecting");
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.state.set_publisher(false);
    }

    /// The largest message the backplane carries (see
    /// [`pubsub_limit`]).
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Runs `work` on the connection, bounded by [`COMMAND_TIMEOUT`]. An
    /// error reply (out of memory, a script error) fails this command only;
    /// a connection that broke is made anew.
    async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, HubError> {
        let mut connection = self.connection()?;
        match tokio::time::timeout(COMMAND_TIMEOUT, work(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.code() == Some("TOOMANY") => {
                Err(HubError::TooManyTopics(self.max_topics))
            }
            Ok(Err(e)) if is_reply(&e) => {
                tracing::warn!(error = %e, "Redis refused a command");
                Err(HubError::Refused(e.to_string()))
            }
            Ok(Err(e)) => {
                self.failed(&e);
                Err(HubError::Unavailable)
            }
            Err(_) => {
                tracing::warn!("Redis did not answer within {COMMAND_TIMEOUT:?}");
                Err(HubError::Unavailable)
            }
        }
    }

    /// Assigns `message` its offset in Redis and publishes it to every
    /// node.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        message: &Message,
        hub: &Hub,
    ) -> Result<(Arc<str>, u64), HubError> {
        let (kind, data) = kind_and_bytes(message);
        let mut header = Vec::with_capacity(MAGIC.len() + 1 + 16);
        header.extend_from_slice(MAGIC);
        header.push(kind);
        header.extend_from_slice(&self.node);
        let result = self
            .run(async |c| {
                self.publish
                    .key(key(topic, "epoch"))
                    .key(key(topic, "offset"))
                    .key(key(topic, "stream"))
                    .key(TOPICS_KEY)
                    .arg(&*new_epoch())
                    .arg(&[kind][..])
                    .arg(data)
                    .arg(self.history_size)
                    .arg(self.history_ttl_ms)
                    .arg(format!("{CHANNEL_PREFIX}{topic}"))
                    .arg(&header[..])
                    .arg(self.max_topics)
                    .arg(topic)
                    .invoke_async::<(String, u64)>(c)
                    .await
            })
            .await;
        match result {
            Ok((epoch, offset)) => {
                hub.metrics().backplane_out();
                Ok((epoch.into(), offset))
            }
            Err(e) => {
                hub.metrics().backplane_dropped();
                Err(e)
            }
        }
    }

    /// Where `topic` stands in Redis and, with `since`, what it retains
    /// after it.
    pub(crate) async fn open(
        &self,
        topic: &str,
        since: Option<&Since>,
        hub: &Hub,
    ) -> Result<Opened, HubError> {
        let after = since.map_or(-1, |s| i64::try_from(s.offset).unwrap_or(i64::MAX));
        let value: Value = self
            .run(async |c| {
                self.open
                    .key(key(topic, "epoch"))
                    .key(key(topic, "offset"))
                    .key(key(topic, "stream"))
                    .key(TOPICS_KEY)
                    .arg(&*new_epoch())
                    .arg(self.history_ttl_ms)
                    .arg(after)
                    .arg(PAGE)
                    .arg(self.max_topics)
                    .arg(topic)
                    .invoke_async(c)
                    .await
            })
            .await?;
        let bad = || {
            tracing::warn!(topic, "unexpected answer from the open script");
            HubError::Unavailable
        };
        let Value::Array(parts) = value else {
            return Err(bad());
        };
        let [epoch, last, now, entries] = <[Value; 4]>::try_from(parts).map_err(|_| bad())?;
        let epoch: Arc<str> = text(&epoch).ok_or_else(bad)?.into();
        let last: u64 = text(&last).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let now: u64 = text(&now).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let oldest = now.saturating_sub(self.history_ttl_ms);
        let retained = entries_of(topic, &epoch, &entries, oldest, hub);
        Ok(Opened::resume(epoch, last, since, retained))
    }

    /// The stream's messages `from..=to`, [`PAGE`] at most (to fill a gap
    /// in pub/sub, or the rest of a resume).
    pub(crate) async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
        hub: &Hub,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        let value: Value = self
            .run(async |c| {
                redis::cmd("XRANGE")
                    .arg(key(topic, "stream"))
                    .arg(format!("{from}-0"))
                    .arg(format!("{to}-0"))
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(entries_of(topic, epoch, &value, 0, hub))
    }

    /// Adds a member to the topic's presence and tells the other nodes.
    pub(crate) async fn joined(&self, topic: &str, member: &Member, _hub: &Hub) {
        let Ok(json) = serde_json::to_string(member) else {
            return;
        };
        let event = presence_payload(self.node, true, &json);
        let result = self
            .run(async |c| {
                redis::pipe()
                    .cmd("ZADD")
                    .arg(key(topic, "presence"))
                    .arg(now_ms() + PRESENCE_TTL.as_millis() as u64)
                    .arg(&json)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(key(topic, "presence"))
                    .arg(PRESENCE_TTL.as_millis() as u64)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(format!("{CHANNEL_PREFIX}{topic}"))
                    .arg(&event[..])
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await;
        if result.is_err() {
            tracing::info!(topic, "presence join not recorded in Redis");
        }
    }

    /// Removes a member from the topic's presence, in the background (a
    /// subscription ends in a `Drop`).
    pub(crate) fn left(self: &Arc<Self>, topic: &str, member: Member, _hub: &Hub) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(self);
        let topic = topic.to_owned();
        runtime.spawn(async move {
            let Ok(json) = serde_json::to_string(&member) else {
                return;
            };
            let event = presence_payload(store.node, false, &json);
            let _ = store
                .run(async |c| {
                    redis::pipe()
                        .cmd("ZREM")
                        .arg(key(&topic, "presence"))
                        .arg(&json)
                        .ignore()
                        .cmd("PUBLISH")
                        .arg(format!("{CHANNEL_PREFIX}{topic}"))
                        .arg(&event[..])
                        .ignore()
                        .query_async::<()>(c)
                        .await
                })
                .await;
        });
    }

    /// The topic's members on every node: how many, and up to `limit`.
    pub(crate) async fn presence(
        &self,
        topic: &str,
        limit: usize,
    ) -> Result<(usize, Vec<Member>), HubError> {
        let (count, listed): (usize, Vec<String>) = self
            .run(async |c| {
                redis::pipe()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(key(topic, "presence"))
                    .arg("-inf")
                    .arg(now_ms())
                    .ignore()
                    .cmd("ZCARD")
                    .arg(key(topic, "presence"))
                    .cmd("ZRANGE")
                    .arg(key(topic, "presence"))
                    .arg(0)
                    .arg(limit.max(1) - 1)
                    .query_async(c)
                    .await
            })
            .await?;
        let members = listed
            .iter()
            .filter_map(|m| serde_json::from_str(m).ok())
            .take(limit)
            .collect();
        Ok((count, members))
    }

    /// Keeps the epoch and offset of the topics with local subscribers:
    /// a quiet topic that someone follows keeps its offsets, and its
    /// subscribers are not told that messages were lost when its next one
    /// comes (its stream still expires with its messages' age).
    async fn keep_epochs(&self, hub: &Hub) {
        let topics = hub.subscribed_topics();
        if topics.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let until = now_ms() + self.history_ttl_ms;
        for topic in &topics {
            for what in ["epoch", "offset"] {
                pipe.cmd("PEXPIRE")
                    .arg(key(topic, what))
                    .arg(self.history_ttl_ms)
                    .ignore();
            }
            pipe.cmd("ZADD")
                .arg(TOPICS_KEY)
                .arg("XX")
                .arg(until)
                .arg(&**topic)
                .ignore();
        }
        let _ = self.run(async |c| pipe.query_async::<()>(c).await).await;
    }

    /// Renews this node's members in Redis.
    async fn refresh_presence(&self, hub: &Hub) {
        let expiry = now_ms() + PRESENCE_TTL.as_millis() as u64;
        for (topic, members) in hub.all_members() {
            let mut pipe = redis::pipe();
            for member in &members {
                if let Ok(json) = serde_json::to_string(member) {
                    pipe.cmd("ZADD")
                        .arg(key(&topic, "presence"))
                        .arg(expiry)
                        .arg(json)
                        .ignore();
                }
            }
            pipe.cmd("PEXPIRE")
                .arg(key(&topic, "presence"))
                .arg(PRESENCE_TTL.as_millis() as u64)
                .ignore();
            if self
                .run(async |c| pipe.query_async::<()>(c).await)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The text of a Redis string value.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The deliveries of an `XRANGE` answer, those stored at `oldest` (ms) or
/// later; entries that are not duplex's are skipped.
fn entries_of(
    topic: &str,
    epoch: &Arc<str>,
    entries: &Value,
    oldest: u64,
    hub: &Hub,
) -> Vec<Arc<Delivery>> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    let topic: Arc<str> = topic.into();
    let max = hub.config().max_message_size;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let [id, Value::Array(fields)] = &parts[..] else {
            continue;
        };
        let Some(offset) = text(id)
            .and_then(|id| id.strip_suffix("-0").map(str::to_owned))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let (mut kind, mut data, mut at) = (None, None, 0u64);
        for pair in fields.chunks(2) {
            let [name, value] = pair else { continue };
            match (text(name).as_deref(), value) {
                (Some("k"), Value::BulkString(k)) => kind = k.first().copied(),
                (Some("d"), Value::BulkString(d)) => data = Some(d),
                (Some("t"), v) => at = text(v).and_then(|t| t.parse().ok()).unwrap_or(0),
                _ => {}
            }
        }
        let (Some(kind), Some(data)) = (kind, data) else {
            continue;
        };
        if at < oldest || data.len() > max {
            continue;
        }
        let Some(message) = message_of(kind, Bytes::copy_from_slice(data)) else {
            continue;
        };
        out.push(Arc::new(Delivery::new(
            Arc::clone(&topic),
            Arc::clone(epoch),
            offset,
            message,
        )));
    }
    out
}

fn kind_and_bytes(message: &Message) -> (u8, &[u8]) {
    match message {
        Message::Text(text) => (b't', text.as_bytes()),
        Message::Binary(bytes) => (b'b', &bytes[..]),
    }
}

fn message_of(kind: u8, bytes: Bytes) -> Option<Message> {
    match kind {
        b't' => Utf8Bytes::try_from_bytes(bytes).ok().map(Message::Text),
        b'b' => Some(Message::Binary(bytes)),
        _ => None,
    }
}

fn presence_payload(node: [u8; 16], joined: bool, json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRESENCE_MAGIC.len() + 17 + json.len());
    out.extend_from_slice(PRESENCE_MAGIC);
    out.push(if joined { b'j' } else { b'l' });
    out.extend_from_slice(&node);
    out.extend_from_slice(json.as_bytes());
    out
}

/// A payload from a channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A message with its place in the topic.
    Message {
        /// The topic's epoch.
        epoch: String,
        /// The message's offset.
        offset: u64,
        /// The message.
        message: Message,
    },
    /// A presence event of another node (or of this one).
    Presence {
        /// The node that sent it.
        node: [u8; 16],
        /// Joined, or left.
        joined: bool,
        /// Who.
        member: Member,
    },
}

/// Encodes a message as the publish script does: magic, kind, node id,
/// `{offset}:{epoch}:`, payload. For the unit tests of [`decode`] only:
/// production payloads are the script's, and `tests/redis.rs` checks that
/// `decode` reads those.
#[cfg(test)]
pub(crate) fn encode(node: [u8; 16], epoch: &str, offset: u64, message: &Message) -> Bytes {
    let (kind, bytes) = kind_and_bytes(message);
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + node.len() + 32 + bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&node);
    out.extend_from_slice(format!("{offset}:{epoch}:").as_bytes());
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// Decodes a payload from a channel; `None` for anything that is not a
/// well-formed duplex payload (another program's, or text that is not
/// UTF-8).
pub fn decode(payload: &[u8]) -> Option<Decoded> {
    if let Some(rest) = payload.strip_prefix(PRESENCE_MAGIC) {
        let (&kind, rest) = rest.split_first()?;
        let node: [u8; 16] = rest.get(..16)?.try_into().ok()?;
        let member: Member = serde_json::from_slice(&rest[16..]).ok()?;
        let joined = match kind {
            b'j' => true,
            b'l' => false,
            _ => return None,
        };
        return Some(Decoded::Presence {
            node,
            joined,
            member,
        });
    }
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let rest = rest.get(16..)?;
    // The offset and the epoch are short: look for them in the first bytes.
    let head = &rest[..rest.len().min(64)];
    let colon = head.iter().position(|&b| b == b':')?;
    let offset: u64 = std::str::from_utf8(&head[..colon]).ok()?.parse().ok()?;
    let after = &rest[colon + 1..];
    let head = &after[..after.len().min(48)];
    let colon = head.iter().position(|&b| b == b':')?;
    let epoch = std::str::from_utf8(&head[..colon]).ok()?.to_owned();
    let message = message_of(kind, Bytes::copy_from_slice(&after[colon + 1..]))?;
    Some(Decoded::Message {
        epoch,
        offset,
        message,
    })
}

fn message_len(message: &Message) -> usize {
    kind_and_bytes(message).1.len()
}

/// Whether a payload surely carries a message over `max` bytes (its
/// header not counted, taking the offset and epoch at their longest), to
/// drop it before copying it; the exact check follows the decoding.
fn too_large(payload: &[u8], max: usize) -> bool {
    payload.len().saturating_sub(MAGIC.len() + 1 + 16 + 64) > max
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

    /// Whether both connections to Redis, the one for commands and the
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
    /// Connects `hub` to the Redis at `url` (`redis://host:port/db`): from
    /// now on its offsets and history live there. Fails, with the URL and
    /// the reason, if Redis cannot be reached now; once started, it
    /// reconnects by itself.
    pub async fn redis(hub: &Hub, url: &str) -> Result<Backplane, BackplaneError> {
        let client = redis::Client::open(url).map_err(|e| BackplaneError::InvalidUrl {
            url: mask_url_password(url),
            reason: e.to_string(),
        })?;
        let unreachable = |reason: String| BackplaneError::Unreachable {
            url: mask_url_password(url),
            reason,
        };
        let mut connection = connect_commands(&client).await.map_err(unreachable)?;
        let subscriber = connect_subscriber(&client).await.map_err(unreachable)?;
        let limits: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("client-output-buffer-limit")
            .query_async(&mut connection)
            .await;
        let max_message_size = match &limits {
            Ok(pair) => pubsub_limit(pair.get(1).map(String::as_str)),
            Err(e) => {
                tracing::info!(error = %e, "CONFIG GET refused: taking Redis's default pub/sub buffer limit (32 MiB)");
                pubsub_limit(None)
            }
        };
        if hub.config().max_message_size > max_message_size {
            tracing::warn!(
                max_message_size = hub.config().max_message_size,
                backplane = max_message_size,
                "messages over {max_message_size} bytes are refused (413): Redis's pub/sub output \
                 buffer limit (client-output-buffer-limit pubsub) would cut every node's \
                 subscription over them"
            );
        }
        let state = BackplaneState::connected();
        let config = hub.config();
        let store = Arc::new(Store {
            client: client.clone(),
            connection: Mutex::new(Some(connection)),
            state: state.clone(),
            publish: redis::Script::new(PUBLISH_SCRIPT),
            open: redis::Script::new(OPEN_SCRIPT),
            reset: redis::Script::new(RESET_SCRIPT),
            history_size: config.history_size,
            history_ttl_ms: u64::try_from(config.history_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            node: hub.node(),
            max_message_size,
            max_topics: config.max_topics,
        });
        if !hub.attach(Arc::clone(&store)) {
            return Err(BackplaneError::AlreadyAttached);
        }
        tracing::info!(url = mask_url_password(url), "backplane connected");
        let tasks = vec![
            tokio::spawn(keep(Arc::clone(&store), hub.clone())),
            tokio::spawn(subscribe_loop(client, subscriber, hub.clone(), store)),
        ];
        Ok(Backplane { tasks, state })
    }

    /// Whether the backplane reaches Redis now, as a handle that stays
    /// current.
    pub fn state(&self) -> BackplaneState {
        self.state.clone()
    }
}

async fn connect_commands(client: &redis::Client) -> Result<MultiplexedConnection, String> {
    within_timeout(async {
        let mut c = client.get_multiplexed_async_connection().await?;
        c.set_response_timeout(COMMAND_TIMEOUT);
        Ok(c)
    })
    .await
}

async fn connect_subscriber(client: &redis::Client) -> Result<redis::aio::PubSub, String> {
    within_timeout(async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")).await?;
        Ok(pubsub)
    })
    .await
}

/// `work` bounded by [`COMMAND_TIMEOUT`], its error as text.
async fn within_timeout<T>(work: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Keeps the command connection: pings it every [`RECONNECT_DELAY`] (so
/// that the state is current for health checks), makes a new one when it
/// failed, renews this node's presence members, and keeps the epoch of
/// every topic with local subscribers from expiring.
async fn keep(store: Arc<Store>, hub: Hub) {
    let mut last_refresh = tokio::time::Instant::now();
    // Often enough that neither a member nor an epoch in use expires.
    let refresh = PRESENCE_REFRESH
        .min(Duration::from_millis(store.history_ttl_ms / 3))
        .max(RECONNECT_DELAY);
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        if store.connection().is_err() {
            store.reconnect(&hub).await;
            continue;
        }
        let _ = store
            .run(async |c| redis::cmd("PING").query_async::<()>(c).await)
            .await;
        if last_refresh.elapsed() >= refresh {
            last_refresh = tokio::time::Instant::now();
            store.refresh_presence(&hub).await;
            store.keep_epochs(&hub).await;
        }
    }
}

/// Delivers every node's messages, in the order Redis hands them over,
/// filling gaps from the stream; resubscribes when the connection ends.
async fn subscribe_loop(
    client: redis::Client,
    pubsub: redis::aio::PubSub,
    hub: Hub,
    store: Arc<Store>,
) {
    let node = hub.node();
    let max_message_size = hub.config().max_message_size;
    let mut pubsub = Some(pubsub);
    let mut attempt = 0;
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match connect_subscriber(&client).await {
                Ok(p) => {
                    tracing::info!("backplane subscriber reconnected");
                    attempt = 0;
                    catch_up(&store, &hub).await;
                    store.state.set_subscriber(true);
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backplane down; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
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
                Some(Decoded::Message { message, .. })
                    if message_len(&message) > max_message_size =>
                {
                    hub.metrics().backplane_too_large();
                    tracing::warn!(
                        topic,
                        "dropped a message from the backplane over the message size limit"
                    );
                }
                Some(Decoded::Message {
                    epoch,
                    offset,
                    message,
                }) => {
                    hub.metrics().backplane_in();
                    receive(&*store, &hub, topic, epoch.into(), offset, message).await;
                }
                Some(Decoded::Presence {
                    node: from,
                    joined,
                    member,
                }) => {
                    if from != node {
                        hub.presence_event(topic, joined, member);
                    }
                }
                None => tracing::debug!(channel = msg.get_channel_name(), "not a duplex payload"),
            }
        }
        store.state.set_subscriber(false);
        tracing::warn!("backplane subscription ended; reconnecting");
        tokio::time::sleep(backoff(0)).await;
    }
}

/// Delivers `from..=to` of `topic` from the stream: pub/sub lost them.
/// Where a node fills a gap in pub/sub from: the topic's stream in Redis
/// (or, in the tests, one that loses and fails as a test says).
pub(crate) trait History {
    /// The retained messages `from..=to` of `topic` in `epoch`, oldest
    /// first, a page at most.
    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
        hub: &Hub,
    ) -> Result<Vec<Arc<Delivery>>, HubError>;
}

impl History for Store {
    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
        hub: &Hub,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        Store::range(self, topic, epoch, from, to, hub).await
    }
}

/// A message from pub/sub: first what it skipped, from `history`, then
/// the message; the hub drops what it delivered already and reports as a
/// gap what neither brought.
async fn receive(
    history: &impl History,
    hub: &Hub,
    topic: &str,
    epoch: Arc<str>,
    offset: u64,
    message: Message,
) {
    if let Some((seen, last)) = hub.expected(topic)
        && seen == epoch
        && offset > last + 1
    {
        fill(history, hub, topic, &epoch, last + 1, offset - 1).await;
    }
    hub.deliver(Arc::new(Delivery::new(
        topic.into(),
        epoch,
        offset,
        message,
    )));
}

/// Delivers `from..=to` of the stream, a page at a time; what the stream
/// no longer holds the hub reports as a gap when the next message comes.
async fn fill(
    history: &impl History,
    hub: &Hub,
    topic: &str,
    epoch: &Arc<str>,
    from: u64,
    to: u64,
) {
    tracing::info!(topic, from, to, "filling a gap in pub/sub from the stream");
    let mut from = from;
    while from <= to {
        match history.range(topic, epoch, from, to, hub).await {
            Ok(missed) => {
                let Some(last) = missed.last().map(|d| d.offset()) else {
                    break;
                };
                for delivery in missed {
                    hub.deliver(delivery);
                }
                from = last + 1;
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot fill a gap: messages lost");
                break;
            }
        }
    }
}

/// After the subscription to Redis was lost and made again: what was
/// published meanwhile reached no node by pub/sub. For every topic with
/// local subscribers, delivers what the stream holds after this node's
/// last delivery, and tells the subscribers of a gap where it does not
/// (trimmed or expired meanwhile), where Redis lost the topic (a new
/// epoch), or where Redis went back in time (restarted from an older
/// snapshot: its offsets start again, so that none is given out twice).
async fn catch_up(store: &Store, hub: &Hub) {
    // Redis came back for pub/sub: so it has, most likely, for commands.
    if !store.reconnect(hub).await {
        tracing::warn!("cannot catch up after reconnecting: the next messages will fill gaps");
        return;
    }
    for topic in hub.subscribed_topics() {
        let Some((epoch, last)) = hub.expected(&topic) else {
            continue;
        };
        let reset: Result<(String, u64), HubError> = store
            .run(async |c| {
                store
                    .reset
                    .key(key(&topic, "epoch"))
                    .key(key(&topic, "offset"))
                    .key(key(&topic, "stream"))
                    .arg(&*epoch)
                    .arg(last)
                    .arg(&*new_epoch())
                    .arg(store.history_ttl_ms)
                    .invoke_async(c)
                    .await
            })
            .await;
        let (now_epoch, now_last) = match reset {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(topic = &*topic, error = %e, "cannot catch up a topic after reconnecting");
                continue;
            }
        };
        if now_epoch.is_empty() {
            // Redis lost the topic: offsets start again with the next
            // publish, whose new epoch tells every subscriber.
            continue;
        }
        if *now_epoch != *epoch {
            tracing::warn!(
                topic = &*topic,
                "Redis lost or reset the topic's offsets: telling subscribers"
            );
            hub.lost(&topic, now_epoch.into(), now_last);
            continue;
        }
        if now_last > last {
            fill(store, hub, &topic, &epoch, last + 1, now_last).await;
            if hub.expected(&topic).is_some_and(|(_, l)| l < now_last) {
                // The stream no longer holds the end of it.
                hub.lost(&topic, epoch, now_last);
            }
        }
    }
}

/// How long to wait before the `attempt`th try to reach Redis again:
/// exponential from 100 ms to 5 s, with full jitter, so that the nodes of
/// a cluster do not all come back at once.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_message_is_half_of_redis_pubsub_hard_limit() {
        let redis_default = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(
            pubsub_limit(Some(redis_default)),
            (16 << 20) - PAYLOAD_HEADER
        );
        assert_eq!(
            pubsub_limit(None),
            (16 << 20) - PAYLOAD_HEADER,
            "CONFIG refused"
        );
        assert_eq!(
            pubsub_limit(Some("pubsub 1mb 256kb 60")),
            (512 << 10) - PAYLOAD_HEADER
        );
        assert_eq!(
            pubsub_limit(Some("pubsub 0 8mb 60")),
            (4 << 20) - PAYLOAD_HEADER,
            "only a soft limit"
        );
        assert_eq!(pubsub_limit(Some("pubsub 0 0 0")), usize::MAX, "no limit");
        assert_eq!(size_of_config("64m"), Some(64_000_000));
        assert_eq!(size_of_config("2GB"), Some(2 << 30));
        assert_eq!(size_of_config("lots"), None);
    }

    #[test]
    fn payloads_round_trip() {
        let node = [7u8; 16];
        for message in [
            Message::text("héllo: a:b"),
            Message::binary(vec![0u8, 255, 1]),
            Message::text(""),
        ] {
            assert_eq!(
                decode(&encode(node, "0123abcd", 42, &message)),
                Some(Decoded::Message {
                    epoch: "0123abcd".into(),
                    offset: 42,
                    message
                })
            );
        }
        let member = Member {
            client: "c-1".into(),
            user: Some("alice".into()),
        };
        let json = serde_json::to_string(&member).unwrap();
        assert_eq!(
            decode(&presence_payload(node, false, &json)),
            Some(Decoded::Presence {
                node,
                joined: false,
                member
            })
        );
    }

    #[test]
    fn the_size_cap_counts_the_message_not_the_header() {
        let node = [9u8; 16];
        let at_limit = encode(
            node,
            &"e".repeat(40),
            u64::MAX,
            &Message::binary(vec![0u8; 100]),
        );
        assert!(!too_large(&at_limit, 100));
        let over = encode(node, "e", 1, &Message::text("x".repeat(200)));
        assert!(too_large(&over, 100));
        assert!(!too_large(b"", 0));
    }

    #[test]
    fn foreign_or_broken_payloads_are_ignored() {
        let node = [1u8; 16];
        let good = encode(node, "e", 5, &Message::text("x"));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&good[..10]), None, "truncated node id");
        let mut bad_kind = good.to_vec();
        bad_kind[3] = b'z';
        assert_eq!(decode(&bad_kind), None);
        let mut bad_utf8 = encode(node, "e", 5, &Message::binary(vec![0xff, 0xfe])).to_vec();
        bad_utf8[3] = b't';
        assert_eq!(decode(&bad_utf8), None);
        let mut bad_offset = good.to_vec();
        bad_offset[20] = b'x';
        assert_eq!(decode(&bad_offset), None);
        assert_eq!(decode(b"DXPj0123456789abcdef{}"), None);
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

    mod lossy_pubsub {
        //! Every offset once, or an explicit gap: a node receiving one
        //! topic over a pub/sub that drops, repeats and delays messages,
        //! and filling from a stream that has lost its oldest and may fail,
        //! hands a duplex.v1 subscription each offset once and in order, or
        //! says where a run of them was lost, and says so only when the
        //! stream did not have them.

        use super::*;
        use crate::hub::{HubConfig, Inbox, Queued};
        use proptest::prelude::*;
        use std::sync::atomic::AtomicUsize;

        /// The topic's stream: offsets `1..=last`, of which those up to
        /// `trimmed` are gone; every `fail_every`th read fails.
        struct FakeStream {
            epoch: Arc<str>,
            trimmed: u64,
            fail_every: usize,
            reads: AtomicUsize,
            failed: AtomicBool,
        }

        impl History for FakeStream {
            async fn range(
                &self,
                topic: &str,
                epoch: &Arc<str>,
                from: u64,
                to: u64,
                _hub: &Hub,
            ) -> Result<Vec<Arc<Delivery>>, HubError> {
                let read = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
                if self.fail_every > 0 && read.is_multiple_of(self.fail_every) {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(HubError::Unavailable);
                }
                assert_eq!(epoch, &self.epoch);
                Ok((from.max(self.trimmed + 1)..=to)
                    .take(PAGE)
                    .map(|offset| delivery(topic, epoch, offset))
                    .collect())
            }
        }

        fn delivery(topic: &str, epoch: &Arc<str>, offset: u64) -> Arc<Delivery> {
            Arc::new(Delivery::new(
                topic.into(),
                Arc::clone(epoch),
                offset,
                Message::text(format!("m{offset}")),
            ))
        }

        #[derive(Debug, Clone, Copy)]
        enum Fate {
            Delivered,
            Dropped,
            Repeated,
            /// Arrives this many messages later.
            Delayed(usize),
        }

        fn fate() -> impl Strategy<Value = Fate> {
            prop_oneof![
                6 => Just(Fate::Delivered),
                2 => Just(Fate::Dropped),
                1 => Just(Fate::Repeated),
                1 => (1usize..5).prop_map(Fate::Delayed),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn every_offset_once_or_an_explicit_gap(
                fates in proptest::collection::vec(fate(), 1..150),
                trimmed in 0u64..120,
                fail_every in prop_oneof![Just(0usize), 1usize..5],
            ) {
                let n = fates.len() as u64 + 1;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let epoch: Arc<str> = "e".into();
                let stream = FakeStream {
                    epoch: Arc::clone(&epoch),
                    trimmed: trimmed.min(n),
                    fail_every,
                    reads: AtomicUsize::new(0),
                    failed: AtomicBool::new(false),
                };
                // What pub/sub hands over: offset 1, then 2..=n as fated,
                // then n + 1 (the next message, which shows any gap).
                let mut wire: Vec<u64> = vec![1];
                let mut delayed: Vec<(usize, u64)> = Vec::new();
                for (i, fate) in fates.iter().enumerate() {
                    let offset = i as u64 + 2;
                    match fate {
                        Fate::Delivered => wire.push(offset),
                        Fate::Dropped => {}
                        Fate::Repeated => wire.extend([offset, offset]),
                        Fate::Delayed(k) => delayed.push((wire.len() + k, offset)),
                    }
                    delayed.retain(|&(at, offset)| {
                        if at <= wire.len() { wire.push(offset); false } else { true }
                    });
                }
                wire.extend(delayed.iter().map(|&(_, offset)| offset));
                wire.push(n + 1);

                let hub = Hub::new(HubConfig::default().queue(10_000));
                let (inbox, mut rx) = Inbox::new(10_000);
                let (_membership, _) = runtime
                    .block_on(hub.open("t", &inbox, None, None, false, None))
                    .unwrap();
                for &offset in &wire {
                    runtime.block_on(receive(
                        &stream,
                        &hub,
                        "t",
                        Arc::clone(&epoch),
                        offset,
                        Message::text(format!("m{offset}")),
                    ));
                }

                // What a duplex.v1 session makes of the queue.
                let (mut last, mut received, mut reported) = (0u64, Vec::new(), Vec::new());
                while let Ok(item) = rx.try_recv() {
                    match item {
                        Queued::Message(d) if d.offset() <= last => {}
                        Queued::Message(d) => {
                            prop_assert_eq!(d.offset(), last + 1, "skipped without a gap");
                            prop_assert_eq!(d.message(), &Message::text(format!("m{}", d.offset())));
                            last = d.offset();
                            received.push(last);
                        }
                        Queued::Gap(gap) => {
                            prop_assert!(gap.offset > last, "a gap behind what came");
                            reported.extend(last + 1..=gap.offset);
                            last = gap.offset;
                        }
                        Queued::Presence(_) => {}
                    }
                }
                // Every offset, received or inside a reported gap.
                let mut all: Vec<u64> = received.iter().chain(&reported).copied().collect();
                all.sort_unstable();
                prop_assert_eq!(all, (1..=n + 1).collect::<Vec<_>>());
                // Reported lost only what the stream could not give.
                if !stream.failed.load(Ordering::Relaxed) {
                    for offset in &reported {
                        prop_assert!(
                            *offset <= stream.trimmed,
                            "{} reported lost, but the stream had it", offset
                        );
                    }
                }
            }
        }
    }
}
