//! [`ServerHandle`]: what a running server shares with every connection
//! and with the application: the WebSocket limit, the counters, the tasks,
//! and the shutdown.
//!
//! The server puts a clone in every request's extensions, so that an
//! [`Upgrade`](crate::Upgrade) made anywhere in the application's service
//! (a route of its own, a mounted push service, an axum handler) is counted
//! against the same limit, runs as one of the server's tasks, and gets 1001
//! when the server shuts down.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use crate::MessageBudget;
use crate::signal::{Fired, Signal};

/// A handle on a running [`Server`](crate::Server): shut it down, read its
/// counters. Cheap to clone; every clone is the same server.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Fired by [`ServerHandle::shutdown`]: stop accepting, close every
    /// WebSocket with 1001, let HTTP connections finish.
    graceful: Signal,
    tracker: TaskTracker,
    /// How to drop every task still running once the shutdown timeout has
    /// passed. Aborting through these costs nothing while a task runs;
    /// polling a stop signal beside each task cost ~20 instructions per
    /// echoed message (callgrind).
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    next_task: AtomicU64,
    max_websockets: AtomicUsize,
    websockets: AtomicUsize,
    http1: AtomicUsize,
    http2: AtomicUsize,
    connections: AtomicUsize,
    refused: AtomicU64,
    /// Shared by every WebSocket whose config names no budget of its own.
    message_budget: MessageBudget,
}

/// A server's counters at one moment ([`ServerHandle::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// WebSockets open, over either HTTP version.
    pub websockets: usize,
    /// WebSockets open over HTTP/1.1 (an Upgrade).
    pub websockets_http1: usize,
    /// WebSockets open over HTTP/2 (an extended CONNECT, RFC 8441), several
    /// of which may share one connection.
    pub websockets_http2: usize,
    /// TCP connections open that are not (or not yet) a WebSocket of their
    /// own: HTTP requests, TLS handshakes, HTTP/2 connections.
    pub connections: usize,
    /// Upgrades refused with 503 because the limit was reached, since start.
    pub refused: u64,
}

/// Where a request came from, in every request's extensions when the
/// server core serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address: the TCP peer's, or behind a trusted proxy
    /// the one it reported (by the PROXY protocol, port included, or in
    /// `X-Forwarded-For`, port 0).
    pub peer_addr: SocketAddr,
    /// The trusted proxy the request came through, if it named its client
    /// ([`Server::trusted_proxies`](crate::Server::trusted_proxies)).
    pub proxy_addr: Option<SocketAddr>,
    /// The server's address the client connected to.
    pub local_addr: SocketAddr,
    /// Whether the connection is TLS (`wss://`, `https://`).
    pub tls: bool,
}

impl ServerHandle {
    pub(crate) fn new(max_websockets: usize) -> ServerHandle {
        ServerHandle {
            inner: Arc::new(Inner {
                graceful: Signal::new(),
                tracker: TaskTracker::new(),
                tasks: Mutex::default(),
                next_task: AtomicU64::new(0),
                max_websockets: AtomicUsize::new(max_websockets),
                websockets: AtomicUsize::new(0),
                http1: AtomicUsize::new(0),
                http2: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
                message_budget: MessageBudget::new(crate::DEFAULT_MESSAGE_BUDGET),
            }),
        }
    }

    /// Starts the shutdown: the server stops accepting, every WebSocket is
    /// closed with 1001 ("going away"), idle HTTP connections end and HTTP/2
    /// connections get a GOAWAY. [`Server::serve`](crate::Server::serve)
    /// returns once every connection has ended, or once the shutdown
    /// timeout has passed and the rest were dropped. Calling it again does
    /// nothing more.
    pub fn shutdown(&self) {
        self.inner.graceful.fire();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.graceful.is_fired()
    }

    /// The counters now.
    pub fn stats(&self) -> ServerStats {
        let inner = &self.inner;
        ServerStats {
            websockets: inner.websockets.load(Ordering::Relaxed),
            websockets_http1: inner.http1.load(Ordering::Relaxed),
            websockets_http2: inner.http2.load(Ordering::Relaxed),
            connections: inner.connections.load(Ordering::Relaxed),
            refused: inner.refused.load(Ordering::Relaxed),
        }
    }

    /// The most WebSockets open at once.
    pub fn max_websockets(&self) -> usize {
        self.inner.max_websockets.load(Ordering::Relaxed)
    }

