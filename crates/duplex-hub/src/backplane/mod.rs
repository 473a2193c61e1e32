//! The backplane: every node of a cluster assigns the same offsets, serves
//! the same history, and delivers every message in the same order.
//!
//! The hub asks a store (the hub's `Store` trait) to publish, to open a
//! topic and to read its history; an engine implements it and hands what
//! any node publishes back to the hub. A node delivers its own publishes
//! when the store hands them back too, not before: one order for everyone.
//! The engine:
//!
//! - `redis`: one Redis (`redis://`, or `rediss://` over TLS), a Redis
//!   behind Sentinel (`redis+sentinel://`), which follows failovers, or a
//!   Redis Cluster (`redis+cluster://`) with sharded pub/sub;
//! - `nats`: NATS JetStream ([`Backplane::nats`]), a stream per topic.
//!
//! What every engine shares: the payloads on the wire (`payload`), and
//! what a node does with a gap in pub/sub and after a lost link
//! (`follow`): a publish acknowledged to its client is delivered to
//! every live subscriber or falls inside a gap they are told of.
//!
//! [`BackplaneState`] says whether the engine is connected now, for a
//! health check (`GET /healthz` of [`HubService`](crate::HubService)).

use tokio::task::JoinHandle;

use crate::hub::Hub;

mod follow;
mod nats;
mod payload;
mod redis;
mod state;

pub use payload::{Decoded, MAGIC, PRESENCE_MAGIC, decode};
pub use redis::{CHANNEL_PREFIX, PRESENCE_REFRESH, PRESENCE_TTL, RedisOptions};
pub use state::{BackplaneError, BackplaneState, Master};

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
    /// Connects `hub` to the Redis at `url`: from now on its offsets and
    /// history live there. `url` is `redis://host:port/db`,
    /// `rediss://…` (TLS, verified against the system's roots), or
    /// `redis+sentinel://host:port[,host:port…]/master[/db]`. Fails, with
    /// the URL and the reason, if Redis cannot be reached now; once
    /// started, it reconnects by itself.
    pub async fn redis(hub: &Hub, url: &str) -> Result<Backplane, BackplaneError> {
        Backplane::redis_with(hub, url, &RedisOptions::default()).await
    }

    /// [`redis`](Self::redis) with options: a CA to verify `rediss://`
    /// with.
    pub async fn redis_with(
        hub: &Hub,
        url: &str,
        options: &RedisOptions,
    ) -> Result<Backplane, BackplaneError> {
        let (tasks, state) = redis::start(hub, url, options).await?;
        Ok(Backplane { tasks, state })
    }

    /// Connects `hub` to the NATS server at `url` (`nats://host:port`,
    /// with JetStream enabled): from now on each topic is a JetStream
    /// stream, whose sequence is the topic's offset. Fails, with the URL
    /// and the reason, if NATS cannot be reached now or has no JetStream;
    /// once started, it reconnects by itself.
    pub async fn nats(hub: &Hub, url: &str) -> Result<Backplane, BackplaneError> {
        let (tasks, state) = nats::start(hub, url).await?;
        Ok(Backplane { tasks, state })
    }

    /// Whether the backplane reaches its store now, as a handle that
    /// stays current.
    pub fn state(&self) -> BackplaneState {
        self.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_or_an_absent_redis_fails_at_start() {
        let hub = Hub::new(crate::HubConfig::default());
        for url in ["not a url", "nats://127.0.0.1:4222", "redis+sentinel://h:1"] {
            let err = Backplane::redis(&hub, url).await.unwrap_err();
            assert!(
                matches!(err, BackplaneError::InvalidUrl { .. }),
                "{url}: {err}"
            );
        }
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for url in [
            format!("redis://127.0.0.1:{port}/"),
            format!("redis+sentinel://127.0.0.1:{port}/mymaster"),
        ] {
            let err = Backplane::redis(&hub, &url).await.unwrap_err();
            assert!(matches!(err, BackplaneError::Unreachable { .. }), "{err}");
            assert!(err.to_string().contains(&url), "{err}");
        }
    }
}
