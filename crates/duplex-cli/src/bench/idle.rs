//! `duplex bench idle URL`: opens `--conns` connections, holds them
//! (answering the server's Pings, as a browser would), and with
//! `--server-pid` reports the growth of the server's RSS per connection,
//! `--settle` seconds after the last one opened.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use duplex_proto::OpCode;
use tokio::sync::watch;

use super::client::{
    Buffer, Conn, Dialer, Endpoint, Event, Messages, build_close, client_frame, close, rand_key,
    send,
};
use super::error::BenchError;
use super::fd_limit::{SPARE_FDS, raise_fd_limit};
use super::flags::seconds;
use super::proc::Sampler;
use super::progress::{Progress, progress_bar, shares};
use super::report::{Output, Report, errors_line};

/// Connections a thread opens at once.
const OPENERS: usize = 64;

/// Flags of `duplex bench idle`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_name = "N")]
    conns: usize,
    /// Seconds to wait after every connection is open before reading the
    /// server's RSS.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    settle: f64,
    /// Offer permessage-deflate in the handshake, to measure what a deflate
    /// connection costs the server at rest.
    #[arg(long)]
    deflate: bool,
    /// Load generator threads, each a single-threaded runtime with its share
    /// of the connections.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// The server's process id: its RSS before and after.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    #[command(flatten)]
    pub(super) output: Output,
}

/// The validated settings of one run.
#[derive(Debug, Clone)]
struct Plan {
    dialer: Dialer,
    conns: usize,
    settle: Duration,
    threads: usize,
    sampler: Sampler,
    json: bool,
}

fn plan(args: &IdleArgs) -> Result<Plan, BenchError> {
    if args.conns == 0 {
        return Err(BenchError::Usage("--conns must be at least 1".into()));
    }
    if args.threads == 0 {
        return Err(BenchError::Usage("--threads must be at least 1".into()));
    }
    Ok(Plan {
        dialer: Dialer::new(&args.endpoint)?.deflate(args.deflate),
        conns: args.conns,
        settle: seconds("--settle", args.settle, true)?,
        threads: args.threads.min(args.conns),
        sampler: Sampler::new(args.server_pid.into_iter().collect())?,
        json: args.output.json,
    })
}

pub(super) fn run(args: &IdleArgs) -> Result<Report, BenchError> {
    let plan = &plan(args)?;
    raise_fd_limit(plan.conns as u64 + SPARE_FDS);
    let progress = Arc::new(Progress::default());
    let (done_tx, done_rx) = watch::channel(false);
    let rss_before = plan.sampler.rss()?;
    let bar = progress_bar(plan.json, plan.conns as u64, "opening");
    let key = rand_key();
    let close = Arc::new(build_close(key));
    let workers: Vec<_> = shares(plan.conns, plan.threads)
        .map(|share| {
            let plan = plan.clone();
            let progress = Arc::clone(&progress);
            let done_rx = done_rx.clone();
            let close = Arc::clone(&close);
            std::thread::spawn(move || idle_thread(&plan, share, &progress, done_rx, &close, key))
        })
        .collect();
    drop(done_rx);
    progress.wait_until_all_tried(plan.conns, &bar);
    bar.set_message("settling");
    std::thread::sleep(plan.settle);
    let rss_after = plan.sampler.rss()?;
    let _ = done_tx.send(true);
    bar.set_message("closing");
    for worker in workers {
        let _ = worker.join();
    }
    bar.finish_and_clear();
    let opened = progress.opened.load(Ordering::Relaxed);
    let errors = progress.failed.load(Ordering::Relaxed);
    let result = IdleResult {
        conns: plan.conns,
        opened,
        rss_before,
        rss_after,
        errors,
        first_error: progress.first_error(),
    };
    Ok(Report {
        json: result.json(),
        summary: result.summary(),
        ok: opened > 0,
    })
}

