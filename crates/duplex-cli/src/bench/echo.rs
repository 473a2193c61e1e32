//! `duplex bench echo URL`: each connection sends a message and waits for
//! the whole reply, again and again, so that each has exactly one message in
//! flight; with `--pipeline K`, K of them: it sends K frames, and whenever
//! replies come back sends as many again (one write for all of them), so
//! that one core of load generation can keep a server busy with small
//! messages.
//!
//! The frame is encoded and masked once, before the run, and every send
//! writes those same bytes; replies are followed header by header, their
//! payloads counted and skipped ([`ReplyParser`]). After `--warmup` seconds,
//! `--secs` seconds are measured: messages, latency (from each message's own
//! send time to its whole reply, replies coming back in order; hdrhistogram)
//! and, with `--server-pid`, the server's CPU time per message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use duplex_proto::{FrameHeader, OpCode};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::watch;

use super::client::{
    Buffer, Dialer, Endpoint, FINISH_GRACE, ReplyParser, build_close, build_frame, client_frame,
    close, rand_key, send,
};
use super::error::BenchError;
use super::fd_limit::{SPARE_FDS, raise_fd_limit};
use super::flags::{MAX_SIZE, seconds};
use super::proc::Sampler;
use super::progress::{Progress, bar_style, progress_bar, shares, sleep_until};
use super::report::{Output, Report, errors_line};

/// With `--pipeline` above 1, the most bytes of frames one connection may
/// have in flight: past the socket buffers, a server that reads while it
/// cannot write would stall both ends.
const MAX_PIPELINE_BYTES: usize = 64 << 10;

/// Flags of `duplex bench echo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_name = "N")]
    conns: usize,
    /// Payload size of each message, in bytes (at most 64 MiB).
    #[arg(long, default_value_t = 20, value_name = "BYTES")]
    size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    secs: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// Echo binary messages (the default).
    #[arg(long, conflicts_with = "text")]
    binary: bool,
    /// Echo text messages (ASCII payload, which the server must validate).
    #[arg(long)]
    text: bool,
    /// Messages in flight per connection. Above 1, the frames of one
    /// connection in flight may total at most 64 KiB (e.g. 20 B × 2,000 or
    /// 1 KiB × 63). Latency is still measured per message, from its own send.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pipeline: usize,
    /// Load generator threads, each a single-threaded runtime with its share
    /// of the connections.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// The server's process id: its CPU time per message.
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
    size: usize,
    text: bool,
    secs: Duration,
    warmup: Duration,
    threads: usize,
    pipeline: usize,
    sampler: Sampler,
    json: bool,
}

/// Checks every flag and readies the connections' dialer.
fn plan(args: &EchoArgs) -> Result<Plan, BenchError> {
    let usage = |s: String| Err(BenchError::Usage(s));
    if args.conns == 0 {
        return usage("--conns must be at least 1".into());
    }
    if args.size > MAX_SIZE {
        return usage(format!(
            "--size {}: at most {MAX_SIZE} bytes (64 MiB)",
            args.size
        ));
    }
    if args.threads == 0 {
        return usage("--threads must be at least 1".into());
    }
    let secs = seconds("--secs", args.secs, false)?;
    let warmup = seconds("--warmup", args.warmup, true)?;
    if args.pipeline == 0 {
        return usage("--pipeline must be at least 1".into());
    }
    if args.pipeline > 1 {
        let frame = FrameHeader::new(OpCode::Binary, args.size, Some([0; 4])).len() + args.size;
        if args.pipeline.saturating_mul(frame) > MAX_PIPELINE_BYTES {
            return usage(format!(
                "--pipeline {} with --size {}: {} frames of {frame} bytes exceed the {} KiB \
                 a connection may have in flight",
                args.pipeline,
                args.size,
                args.pipeline,
                MAX_PIPELINE_BYTES >> 10
            ));
        }
    }
    Ok(Plan {
        dialer: Dialer::new(&args.endpoint)?,
        conns: args.conns,
        size: args.size,
        text: args.text,
        secs,
        warmup,
        threads: args.threads.min(args.conns),
        pipeline: args.pipeline,
        sampler: Sampler::new(args.server_pid.into_iter().collect())?,
        json: args.output.json,
    })
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one thread counted.
struct Stats {
    /// Round-trip times in nanoseconds, within the window.
    latency: Histogram<u64>,
    /// Replies completed within the window.
    msgs: u64,
    errors: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            // 1 µs to 60 s at three significant digits.
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            msgs: 0,
            errors: 0,
        }
    }
}

