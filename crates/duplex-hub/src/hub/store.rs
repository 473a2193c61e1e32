//! What the hub asks of a backplane: the one place offsets, history and
//! presence live when several nodes act as one.
//!
//! The hub calls a [`Store`]; the engines (`backplane::redis`, on one
//! Redis, behind Sentinel or across a Redis Cluster) implement it and
//! hand what other nodes publish back through [`Hub::deliver`]. So the
//! hub knows no engine, and an engine knows the hub only through the
//! methods it is given: every import points from the backplane to here.
//!
//! The futures are boxed so that a hub holds any engine as
//! `Arc<dyn Store>`; a box per call is nothing beside the network round
//! trip each call makes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use duplex_ws::Message;

use super::delivery::{Delivery, Member};
use super::position::Opened;
use crate::error::HubError;
use crate::since::Since;

/// A call to the store, in flight.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Offsets, history and presence shared by every node.
pub(crate) trait Store: Send + Sync + fmt::Debug {
    /// The largest message the store carries: a larger one would break
    /// what it delivers to every node (413 before it is sent).
    fn max_message_size(&self) -> usize;

    /// Starts receiving `topic` on this node for one more local
    /// subscriber (counted at once, before the future runs); done once
    /// every message published from now on reaches this node. Each call
    /// is matched by one [`unfollow`](Self::unfollow), whether or not it
    /// succeeded.
    fn follow(self: Arc<Self>, topic: Arc<str>) -> Pending<'static, Result<(), HubError>>;

    /// One local subscriber of `topic` fewer: with none left, this node
    /// stops receiving it (in the background).
    fn unfollow(self: Arc<Self>, topic: &str);

    /// Gives `message` the next offset of `topic` and sends it to every
    /// node, this one included: the hub delivers it when it comes back,
    /// so that every node sees one order. The topic's epoch and the
    /// offset.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Message,
    ) -> Pending<'a, Result<(Arc<str>, u64), HubError>>;

    /// Where `topic` stands (making its epoch if it has none) and, with
    /// `since`, the first page of what it retains after it. Called once
    /// the hub is subscribed to the topic, so that nothing published from
    /// now on is missed.
    fn open<'a>(
        &'a self,
        topic: &'a str,
        since: Option<&'a Since>,
    ) -> Pending<'a, Result<Opened, HubError>>;

    /// The retained messages `from..=to` of `topic` in `epoch`, oldest
    /// first, a page at most: the rest of a resume, or a gap in what
    /// reached this node.
    fn range<'a>(
        &'a self,
        topic: &'a str,
        epoch: &'a Arc<str>,
        from: u64,
        to: u64,
    ) -> Pending<'a, Result<Vec<Arc<Delivery>>, HubError>>;

    /// Adds `member` to the topic's presence and tells the other nodes.
    fn joined<'a>(&'a self, topic: &'a str, member: &'a Member) -> Pending<'a, ()>;

    /// Removes `member` from the topic's presence, in the background (a
    /// subscription ends in a `Drop`).
    fn left(self: Arc<Self>, topic: &str, member: Member);

    /// The topic's members on every node: how many, and up to `limit`.
    fn presence<'a>(
        &'a self,
        topic: &'a str,
        limit: usize,
    ) -> Pending<'a, Result<(usize, Vec<Member>), HubError>>;
}
