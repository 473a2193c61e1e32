//! A one-shot signal: fired once, awaited by many. The server fires one
//! when it shuts down, and every WebSocket it serves closes on it
//! (`WebSocket::close_on`), without the WebSocket knowing the server.
//!
//! A connection waits for it beside its socket for its whole life, and polls
//! it each time the socket has nothing more (once per message under load).
//! `tokio_util`'s `CancellationToken` takes a mutex on every such poll (it
//! re-registers the waker), which showed as ~6% of the server's user-space
//! instructions per 20-byte echo. Here a poll is one atomic load and, when
//! the task's waker is the one already registered, nothing else: the mutex
//! is taken once per connection to register and once to leave.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A cloneable handle on one signal.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signal {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    fired: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_key: u64,
    wakers: HashMap<u64, Waker>,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Fires the signal: every [`Fired`] future, now and later, is ready.
    pub(crate) fn fire(&self) {
        // Set before taking the lock: a waiter that registers after this
        // sees the flag under the lock and does not wait.
        self.inner.fired.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut waiters = self.lock();
            waiters.wakers.drain().map(|(_, w)| w).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }

    /// A future that is ready once the signal fires.
    pub(crate) fn fired(&self) -> Fired {
        Fired {
            shutdown: self.clone(),
            registered: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // The map stays consistent whatever panicked while holding it.
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits for [`Signal::fire`]; see [`Signal::fired`].
#[derive(Debug)]
pub(crate) struct Fired {
    shutdown: Signal,
    /// The key under which a waker is registered, and a clone of it.
    registered: Option<(u64, Waker)>,
}

impl Future for Fired {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shutdown.is_fired() {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &this.registered
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let mut waiters = this.shutdown.lock();
        // Checked again under the lock: `fire` drains the wakers under it
        // after setting the flag, so either it sees this waker or this sees
        // the flag.
        if this.shutdown.is_fired() {
            return Poll::Ready(());
        }
        let key = match &this.registered {
            Some((key, _)) => *key,
            None => {
                waiters.next_key += 1;
                waiters.next_key
            }
        };
        waiters.wakers.insert(key, cx.waker().clone());
        this.registered = Some((key, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Fired {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.shutdown.lock().wakers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_wakes_and_later_ones_are_ready_at_once() {
        let shutdown = Signal::new();
        let waiters: Vec<_> = (0..10).map(|_| tokio::spawn(shutdown.fired())).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(shutdown.lock().wakers.len(), 10);
        assert!(!shutdown.is_fired());
        shutdown.fire();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        }
        assert!(shutdown.lock().wakers.is_empty());
        shutdown.fired().await;
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_no_waker_behind() {
        let shutdown = Signal::new();
        let waiter = tokio::spawn(shutdown.fired());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(shutdown.lock().wakers.len(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert!(shutdown.lock().wakers.is_empty());
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let shutdown = Signal::new();
        let mut fired = Box::pin(shutdown.fired());
        for _ in 0..3 {
            // A fresh no-op-like waker each time: never `will_wake` the last.
            let waker = Waker::from(Arc::new(Flag::default()));
            let mut cx = Context::from_waker(&waker);
            assert!(fired.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(shutdown.lock().wakers.len(), 1);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        assert!(
            fired
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        shutdown.fire();
        assert!(flag.0.load(Ordering::SeqCst), "the latest waker is woken");
        assert!(
            fired
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
