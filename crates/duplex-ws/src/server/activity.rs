//! What an HTTP/2 connection has going on: requests being answered and
//! WebSockets open on its streams, so that one with neither for the idle
//! timeout is closed. hyper's HTTP/2 server has no idle timeout of its
//! own: a client that sends the preface and nothing more, or the start of
//! a header block it never finishes (which never becomes a request), would
//! hold its connection for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The activity of one connection; cheap to clone, every clone the same.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Requests in progress and WebSockets open.
    open: AtomicUsize,
    /// Whether anything began or ended since the last look: a connection
    /// whose last request just ended has not been idle yet.
    stirred: AtomicBool,
}

impl Activity {
    /// Something begins; it lasts as long as the guard.
    pub(crate) fn begin(&self) -> Busy {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        self.0.stirred.store(true, Ordering::Release);
        Busy(self.clone())
    }

    /// Whether nothing is going on, and nothing began or ended, since the
    /// last call.
    pub(crate) fn idle_since_last_look(&self) -> bool {
        let stirred = self.0.stirred.swap(false, Ordering::AcqRel);
        !stirred && self.0.open.load(Ordering::Acquire) == 0
    }
}

/// One request or WebSocket of a connection, for as long as it lives.
#[derive(Debug)]
pub(crate) struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        inner.open.fetch_sub(1, Ordering::AcqRel);
        inner.stirred.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_with_nothing_open_and_nothing_begun_since() {
        let activity = Activity::default();
        assert!(activity.idle_since_last_look());
        let busy = activity.begin();
        assert!(!activity.idle_since_last_look(), "open");
        drop(busy);
        assert!(
            !activity.idle_since_last_look(),
            "it ended since the last look"
        );
        assert!(activity.idle_since_last_look());
    }
}
