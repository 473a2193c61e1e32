//! Corked fan-out: a publisher puts a message straight into the output of
//! each subscriber that has nothing queued in the hub, and a flush pass
//! writes those outputs afterwards, as uWebSockets' corked publish does.
//! The subscribers' tasks are not woken at all, and every message
//! published before the pass comes round goes out in the same write: under
//! load, one write per subscriber carries several messages, and one pass
//! serves the publishes of many topics.
//!
//! The service's topic sessions implement [`WriteThrough`] (their
//! `Direct`); a topic's fan-out calls it before queueing, and [`corked`]
//! is the list of outputs the next pass is to write: one per thread, so
//! that publishers to different topics on different threads share no
//! lock. The pass spreads the sockets over the runtime's workers.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::delivery::Delivery;

/// A subscriber's socket, which a publisher writes into itself while
/// nothing is queued for it in the hub.
pub(crate) trait WriteThrough: Send + Sync + fmt::Debug {
    /// Puts `delivery` into the socket's output without writing it, if the
    /// socket takes it (open, with room). `None`: nothing was done, queue
    /// it. `Some(true)`: its output held nothing corked before, so it is
    /// to be added to the next pass; `Some(false)`: it is in one already.
    fn try_cork(&self, delivery: &Delivery) -> Option<bool>;

    /// Writes what is corked in its output as far as the socket takes it at
    /// once, from the flush pass; never waits (the subscriber's task is
    /// woken for the rest).
    fn write_corked(&self);
}

/// Outputs waiting for a flush pass, and whether one is scheduled.
#[derive(Debug, Default)]
pub(super) struct Corked {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    sockets: Vec<Arc<dyn WriteThrough>>,
    scheduled: bool,
}

/// The smallest share of a pass handed to another worker (a share costs
/// a task): a pass is split only from twice this many sockets.
const SHARE: usize = 256;

thread_local! {
    static CORKED: Arc<Corked> = Arc::default();
}

/// This thread's list of outputs for the next flush pass.
pub(super) fn corked() -> Arc<Corked> {
    CORKED.with(Arc::clone)
}

impl Corked {
    /// Adds `sockets` to the next pass, and schedules it unless one is
    /// scheduled already or nothing waits. Outside a Tokio runtime it
    /// writes at once.
    pub(super) fn add(self: &Arc<Self>, mut sockets: Vec<Arc<dyn WriteThrough>>) {
        {
            let mut pending = self.lock();
            if pending.sockets.is_empty() {
                // The caller's allocation, rather than a copy.
                std::mem::swap(&mut pending.sockets, &mut sockets);
            }
            pending.sockets.append(&mut sockets);
            if pending.scheduled || pending.sockets.is_empty() {
                return;
            }
            pending.scheduled = true;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let mut scheduled = Scheduled(Some(Arc::clone(self)));
                let workers = runtime.metrics().num_workers();
                runtime.spawn(async move {
                    // Behind whatever is ready to run, and one look at
                    // the sockets: publishes that came meanwhile join
                    // this pass (their messages share its writes).
                    tokio::task::yield_now().await;
                    if let Some(corked) = scheduled.0.take() {
                        corked.pass(workers);
                    }
                });
            }
            Err(_) => self.pass(1),
        }
    }

    /// Writes every output waiting, shared between `workers` tasks.
    fn pass(&self, workers: usize) {
        let mut sockets = {
            let mut pending = self.lock();
            pending.scheduled = false;
            std::mem::take(&mut pending.sockets)
        };
        if workers > 1 && sockets.len() >= 2 * SHARE {
            let share = sockets.len().div_ceil(workers).max(SHARE);
            while sockets.len() > share {
                let theirs = sockets.split_off(sockets.len() - share);
                tokio::spawn(async move { write_all(theirs) });
            }
        }
        write_all(sockets);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A list of sockets is whole whatever panicked while holding it.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pass that is scheduled and has not run. Dropped unrun (its runtime
/// shut down first), it unschedules itself: the list is the thread's, and
/// a runtime started on the thread later must still get passes.
struct Scheduled(Option<Arc<Corked>>);

impl Drop for Scheduled {
    fn drop(&mut self) {
        if let Some(corked) = self.0.take() {
            corked.lock().scheduled = false;
        }
    }
}

fn write_all(sockets: Vec<Arc<dyn WriteThrough>>) {
    for socket in sockets {
        socket.write_corked();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Counted(AtomicUsize);

    impl WriteThrough for Counted {
        fn try_cork(&self, _: &Delivery) -> Option<bool> {
            unreachable!("the pass only writes")
        }
        fn write_corked(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sockets(n: usize) -> Vec<Arc<Counted>> {
        (0..n).map(|_| Arc::new(Counted::default())).collect()
    }

    fn add_all(corked: &Arc<Corked>, sockets: &[Arc<Counted>]) {
        corked.add(
            sockets
                .iter()
                .map(|s| Arc::clone(s) as Arc<dyn WriteThrough>)
                .collect(),
        );
    }

    #[tokio::test]
    async fn one_pass_writes_what_was_corked_before_it_ran() {
        let corked = Arc::new(Corked::default());
        let first = sockets(3);
        add_all(&corked, &first);
        // Scheduled already: the second joins the first's pass.
        let second = sockets(2);
        add_all(&corked, &second);
        assert!(
            first
                .iter()
                .chain(&second)
                .all(|s| s.0.load(Ordering::Relaxed) == 0)
        );
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(
            first
                .iter()
                .chain(&second)
                .all(|s| s.0.load(Ordering::Relaxed) == 1)
        );
        assert!(corked.lock().sockets.is_empty() && !corked.lock().scheduled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_pass_in_shares_writes_each_socket_once() {
        let corked = Arc::new(Corked::default());
        let all = sockets(10 * SHARE);
        add_all(&corked, &all);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while all.iter().any(|s| s.0.load(Ordering::Relaxed) == 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pass never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(all.iter().all(|s| s.0.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_pass_dropped_with_its_runtime_leaves_the_next_runtime_its_passes() {
        let corked = Arc::new(Corked::default());
        let first = sockets(1);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        // Scheduled, then its runtime goes before the pass runs.
        runtime().block_on(async { add_all(&corked, &first) });
        assert_eq!(first[0].0.load(Ordering::Relaxed), 0);
        let second = sockets(1);
        runtime().block_on(async {
            add_all(&corked, &second);
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        });
        // The second runtime's pass wrote both.
        assert_eq!(first[0].0.load(Ordering::Relaxed), 1);
        assert_eq!(second[0].0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn outside_a_runtime_the_pass_writes_at_once() {
        let corked = Arc::new(Corked::default());
        let all = sockets(2);
        add_all(&corked, &all);
        assert!(all.iter().all(|s| s.0.load(Ordering::Relaxed) == 1));
    }
}
