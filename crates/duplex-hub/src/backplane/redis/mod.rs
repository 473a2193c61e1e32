//! The Redis engine: one server (`redis://`, `rediss://`), the master
//! Sentinel names (`redis+sentinel://`), or a Redis Cluster
//! (`redis+cluster://`, with sharded pub/sub: see `cluster`).
//!
//! A topic's state lives in four keys, `duplex:{name}:epoch`, `:offset`,
//! `:stream` and `:presence`, hash-tagged by the topic so that they share a
//! slot. A publish is one Lua script (`publish.lua`, atomic): it makes the
//! epoch if there is none, `INCR`s the offset, `XADD`s the message to the
//! stream with the id `{offset}-0` (`MAXLEN`
//! [`HubConfig::history_size`](crate::HubConfig::history_size)), sets
//! every key to expire [`history_ttl`](crate::HubConfig::history_ttl)
//! after this publish (the epoch and offset of a topic that a node has
//! subscribers for are kept alive by that node), and `PUBLISH`es the
//! message with its epoch and offset on the channel `duplex:topic:{name}`,
//! which every node receives with one `PSUBSCRIBE` (on a cluster:
//! `SPUBLISH` on `duplex:{name}:channel`, in the topic's slot, which the
//! nodes with subscribers `SSUBSCRIBE` to). A subscription that
//! begins or resumes reads where the topic stands and what it retains
//! with a second script (`open.lua`); the age limit is applied on reading:
//! an entry older than the TTL is not served.
//!
//! Presence: each duplex.v1 subscription is a member of the topic's sorted
//! set, scored by when it expires; every node refreshes its own members
//! every [`PRESENCE_REFRESH`] so that those of a node that died leave
//! within [`PRESENCE_TTL`]. Joins and leaves also go out on the topic's
//! channel, for the watchers on other nodes.
//!
//! When Redis is down, publishing and subscribing fail with
//! [`HubError::Unavailable`], and both connections reconnect (the
//! subscription with exponential backoff and jitter, 100 ms to 5 s), to
//! the master Sentinel names then. An error reply (out of memory, a script
//! error) fails only the command it answers ([`HubError::Refused`]); a
//! `READONLY` reply means the server is a replica now (a failover), and
//! the connection is made anew. Once the subscription is back, a node
//! catches up every topic it has subscribers for (`follow::catch_up`,
//! with `reset.lua`).
//!
//! A message larger than half of Redis's pub/sub output buffer hard limit
//! (`client-output-buffer-limit pubsub`, 32 MiB by default) is refused
//! before it is sent ([`HubError::TooLarge`], 413 for a `POST`): Redis
//! would drop every node's subscription over it (see `limit`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use duplex_ws::Message;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::follow::{self, History, PAGE};
use super::payload::{
    Decoded, MAGIC, decode, kind_and_bytes, message_len, message_of, presence_payload, too_large,
};
use super::state::{BackplaneError, BackplaneState, Master, Started};
use crate::auth::mask_url_password;
use crate::hub::{Delivery, Hub, HubError, Member, Opened, Pending, Since, Store, new_epoch};

mod cluster;
mod commands;
mod limit;
mod target;

use cluster::{Confirmed, Shards};
use commands::Commands;
pub use target::RedisOptions;
use target::{Target, TargetError};

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
/// Pushes from a cluster (messages, subscription confirmations) waiting to
/// be handled; past it they are dropped, and a dropped message is filled
/// from the stream when the next one comes.
const PUSH_QUEUE: usize = 65_536;

/// Every topic Redis holds, scored by when it expires: so that
/// `max_topics` bounds the cluster, not each node (a topic is made by the
/// scripts only while fewer are there).
const TOPICS_KEY: &str = "duplex:topics";

