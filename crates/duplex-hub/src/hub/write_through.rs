//! A subscriber whose socket a publisher may write to itself while it is
//! idle, as uWebSockets' publish does: the subscriber's task is then not
//! woken at all. The service's raw topic sessions implement it (their
//! `Direct`); the topic's fan-out calls it before queueing.

use std::fmt;

use super::delivery::Delivery;

/// A subscriber's socket, written to directly while it is idle.
pub(crate) trait WriteThrough: Send + Sync + fmt::Debug {
    /// Sends `delivery` if the subscriber has nothing queued and nothing
    /// in its output; `false`: nothing was done, queue it.
    fn try_send(&self, delivery: &Delivery) -> bool;
}

/// Whether this runs on a single-threaded (current-thread) Tokio runtime.
pub(super) fn single_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}
