//! Sharded pub/sub on a Redis Cluster: one `SSUBSCRIBE` per topic that
//! has local subscribers, on the shard that owns the topic's slot, so that
//! a message crosses only its own shard (plain `PUBLISH` in a cluster goes
//! to every node).
//!
//! redis-rs routes each `SSUBSCRIBE` to the slot's owner and subscribes
//! again after a reconnection or a change of owner (MOVED, a failover);
//! each time it does, Redis confirms with an `ssubscribe` push, and this
//! node catches the topic up (`follow::catch_up_topic`): what was
//! published while the shard was out of reach is read from the stream, or
//! reported as a gap. A server-initiated `sunsubscribe` (the slot moved
//! away) is answered with a new `SSUBSCRIBE`, which goes to the new owner.
//!
//! Topics are counted per subscriber: the first subscribes, the last to
//! leave unsubscribes; changes to the subscriptions are made one at a
//! time, so that a leave and a join racing each other end subscribed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;

use crate::backplane::state::Master;
use crate::hub::HubError;

/// The channel of `topic` on a cluster: hash-tagged as its keys are, so
/// that the publish script may `SPUBLISH` on it.
pub(crate) fn channel(topic: &str) -> String {
    format!("duplex:{{{topic}}}:channel")
}

/// The topic a sharded channel is for.
pub(crate) fn topic_of(channel: &[u8]) -> Option<&str> {
    std::str::from_utf8(channel)
        .ok()?
        .strip_prefix("duplex:{")?
        .strip_suffix("}:channel")
}

#[derive(Debug, Default)]
struct Followed {
    /// Local subscribers.
    count: usize,
    /// Whether Redis confirmed a subscription: a later confirmation is a
    /// resubscription, after which the topic is caught up.
    confirmed: bool,
}

/// The topics this node receives, and how many local subscribers each
/// has.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    followed: Mutex<HashMap<Arc<str>, Followed>>,
    /// Held while a subscription is made or dropped.
    changes: tokio::sync::Mutex<()>,
}

/// What a confirmation from Redis calls for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// The first: nothing to catch up.
    First,
    /// A resubscription (after a reconnection or a failover): catch up.
    Again,
    /// A topic this node no longer follows.
    Unwanted,
}

impl Shards {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Followed>> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more local subscriber of `topic`; whether the topic
    /// needs a subscription made.
    pub(crate) fn add(&self, topic: &Arc<str>) -> bool {
        let mut map = self.map();
        let entry = map.entry(Arc::clone(topic)).or_default();
        entry.count += 1;
        !entry.confirmed
    }

    /// Makes sure `topic` is subscribed (it was [`add`](Self::add)ed).
    pub(crate) async fn subscribe(
        &self,
        connection: &mut ClusterConnection,
        topic: &Arc<str>,
    ) -> Result<(), HubError> {
        let _changing = self.changes.lock().await;
        if self.map().get(topic).is_none_or(|f| f.confirmed) {
            return Ok(());
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            connection.ssubscribe(channel(topic)),
        )
        .await
        {
            Ok(Ok(())) => {
                if let Some(f) = self.map().get_mut(topic) {
                    f.confirmed = true;
                }
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = &**topic, error = %e, "cannot subscribe to a shard channel");
                Err(HubError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(topic = &**topic, "no answer to SSUBSCRIBE within 5 s");
                Err(HubError::Unavailable)
            }
        }
    }

