//! [`MessageBudget`]: one bound on the bytes that partly received messages
//! hold across many connections.
//!
//! Each connection's `max_message_size` bounds one message; it does not
//! bound a server: ten thousand peers that each start a large message and
//! never finish it would together hold ten thousand times the limit. A
//! budget shared by every connection of a server bounds the sum. A
//! connection asks for more of it as its message grows (counted after
//! decompression) and gives it back when the message is whole; the one
//! that asks for more than is left is failed with 1013 (try again later).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default limit of a [`Server`](crate::Server)'s budget: 256 MiB.
///
/// Four messages of the default 64 MiB `max_message_size` at once, or tens
/// of thousands of ordinary (kilobyte) messages caught between two reads;
/// on a small machine (1 GiB) it leaves most memory to everything else.
pub const DEFAULT_MESSAGE_BUDGET: usize = 256 << 20;

/// Bytes held by partly received messages, shared by every connection it
/// is given to (through [`Config::message_budget`](crate::Config::message_budget),
/// or for every WebSocket of a [`Server`](crate::Server) through
/// [`Server::message_budget`](crate::Server::message_budget)). Cheap to
/// clone: every clone is the same budget.
#[derive(Clone)]
pub struct MessageBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MessageBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        MessageBudget {
            inner: Arc::new(Inner {
                limit: AtomicUsize::new(limit),
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The most bytes partly received messages may hold together.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// The bytes they hold now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    #[cfg(feature = "hyper")]
    pub(crate) fn set_limit(&self, limit: usize) {
        self.inner.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes `n` more bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        let limit = self.limit();
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
    }
}

impl fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish()
    }
}

/// One connection's share of a budget: what its partly received message
/// holds, given back as the message shrinks (completes) and when dropped.
#[derive(Debug)]
pub(crate) struct BudgetShare {
    budget: MessageBudget,
    held: usize,
}

impl BudgetShare {
    pub(crate) fn new(budget: MessageBudget) -> Self {
        BudgetShare { budget, held: 0 }
    }

    pub(crate) fn budget(&self) -> &MessageBudget {
        &self.budget
    }

    /// What this connection holds of the budget now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Makes the share `held` bytes: takes more from the budget or gives
    /// some back. `false` (and the share unchanged) if the budget has not
    /// enough left.
    pub(crate) fn resize(&mut self, held: usize) -> bool {
        if held > self.held {
            if !self.budget.try_take(held - self.held) {
                return false;
            }
        } else {
            self.budget.give_back(self.held - held);
        }
        self.held = held;
        true
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_up_to_the_limit_and_give_back_on_shrink_and_drop() {
        let budget = MessageBudget::new(100);
        let mut a = BudgetShare::new(budget.clone());
        let mut b = BudgetShare::new(budget.clone());
        assert!(a.resize(60));
        assert!(!b.resize(41), "over the limit");
        assert_eq!((b.held, budget.used()), (0, 60));
        assert!(b.resize(40));
        assert_eq!(budget.used(), 100);
        assert!(a.resize(10));
        assert_eq!(budget.used(), 50);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
