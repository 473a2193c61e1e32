//! [`HubConfig`]: every limit of a hub, each with the reason for its
//! default, and a setter per field.

use std::time::Duration;

/// Limits of a [`Hub`](crate::hub::Hub), each with the reason for its default. Start from
/// `HubConfig::default()` and change what you need, by field or with the
/// setter of the same name (`HubConfig::default().queue(1024)`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Messages queued for one subscriber before it counts as too slow and
    /// is dropped. Default 256: a burst of that many fits, and with the
    /// default 64 MiB message limit the worst case per subscriber is still
    /// bounded (in practice pushes are small).
    pub queue: usize,
    /// Topics with subscribers or retained messages, at most. Default
    /// 100,000: every topic costs a map entry, and a client must not be
    /// able to create them without bound.
    pub max_topics: usize,
    /// How long a subscriber's connection may take to take one message
    /// before the server drops it. Default 10 s. A subscriber that stops
    /// reading fills its socket and then blocks the write of the next
    /// message; its queue overflows meanwhile, but the connection itself is
    /// only freed by this timeout.
    pub send_timeout: Duration,
    /// The largest message published or relayed from the backplane: a
    /// payload from Redis over it is dropped and counted
    /// (`duplex_backplane_too_large_total`), a duplex.v1 publish over it is
    /// refused (`too_large`). Default 64 MiB, the WebSocket default
    /// `max_message_size`. Set it to the `max_message_size` of the
    /// service's config (`duplex serve` sets both from
    /// `--max-message-size`).
    pub max_message_size: usize,
    /// How long a `POST /topics/{name}` may take to send its body, from the
    /// end of its head; past it the answer is 408 and the connection is
    /// closed. Default 10 s, as the handshake timeout: a publish is a push,
    /// usually small, and 10 s carries a megabyte over a slow mobile link,
    /// while a client that drips its body a byte at a time cannot hold a
    /// request (and its buffer) open for longer.
    pub body_timeout: Duration,
    /// Messages each topic retains for clients that resume. Default 100:
    /// a client that was away for a short reconnect (seconds) misses far
    /// fewer on most topics, and 100 small pushes cost a few KiB.
    pub history_size: usize,
    /// How long a retained message is kept. Default 5 minutes: longer than
    /// any reconnect with backoff, short enough that a topic's history does
    /// not outlive its interest. A topic whose every message has expired
    /// starts a new epoch.
    pub history_ttl: Duration,
    /// Bytes held by retained messages over all topics, at most (without
    /// Redis; with it, Redis's own `maxmemory` bounds them): each message's
    /// payload, its duplex.v1 frame once made, and about 200 bytes of
    /// bookkeeping. Default 256 MiB. Past it the oldest messages of the
    /// topic being published to go first (never its newest), then those of
    /// the topics whose oldest message is oldest.
    pub max_history_bytes: usize,
    /// Topics one duplex.v1 connection may subscribe to at once. Default
    /// 100: a page rarely follows more, and each costs a place in a topic.
    pub max_subscriptions: usize,
    /// How often a duplex.v1 connection gets a `ping` frame. Default 25 s:
    /// under the usual 30–60 s idle timeouts of proxies, and a client
    /// that hears nothing for this plus 10 s knows the connection is dead.
    pub ping_interval: Duration,
    /// The largest duplex.v1 frame a client may send, after
    /// decompression; past it the connection is closed with 1009. Default
    /// 64 KiB, as Centrifugo's: a command is small, and a publish that
    /// carries more goes by `POST` (bounded by `max_message_size`). Every
    /// v1 frame is parsed before it is acted on, so this bounds the work
    /// and memory one frame can cost.
    pub max_v1_frame_size: usize,
    /// Subscribes and unsubscribes one duplex.v1 connection may make a
    /// second, in bursts of twice as many plus `max_subscriptions`; past
    /// it they are answered `too_many`. Default 20: a page subscribes to
    /// its topics once and resubscribes after a reconnect (a burst), while a client that
    /// churns subscriptions, each a join and a leave for every watcher
    /// of the topic, is slowed to a rate no watcher notices.
    pub subscribe_rate: u32,
    /// Topics that one client (a token's user, or an address) may have
    /// made, by publishing or subscribing, that exist at once; one more
    /// is refused as [`HubError::TooManyTopics`](crate::hub::HubError::TooManyTopics). Default 1,000: a page
    /// follows a few dozen, and it takes a hundred clients to fill the
    /// default `max_topics`, so that one cannot lock everyone else out.
    /// Topics made through [`Hub::publish`](crate::hub::Hub::publish) and [`Hub::subscribe`](crate::hub::Hub::subscribe) (the
    /// application itself) are not counted.
    pub max_topics_per_client: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue: 256,
            max_topics: 100_000,
            send_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            body_timeout: Duration::from_secs(10),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_history_bytes: 256 << 20,
            max_subscriptions: 100,
            ping_interval: Duration::from_secs(25),
            max_v1_frame_size: 64 << 10,
            subscribe_rate: 20,
            max_topics_per_client: 1000,
        }
    }
}

/// One setter per field, each named as its field.
macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl HubConfig {
            $(
                #[doc = concat!("Sets [`", stringify!($name), "`](HubConfig::", stringify!($name), ").")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    queue: usize,
    max_topics: usize,
    send_timeout: Duration,
    max_message_size: usize,
    body_timeout: Duration,
    history_size: usize,
    history_ttl: Duration,
    max_history_bytes: usize,
    max_subscriptions: usize,
    ping_interval: Duration,
    max_v1_frame_size: usize,
    subscribe_rate: u32,
    max_topics_per_client: usize,
}