    /// One local subscriber fewer; with none left, unsubscribes (after
    /// any change in flight, and only if nobody joined meanwhile).
    pub(crate) async fn remove(&self, mut connection: ClusterConnection, topic: &str) {
        {
            let mut map = self.map();
            let Some(f) = map.get_mut(topic) else { return };
            f.count = f.count.saturating_sub(1);
            if f.count > 0 {
                return;
            }
        }
        let _changing = self.changes.lock().await;
        let subscribed = {
            let mut map = self.map();
            match map.get(topic) {
                Some(f) if f.count == 0 => map.remove(topic).is_some_and(|f| f.confirmed),
                _ => return,
            }
        };
        if subscribed {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                connection.sunsubscribe(channel(topic)),
            )
            .await;
        }
    }

    /// Redis confirmed a subscription to `topic`.
    pub(crate) fn confirmed(&self, topic: &str) -> Confirmed {
        match self.map().get_mut(topic) {
            None => Confirmed::Unwanted,
            Some(f) if f.confirmed => Confirmed::Again,
            Some(f) => {
                f.confirmed = true;
                Confirmed::First
            }
        }
    }

    /// The topics with local subscribers.
    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.map()
            .iter()
            .filter(|(_, f)| f.count > 0)
            .map(|(t, _)| Arc::clone(t))
            .collect()
    }

    /// Subscribes to `topic` again, wherever its slot is now: after a
    /// failover or a move, redis-rs may keep a subscription on a node that
    /// no longer owns the slot (or is gone). A second `SSUBSCRIBE` where
    /// one holds is harmless.
    pub(crate) async fn renew(
        &self,
        connection: &mut ClusterConnection,
        topic: &str,
    ) -> Result<(), HubError> {
        let _changing = self.changes.lock().await;
        if self.map().get(topic).is_none_or(|f| f.count == 0) {
            return Ok(());
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            connection.ssubscribe(channel(topic)),
        )
        .await
        {
            Ok(Ok(())) => {
                if let Some(f) = self.map().get_mut(topic) {
                    f.confirmed = true;
                }
                Ok(())
            }
            _ => Err(HubError::Unavailable),
        }
    }

    /// Redis ended the subscription to `topic` itself (its slot moved):
    /// whether it is still wanted, and must be made again.
    pub(crate) fn dropped(&self, topic: &str) -> bool {
        match self.map().get_mut(topic) {
            Some(f) if f.count > 0 => {
                f.confirmed = false;
                true
            }
            _ => false,
        }
    }
}

/// Whether every master answers: the cluster can take every topic's
/// publishes now.
pub(crate) async fn masters_answer(connection: &mut ClusterConnection) -> bool {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
    let ping = tokio::time::timeout(
        Duration::from_secs(5),
        connection.route_command(
            redis::cmd("PING"),
            RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::AllSucceeded),
            )),
        ),
    )
    .await;
    matches!(ping, Ok(Ok(_)))
}

/// The masters the cluster has now, from `CLUSTER NODES` asked of any
/// node: each one's address, and whether the cluster holds it up.
pub(crate) async fn masters(connection: &mut ClusterConnection) -> Option<Vec<Master>> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    let nodes = tokio::time::timeout(
        Duration::from_secs(5),
        connection.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
    )
    .await
    .ok()?
    .ok()?;
    let text: String = redis::from_redis_value(nodes).ok()?;
    Some(masters_of(&text))
}

/// The masters in a `CLUSTER NODES` answer: `id host:port@bus flags
/// master ping pong epoch link slots…`, one line a node.
fn masters_of(nodes: &str) -> Vec<Master> {
    let mut masters: Vec<Master> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || fields.len() < 9 {
                // A replica, or a master with no slots (not a shard).
                return None;
            }
            let address = fields[1].split('@').next()?.to_owned();
            let up = !flags.contains("fail") && fields[7] == "connected";
            Some(Master { address, up })
        })
        .collect();
    masters.sort_by(|a, b| a.address.cmp(&b.address));
    masters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_names_its_topic_and_shares_its_slot() {
        for topic in ["news", "a}b", "{x}", "chat.room-1"] {
            let channel = channel(topic);
            assert_eq!(topic_of(channel.as_bytes()), Some(topic));
            assert_eq!(
                redis::cluster_routing::Slot::for_key(&channel),
                redis::cluster_routing::Slot::for_key(format!("duplex:{{{topic}}}:epoch")),
                "{topic}"
            );
        }
        assert_eq!(topic_of(b"duplex:topic:news"), None);
        assert_eq!(topic_of(b"\xff"), None);
    }

    #[test]
    fn cluster_nodes_give_each_shard_s_master_and_whether_it_is_up() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master - 0 0 3 disconnected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 0 connected
";
        let up = |address: &str, up: bool| Master {
            address: address.into(),
            up,
        };
        assert_eq!(
            masters_of(nodes),
            [
                up("127.0.0.1:7001", true),
                up("127.0.0.1:7002", false),
                up("127.0.0.1:7003", false),
            ]
        );
    }

    #[test]
    fn the_last_to_leave_unsubscribes_and_a_resubscription_is_told_apart() {
        let shards = Shards::default();
        let t: Arc<str> = "t".into();
        assert!(shards.add(&t), "the first subscriber subscribes");
        assert!(shards.add(&t), "not yet confirmed: the second makes sure");
        assert_eq!(shards.confirmed("t"), Confirmed::First);
        assert!(!shards.add(&t), "confirmed: nothing to do");
        assert_eq!(shards.confirmed("t"), Confirmed::Again);
        assert_eq!(shards.confirmed("other"), Confirmed::Unwanted);
        assert!(shards.dropped("t"), "still wanted after Redis dropped it");
        assert!(shards.add(&t), "dropped: subscribe again");
        assert!(!shards.dropped("other"));
    }
}
