//! What a running backplane tells the rest of the server: whether it is
//! connected, to which servers, and why it could not start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Why the backplane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The URL does not parse, or names no engine duplex has.
    #[error("invalid backplane URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as given, its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA certificate given for TLS cannot be used.
    #[error("invalid CA certificate for {url}: {reason}")]
    InvalidCa {
        /// The URL as given, its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store could not be reached, or refused the subscription.
    #[error("cannot reach the backplane at {url}: {reason}")]
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

/// Whether a [`Backplane`](super::Backplane) reaches its store now: cheap to clone, and it
/// follows the backplane as it loses the store and reconnects.
#[derive(Debug, Clone)]
pub struct BackplaneState {
    inner: Arc<Connections>,
}

#[derive(Debug)]
struct Connections {
    engine: &'static str,
    publisher: AtomicBool,
    subscriber: AtomicBool,
    masters: Mutex<Vec<Master>>,
}

/// One server that takes writes: a Redis master (one per shard of a
/// cluster), or the NATS server a node is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// `host:port`.
    pub address: String,
    /// Whether it answers now (for a cluster: whether the cluster holds it
    /// up, not failed).
    pub up: bool,
}

impl BackplaneState {
    pub(super) fn connected(engine: &'static str) -> BackplaneState {
        BackplaneState {
            inner: Arc::new(Connections {
                engine,
                publisher: AtomicBool::new(true),
                subscriber: AtomicBool::new(true),
                masters: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether both links to the store, the one for commands and the one
    /// that receives, are up.
    pub fn is_connected(&self) -> bool {
        self.inner.publisher.load(Ordering::Relaxed)
            && self.inner.subscriber.load(Ordering::Relaxed)
    }

    /// The engine: `redis`, `redis+sentinel`, `redis+cluster`, `nats`.
    pub fn engine(&self) -> &'static str {
        self.inner.engine
    }

    /// The servers that take writes, as last seen (every second): the
    /// master of each shard, the master Sentinel names, the one server.
    pub fn masters(&self) -> Vec<Master> {
        self.inner
            .masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_masters(&self, masters: Vec<Master>) {
        *self
            .inner
            .masters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = masters;
    }

    pub(super) fn set_publisher(&self, up: bool) {
        self.inner.publisher.store(up, Ordering::Relaxed);
    }

    pub(super) fn set_subscriber(&self, up: bool) {
        self.inner.subscriber.store(up, Ordering::Relaxed);
    }
}

/// What an engine hands back once started: its tasks, and its state.
pub(super) type Started = (Vec<tokio::task::JoinHandle<()>>, BackplaneState);
