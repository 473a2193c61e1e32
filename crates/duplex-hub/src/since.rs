//! Where a resuming subscriber left off: what the Rust client, the hub and
//! the backplane engines all speak of.

/// Where a resuming subscriber left off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Since {
    /// The epoch of `offset`; `None` for the topic's current one.
    pub epoch: Option<String>,
    /// The last offset the subscriber saw (0: all that is retained).
    pub offset: u64,
}