struct Frames {
    /// The message frame `--pipeline` times over, so that sending n frames at
    /// once is one write of `batch[..n * len]`.
    batch: Vec<u8>,
    /// The length of one message frame.
    len: usize,
    close: Vec<u8>,
    /// The masking key of the run, for Pongs.
    key: [u8; 4],
}

pub(super) fn run(args: &EchoArgs) -> Result<Report, BenchError> {
    let plan = &plan(args)?;
    raise_fd_limit(plan.conns as u64 + SPARE_FDS);
    let key: [u8; 4] = rand_key();
    let message = build_frame(plan.text, plan.size, key);
    let frames = Arc::new(Frames {
        len: message.len(),
        // `plan` bounds the batch to 64 KiB when `pipeline` is above 1.
        batch: message.repeat(plan.pipeline),
        close: build_close(key),
        key,
    });
    let progress = Arc::new(Progress::default());
    let (window_tx, window_rx) = watch::channel(None::<Window>);
    let bar = progress_bar(plan.json, plan.conns as u64, "connecting");
    let workers: Vec<_> = shares(plan.conns, plan.threads)
        .map(|share| {
            let plan = plan.clone();
            let frames = Arc::clone(&frames);
            let progress = Arc::clone(&progress);
            let window_rx = window_rx.clone();
            std::thread::spawn(move || echo_thread(&plan, share, &frames, &progress, window_rx))
        })
        .collect();
    drop(window_rx);

    // Wait for every connection to be open (or failed) before the clock starts.
    progress.wait_until_all_tried(plan.conns, &bar);
    let opened = progress.opened.load(Ordering::Relaxed);
    let start = Instant::now() + plan.warmup;
    let window = Window {
        start,
        end: start + plan.secs,
    };
    // Receivers are gone only if every thread ended already.
    let _ = window_tx.send(Some(window));

    let total = plan.warmup + plan.secs;
    bar.set_length(total.as_millis() as u64);
    bar.set_position(0);
    bar.set_style(bar_style("{spinner} {prefix} [{bar:30}] {elapsed} {msg}"));
    bar.set_prefix(if plan.warmup.is_zero() {
        "measuring"
    } else {
        "warming up"
    });
    let began = Instant::now();
    let tick = |bar: &ProgressBar| {
        bar.set_position(began.elapsed().as_millis() as u64);
        let replies = progress.replies.load(Ordering::Relaxed);
        bar.set_message(format!("{replies} replies"));
    };
    sleep_until(window.start, || tick(&bar));
    let cpu_before = plan.sampler.cpu_us()?;
    bar.set_prefix("measuring");
    sleep_until(window.end, || tick(&bar));
    let cpu_after = plan.sampler.cpu_us()?;
    bar.set_prefix("finishing");

    let mut stats = Stats::new();
    for worker in workers {
        let s = worker
            .join()
            .map_err(|_| BenchError::UnexpectedReply("a load thread panicked".into()))?;
        stats
            .latency
            .add(&s.latency)
            .map_err(|e| BenchError::UnexpectedReply(format!("merging latency histograms: {e}")))?;
        stats.msgs += s.msgs;
        stats.errors += s.errors;
    }
    bar.finish_and_clear();

    let secs = plan.secs.as_secs_f64();
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if stats.msgs > 0 => {
            Some(b.saturating_sub(a) as f64 / stats.msgs as f64)
        }
        _ => None,
    };
    let result = EchoResult {
        conns: plan.conns,
        opened,
        size: plan.size,
        text: plan.text,
        threads: plan.threads,
        pipeline: plan.pipeline,
        secs,
        warmup: plan.warmup.as_secs_f64(),
        msgs: stats.msgs,
        errors: stats.errors,
        first_error: progress.first_error(),
        latency: &stats.latency,
        server_cpu_us_per_msg: cpu_us,
    };
    Ok(Report {
        json: result.json(),
        summary: result.summary(),
        ok: stats.msgs > 0,
    })
}

/// The connections of one thread, each in its own task.
fn echo_thread(
    plan: &Plan,
    conns: usize,
    frames: &Arc<Frames>,
    progress: &Arc<Progress>,
    window: watch::Receiver<Option<Window>>,
) -> Stats {
    let stats = Rc::new(RefCell::new(Stats::new()));
    let Some(runtime) = progress.runtime_for(conns) else {
        let mut s = Stats::new();
        s.errors = conns as u64;
        return s;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let plan = plan.clone();
            let frames = Arc::clone(frames);
            let progress = Arc::clone(progress);
            let stats = Rc::clone(&stats);
            let window = window.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let result = echo_conn(&plan, &frames, &progress, &stats, window).await;
                if let Err(e) = result {
                    progress.note_error(&e);
                    stats.borrow_mut().errors += 1;
                }
            }));
        }
        for task in tasks {
            // A task only ends by returning; a panic would be a bug here.
            let _ = task.await;
        }
    });
    // Every task was awaited, so this is the last reference.
    Rc::try_unwrap(stats).map_or_else(|rc| rc.replace(Stats::new()), RefCell::into_inner)
}

