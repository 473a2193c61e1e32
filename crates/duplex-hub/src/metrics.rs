//! Counters of the hub and the server, rendered in the Prometheus text
//! exposition format for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use duplex_ws::ServerHandle;

/// What the hub has done so far. All counters are monotonic but the gauges
/// (`topics`, `subscribers`, `connections`).
#[derive(Debug, Default)]
pub struct Metrics {
    published: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
    stalled: AtomicU64,
    subscribers: AtomicU64,
    topics: AtomicU64,
    backplane_in: AtomicU64,
    backplane_out: AtomicU64,
    backplane_dropped: AtomicU64,
    backplane_too_large: AtomicU64,
    presence_shed: AtomicU64,
    connections: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Messages published on this node.
    pub published: u64,
    /// Messages queued for local subscribers (one per subscriber).
    pub delivered: u64,
    /// Subscribers dropped for a full queue.
    pub lagged: u64,
    /// Subscriber connections dropped because a write to them timed out.
    pub stalled: u64,
    /// Subscribers now.
    pub subscribers: u64,
    /// Topics with subscribers or retained messages now.
    pub topics: u64,
    /// Messages received from Redis (every node's, this one's too).
    pub backplane_in: u64,
    /// Messages published through Redis.
    pub backplane_out: u64,
    /// Messages not published because Redis was unreachable.
    pub backplane_dropped: u64,
    /// Messages from other nodes dropped for being over the hub's
    /// `max_message_size`.
    pub backplane_too_large: u64,
    /// Join/leave events not queued for a watcher whose queue was half
    /// full (messages keep that half; nobody is dropped for presence).
    pub presence_shed: u64,
    /// WebSocket connections to topics open now.
    pub connections: u64,
}

impl Metrics {
    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }
    /// A subscriber's connection was dropped because a write to it timed
    /// out (it counts as a slow consumer).
    pub(crate) fn lagged_closed(&self) {
        self.stalled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn subscribed(&self) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn unsubscribed(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn set_topics(&self, n: usize) {
        self.topics.store(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn backplane_in(&self) {
        self.backplane_in.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn backplane_out(&self) {
        self.backplane_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn backplane_dropped(&self) {
        self.backplane_dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn backplane_too_large(&self) {
        self.backplane_too_large.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn presence_shed(&self, n: u64) {
        self.presence_shed.fetch_add(n, Ordering::Relaxed);
    }

    /// A topic's WebSocket connection opened.
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A topic's WebSocket connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            published: get(&self.published),
            delivered: get(&self.delivered),
            lagged: get(&self.lagged),
            stalled: get(&self.stalled),
            subscribers: get(&self.subscribers),
            topics: get(&self.topics),
            backplane_in: get(&self.backplane_in),
            backplane_out: get(&self.backplane_out),
            backplane_dropped: get(&self.backplane_dropped),
            backplane_too_large: get(&self.backplane_too_large),
            presence_shed: get(&self.presence_shed),
            connections: get(&self.connections),
        }
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let rows: [(&str, &str, &str, u64); 12] = [
            (
                "duplex_connections",
                "gauge",
                "WebSocket connections to topics open.",
                s.connections,
            ),
            (
                "duplex_topics",
                "gauge",
                "Topics with subscribers or retained messages.",
                s.topics,
            ),
            (
                "duplex_subscribers",
                "gauge",
                "Topic subscriptions open.",
                s.subscribers,
            ),
            (
                "duplex_published_total",
                "counter",
                "Messages published on this node.",
                s.published,
            ),
            (
                "duplex_delivered_total",
                "counter",
                "Messages queued for local subscribers.",
                s.delivered,
            ),
            (
                "duplex_slow_consumers_total",
                "counter",
                "Subscribers dropped because their queue was full.",
                s.lagged,
            ),
            (
                "duplex_stalled_subscribers_total",
                "counter",
                "Subscriber connections dropped because a write to them timed out.",
                s.stalled,
            ),
            (
                "duplex_backplane_received_total",
                "counter",
                "Messages received from Redis (every node's, this one's too).",
                s.backplane_in,
            ),
            (
                "duplex_backplane_sent_total",
                "counter",
                "Messages published through Redis.",
                s.backplane_out,
            ),
            (
                "duplex_backplane_dropped_total",
                "counter",
                "Messages not published because Redis was unreachable.",
                s.backplane_dropped,
            ),
            (
                "duplex_backplane_too_large_total",
                "counter",
                "Messages from other nodes dropped for being over the message size limit.",
                s.backplane_too_large,
            ),
            (
                "duplex_presence_shed_total",
                "counter",
                "Join/leave events not queued for a watcher whose queue was half full.",
                s.presence_shed,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out
    }
}

/// A duplex server's counters ([`ServerHandle::stats`]) in the Prometheus
/// text format: every WebSocket, not only the topics', by the HTTP version
/// it was upgraded over.
pub fn render_server(server: &ServerHandle) -> String {
    let s = server.stats();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "# HELP duplex_websockets_open WebSockets open on the server, by the HTTP version they were upgraded over.\n\
         # TYPE duplex_websockets_open gauge\n\
         duplex_websockets_open{{http=\"1.1\"}} {}\n\
         duplex_websockets_open{{http=\"2\"}} {}\n\
         # HELP duplex_websockets_max WebSockets the server allows open at once.\n\
         # TYPE duplex_websockets_max gauge\n\
         duplex_websockets_max {}\n\
         # HELP duplex_websockets_refused_total Upgrades refused with 503 at the limit or during shutdown.\n\
         # TYPE duplex_websockets_refused_total counter\n\
         duplex_websockets_refused_total {}\n\
         # HELP duplex_http_connections_open TCP connections open that are not a WebSocket of their own.\n\
         # TYPE duplex_http_connections_open gauge\n\
         duplex_http_connections_open {}\n\
         # HELP duplex_message_budget_bytes Bytes partly received messages hold, of the server's budget.\n\
         # TYPE duplex_message_budget_bytes gauge\n\
         duplex_message_budget_bytes {}\n\
         # HELP duplex_message_budget_limit_bytes The server's budget for partly received messages.\n\
         # TYPE duplex_message_budget_limit_bytes gauge\n\
         duplex_message_budget_limit_bytes {}\n",
        s.websockets_http1,
        s.websockets_http2,
        server.max_websockets(),
        s.refused,
        s.connections,
        server.message_budget().used(),
        server.message_budget().limit(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let m = Metrics::default();
        m.published();
        m.delivered(3);
        m.connection_opened();
        let text = m.render();
        assert!(text.contains("# TYPE duplex_published_total counter\nduplex_published_total 1\n"));
        assert!(text.contains("duplex_delivered_total 3\n"));
        assert!(text.contains("# TYPE duplex_connections gauge\nduplex_connections 1\n"));
        // Every sample line is `name value`, every name has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
