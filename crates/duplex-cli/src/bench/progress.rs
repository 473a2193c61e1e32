//! How the echo and idle loads run: connections spread over threads, each a
//! single-threaded runtime (so that the load generator can be pinned to
//! cores), counters the threads update while the controller waits, and a
//! progress bar on stderr.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::BenchError;

/// Counters the threads update and the controller reads while they run.
#[derive(Default)]
pub(super) struct Progress {
    /// Connections that finished their handshake.
    pub(super) opened: AtomicU64,
    /// Connections that failed (to open, or later).
    pub(super) failed: AtomicU64,
    /// Replies received, warm-up included.
    pub(super) replies: AtomicU64,
    /// Why the first failed connection failed, to tell the user.
    first_error: std::sync::Mutex<Option<String>>,
}

impl Progress {
    /// Logs a connection's failure and keeps the first one's reason.
    pub(super) fn note_error(&self, e: &BenchError) {
        tracing::debug!(error = %e, "connection failed");
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    /// Waits until every connection opened or failed, showing progress.
    pub(super) fn wait_until_all_tried(&self, conns: usize, bar: &ProgressBar) {
        loop {
            let opened = self.opened.load(Ordering::Relaxed);
            bar.set_position(opened);
            if opened + self.failed.load(Ordering::Relaxed) >= conns as u64 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A thread's runtime; if it cannot start, its connections count as
    /// failed.
    pub(super) fn runtime_for(&self, conns: usize) -> Option<tokio::runtime::Runtime> {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match built {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a runtime");
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| format!("cannot start a runtime: {e}"));
                }
                self.failed.fetch_add(conns as u64, Ordering::Relaxed);
                None
            }
        }
    }

    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// Splits `conns` connections over `threads` threads, as evenly as can be.
pub(super) fn shares(conns: usize, threads: usize) -> impl Iterator<Item = usize> {
    let threads = threads.clamp(1, conns.max(1));
    (0..threads).map(move |i| conns / threads + usize::from(i < conns % threads))
}

/// Sleeps until `deadline`, calling `tick` every 100 ms.
pub(super) fn sleep_until(deadline: Instant, mut tick: impl FnMut()) {
    loop {
        tick();
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

pub(super) fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A progress bar on stderr, hidden with `--json` or when stderr is not a
/// terminal.
pub(super) fn progress_bar(json: bool, len: u64, what: &'static str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(bar_style("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}"));
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_shared_evenly() {
        assert_eq!(shares(10, 3).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(shares(2, 2).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(shares(3, 8).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(shares(10_000, 1).sum::<usize>(), 10_000);
    }
}
