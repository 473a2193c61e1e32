//! [`RateLimitedLog`]: a warning for refusals that a flood cannot turn
//! into a flood of log lines.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// One warning a second at most for one kind of refusal; the ones left
/// out are counted in the next.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    /// Logs `what` for `peer`, unless a line went out this second already.
    pub(crate) fn warn(&self, peer: SocketAddr, what: &dyn std::fmt::Display) {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        if self.last.swap(now, Ordering::Relaxed) == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(%peer, suppressed, "{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_and_counts_the_rest() {
        let log = RateLimitedLog::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        for _ in 0..100 {
            log.warn(peer, &"refused");
        }
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 99);
    }
}