    /// The budget of bytes that the partly received messages of this
    /// server's WebSockets hold together (see
    /// [`Server::message_budget`](crate::Server::message_budget)); its
    /// [`used`](MessageBudget::used) is what they hold now.
    pub fn message_budget(&self) -> &MessageBudget {
        &self.inner.message_budget
    }

    pub(crate) fn set_max_websockets(&self, max: usize) {
        self.inner.max_websockets.store(max, Ordering::Relaxed);
    }

    /// A WebSocket slot, if the limit allows one more and the server is not
    /// shutting down; `None` counts a refusal.
    pub(crate) fn try_websocket(&self, http2: bool) -> Option<WebSocketSlot> {
        let inner = &self.inner;
        let max = self.max_websockets();
        let taken = !self.is_shutting_down()
            && inner
                .websockets
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    (open < max).then_some(open + 1)
                })
                .is_ok();
        if !taken {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let by_version = if http2 { &inner.http2 } else { &inner.http1 };
        by_version.fetch_add(1, Ordering::Relaxed);
        Some(WebSocketSlot {
            handle: self.clone(),
            http2,
        })
    }

    /// Counts a TCP connection for as long as the guard lives.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    pub(crate) fn graceful(&self) -> Fired {
        self.inner.graceful.fired()
    }

    /// Runs `task` as one of the server's: waited for at shutdown, and
    /// dropped if it outlives the shutdown timeout.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.inner.next_task.fetch_add(1, Ordering::Relaxed);
        let registered = Registered {
            inner: Arc::clone(&self.inner),
            id,
        };
        // Spawned and registered under the lock: the task's own removal
        // (when it ends) takes the lock too, so it comes after the insert.
        // Boxed before the wrapper captures it: a future captured by an
        // async block and then awaited takes its size twice in the block
        // (the capture, and the awaited state), which for a WebSocket
        // task doubled the memory of an idle connection.
        let task = Box::pin(task);
        let mut tasks = self.inner.lock_tasks();
        let handle = self.inner.tracker.spawn(async move {
            let _registered = registered;
            task.await;
        });
        tasks.insert(id, handle.abort_handle());
    }

    /// After [`shutdown`](Self::shutdown): waits for every task up to
    /// `timeout`, then drops the rest and waits for them to go.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let tracker = &self.inner.tracker;
        tracker.close();
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                open = tracker.len(),
                ?timeout,
                "connections still open after the shutdown timeout; dropping them"
            );
            let tasks: Vec<AbortHandle> = self.inner.lock_tasks().drain().map(|(_, t)| t).collect();
            for task in tasks {
                task.abort();
            }
            tracker.wait().await;
        }
    }
}

impl Inner {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        // The map stays consistent whatever panicked while holding it.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A task's place in the abort list, left when the task ends.
struct Registered {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.inner.lock_tasks().remove(&self.id);
    }
}

/// One open WebSocket, counted against the limit until dropped.
#[derive(Debug)]
pub(crate) struct WebSocketSlot {
    handle: ServerHandle,
    http2: bool,
}

impl WebSocketSlot {
    pub(crate) fn handle(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Drop for WebSocketSlot {
    fn drop(&mut self) {
        let inner = &self.handle.inner;
        inner.websockets.fetch_sub(1, Ordering::AcqRel);
        let by_version = if self.http2 {
            &inner.http2
        } else {
            &inner.http1
        };
        by_version.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open TCP connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(ServerHandle);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_free_on_drop() {
        let handle = ServerHandle::new(2);
        let a = handle.try_websocket(false).unwrap();
        let b = handle.try_websocket(true).unwrap();
        assert!(handle.try_websocket(false).is_none());
        let stats = handle.stats();
        assert_eq!(
            (
                stats.websockets,
                stats.websockets_http1,
                stats.websockets_http2
            ),
            (2, 1, 1)
        );
        assert_eq!(stats.refused, 1);
        drop(b);
        let c = handle.try_websocket(false).unwrap();
        assert_eq!(handle.stats().websockets_http1, 2);
        drop((a, c));
        assert_eq!(handle.stats().websockets, 0);
    }

    #[test]
    fn no_slot_once_shutting_down() {
        let handle = ServerHandle::new(10);
        handle.shutdown();
        assert!(handle.is_shutting_down());
        assert!(handle.try_websocket(false).is_none());
    }

    #[tokio::test]
    async fn drain_drops_a_task_that_outlives_the_timeout() {
        let handle = ServerHandle::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        handle.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        handle.shutdown();
        handle.drain(Duration::from_millis(50)).await;
        assert!(rx.await.is_err(), "the task was dropped");
    }
}