fn key(topic: &str, what: &str) -> String {
    format!("duplex:{{{topic}}}:{what}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How channels and subscriptions are laid out.
#[derive(Debug)]
enum Mode {
    /// One server: every node `PSUBSCRIBE`s to every topic's channel.
    One,
    /// A cluster: a sharded channel per topic, subscribed to by the nodes
    /// that have its subscribers.
    Cluster(Shards),
}

/// What a node keeps of Redis: where it is, the connection for commands,
/// the scripts, the history limits.
#[derive(Debug)]
struct RedisStore {
    target: Target,
    mode: Mode,
    connection: Mutex<Option<Commands>>,
    /// The server the command connection reaches (`host:port`).
    address: Mutex<String>,
    state: BackplaneState,
    publish: redis::Script,
    open: redis::Script,
    reset: redis::Script,
    history_size: usize,
    history_ttl_ms: u64,
    node: [u8; 16],
    /// See [`limit::pubsub_limit`].
    max_message_size: usize,
    /// [`HubConfig::max_message_size`](crate::HubConfig::max_message_size):
    /// a longer entry in a stream is not served.
    max_entry_size: usize,
    /// [`HubConfig::max_topics`](crate::HubConfig::max_topics), counted
    /// over every node in [`TOPICS_KEY`] (on one server; a cluster has no
    /// key every script may touch, and each node counts its own).
    max_topics: usize,
}

/// Whether `e` is Redis's answer to a command (which failed that command)
/// rather than a connection that broke.
fn is_reply(e: &redis::RedisError) -> bool {
    !(e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout())
        && matches!(
            e.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        )
}

/// Starts the engine for `url` on `hub` (see [`Backplane::redis`](super::Backplane::redis)).
pub(super) async fn start(
    hub: &Hub,
    url: &str,
    options: &RedisOptions,
) -> Result<Started, BackplaneError> {
    let masked = || mask_url_password(url);
    let target = Target::parse(url, options).map_err(|e| match e {
        TargetError::Url(reason) => BackplaneError::InvalidUrl {
            url: masked(),
            reason,
        },
        TargetError::Ca(reason) => BackplaneError::InvalidCa {
            url: masked(),
            reason,
        },
    })?;
    let unreachable = |reason: String| BackplaneError::Unreachable {
        url: masked(),
        reason,
    };
    let (mut connection, address, receiving) = match &target {
        Target::Cluster(nodes) => {
            let (tx, rx) = mpsc::channel(PUSH_QUEUE);
            let client = ClusterClientBuilder::new(nodes.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(move |push: PushInfo| tx.try_send(push))
                .connection_timeout(COMMAND_TIMEOUT)
                .response_timeout(COMMAND_TIMEOUT)
                .build()
                .map_err(|e| BackplaneError::InvalidUrl {
                    url: masked(),
                    reason: e.to_string(),
                })?;
            let connection = within_timeout(client.get_async_connection())
                .await
                .map_err(unreachable)?;
            (
                Commands::Cluster(connection),
                String::new(),
                Receiving::Pushes(rx),
            )
        }
        _ => {
            let (connection, address) = connect_commands(&target).await.map_err(unreachable)?;
            let subscriber = connect_subscriber(&target).await.map_err(unreachable)?;
            (connection, address, Receiving::PubSub(subscriber))
        }
    };
    let limits: redis::RedisResult<Vec<String>> = config_get(&mut connection).await;
    let max_message_size = match &limits {
        Ok(pair) => limit::pubsub_limit(pair.get(1).map(String::as_str)),
        Err(e) => {
            tracing::info!(error = %e, "CONFIG GET refused: taking Redis's default pub/sub buffer limit (32 MiB)");
            limit::pubsub_limit(None)
        }
    };
    let config = hub.config();
    if config.max_message_size > max_message_size {
        tracing::warn!(
            max_message_size = config.max_message_size,
            backplane = max_message_size,
            "messages over {max_message_size} bytes are refused (413): Redis's pub/sub output \
             buffer limit (client-output-buffer-limit pubsub) would cut every node's \
             subscription over them"
        );
    }
    let state = BackplaneState::connected(target.engine());
    state.set_masters(match &mut connection {
        Commands::Cluster(c) => cluster::masters(c).await.unwrap_or_default(),
        Commands::Server(_) => vec![Master {
            address: address.clone(),
            up: true,
        }],
    });
    let mode = match &target {
        Target::Cluster(_) => Mode::Cluster(Shards::default()),
        _ => Mode::One,
    };
    let store = Arc::new(RedisStore {
        target,
        mode,
        connection: Mutex::new(Some(connection)),
        address: Mutex::new(address),
        state: state.clone(),
        publish: redis::Script::new(include_str!("publish.lua")),
        open: redis::Script::new(include_str!("open.lua")),
        reset: redis::Script::new(include_str!("reset.lua")),
        history_size: config.history_size,
        history_ttl_ms: u64::try_from(config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        node: hub.node(),
        max_message_size,
        max_entry_size: config.max_message_size,
        max_topics: config.max_topics,
    });
    if !hub.attach(Arc::clone(&store) as Arc<dyn Store>) {
        return Err(BackplaneError::AlreadyAttached);
    }
    tracing::info!(
        url = masked(),
        engine = state.engine(),
        "backplane connected"
    );
    let receiver = match receiving {
        Receiving::PubSub(subscriber) => {
            tokio::spawn(subscribe_loop(subscriber, hub.clone(), Arc::clone(&store)))
        }
        Receiving::Pushes(pushes) => {
            tokio::spawn(receive_pushes(pushes, hub.clone(), Arc::clone(&store)))
        }
    };
    let tasks = vec![tokio::spawn(keep(store, hub.clone())), receiver];
    Ok((tasks, state))
}

/// How a node receives what is published.
enum Receiving {
    /// One `PSUBSCRIBE` on a connection of its own.
    PubSub(redis::aio::PubSub),
    /// The pushes of a cluster connection (RESP3), sharded subscriptions.
    Pushes(mpsc::Receiver<PushInfo>),
}

/// `CONFIG GET client-output-buffer-limit`, from any one node.
async fn config_get(connection: &mut Commands) -> redis::RedisResult<Vec<String>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("client-output-buffer-limit");
    match connection {
        Commands::Server(c) => cmd.query_async(c).await,
        Commands::Cluster(c) => {
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
            let value = c
                .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                .await?;
            redis::from_redis_value(value).map_err(redis::RedisError::from)
        }
    }
}

impl RedisStore {
    /// The channel `topic`'s messages go out on.
    fn channel(&self, topic: &str) -> String {
        match self.mode {
            Mode::One => format!("{CHANNEL_PREFIX}{topic}"),
            Mode::Cluster(_) => cluster::channel(topic),
        }
    }

    /// The command that sends on [`channel`](Self::channel).
    fn publish_command(&self) -> &'static str {
        match self.mode {
            Mode::One => "PUBLISH",
            Mode::Cluster(_) => "SPUBLISH",
        }
    }

    /// The key that counts every topic, where scripts may touch it.
    fn topics_key(&self) -> Option<&'static str> {
        match self.mode {
            Mode::One => Some(TOPICS_KEY),
            Mode::Cluster(_) => None,
        }
    }

    fn connection(&self) -> Result<Commands, HubError> {
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
        match connect_commands(&self.target).await {
            Ok((c, address)) => {
                tracing::info!(address, "backplane reconnected");
                self.state.set_masters(vec![Master {
                    address: address.clone(),
                    up: true,
                }]);
                *self.address.lock().unwrap_or_else(PoisonError::into_inner) = address;
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

    /// Forgets a connection that failed; the keeper makes a new one. A
    /// cluster connection is kept: it repairs its links to each node
    /// itself, and holds the subscriptions.
    fn failed(&self, error: &redis::RedisError) {
        if let Mode::Cluster(_) = self.mode {
            tracing::warn!(%error, "Redis Cluster command failed");
            self.state.set_publisher(false);
            return;
        }
        tracing::warn!(%error, "Redis command failed; reconnecting");
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.state.set_publisher(false);
    }

    /// Runs `work` on the connection, bounded by [`COMMAND_TIMEOUT`]. An
    /// error reply (out of memory, a script error) fails this command only;
    /// a connection that broke, or that reaches a replica now, is made
    /// anew.
    async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut Commands) -> redis::RedisResult<T>,
    ) -> Result<T, HubError> {
        let mut connection = self.connection()?;
        match tokio::time::timeout(COMMAND_TIMEOUT, work(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.code() == Some("TOOMANY") => {
                Err(HubError::TooManyTopics(self.max_topics))
            }
            Ok(Err(e)) if e.code() == Some("READONLY") => {
                // A failover made this server a replica: Sentinel names
                // the new master on reconnecting.
                self.failed(&e);
                Err(HubError::Unavailable)
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

    /// Whether the connection is still good: a `PING`, and behind
    /// Sentinel a `ROLE`, as a failover that makes the master a replica
    /// may not close its connections; on a cluster, the masters, and
    /// whether one is new or up again (a failover): then the topics are
    /// subscribed to again where they are now, and caught up.
    async fn check(&self) -> bool {
        if let Mode::Cluster(_) = self.mode {
            if let Ok(Commands::Cluster(mut c)) = self.connection() {
                let up = cluster::masters_answer(&mut c).await;
                self.state.set_publisher(up);
                self.state.set_subscriber(up);
                if let Some(masters) = cluster::masters(&mut c).await {
                    let before = self.state.masters();
                    let changed = masters.iter().any(|m| m.up && !before.contains(m));
                    self.state.set_masters(masters);
                    if changed && !before.is_empty() {
                        return true;
                    }
                }
            }
            return false;
        }
        let address = self
            .address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !matches!(self.target, Target::Sentinel(_)) {
            let up = self
                .run(async |c| redis::cmd("PING").query_async::<()>(c).await)
                .await
                .is_ok();
            self.state.set_masters(vec![Master { address, up }]);
            return false;
        }
        let role = self
            .run(async |c| redis::cmd("ROLE").query_async::<Value>(c).await)
            .await;
        let master = matches!(&role, Ok(Value::Array(parts)) if parts.first().and_then(text).as_deref() == Some("master"));
        self.state.set_masters(vec![Master {
            address,
            up: master,
        }]);
        if let Ok(Value::Array(parts)) = role
            && parts.first().and_then(text).as_deref() != Some("master")
        {
            let demoted = redis::RedisError::from((
                redis::ErrorKind::Client,
                "the server Sentinel named is no longer the master",
            ));
            self.failed(&demoted);
        }
        false
    }

    async fn publish(&self, topic: &str, message: &Message) -> Result<(Arc<str>, u64), HubError> {
        let (kind, data) = kind_and_bytes(message);
        let mut header = Vec::with_capacity(MAGIC.len() + 1 + 16);
        header.extend_from_slice(MAGIC);
        header.push(kind);
        header.extend_from_slice(&self.node);
        let mut invocation = self.publish.prepare_invoke();
        invocation
            .key(key(topic, "epoch"))
            .key(key(topic, "offset"))
            .key(key(topic, "stream"));
        if let Some(topics) = self.topics_key() {
            invocation.key(topics);
        }
        invocation
            .arg(&*new_epoch())
            .arg(&[kind][..])
            .arg(data)
            .arg(self.history_size)
            .arg(self.history_ttl_ms)
            .arg(self.channel(topic))
            .arg(&header[..])
            .arg(self.max_topics)
            .arg(topic)
            .arg(self.publish_command());
        let (epoch, offset) = self
            .run(async |c| invocation.invoke_async::<(String, u64)>(c).await)
            .await?;
        Ok((epoch.into(), offset))
    }

    async fn open(&self, topic: &str, since: Option<&Since>) -> Result<Opened, HubError> {
        let after = since.map_or(-1, |s| i64::try_from(s.offset).unwrap_or(i64::MAX));
        let mut invocation = self.open.prepare_invoke();
        invocation
            .key(key(topic, "epoch"))
            .key(key(topic, "offset"))
            .key(key(topic, "stream"));
        if let Some(topics) = self.topics_key() {
            invocation.key(topics);
        }
        invocation
            .arg(&*new_epoch())
            .arg(self.history_ttl_ms)
            .arg(after)
            .arg(PAGE)
            .arg(self.max_topics)
            .arg(topic);
        let value: Value = self.run(async |c| invocation.invoke_async(c).await).await?;
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
        let retained = entries_of(topic, &epoch, &entries, oldest, self.max_entry_size);
        Ok(Opened::resume(epoch, last, since, retained))
    }

    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
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
        Ok(entries_of(topic, epoch, &value, 0, self.max_entry_size))
    }

    async fn joined(&self, topic: &str, member: &Member) {
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
                    .cmd(self.publish_command())
                    .arg(self.channel(topic))
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

    async fn left(&self, topic: &str, member: &Member) {
        let Ok(json) = serde_json::to_string(member) else {
            return;
        };
        let event = presence_payload(self.node, false, &json);
        let _ = self
            .run(async |c| {
                redis::pipe()
                    .cmd("ZREM")
                    .arg(key(topic, "presence"))
                    .arg(&json)
                    .ignore()
                    .cmd(self.publish_command())
                    .arg(self.channel(topic))
                    .arg(&event[..])
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await;
    }

    async fn presence(&self, topic: &str, limit: usize) -> Result<(usize, Vec<Member>), HubError> {
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
        let until = now_ms() + self.history_ttl_ms;
        let keep = |pipe: &mut redis::Pipeline, topic: &str| {
            for what in ["epoch", "offset"] {
                pipe.cmd("PEXPIRE")
                    .arg(key(topic, what))
                    .arg(self.history_ttl_ms)
                    .ignore();
            }
        };
        match self.mode {
            Mode::One => {
                let mut pipe = redis::pipe();
                for topic in &topics {
                    keep(&mut pipe, topic);
                    pipe.cmd("ZADD")
                        .arg(TOPICS_KEY)
                        .arg("XX")
                        .arg(until)
                        .arg(&**topic)
                        .ignore();
                }
                let _ = self.run(async |c| pipe.query_async::<()>(c).await).await;
            }
            // A pipeline goes to one slot's owner: one per topic.
            Mode::Cluster(_) => {
                for topic in &topics {
                    let mut pipe = redis::pipe();
                    keep(&mut pipe, topic);
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

impl Store for RedisStore {
    fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn follow(self: Arc<Self>, topic: Arc<str>) -> Pending<'static, Result<(), HubError>> {
        let Mode::Cluster(shards) = &self.mode else {
            return Box::pin(async { Ok(()) });
        };
        if !shards.add(&topic) {
            return Box::pin(async { Ok(()) });
        }
        Box::pin(async move {
            let (Mode::Cluster(shards), Commands::Cluster(mut c)) =
                (&self.mode, self.connection()?)
            else {
                return Ok(());
            };
            shards.subscribe(&mut c, &topic).await
        })
    }

    fn unfollow(self: Arc<Self>, topic: &str) {
        let (Mode::Cluster(_), Ok(runtime)) = (&self.mode, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let topic = topic.to_owned();
        runtime.spawn(async move {
            if let (Mode::Cluster(shards), Ok(Commands::Cluster(c))) =
                (&self.mode, self.connection())
            {
                shards.remove(c, &topic).await;
            }
        });
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Message,
    ) -> Pending<'a, Result<(Arc<str>, u64), HubError>> {
        Box::pin(RedisStore::publish(self, topic, message))
    }

    fn open<'a>(
        &'a self,
        topic: &'a str,
        since: Option<&'a Since>,
    ) -> Pending<'a, Result<Opened, HubError>> {
        Box::pin(RedisStore::open(self, topic, since))
    }

    fn range<'a>(
        &'a self,
        topic: &'a str,
        epoch: &'a Arc<str>,
        from: u64,
        to: u64,
    ) -> Pending<'a, Result<Vec<Arc<Delivery>>, HubError>> {
        Box::pin(RedisStore::range(self, topic, epoch, from, to))
    }

    fn joined<'a>(&'a self, topic: &'a str, member: &'a Member) -> Pending<'a, ()> {
        Box::pin(RedisStore::joined(self, topic, member))
    }

    fn left(self: Arc<Self>, topic: &str, member: Member) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let topic = topic.to_owned();
        runtime.spawn(async move { RedisStore::left(&self, &topic, &member).await });
    }

    fn presence<'a>(
        &'a self,
        topic: &'a str,
        limit: usize,
    ) -> Pending<'a, Result<(usize, Vec<Member>), HubError>> {
        Box::pin(RedisStore::presence(self, topic, limit))
    }
}

impl History for RedisStore {
    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        RedisStore::range(self, topic, epoch, from, to).await
    }

    async fn standing(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        last: u64,
    ) -> Result<Option<(Arc<str>, u64)>, HubError> {
        let (epoch, last): (String, u64) = self
            .run(async |c| {
                self.reset
                    .key(key(topic, "epoch"))
                    .key(key(topic, "offset"))
                    .key(key(topic, "stream"))
                    .arg(&**epoch)
                    .arg(last)
                    .arg(&*new_epoch())
                    .arg(self.history_ttl_ms)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok((!epoch.is_empty()).then(|| (epoch.into(), last)))
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
/// later and no longer than `max`; entries that are not duplex's are
/// skipped.
fn entries_of(
    topic: &str,
    epoch: &Arc<str>,
    entries: &Value,
    oldest: u64,
    max: usize,
) -> Vec<Arc<Delivery>> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    let topic: Arc<str> = topic.into();
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

/// A command connection to the server `target` names now, and its
/// `host:port`.
async fn connect_commands(target: &Target) -> Result<(Commands, String), String> {
    within_timeout(async {
        let client = target.client().await?;
        let address = client.get_connection_info().addr().to_string();
        let mut c: MultiplexedConnection = client.get_multiplexed_async_connection().await?;
        c.set_response_timeout(COMMAND_TIMEOUT);
        Ok((Commands::Server(c), address))
    })
    .await
}

async fn connect_subscriber(target: &Target) -> Result<redis::aio::PubSub, String> {
    within_timeout(async {
        let client = target.client().await?;
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
async fn keep(store: Arc<RedisStore>, hub: Hub) {
    let mut last_refresh = tokio::time::Instant::now();
    // Often enough that neither a member nor an epoch in use expires.
    let refresh = PRESENCE_REFRESH
        .min(Duration::from_millis(store.history_ttl_ms / 3))
        .max(RECONNECT_DELAY);
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        if store.connection().is_err() {
            if !store.reconnect(&hub).await {
                let mut masters = store.state.masters();
                masters.iter_mut().for_each(|m| m.up = false);
                store.state.set_masters(masters);
            }
            continue;
        }
        if store.check().await {
            tracing::info!(
                "the cluster's masters changed: subscribing to every topic where it is now"
            );
            tokio::spawn(resubscribe_all(Arc::clone(&store), hub.clone()));
        }
        if last_refresh.elapsed() >= refresh {
            last_refresh = tokio::time::Instant::now();
            store.refresh_presence(&hub).await;
            store.keep_epochs(&hub).await;
        }
    }
}

/// Delivers every node's messages, in the order Redis hands them over,
/// filling gaps from the stream; resubscribes when the connection ends,
/// and then catches up.
async fn subscribe_loop(pubsub: redis::aio::PubSub, hub: Hub, store: Arc<RedisStore>) {
    let mut pubsub = Some(pubsub);
    let mut attempt = 0;
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match connect_subscriber(&store.target).await {
                Ok(p) => {
                    tracing::info!("backplane subscriber reconnected");
                    attempt = 0;
                    // Redis came back for pub/sub: so it has, most likely,
                    // for commands.
                    if store.reconnect(&hub).await {
                        follow::catch_up(&*store, &hub).await;
                    } else {
                        tracing::warn!(
                            "cannot catch up after reconnecting: the next messages will fill gaps"
                        );
                    }
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
            received(&store, &hub, topic, msg.get_payload_bytes()).await;
        }
        store.state.set_subscriber(false);
        tracing::warn!("backplane subscription ended; reconnecting");
        tokio::time::sleep(backoff(0)).await;
    }
}

/// A payload on `topic`'s channel: a message, delivered in offset order
/// (what pub/sub skipped filled from the stream first), or a presence
/// event of another node.
async fn received(store: &RedisStore, hub: &Hub, topic: &str, payload: &[u8]) {
    if crate::name::check(topic).is_err() {
        return;
    }
    let max_message_size = hub.config().max_message_size;
    if too_large(payload, max_message_size) {
        // Not decoded (a copy), not queued for every subscriber.
        hub.metrics().backplane_too_large();
        tracing::warn!(
            topic,
            bytes = payload.len(),
            max = max_message_size,
            "dropped a message from the backplane over the message size limit"
        );
        return;
    }
    match decode(payload) {
        Some(Decoded::Message { message, .. }) if message_len(&message) > max_message_size => {
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
            follow::receive(store, hub, topic, epoch.into(), offset, message).await;
        }
        Some(Decoded::Presence {
            node,
            joined,
            member,
        }) => {
            if node != hub.node() {
                hub.presence_event(topic, joined, member);
            }
        }
        None => tracing::debug!(topic, "not a duplex payload"),
    }
}

/// On a cluster: the messages of the sharded channels this node follows,
/// and what Redis says of the subscriptions. A resubscription (after a
/// reconnection or a failover) catches its topic up; a subscription Redis
/// ended itself (the slot moved) is made again.
async fn receive_pushes(mut pushes: mpsc::Receiver<PushInfo>, hub: Hub, store: Arc<RedisStore>) {
    let Mode::Cluster(shards) = &store.mode else {
        return;
    };
    while let Some(push) = pushes.recv().await {
        let channel = match push.data.first() {
            Some(Value::BulkString(channel)) => channel.as_slice(),
            _ => &[][..],
        };
        let topic = cluster::topic_of(channel);
        match (push.kind, topic) {
            (PushKind::SMessage, Some(topic)) => {
                if let Some(Value::BulkString(payload)) = push.data.get(1) {
                    received(&store, &hub, topic, payload).await;
                }
            }
            (PushKind::SSubscribe, Some(topic)) if shards.confirmed(topic) == Confirmed::Again => {
                tracing::info!(topic, "resubscribed to a shard channel: catching up");
                let (store, hub, topic) = (Arc::clone(&store), hub.clone(), topic.to_owned());
                tokio::spawn(async move {
                    follow::catch_up_topic(&*store, &hub, &topic).await;
                });
            }
            (PushKind::SUnsubscribe, Some(topic)) if shards.dropped(topic) => {
                tracing::info!(topic, "Redis ended a shard subscription: subscribing again");
                let (store, hub, topic) = (Arc::clone(&store), hub.clone(), topic.into());
                tokio::spawn(resubscribe(store, hub, topic));
            }
            (PushKind::Disconnection, _) => store.state.set_subscriber(false),
            _ => {}
        }
    }
}

/// After a failover: every followed topic subscribed to again where its
/// slot is now, then caught up (what was published while its shard was
/// away is read from the stream, or told as a gap).
async fn resubscribe_all(store: Arc<RedisStore>, hub: Hub) {
    let Mode::Cluster(shards) = &store.mode else {
        return;
    };
    for topic in shards.topics() {
        let Ok(Commands::Cluster(mut c)) = store.connection() else {
            return;
        };
        if shards.renew(&mut c, &topic).await.is_err() {
            tracing::warn!(
                topic = &*topic,
                "cannot subscribe again after a failover; retrying"
            );
            tokio::spawn(resubscribe(
                Arc::clone(&store),
                hub.clone(),
                Arc::clone(&topic),
            ));
            continue;
        }
        follow::catch_up_topic(&*store, &hub, &topic).await;
    }
}

/// Makes a shard subscription again, for as long as the topic is wanted,
/// then catches it up.
async fn resubscribe(store: Arc<RedisStore>, hub: Hub, topic: Arc<str>) {
    let Mode::Cluster(shards) = &store.mode else {
        return;
    };
    for attempt in 0.. {
        tokio::time::sleep(backoff(attempt)).await;
        let Ok(Commands::Cluster(mut c)) = store.connection() else {
            continue;
        };
        if shards.renew(&mut c, &topic).await.is_ok() {
            break;
        }
    }
    follow::catch_up_topic(&*store, &hub, &topic).await;
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