fn idle_thread(
    plan: &Plan,
    conns: usize,
    progress: &Arc<Progress>,
    done: watch::Receiver<bool>,
    close_frame: &Arc<Vec<u8>>,
    key: [u8; 4],
) {
    let Some(runtime) = progress.runtime_for(conns) else {
        return;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let next = Rc::new(std::cell::Cell::new(0usize));
        let mut openers = Vec::new();
        for _ in 0..OPENERS.min(conns) {
            let next = Rc::clone(&next);
            let plan = plan.clone();
            let progress = Arc::clone(progress);
            let done = done.clone();
            let close_frame = Arc::clone(close_frame);
            openers.push(tokio::task::spawn_local(async move {
                let mut holders = Vec::new();
                while next.get() < conns {
                    next.set(next.get() + 1);
                    let mut reader = Buffer::new(4096, 4096);
                    match plan.dialer.open(&mut reader).await {
                        Ok(stream) => {
                            progress.opened.fetch_add(1, Ordering::Relaxed);
                            let held = Held {
                                stream,
                                reader,
                                key,
                            };
                            let progress = Arc::clone(&progress);
                            let done = done.clone();
                            let close_frame = Arc::clone(&close_frame);
                            holders.push(tokio::task::spawn_local(async move {
                                held.hold(&progress, done, &close_frame).await;
                            }));
                        }
                        Err(e) => {
                            progress.note_error(&e);
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                holders
            }));
        }
        let mut holders = Vec::with_capacity(conns);
        for opener in openers {
            holders.extend(opener.await.unwrap_or_default());
        }
        for holder in holders {
            let _ = holder.await;
        }
    });
}

/// One idle connection, held open until the controller is done with it.
struct Held {
    stream: Conn,
    reader: Buffer,
    key: [u8; 4],
}

impl Held {
    /// Answers the server's Pings (keepalive) until `done`, then closes.
    async fn hold(
        mut self,
        progress: &Progress,
        mut done: watch::Receiver<bool>,
        close_frame: &[u8],
    ) {
        loop {
            let read = tokio::select! {
                biased;
                _ = done.wait_for(|done| *done) => break,
                read = self.reader.read_some(&mut self.stream) => read,
            };
            let answered = match read {
                Ok(()) => self.answer_pings().await,
                Err(e) => Err(e),
            };
            if let Err(e) = answered {
                progress.note_error(&e);
                progress.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        close(self.stream, close_frame).await;
    }

    /// Answers the Pings buffered so far. A Close ends the connection; a
    /// data message is an error (nothing else should come).
    async fn answer_pings(&mut self) -> Result<(), BenchError> {
        let mut pongs = Vec::new();
        Messages::new(0).drain(&mut self.reader, |event| match event {
            Event::Ping(payload) => {
                pongs.extend(client_frame(OpCode::Pong, payload, self.key));
                Ok(())
            }
            Event::Message(_) => Err(BenchError::UnexpectedReply(
                "a data message on an idle connection".into(),
            )),
        })?;
        if !pongs.is_empty() {
            send(&mut self.stream, &pongs).await?;
        }
        Ok(())
    }
}

struct IdleResult {
    conns: usize,
    opened: u64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl IdleResult {
    fn bytes_per_conn(&self) -> Option<f64> {
        match (self.rss_before, self.rss_after) {
            (Some(a), Some(b)) if self.opened > 0 => {
                Some((b as f64 - a as f64) / self.opened as f64)
            }
            _ => None,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": "idle",
            "conns": self.conns,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "bytes_per_conn": self.bytes_per_conn(),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "idle: {} connections requested, {} open\n",
            self.conns, self.opened
        );
        if let (Some(a), Some(b), Some(per)) =
            (self.rss_before, self.rss_after, self.bytes_per_conn())
        {
            s += &format!("  server RSS {a} B before, {b} B after: {per:.0} B per connection\n");
        }
        s += &errors_line(self.errors, self.first_error.as_deref());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IdleArgs,
    }

    fn parse(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(["idle"].iter().chain(args)).map_err(|e| e.to_string())?;
        plan(&cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_are_checked() {
        let plan = parse(&["ws://[::1]:9000/", "--conns", "10000", "--deflate"]).unwrap();
        assert_eq!(plan.conns, 10_000);
        assert!(parse(&["ws://127.0.0.1:1/", "--conns", "0"]).is_err());
        assert!(parse(&["ws://127.0.0.1:1/", "--settle", "-1"]).is_err());
        assert_eq!(
            parse(&["ws://127.0.0.1:1/", "--conns", "3", "--threads", "8"])
                .unwrap()
                .threads,
            3
        );
        // Flags of the other loads are not idle's.
        for other in ["--pipeline=2", "--size=10", "--secs=1", "--subscribers=3"] {
            assert!(parse(&["ws://127.0.0.1:1/", other]).is_err(), "{other}");
        }
    }

    #[test]
    fn the_report_says_memory_per_connection() {
        let idle = IdleResult {
            conns: 10,
            opened: 10,
            rss_before: Some(1000),
            rss_after: Some(51_000),
            errors: 2,
            first_error: Some("timed out connecting".into()),
        };
        let summary = idle.summary();
        assert!(
            summary.contains("errors     2 (first: timed out connecting)"),
            "{summary}"
        );
        let idle = idle.json();
        assert_eq!(idle["bytes_per_conn"], 5000.0);
        assert_eq!(idle["mode"], "idle");
        assert_eq!(idle["first_error"], "timed out connecting");
        assert_eq!(idle.as_object().unwrap().len(), 7);
    }
}