/// One connection of the echo mode.
async fn echo_conn(
    plan: &Plan,
    frames: &Frames,
    progress: &Progress,
    stats: &RefCell<Stats>,
    mut window: watch::Receiver<Option<Window>>,
) -> Result<(), BenchError> {
    // Reads of up to 256 KiB: large replies in few system calls.
    let capacity = (plan.size + duplex_proto::MAX_HEADER_LEN).min(256 << 10);
    let mut reader = Buffer::new(capacity, capacity);
    let opened = plan.dialer.open(&mut reader).await;
    let mut stream = match opened {
        Ok(stream) => {
            progress.opened.fetch_add(1, Ordering::Relaxed);
            stream
        }
        Err(e) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    let window = match window.wait_for(Option::is_some).await {
        Ok(window) => *window,
        Err(_) => None,
    };
    let Some(window) = window else {
        // The controller is gone: nothing to measure.
        return Ok(());
    };
    let run = async {
        let mut in_flight = InFlight::new(plan.pipeline);
        let mut parser = ReplyParser::new(plan.size);
        loop {
            let n = in_flight.refill(Instant::now(), window.end);
            if n > 0 {
                send(&mut stream, &frames.batch[..n * frames.len]).await?;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let replies = loop {
                let replies = reader.take_replies(&mut parser)?;
                if let Some(ping) = parser.pong.take() {
                    send(&mut stream, &client_frame(OpCode::Pong, &ping, frames.key)).await?;
                }
                if replies > 0 {
                    break replies;
                }
                reader.read_some(&mut stream).await?;
            };
            let done = Instant::now();
            progress
                .replies
                .fetch_add(replies as u64, Ordering::Relaxed);
            in_flight.complete(replies, done, &window, &mut stats.borrow_mut())?;
        }
    };
    // Past the window's end, only the last replies may still be awaited.
    let give_up = tokio::time::Instant::from_std(window.end + FINISH_GRACE);
    match tokio::time::timeout_at(give_up, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(BenchError::UnexpectedReply(
                "no reply by the end of the run".into(),
            ));
        }
    }
    close(stream, &frames.close).await;
    Ok(())
}

/// The messages one connection has in flight, by send time, oldest first.
#[derive(Debug)]
struct InFlight {
    sent: VecDeque<Instant>,
    /// The most in flight at once (`--pipeline`).
    depth: usize,
}

impl InFlight {
    fn new(depth: usize) -> Self {
        InFlight {
            sent: VecDeque::with_capacity(depth),
            depth,
        }
    }

    /// Tops up to `depth` messages sent at `now`, unless the window is over;
    /// returns how many to send.
    fn refill(&mut self, now: Instant, end: Instant) -> usize {
        if now >= end {
            return 0;
        }
        let n = self.depth - self.sent.len();
        self.sent.extend((0..n).map(|_| now));
        n
    }

    fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// `replies` came back whole at `done`: the oldest messages, since an
    /// echo keeps the order. Those completed within the window count, each
    /// with its latency from its own send time.
    fn complete(
        &mut self,
        replies: usize,
        done: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<(), BenchError> {
        if replies > self.sent.len() {
            return Err(BenchError::UnexpectedReply(format!(
                "{replies} replies with {} messages in flight",
                self.sent.len()
            )));
        }
        let counted = done >= window.start && done < window.end;
        for sent in self.sent.drain(..replies) {
            if counted {
                stats.msgs += 1;
                stats.latency.saturating_record(nanos(done - sent));
            }
        }
        Ok(())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct EchoResult<'a> {
    conns: usize,
    opened: u64,
    size: usize,
    text: bool,
    threads: usize,
    pipeline: usize,
    secs: f64,
    warmup: f64,
    msgs: u64,
    errors: u64,
    first_error: Option<String>,
    latency: &'a Histogram<u64>,
    server_cpu_us_per_msg: Option<f64>,
}

impl EchoResult<'_> {
    fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs
    }

    fn mib_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / f64::from(1 << 20)
    }

    /// A latency quantile in µs; `None` with no sample.
    fn quantile_us(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": "echo",
            "conns": self.conns,
            "size": self.size,
            "secs": self.secs,
            "msgs": self.msgs,
            "msgs_per_sec": self.msgs_per_sec(),
            "mib_per_sec": self.mib_per_sec(),
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_us_per_msg": self.server_cpu_us_per_msg,
            "threads": self.threads,
            "pipeline": self.pipeline,
        })
    }

    fn summary(&self) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs"));
        let kind = if self.text { "text" } else { "binary" };
        let mut s = format!(
            "echo: {} connections ({} opened), {} B {kind} messages, {} s measured after {} s warm-up\n",
            self.conns, self.opened, self.size, self.secs, self.warmup
        );
        s += &format!(
            "  load       {} thread(s), {} message(s) in flight per connection\n",
            self.threads, self.pipeline
        );
        s += &format!(
            "  messages   {} ({:.0} msgs/s, {:.2} MiB/s)\n",
            self.msgs,
            self.msgs_per_sec(),
            self.mib_per_sec()
        );
        s += &format!(
            "  latency    p50 {}  p99 {}  p99.9 {}\n",
            us(self.quantile_us(0.5)),
            us(self.quantile_us(0.99)),
            us(self.quantile_us(0.999))
        );
        if let Some(cpu) = self.server_cpu_us_per_msg {
            s += &format!("  server CPU {cpu:.2} µs per message\n");
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
        args: EchoArgs,
    }

    fn parse(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(["echo"].iter().chain(args)).map_err(|e| e.to_string())?;
        plan(&cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_compare_script_flags_are_accepted() {
        let me = std::process::id().to_string();
        let plan = parse(&[
            "ws://127.0.0.1:9000/",
            "--conns",
            "100",
            "--size",
            "1024",
            "--secs",
            "2",
            "--warmup",
            "1",
            "--binary",
            "--server-pid",
            &me,
            "--json",
        ])
        .unwrap();
        assert_eq!((plan.conns, plan.size, plan.text), (100, 1024, false));
        assert_eq!(plan.secs, Duration::from_secs(2));
        assert_eq!(plan.warmup, Duration::from_secs(1));
        assert_eq!(plan.sampler.pids(), [std::process::id()]);
        assert!(plan.json);
        assert_eq!(plan.dialer.addr.port(), 9000);
        assert!(parse(&["ws://[::1]:9000/", "--http2"]).is_ok());
    }

    #[test]
    fn bad_flags_are_refused_with_a_clear_message() {
        let err = parse(&["ws://127.0.0.1:1/", "--conns", "0"]).unwrap_err();
        assert!(err.contains("--conns"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--secs", "0"]).unwrap_err();
        assert!(err.contains("--secs"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--secs=-1"]).unwrap_err();
        assert!(err.contains("--secs"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--warmup", "NaN"]).unwrap_err();
        assert!(err.contains("--warmup"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--size", "67108865"]).unwrap_err();
        assert!(err.contains("--size") && err.contains("64 MiB"), "{err}");
        assert!(parse(&["ws://127.0.0.1:1/", "--size", "67108864"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--threads", "0"]).unwrap_err();
        assert!(err.contains("--threads"), "{err}");
        assert!(parse(&["wss://127.0.0.1:1/"]).unwrap().dialer.is_tls());
        assert!(!parse(&["ws://127.0.0.1:1/"]).unwrap().dialer.is_tls());
        let err = parse(&["ws://127.0.0.1:1/", "--ca", "ca.pem"]).unwrap_err();
        assert!(err.contains("--ca") && err.contains("wss://"), "{err}");
        let err = parse(&["wss://127.0.0.1:1/", "--ca", "/nonexistent/ca.pem"]).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = parse(&["ftp://127.0.0.1:1/"]).unwrap_err();
        assert!(err.contains("ws://"), "{err}");
        let err = parse(&["127.0.0.1:1"]).unwrap_err();
        assert!(err.contains("ws://") || err.contains("no host"), "{err}");
        assert!(parse(&["ws://127.0.0.1:1/", "--binary", "--text"]).is_err());
        let err = parse(&["ws://127.0.0.1:1/", "--server-pid", "4294967295"]).unwrap_err();
        assert!(err.contains("/proc/4294967295"), "{err}");
        // Flags of the other loads are not echo's.
        for other in ["--deflate", "--settle=1", "--subscribers=3"] {
            assert!(parse(&["ws://127.0.0.1:1/", other]).is_err(), "{other}");
        }
        assert_eq!(
            parse(&["ws://127.0.0.1:1/", "--warmup", "0"])
                .unwrap()
                .warmup,
            Duration::ZERO
        );
    }

    #[test]
    fn pipelines_are_bounded_by_the_bytes_in_flight() {
        let plan = parse(&["ws://127.0.0.1:1/", "--pipeline", "8", "--size", "1024"]).unwrap();
        assert_eq!(plan.pipeline, 8);
        assert_eq!(parse(&["ws://127.0.0.1:1/"]).unwrap().pipeline, 1);
        // 20 B frames are 26 bytes on the wire: 2,520 of them fit in 64 KiB.
        assert!(parse(&["ws://127.0.0.1:1/", "--pipeline", "2520"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "2521"]).unwrap_err();
        assert!(
            err.contains("--pipeline") && err.contains("64 KiB"),
            "{err}"
        );
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "2", "--size", "1048576"]);
        assert!(err.unwrap_err().contains("in flight"));
        // One message in flight is always allowed, whatever its size.
        assert!(parse(&["ws://127.0.0.1:1/", "--pipeline", "1", "--size", "1048576"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "0"]).unwrap_err();
        assert!(err.contains("--pipeline"), "{err}");
    }

    #[test]
    fn threads_never_outnumber_connections() {
        let plan = parse(&["ws://127.0.0.1:1/", "--conns", "3", "--threads", "8"]).unwrap();
        assert_eq!(plan.threads, 3);
    }

    /// With several messages in flight, each reply's latency runs from its own
    /// send time; only replies completed inside the window count.
    #[test]
    fn pipelined_latency_is_measured_per_message() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let window = Window {
            start: ms(10),
            end: ms(100),
        };
        let mut stats = Stats::new();
        let mut in_flight = InFlight::new(4);
        // Before the window: four sent at 0, two back at 5 (warm-up, not counted).
        assert_eq!(in_flight.refill(t0, window.end), 4);
        assert_eq!(in_flight.refill(t0, window.end), 0);
        in_flight.complete(2, ms(5), &window, &mut stats).unwrap();
        assert_eq!(stats.msgs, 0);
        // Two more sent at 5; at 12 three come back: the two of t0 (12 ms)
        // and the first of 5 (7 ms).
        assert_eq!(in_flight.refill(ms(5), window.end), 2);
        in_flight.complete(3, ms(12), &window, &mut stats).unwrap();
        assert_eq!(stats.msgs, 3);
        assert_eq!(stats.latency.count_at(12_000_000), 2);
        assert_eq!(stats.latency.count_at(7_000_000), 1);
        // Past the end: nothing new is sent; the last replies are drained but
        // not counted.
        assert_eq!(in_flight.refill(ms(12), window.end), 3);
        assert_eq!(in_flight.refill(ms(100), window.end), 0);
        in_flight.complete(4, ms(101), &window, &mut stats).unwrap();
        assert!(in_flight.is_empty());
        assert_eq!(stats.msgs, 3);
        assert_eq!(stats.latency.len(), 3);
        // A reply nobody asked for is an error, not a miscount.
        let err = in_flight.complete(1, ms(102), &window, &mut stats);
        assert!(matches!(err, Err(BenchError::UnexpectedReply(_))));
    }

    #[test]
    fn json_matches_the_compare_contract() {
        let mut hist = Stats::new().latency;
        for us in 1..=1000u64 {
            hist.record(us * 1000).unwrap();
        }
        let echo = EchoResult {
            conns: 100,
            opened: 100,
            size: 1024,
            text: false,
            threads: 2,
            pipeline: 4,
            secs: 2.0,
            warmup: 1.0,
            msgs: 2048,
            errors: 0,
            first_error: None,
            latency: &hist,
            server_cpu_us_per_msg: None,
        }
        .json();
        let keys: Vec<_> = echo.as_object().unwrap().keys().cloned().collect();
        let mut expect = [
            "mode",
            "conns",
            "size",
            "secs",
            "msgs",
            "msgs_per_sec",
            "mib_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "errors",
            "first_error",
            "server_cpu_us_per_msg",
            "threads",
            "pipeline",
        ];
        expect.sort_unstable();
        assert_eq!(keys, expect);
        assert_eq!(echo["mode"], "echo");
        assert_eq!(
            (&echo["threads"], &echo["pipeline"]),
            (&2.into(), &4.into())
        );
        assert_eq!(echo["msgs_per_sec"], 1024.0);
        assert_eq!(echo["mib_per_sec"], 1.0);
        assert!(echo["server_cpu_us_per_msg"].is_null());
        let p50 = echo["p50_us"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
    }
}
