//! `duplex bench --mode fanout`: subscribers on topics and a publisher, to
//! measure what a push server does with one message for many sockets.
//!
//! `--subscribers N` WebSockets are spread over `--topics T` topics
//! (subscriber i on topic i mod T) and over the nodes given (the URL, then
//! every `--url`: subscriber i on node i mod nodes, e.g. two `duplex serve`
//! on one Redis). Once every one is subscribed and `--settle` has passed,
//! a publisher POSTs messages over `--in-flight` keep-alive HTTP/1.1
//! connections, topic after topic, either at `--rate` publishes a second or
//! (`--rate max`) as fast as delivery allows: a publish stays in flight until
//! every subscriber of its topic has it (or `--deliver-timeout` passed), and
//! at most `--in-flight` are. After `--warmup`, `--secs` are measured.
//!
//! Every payload is `--size` bytes of ASCII text that starts with a stamp
//! ([`Stamp`]: topic, per-topic sequence number, publish time), so each
//! delivery yields its publish-to-delivery latency and is checked: seen
//! twice by one subscriber (duplicated), on another topic (misrouted), or
//! not a stamp or a sequence number never published (bogus). Lost is what
//! the publishes the server acknowledged (2xx) owed, subscribers of the
//! topic for each, minus what arrived, counted after the run has drained.
//!
//! Dialects (`--dialect`): `duplex` (subscribers on `/topics/{topic}`,
//! `POST /topics/{topic}`, `--api-key` as a bearer token), `pusher`
//! (Sockudo and other Pusher servers: `/app/{key}`, `pusher:subscribe`, the
//! signed `POST /apps/{id}/events`) and `plain` (the URLs as given, where
//! `{topic}` is replaced: for the Node `ws` and floor servers of
//! `bench/fanout.sh`).
//!
//! With `--server-pid` (and `--server-pids` for more processes, summed) it
//! reads the servers' CPU time over the measured window and their RSS:
//! before the subscribers connect, once they are idle, and at the end.
//!
//! Everything runs on one thread (a current-thread runtime), so that the
//! load generator can be pinned to one core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use duplex_proto::handshake::{ClientRequest, write_request};
use duplex_proto::{FrameHeader, OpCode};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full, Limited};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot, watch};

use super::{BenchArgs, BenchError, client_frame, read_proc_cpu, read_proc_rss, seconds};

/// Handshakes (and subscriptions) in progress at once.
const OPENERS: usize = 64;
/// How long one subscriber may take to connect and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest handshake response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// The largest POST answer body read (the rest is an error).
const MAX_ANSWER: usize = 64 << 10;
/// Bytes a message may have beyond `--size` (a Pusher envelope).
const ENVELOPE_ROOM: usize = 4 << 10;
/// The most subscribers one run may open.
const MAX_SUBSCRIBERS: usize = 1_000_000;
/// The most publishes in flight.
const MAX_IN_FLIGHT: usize = 4096;
/// File descriptors needed besides the subscribers.
const SPARE_FDS: u64 = 64 + MAX_IN_FLIGHT as u64;
/// The Pusher event name of the benchmark's messages.
#[cfg(feature = "pusher")]
const PUSHER_EVENT: &str = "fanout";

/// How subscribers subscribe and the publisher publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Dialect {
    /// duplex serve: WebSocket on /topics/{topic}, POST /topics/{topic}.
    Duplex,
    /// A Pusher server (Sockudo): /app/{key}, pusher:subscribe, the signed
    /// events API.
    Pusher,
    /// Raw WebSockets on the URLs as given and POST to --publish-url;
    /// `{topic}` in them is replaced by the topic's name.
    Plain,
}

/// Flags of `--mode fanout` (the URL, `--size`, `--secs`, `--warmup`,
/// `--settle`, `--server-pid` and `--json` are `duplex bench`'s).
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// Fanout: subscribers to open.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    subscribers: usize,
    /// Fanout: topics (subscriber i subscribes to topic i mod T, named
    /// fanout-0, fanout-1...).
    #[arg(long, default_value_t = 1, value_name = "T")]
    topics: usize,
    /// Fanout: publishes a second, or 0 or "max" for as fast as delivery
    /// allows (at most --in-flight publishes not yet delivered to all).
    #[arg(long, default_value = "max", value_name = "R")]
    rate: String,
    /// Fanout: publishes in flight at most (and HTTP connections of the
    /// publisher).
    #[arg(long, default_value_t = 4, value_name = "N")]
    in_flight: usize,
    /// Fanout: another node to spread subscribers over (repeatable); the
    /// URL given first is the first node.
    #[arg(long = "url", value_name = "URL")]
    nodes: Vec<String>,
    /// Fanout: where to POST publishes (http://); `{topic}` is replaced.
    /// Default: the first node's /topics/{topic} (duplex) or
    /// /apps/{id}/events (pusher); required for --dialect plain.
    #[arg(long, value_name = "URL")]
    publish_url: Option<String>,
    /// Fanout: how to subscribe and publish.
    #[arg(long, value_enum, default_value_t = Dialect::Duplex)]
    dialect: Dialect,
    /// Fanout, duplex: the server's --api-key, sent as a bearer token.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Fanout, pusher: the app id.
    #[arg(long, default_value = "bench-app", value_name = "ID")]
    app_id: String,
    /// Fanout, pusher: the app key.
    #[arg(long, default_value = "bench-key", value_name = "KEY")]
    app_key: String,
    /// Fanout, pusher: the app secret that signs publishes.
    #[arg(long, default_value = "bench-secret", value_name = "SECRET")]
    app_secret: String,
    /// Fanout: more server processes whose CPU and RSS count, comma
    /// separated (with --server-pid).
    #[arg(long, value_delimiter = ',', value_name = "PIDS")]
    server_pids: Vec<u32>,
    /// Fanout: seconds a publish may take to reach every subscriber before
    /// it leaves the in-flight count (rate max).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    deliver_timeout: f64,
    /// Fanout: seconds to wait after publishing ends for deliveries still
    /// on their way, before counting lost ones.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    drain: f64,
    /// Fanout: also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// The payload's stamp: which topic, which publish of it, and when it was
/// published (nanoseconds since the run's origin).
///
/// Encoded as `~` and 17 base64url digits (topic 3, sequence 6, time 8),
/// padded with `.` to the payload size: ASCII with nothing JSON escapes, so
/// it travels unchanged inside a Pusher envelope and is found there by its
/// `~`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    topic: u32,
    seq: u64,
    ts_ns: u64,
}

const STAMP_MARK: u8 = b'~';
const TOPIC_DIGITS: usize = 3;
const SEQ_DIGITS: usize = 6;
const TS_DIGITS: usize = 8;
/// The length of a stamp, the smallest `--size`.
const STAMP_LEN: usize = 1 + TOPIC_DIGITS + SEQ_DIGITS + TS_DIGITS;
/// Topics a stamp can name.
const MAX_TOPICS: usize = 1 << (6 * TOPIC_DIGITS);
/// Publishes of one topic a stamp can number.
const MAX_SEQ: u64 = 1 << (6 * SEQ_DIGITS);
/// Nanoseconds a stamp can hold (78 hours).
const MAX_TS: u64 = 1 << (6 * TS_DIGITS);
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Stamp {
    /// The payload: the stamp padded to `size` bytes (at least
    /// [`STAMP_LEN`]). Fields are truncated to their widths, which
    /// [`FanoutPlan`] keeps them within.
    fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.max(STAMP_LEN));
        out.push(STAMP_MARK);
        put_digits(&mut out, u64::from(self.topic), TOPIC_DIGITS);
        put_digits(&mut out, self.seq, SEQ_DIGITS);
        put_digits(&mut out, self.ts_ns, TS_DIGITS);
        out.resize(size.max(STAMP_LEN), b'.');
        out
    }

    /// The stamp at the first `~` of `message`, if that is one.
    fn find(message: &[u8]) -> Option<Stamp> {
        let at = message.iter().position(|&b| b == STAMP_MARK)?;
        let digits = message.get(at + 1..at + STAMP_LEN)?;
        let (topic, rest) = digits.split_at(TOPIC_DIGITS);
        let (seq, ts) = rest.split_at(SEQ_DIGITS);
        Some(Stamp {
            topic: u32::try_from(get_digits(topic)?).ok()?,
            seq: get_digits(seq)?,
            ts_ns: get_digits(ts)?,
        })
    }
}

fn put_digits(out: &mut Vec<u8>, value: u64, digits: usize) {
    for i in (0..digits).rev() {
        out.push(DIGITS[((value >> (6 * i)) & 63) as usize]);
    }
}

fn get_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(acc << 6 | u64::from(d))
    })
}

/// A set of sequence numbers (a bit set): what one subscriber received, or
/// which publishes of a topic were acknowledged. It only grows up to the
/// largest number inserted, which callers bound by what was published.
#[derive(Debug, Default, Clone)]
struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        self.len += u64::from(fresh);
        fresh
    }

    /// Numbers in both sets.
    fn common(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

/// The rate of publishing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    /// As fast as delivery allows.
    Max,
    /// Publishes a second.
    Fixed(f64),
}

fn parse_rate(rate: &str) -> Result<Rate, BenchError> {
    let rate = rate.trim();
    if rate.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match rate.parse::<f64>() {
        Ok(0.0) => Ok(Rate::Max),
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(Rate::Fixed(r)),
        _ => Err(BenchError::Usage(format!(
            "--rate {rate}: expected \"max\", 0, or publishes a second (at most 10,000,000)"
        ))),
    }
}

/// Where one subscriber connects.
#[derive(Debug, Clone)]
struct Target {
    uri: http::Uri,
    addr: std::net::SocketAddr,
}

/// The validated settings of a fan-out run.
#[derive(Debug)]
struct FanoutPlan {
    dialect: Dialect,
    subscribers: usize,
    topics: usize,
    size: usize,
    rate: Rate,
    in_flight: usize,
    /// Per node and per topic, where its subscribers connect.
    targets: Vec<Vec<Target>>,
    /// Per topic, where its publishes go.
    publish: Vec<Target>,
    api_key: Option<String>,
    #[cfg(feature = "pusher")]
    app: PusherApp,
    secs: Duration,
    warmup: Duration,
    settle: Duration,
    deliver_timeout: Duration,
    drain: Duration,
    pids: Vec<u32>,
    json: bool,
    json_out: Option<PathBuf>,
}

/// The Pusher app the publisher signs for.
#[cfg(feature = "pusher")]
#[derive(Debug, Clone)]
struct PusherApp {
    key: String,
    secret: String,
}

fn topic_name(topic: usize) -> String {
    format!("fanout-{topic}")
}

fn plan(args: &BenchArgs) -> Result<FanoutPlan, BenchError> {
    let fan = &args.fanout;
    let usage = |s: String| Err(BenchError::Usage(s));
    if fan.subscribers == 0 || fan.subscribers > MAX_SUBSCRIBERS {
        return usage(format!("--subscribers must be 1 to {MAX_SUBSCRIBERS}"));
    }
    if fan.topics == 0 || fan.topics > MAX_TOPICS.min(fan.subscribers) {
        return usage(format!(
            "--topics must be 1 to {MAX_TOPICS} (and at most --subscribers)"
        ));
    }
    if fan.in_flight == 0 || fan.in_flight > MAX_IN_FLIGHT {
        return usage(format!("--in-flight must be 1 to {MAX_IN_FLIGHT}"));
    }
    if args.size < STAMP_LEN || args.size > super::MAX_SIZE {
        return usage(format!(
            "--size {}: fanout needs {STAMP_LEN} to {} bytes",
            args.size,
            super::MAX_SIZE
        ));
    }
    let secs = seconds("--secs", args.secs, false)?;
    let warmup = seconds("--warmup", args.warmup, true)?;
    let settle = seconds("--settle", args.settle, true)?;
    let deliver_timeout = seconds("--deliver-timeout", fan.deliver_timeout, false)?;
    let drain = seconds("--drain", fan.drain, true)?;
    // A stamp holds 78 hours of nanoseconds; a run is far shorter.
    if (warmup + secs + settle + deliver_timeout + drain).as_nanos() >= u128::from(MAX_TS) / 2 {
        return usage("the run is too long for the payload's clock (39 hours)".into());
    }
    if args.http2 || args.deflate || args.ca.is_some() {
        return usage("--mode fanout speaks plain ws:// over HTTP/1.1 only".into());
    }
    let rate = parse_rate(&fan.rate)?;
    let names: Vec<String> = (0..fan.topics).map(topic_name).collect();
    let mut targets = Vec::new();
    for node in std::iter::once(&args.url).chain(&fan.nodes) {
        let per_topic = names
            .iter()
            .map(|name| target(&subscriber_url(node, name, fan)?))
            .collect::<Result<Vec<_>, _>>()?;
        targets.push(per_topic);
    }
    let publish_template = match (&fan.publish_url, fan.dialect) {
        (Some(url), _) => url.clone(),
        (None, Dialect::Plain) => return usage("--dialect plain needs --publish-url".into()),
        (None, Dialect::Duplex) => format!("http://{}/topics/{{topic}}", authority(&args.url)?),
        #[cfg(not(feature = "pusher"))]
        (None, Dialect::Pusher) => {
            return usage(
                "publishing to a Pusher server needs a duplex built with the pusher feature \
                 (cargo build --release -p duplex-cli --features pusher)"
                    .into(),
            );
        }
        #[cfg(feature = "pusher")]
        (None, Dialect::Pusher) => {
            format!(
                "http://{}/apps/{}/events",
                authority(&args.url)?,
                fan.app_id
            )
        }
    };
    let publish = names
        .iter()
        .map(|name| {
            let url = publish_template.replace("{topic}", name);
            let t = target(&url)?;
            match t.uri.scheme_str() {
                Some("http") => Ok(t),
                _ => Err(BenchError::Usage(format!(
                    "--publish-url {url}: expected an http:// URL"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut pids: Vec<u32> = args.server_pid.into_iter().collect();
    pids.extend(&fan.server_pids);
    Ok(FanoutPlan {
        dialect: fan.dialect,
        subscribers: fan.subscribers,
        topics: fan.topics,
        size: args.size,
        rate,
        in_flight: fan.in_flight,
        targets,
        publish,
        api_key: fan.api_key.clone(),
        #[cfg(feature = "pusher")]
        app: PusherApp {
            key: fan.app_key.clone(),
            secret: fan.app_secret.clone(),
        },
        secs,
        warmup,
        settle,
        deliver_timeout,
        drain,
        pids,
        json: args.json,
        json_out: fan.json_out.clone(),
    })
}

/// `host:port` of a URL.
fn authority(url: &str) -> Result<String, BenchError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| BenchError::Usage(format!("{url}: not a URL: {e}")))?;
    uri.authority()
        .map(|a| a.to_string())
        .ok_or_else(|| BenchError::Usage(format!("{url}: the URL has no host")))
}

/// The ws:// URL a subscriber of `topic` opens on the node `node`.
fn subscriber_url(node: &str, topic: &str, fan: &FanoutArgs) -> Result<String, BenchError> {
    if node.contains("{topic}") || fan.dialect == Dialect::Plain {
        return Ok(node.replace("{topic}", topic));
    }
    let authority = authority(node)?;
    Ok(match fan.dialect {
        Dialect::Pusher => format!(
            "ws://{authority}/app/{}?protocol=7&client=duplex-bench&version=0.1",
            fan.app_key
        ),
        Dialect::Duplex | Dialect::Plain => format!("ws://{authority}/topics/{topic}"),
    })
}

fn target(url: &str) -> Result<Target, BenchError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| BenchError::Usage(format!("{url}: not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("ws" | "http") => {}
        _ => {
            return Err(BenchError::Usage(format!(
                "{url}: fanout wants ws:// (subscribers) and http:// (publish) URLs"
            )));
        }
    }
    if uri.host().is_none() {
        return Err(BenchError::Usage(format!("{url}: the URL has no host")));
    }
    let addr = super::resolve(&uri)?;
    Ok(Target { uri, addr })
}

pub(super) fn run(args: &BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let plan = plan(args)?;
    for &pid in &plan.pids {
        // Fail now, not after the run, if a pid is wrong.
        read_proc_cpu(pid)?;
    }
    super::raise_fd_limit(plan.subscribers as u64 + SPARE_FDS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, run_plan(Rc::new(plan)))?;
    let json = report.json();
    if let Some(path) = &report.plan.json_out {
        std::fs::write(path, format!("{json:#}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if report.plan.json {
        println!("{json}");
    } else {
        print!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// A publish waiting for its deliveries (rate max).
struct Pending {
    remaining: u64,
    done: Option<oneshot::Sender<()>>,
}

/// What every task of the run shares (one thread: `Rc<RefCell<_>>`).
struct Shared {
    origin: Instant,
    /// Per topic: subscribers, sequence numbers handed out, acknowledged.
    subscribers: Vec<u64>,
    published: Vec<u64>,
    acked: Vec<SeqSet>,
    /// Publishes whose POST failed, and the first reason.
    publish_errors: u64,
    first_publish_error: Option<String>,
    /// Unique deliveries so far (every publish, warm-up included).
    received: u64,
    duplicated: u64,
    misrouted: u64,
    bogus: u64,
    /// Subscribers whose connection failed, and the first reason.
    failed: u64,
    first_error: Option<String>,
    /// Subscribers connected and subscribed.
    ready: u64,
    /// Publish times (ns since origin) whose latency is recorded.
    window_ns: (u64, u64),
    latency_us: Histogram<u64>,
    pending: HashMap<(u32, u64), Pending>,
    /// The most publishes ever pending at once (with `--rate max`): what
    /// `--in-flight` bounds, counted from the deliveries, not the permits.
    max_pending: usize,
    /// POSTs not yet answered.
    posts: u64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn note_failure(&mut self, e: &BenchError) {
        tracing::debug!(error = %e, "subscriber failed");
        self.failed += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// Books one message a subscriber of `topic` got.
    fn deliver(&mut self, topic: u32, seen: &mut SeqSet, message: &[u8]) {
        let Some(stamp) = Stamp::find(message) else {
            self.bogus += 1;
            return;
        };
        if stamp.topic != topic {
            self.misrouted += 1;
            return;
        }
        if stamp.seq >= self.published[topic as usize] {
            self.bogus += 1;
            return;
        }
        if !seen.insert(stamp.seq) {
            self.duplicated += 1;
            return;
        }
        self.received += 1;
        let now = self.now_ns();
        if (self.window_ns.0..self.window_ns.1).contains(&stamp.ts_ns) {
            let us = now.saturating_sub(stamp.ts_ns) / 1000;
            self.latency_us.saturating_record(us.max(1));
        }
        if let Some(p) = self.pending.get_mut(&(topic, stamp.seq)) {
            p.remaining = p.remaining.saturating_sub(1);
            if p.remaining == 0
                && let Some(p) = self.pending.remove(&(topic, stamp.seq))
                && let Some(done) = p.done
            {
                let _ = done.send(());
            }
        }
    }

    /// Deliveries the acknowledged publishes owe.
    fn expected(&self) -> u64 {
        self.acked
            .iter()
            .zip(&self.subscribers)
            .map(|(acked, subs)| acked.len * subs)
            .sum()
    }
}

/// The server-side samples of a run.
#[derive(Debug, Default, Clone, Copy)]
struct Samples {
    rss_before: Option<u64>,
    rss_idle: Option<u64>,
    rss_end: Option<u64>,
    cpu_us: Option<u64>,
    /// Unique deliveries and acknowledged publishes within the window.
    deliveries: u64,
    publishes: u64,
}

fn sum_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| read_proc_rss(p).ok()).sum()
}

fn sum_cpu(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| read_proc_cpu(p).ok()).sum()
}

fn acked_total(shared: &Shared) -> u64 {
    shared.acked.iter().map(|a| a.len).sum()
}

async fn run_plan(plan: Rc<FanoutPlan>) -> Result<Report, BenchError> {
    let mut subscribers = vec![0u64; plan.topics];
    for i in 0..plan.subscribers {
        subscribers[i % plan.topics] += 1;
    }
    let shared = Rc::new(RefCell::new(Shared {
        origin: Instant::now(),
        subscribers,
        published: vec![0; plan.topics],
        acked: vec![SeqSet::default(); plan.topics],
        publish_errors: 0,
        first_publish_error: None,
        received: 0,
        duplicated: 0,
        misrouted: 0,
        bogus: 0,
        failed: 0,
        first_error: None,
        ready: 0,
        window_ns: (0, 0),
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
            .expect("constant histogram bounds are valid"),
        pending: HashMap::new(),
        max_pending: 0,
        posts: 0,
    }));
    let mut samples = Samples {
        rss_before: sum_rss(&plan.pids),
        ..Samples::default()
    };
    let key = super::rand_key();
    let (stop_tx, stop_rx) = watch::channel(false);
    let openers = Rc::new(Semaphore::new(OPENERS));
    let connect_start = Instant::now();
    let mut tasks = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        let topic = i % plan.topics;
        let target = plan.targets[i % plan.targets.len()][topic].clone();
        tasks.push(tokio::task::spawn_local(subscriber(
            Rc::clone(&plan),
            Rc::clone(&shared),
            Rc::clone(&openers),
            stop_rx.clone(),
            target,
            topic as u32,
            key,
        )));
    }
    let mut last_note = Instant::now();
    loop {
        let (ready, failed) = {
            let s = shared.borrow();
            (s.ready, s.failed)
        };
        if ready + failed >= plan.subscribers as u64 {
            break;
        }
        if !plan.json && last_note.elapsed() >= Duration::from_secs(2) {
            eprintln!("fanout: {ready}/{} subscribed", plan.subscribers);
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let failed = shared.borrow().failed;
    if failed > 0 {
        let _ = stop_tx.send(true);
        let first = shared.borrow().first_error.clone().unwrap_or_default();
        return Err(BenchError::UnexpectedReply(format!(
            "{failed} of {} subscribers failed to connect and subscribe (first: {first})",
            plan.subscribers
        )));
    }
    if !plan.json {
        eprintln!(
            "fanout: {} subscribers on {} topic(s) in {connect_secs:.1} s; publishing",
            plan.subscribers, plan.topics
        );
    }
    tokio::time::sleep(plan.settle).await;
    samples.rss_idle = sum_rss(&plan.pids);

    publish_all(&plan, &shared, &mut samples).await;

    // Drain: the POSTs still out, then deliveries still on their way.
    let drain_end = Instant::now() + plan.drain + POST_TIMEOUT.min(plan.deliver_timeout);
    loop {
        let (posts, received, expected) = {
            let s = shared.borrow();
            (s.posts, s.received, s.expected())
        };
        if (posts == 0 && received >= expected) || Instant::now() >= drain_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut unique_acked = 0;
    for task in tasks {
        if let Ok(seen) = task.await {
            unique_acked += seen;
        }
    }
    let s = shared.borrow();
    let expected = s.expected();
    Ok(Report {
        plan: Rc::clone(&plan),
        connect_secs,
        samples,
        tally: Tally {
            published: s.published.iter().sum(),
            acked: acked_total(&s),
            publish_errors: s.publish_errors,
            expected,
            unique_acked,
            duplicated: s.duplicated,
            misrouted: s.misrouted,
            bogus: s.bogus,
            dropped: s.failed,
        },
        first_error: s.first_error.clone(),
        first_publish_error: s.first_publish_error.clone(),
        latency_us: s.latency_us.clone(),
        max_in_flight: (plan.rate == Rate::Max).then_some(s.max_pending),
    })
}

/// Publishes through the warm-up and the measured window, sampling the
/// servers at the window's edges.
async fn publish_all(plan: &Rc<FanoutPlan>, shared: &Rc<RefCell<Shared>>, samples: &mut Samples) {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.secs;
    {
        let mut s = shared.borrow_mut();
        let origin = s.origin;
        let ns = |t: Instant| u64::try_from((t - origin).as_nanos()).unwrap_or(u64::MAX);
        s.window_ns = (ns(window_start), ns(window_end));
    }
    let slots = Arc::new(Semaphore::new(plan.in_flight));
    let pool: Rc<RefCell<Vec<Poster>>> = Rc::new(RefCell::new(Vec::new()));
    let at_start: Rc<Cell<Option<WindowStart>>> = Rc::new(Cell::new(None));
    {
        // The window's start is sampled by a task of its own, so that a
        // publisher waiting for a slot does not delay it.
        let (shared, at_start, pids) = (Rc::clone(shared), Rc::clone(&at_start), plan.pids.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let s = shared.borrow();
            at_start.set(Some((sum_cpu(&pids), s.received, acked_total(&s))));
        });
    }
    let mut n: u64 = 0;
    loop {
        if let Rate::Fixed(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if due >= window_end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit,
            () = tokio::time::sleep_until(window_end.into()) => break,
        };
        let Ok(permit) = permit else { break };
        if Instant::now() >= window_end {
            break;
        }
        let topic = (n % plan.topics as u64) as usize;
        let (seq, ts_ns, done) = {
            let mut s = shared.borrow_mut();
            let seq = s.published[topic];
            if seq >= MAX_SEQ {
                break;
            }
            s.published[topic] += 1;
            s.posts += 1;
            let ts_ns = match plan.rate {
                // The time it was due, so that a publisher falling behind
                // shows in the latency instead of hiding it.
                Rate::Fixed(rate) => {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    u64::try_from((due - s.origin).as_nanos()).unwrap_or(u64::MAX)
                }
                Rate::Max => s.now_ns(),
            };
            let done = if plan.rate == Rate::Max {
                let (tx, rx) = oneshot::channel();
                let remaining = s.subscribers[topic];
                s.pending.insert(
                    (topic as u32, seq),
                    Pending {
                        remaining,
                        done: Some(tx),
                    },
                );
                s.max_pending = s.max_pending.max(s.pending.len());
                Some(rx)
            } else {
                None
            };
            (seq, ts_ns, done)
        };
        let stamp = Stamp {
            topic: topic as u32,
            seq,
            ts_ns,
        };
        tokio::task::spawn_local(publish_one(
            Rc::clone(plan),
            Rc::clone(shared),
            Rc::clone(&pool),
            stamp,
            done,
            permit,
        ));
        n += 1;
    }
    tokio::time::sleep_until(window_end.into()).await;
    let (cpu_end, received_end, acked_end) = {
        let s = shared.borrow();
        (sum_cpu(&plan.pids), s.received, acked_total(&s))
    };
    samples.rss_end = sum_rss(&plan.pids);
    if let Some((cpu_start, received_start, acked_start)) = at_start.get() {
        samples.deliveries = received_end - received_start;
        samples.publishes = acked_end - acked_start;
        samples.cpu_us = cpu_start.zip(cpu_end).map(|(a, b)| b.saturating_sub(a));
    }
}

/// At the window's start: the servers' CPU time, unique deliveries and
/// acknowledged publishes so far.
type WindowStart = (Option<u64>, u64, u64);

/// One keep-alive HTTP/1.1 connection of the publisher.
struct Poster {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: std::net::SocketAddr,
}

async fn connect_poster(addr: std::net::SocketAddr) -> Result<Poster, BenchError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| BenchError::UnexpectedReply(format!("HTTP: {e}")))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "publish connection ended");
        }
    });
    Ok(Poster { sender, addr })
}

/// POSTs one publish and, at rate max, holds its slot until every
/// subscriber has it (or `--deliver-timeout`).
async fn publish_one(
    plan: Rc<FanoutPlan>,
    shared: Rc<RefCell<Shared>>,
    pool: Rc<RefCell<Vec<Poster>>>,
    stamp: Stamp,
    done: Option<oneshot::Receiver<()>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let target = &plan.publish[stamp.topic as usize];
    let result = tokio::time::timeout(POST_TIMEOUT, post(&plan, target, &pool, stamp)).await;
    let result = result.unwrap_or_else(|_| Err(BenchError::Timeout));
    {
        let mut s = shared.borrow_mut();
        s.posts -= 1;
        match &result {
            Ok(()) => {
                s.acked[stamp.topic as usize].insert(stamp.seq);
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish failed");
                s.publish_errors += 1;
                s.first_publish_error.get_or_insert_with(|| e.to_string());
                s.pending.remove(&(stamp.topic, stamp.seq));
            }
        }
    }
    if result.is_ok()
        && let Some(done) = done
    {
        let _ = tokio::time::timeout(plan.deliver_timeout, done).await;
        shared
            .borrow_mut()
            .pending
            .remove(&(stamp.topic, stamp.seq));
    }
    drop(permit);
}

async fn post(
    plan: &FanoutPlan,
    target: &Target,
    pool: &RefCell<Vec<Poster>>,
    stamp: Stamp,
) -> Result<(), BenchError> {
    let reuse = {
        let mut pool = pool.borrow_mut();
        let at = pool
            .iter()
            .position(|p| p.addr == target.addr && !p.sender.is_closed());
        at.map(|i| pool.swap_remove(i))
    };
    let mut poster = match reuse {
        Some(p) => p,
        None => connect_poster(target.addr).await?,
    };
    let request = publish_request(plan, target, stamp)?;
    let http_error = |e: hyper::Error| BenchError::UnexpectedReply(format!("HTTP: {e}"));
    poster.sender.ready().await.map_err(http_error)?;
    let response = poster
        .sender
        .send_request(request)
        .await
        .map_err(http_error)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| BenchError::UnexpectedReply(format!("POST answer: {e}")))?
        .to_bytes();
    pool.borrow_mut().push(poster);
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(BenchError::UnexpectedReply(format!(
            "POST {}: {status} {}",
            target.uri,
            text.trim()
        )));
    }
    Ok(())
}

fn publish_request(
    plan: &FanoutPlan,
    target: &Target,
    stamp: Stamp,
) -> Result<http::Request<Full<Bytes>>, BenchError> {
    let payload = stamp.encode(plan.size);
    let host = target.uri.authority().map(|a| a.as_str()).unwrap_or("");
    let builder = http::Request::post(target.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, host);
    let (builder, body) = match plan.dialect {
        Dialect::Duplex | Dialect::Plain => {
            let mut b = builder.header(http::header::CONTENT_TYPE, "text/plain");
            if let Some(key) = &plan.api_key {
                b = b.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            (b, payload)
        }
        // Refused when the plan is made.
        #[cfg(not(feature = "pusher"))]
        Dialect::Pusher => unreachable!("--dialect pusher without the pusher feature"),
        #[cfg(feature = "pusher")]
        Dialect::Pusher => {
            let path = target.uri.path();
            let data = String::from_utf8_lossy(&payload).into_owned();
            let body = serde_json::json!({
                "name": PUSHER_EVENT,
                "channels": [topic_name(stamp.topic as usize)],
                "data": data,
            })
            .to_string()
            .into_bytes();
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let query = pusher_auth_query(&plan.app, "POST", path, &body, timestamp);
            let b = http::Request::post(format!("{path}?{query}"))
                .header(http::header::HOST, host)
                .header(http::header::CONTENT_TYPE, "application/json");
            (b, body)
        }
    };
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| BenchError::Usage(format!("{}: {e}", target.uri)))
}

#[cfg(feature = "pusher")]
/// The query string that signs a Pusher HTTP API request: `auth_key`,
/// `auth_timestamp`, `auth_version`, `body_md5` and `auth_signature`, the
/// HMAC-SHA256 of "METHOD\nPATH\nQUERY" under the app secret.
fn pusher_auth_query(
    app: &PusherApp,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    use hmac::{KeyInit, Mac};
    use md5::Digest;
    let body_md5 = hex(&md5::Md5::digest(body));
    let params = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        app.key
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(app.secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{method}\n{path}\n{params}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    format!("{params}&auth_signature={signature}")
}

#[cfg(feature = "pusher")]
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One subscriber: connects, subscribes, then books every message until the
/// run stops. Returns how many acknowledged publishes it got.
async fn subscriber(
    plan: Rc<FanoutPlan>,
    shared: Rc<RefCell<Shared>>,
    openers: Rc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    target: Target,
    topic: u32,
    key: [u8; 4],
) -> u64 {
    let mut inbox = Inbox::new(plan.size + ENVELOPE_ROOM);
    let opened = {
        let Ok(_permit) = openers.acquire().await else {
            return 0;
        };
        tokio::time::timeout(OPEN_TIMEOUT, open(&plan, &target, topic, key, &mut inbox))
            .await
            .unwrap_or(Err(BenchError::Timeout))
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            shared.borrow_mut().note_failure(&e);
            return 0;
        }
    };
    shared.borrow_mut().ready += 1;
    let mut seen = SeqSet::default();
    let result: Result<(), BenchError> = async {
        loop {
            let mut out = Vec::new();
            inbox.drain(|event| match event {
                Event::Message(m) => {
                    if plan.dialect == Dialect::Pusher && is_pusher_ping(m) {
                        out.extend(client_frame(
                            OpCode::Text,
                            br#"{"event":"pusher:pong","data":{}}"#,
                            key,
                        ));
                    } else if plan.dialect != Dialect::Pusher || Stamp::find(m).is_some() {
                        shared.borrow_mut().deliver(topic, &mut seen, m);
                    }
                }
                Event::Ping(p) => out.extend(client_frame(OpCode::Pong, p, key)),
            })?;
            if !out.is_empty() {
                stream.write_all(&out).await?;
            }
            tokio::select! {
                read = inbox.read_from(&mut stream) => read?,
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        shared.borrow_mut().note_failure(&e);
    }
    let s = shared.borrow();
    seen.common(&s.acked[topic as usize])
}

fn is_pusher_ping(message: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(message)
        .ok()
        .is_some_and(|v| v.get("event").and_then(|e| e.as_str()) == Some("pusher:ping"))
}

/// Connects, does the opening handshake and (Pusher) subscribes.
async fn open(
    plan: &FanoutPlan,
    target: &Target,
    topic: u32,
    key: [u8; 4],
    inbox: &mut Inbox,
) -> Result<TcpStream, BenchError> {
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (request, handshake) = ClientRequest::new(target.uri.clone()).build()?;
    let mut head = Vec::with_capacity(256);
    write_request(&request, &mut head);
    stream.write_all(&head).await?;
    loop {
        if let Some((_, len)) = handshake.parse_response(inbox.unread(), MAX_RESPONSE_HEAD)? {
            inbox.consume(len);
            break;
        }
        inbox.read_from(&mut stream).await?;
    }
    if plan.dialect != Dialect::Pusher {
        return Ok(stream);
    }
    // Pusher: connection_established, then subscribe and wait for
    // subscription_succeeded.
    let channel = topic_name(topic as usize);
    let subscribe = serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel },
    })
    .to_string();
    stream
        .write_all(&client_frame(OpCode::Text, subscribe.as_bytes(), key))
        .await?;
    loop {
        let mut subscribed = false;
        let mut refused = None;
        let mut out = Vec::new();
        inbox.drain(|event| match event {
            Event::Message(m) => {
                let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
                match v.get("event").and_then(|e| e.as_str()) {
                    Some("pusher_internal:subscription_succeeded") => subscribed = true,
                    Some("pusher:error" | "pusher:subscription_error") => {
                        refused = Some(String::from_utf8_lossy(m).into_owned());
                    }
                    Some("pusher:ping") => out.extend(client_frame(
                        OpCode::Text,
                        br#"{"event":"pusher:pong","data":{}}"#,
                        key,
                    )),
                    _ => {}
                }
            }
            Event::Ping(p) => out.extend(client_frame(OpCode::Pong, p, key)),
        })?;
        if let Some(why) = refused {
            return Err(BenchError::UnexpectedReply(why));
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if subscribed {
            return Ok(stream);
        }
        inbox.read_from(&mut stream).await?;
    }
}

/// What the server sent, frame by frame.
#[derive(Debug)]
enum Event<'a> {
    /// A whole data message (text or binary; not checked as UTF-8).
    Message(&'a [u8]),
    /// A Ping, owed a Pong.
    Ping(&'a [u8]),
}

/// A subscriber's receive buffer and message reassembly, bounded by
/// `max_message` (a longer message is an error, not a reason to grow).
#[derive(Debug)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The fragments of a message so far.
    partial: Vec<u8>,
    in_message: bool,
    max_message: usize,
}

impl Inbox {
    fn new(max_message: usize) -> Self {
        Inbox {
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            partial: Vec::new(),
            in_message: false,
            max_message,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads more bytes; EOF is [`BenchError::Closed`].
    async fn read_from(&mut self, stream: &mut TcpStream) -> Result<(), BenchError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A frame longer than the buffer: grow, within the bound.
            let cap = self.max_message + duplex_proto::MAX_HEADER_LEN;
            if self.buf.len() >= cap {
                return Err(BenchError::UnexpectedReply(format!(
                    "a frame above {} bytes",
                    self.max_message
                )));
            }
            self.buf.resize((self.buf.len() * 2).min(cap), 0);
        }
        match stream.read(&mut self.buf[self.end..]).await? {
            0 => Err(BenchError::Closed),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Hands every complete message and Ping in the buffer to `on`.
    fn drain(&mut self, mut on: impl FnMut(Event<'_>)) -> Result<(), BenchError> {
        loop {
            let window = &self.buf[self.start..self.end];
            let Some((header, len)) = FrameHeader::parse(window)? else {
                return Ok(());
            };
            if header.mask.is_some() {
                return Err(duplex_proto::ProtocolError::MaskedFrame.into());
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(duplex_proto::ProtocolError::ReservedBits.into());
            }
            let payload_len = usize::try_from(header.payload_len)
                .ok()
                .filter(|&n| n <= self.max_message)
                .ok_or_else(|| {
                    BenchError::UnexpectedReply(format!(
                        "a frame of {} bytes, above {}",
                        header.payload_len, self.max_message
                    ))
                })?;
            if window.len() < len + payload_len {
                return Ok(());
            }
            let payload = &window[len..len + payload_len];
            self.start += len + payload_len;
            match header.opcode {
                OpCode::Ping => on(Event::Ping(payload)),
                OpCode::Pong => {}
                OpCode::Close => return Err(BenchError::Closed),
                OpCode::Text | OpCode::Binary if !self.in_message => {
                    if header.fin {
                        on(Event::Message(payload));
                    } else {
                        self.partial.clear();
                        self.partial.extend_from_slice(payload);
                        self.in_message = true;
                    }
                }
                OpCode::Continuation if self.in_message => {
                    if self.partial.len() + payload.len() > self.max_message {
                        return Err(BenchError::UnexpectedReply(format!(
                            "a message above {} bytes",
                            self.max_message
                        )));
                    }
                    self.partial.extend_from_slice(payload);
                    if header.fin {
                        self.in_message = false;
                        on(Event::Message(&self.partial));
                    }
                }
                OpCode::Continuation => {
                    return Err(duplex_proto::ProtocolError::UnexpectedContinuation.into());
                }
                _ => return Err(duplex_proto::ProtocolError::ExpectedContinuation.into()),
            }
        }
    }
}

/// Delivery accounting of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    /// Publishes sent, and those the server acknowledged.
    published: u64,
    acked: u64,
    publish_errors: u64,
    /// Deliveries the acknowledged publishes owed, and those that arrived.
    expected: u64,
    unique_acked: u64,
    duplicated: u64,
    misrouted: u64,
    bogus: u64,
    /// Subscribers whose connection failed during the run.
    dropped: u64,
}

impl Tally {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique_acked)
    }
}

/// The outcome of a run.
struct Report {
    plan: Rc<FanoutPlan>,
    connect_secs: f64,
    samples: Samples,
    tally: Tally,
    first_error: Option<String>,
    first_publish_error: Option<String>,
    latency_us: Histogram<u64>,
    /// With `--rate max`: the most publishes not yet delivered to every
    /// subscriber at once.
    max_in_flight: Option<usize>,
}

impl Report {
    fn secs(&self) -> f64 {
        self.plan.secs.as_secs_f64()
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.samples.deliveries as f64 / self.secs()
    }

    fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }

    fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.samples.cpu_us?;
        (self.samples.deliveries > 0).then(|| cpu as f64 / self.samples.deliveries as f64)
    }

    fn idle_bytes_per_subscriber(&self) -> Option<f64> {
        let (before, idle) = (self.samples.rss_before?, self.samples.rss_idle?);
        Some(idle.saturating_sub(before) as f64 / self.plan.subscribers as f64)
    }

    fn json(&self) -> serde_json::Value {
        let p = &self.plan;
        let t = &self.tally;
        let rate = match p.rate {
            Rate::Max => serde_json::json!("max"),
            Rate::Fixed(r) => serde_json::json!(r),
        };
        serde_json::json!({
            "mode": "fanout",
            "dialect": format!("{:?}", p.dialect).to_lowercase(),
            "subscribers": p.subscribers,
            "topics": p.topics,
            "nodes": p.targets.len(),
            "size": p.size,
            "rate": rate,
            "in_flight": p.in_flight,
            "max_in_flight": self.max_in_flight,
            "secs": self.secs(),
            "warmup": p.warmup.as_secs_f64(),
            "connect_secs": self.connect_secs,
            "publishes": self.samples.publishes,
            "publishes_per_sec": self.samples.publishes as f64 / self.secs(),
            "deliveries": self.samples.deliveries,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "latency_ms": {
                "p50": self.quantile_ms(0.5),
                "p99": self.quantile_ms(0.99),
                "p999": self.quantile_ms(0.999),
                "max": self.quantile_ms(1.0),
                "samples": self.latency_us.len(),
            },
            "published_total": t.published,
            "acked_total": t.acked,
            "publish_errors": t.publish_errors,
            "first_publish_error": self.first_publish_error,
            "expected": t.expected,
            "received": t.unique_acked,
            "lost": t.lost(),
            "duplicated": t.duplicated,
            "misrouted": t.misrouted,
            "bogus": t.bogus,
            "dropped_subscribers": t.dropped,
            "first_error": self.first_error,
            "server": {
                "pids": p.pids,
                "cpu_us_per_delivery": self.cpu_us_per_delivery(),
                "cpu_percent": self.samples.cpu_us.map(|c| c as f64 / self.secs() / 1e4),
                "rss_before_bytes": self.samples.rss_before,
                "rss_idle_bytes": self.samples.rss_idle,
                "rss_end_bytes": self.samples.rss_end,
                "idle_bytes_per_subscriber": self.idle_bytes_per_subscriber(),
            },
        })
    }

    fn summary(&self) -> String {
        use std::fmt::Write;
        let p = &self.plan;
        let t = &self.tally;
        let ms = |q| {
            self.quantile_ms(q)
                .map_or("-".into(), |v| format!("{v:.2} ms"))
        };
        let rate = match p.rate {
            Rate::Max => format!("max ({} in flight)", p.in_flight),
            Rate::Fixed(r) => format!("{r}/s"),
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fanout: {} subscribers, {} topic(s), {} node(s), {} B, rate {rate}, {:.1} s measured",
            p.subscribers,
            p.topics,
            p.targets.len(),
            p.size,
            self.secs()
        );
        let _ = writeln!(
            s,
            "  deliveries  {:.0}/s ({} in the window; {:.1} publishes/s)",
            self.deliveries_per_sec(),
            self.samples.deliveries,
            self.samples.publishes as f64 / self.secs()
        );
        let _ = writeln!(
            s,
            "  latency     p50 {}  p99 {}  p99.9 {}  max {}",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(1.0)
        );
        let _ = writeln!(
            s,
            "  lost        {} of {} expected; duplicated {}; misrouted {}; bogus {}",
            t.lost(),
            t.expected,
            t.duplicated,
            t.misrouted,
            t.bogus
        );
        let _ = writeln!(
            s,
            "  publishes   {} sent, {} acknowledged, {} failed{}",
            t.published,
            t.acked,
            t.publish_errors,
            self.first_publish_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        );
        if t.dropped > 0 {
            let _ = writeln!(
                s,
                "  dropped     {} subscribers (first: {})",
                t.dropped,
                self.first_error.as_deref().unwrap_or("-")
            );
        }
        if let Some(cpu) = self.cpu_us_per_delivery() {
            let _ = writeln!(s, "  server CPU  {cpu:.3} µs per delivery");
        }
        if let Some(rss) = self.samples.rss_end {
            let _ = writeln!(s, "  server RSS  {:.1} MiB", rss as f64 / 1048576.0);
        }
        if let Some(idle) = self.idle_bytes_per_subscriber() {
            let _ = writeln!(s, "  idle        {idle:.0} bytes per subscriber");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        for (topic, seq, ts_ns) in [
            (0, 0, 0),
            (1, 2, 3),
            (MAX_TOPICS as u32 - 1, MAX_SEQ - 1, MAX_TS - 1),
            (17, 123_456_789, 9_876_543_210_123),
        ] {
            let stamp = Stamp { topic, seq, ts_ns };
            for size in [STAMP_LEN, 100, 4096] {
                let payload = stamp.encode(size);
                assert_eq!(payload.len(), size);
                assert!(payload.iter().all(|b| b.is_ascii_graphic()));
                assert_eq!(Stamp::find(&payload), Some(stamp));
            }
        }
    }

    #[test]
    fn stamps_are_found_inside_a_pusher_envelope() {
        let stamp = Stamp {
            topic: 3,
            seq: 99,
            ts_ns: 5_000_000,
        };
        let data = String::from_utf8(stamp.encode(100)).unwrap();
        let envelope = serde_json::json!({"event": "fanout", "channel": "fanout-3", "data": data});
        assert_eq!(Stamp::find(envelope.to_string().as_bytes()), Some(stamp));
    }

    #[test]
    fn bad_stamps_are_none_not_panics() {
        let good = Stamp {
            topic: 1,
            seq: 2,
            ts_ns: 3,
        }
        .encode(40);
        for cut in 0..good.len() {
            let _ = Stamp::find(&good[..cut]);
        }
        assert_eq!(Stamp::find(&good[..STAMP_LEN - 1]), None);
        assert_eq!(Stamp::find(b""), None);
        assert_eq!(Stamp::find(b"no mark here"), None);
        assert_eq!(Stamp::find(b"~AAA!AAAAAAAAAAAAA"), None);
        assert_eq!(Stamp::find(&[b'~'; 5]), None);
        // Every byte after the mark, in every position.
        for pos in 1..STAMP_LEN {
            for b in 0..=255u8 {
                let mut bytes = good.clone();
                bytes[pos] = b;
                let found = Stamp::find(&bytes);
                assert_eq!(found.is_some(), get_digits(&[b]).is_some());
            }
        }
    }

    #[test]
    fn seq_sets_count_duplicates_and_intersections() {
        let mut got = SeqSet::default();
        assert!(got.insert(0));
        assert!(got.insert(64));
        assert!(got.insert(200));
        assert!(!got.insert(64));
        assert_eq!(got.len, 3);
        let mut acked = SeqSet::default();
        for seq in [0, 1, 64, 65] {
            acked.insert(seq);
        }
        assert_eq!(got.common(&acked), 2);
        assert_eq!(acked.common(&got), 2);
        assert_eq!(SeqSet::default().common(&got), 0);
    }

    #[test]
    fn deliveries_are_booked_once_and_checked() {
        let mut shared = Shared {
            origin: Instant::now(),
            subscribers: vec![2, 2],
            published: vec![3, 1],
            acked: vec![SeqSet::default(); 2],
            publish_errors: 0,
            first_publish_error: None,
            received: 0,
            duplicated: 0,
            misrouted: 0,
            bogus: 0,
            failed: 0,
            first_error: None,
            ready: 0,
            window_ns: (0, u64::MAX),
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            pending: HashMap::new(),
            max_pending: 0,
            posts: 0,
        };
        for seq in 0..3 {
            shared.acked[0].insert(seq);
        }
        shared.acked[1].insert(0);
        let (tx, mut rx) = oneshot::channel();
        shared.pending.insert(
            (0, 1),
            Pending {
                remaining: 1,
                done: Some(tx),
            },
        );
        let msg = |topic, seq| {
            Stamp {
                topic,
                seq,
                ts_ns: 0,
            }
            .encode(50)
        };
        let mut seen = SeqSet::default();
        shared.deliver(0, &mut seen, &msg(0, 0));
        shared.deliver(0, &mut seen, &msg(0, 1));
        shared.deliver(0, &mut seen, &msg(0, 1));
        shared.deliver(0, &mut seen, &msg(1, 0));
        shared.deliver(0, &mut seen, &msg(0, 7));
        shared.deliver(0, &mut seen, b"garbage");
        assert_eq!(shared.received, 2);
        assert_eq!(shared.duplicated, 1);
        assert_eq!(shared.misrouted, 1);
        assert_eq!(shared.bogus, 2);
        assert_eq!(shared.latency_us.len(), 2);
        assert!(rx.try_recv().is_ok(), "the publish completed");
        assert!(shared.pending.is_empty());
        // Topic 0: 3 publishes x 2 subscribers; topic 1: 1 x 2.
        assert_eq!(shared.expected(), 8);
        let tally = Tally {
            expected: shared.expected(),
            unique_acked: seen.common(&shared.acked[0]),
            ..Tally::default()
        };
        assert_eq!(tally.lost(), 6);
    }

    #[test]
    fn inbox_reassembles_and_bounds_messages() {
        let frame = |b0: u8, payload: &[u8]| {
            let mut f = vec![b0, payload.len() as u8];
            f.extend_from_slice(payload);
            f
        };
        let mut bytes = frame(0x01, b"he"); // text, not fin
        bytes.extend(frame(0x89, b"p")); // ping between fragments
        bytes.extend(frame(0x80, b"llo")); // last continuation
        bytes.extend(frame(0x82, b"bin"));
        // Any chunking gives the same events.
        for chunk in 1..=bytes.len() {
            let mut inbox = Inbox::new(16);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                inbox.buf[inbox.end..inbox.end + piece.len()].copy_from_slice(piece);
                inbox.end += piece.len();
                inbox
                    .drain(|e| match e {
                        Event::Message(m) => got.push(format!("m:{}", String::from_utf8_lossy(m))),
                        Event::Ping(p) => got.push(format!("p:{}", String::from_utf8_lossy(p))),
                    })
                    .unwrap();
                inbox.buf.copy_within(inbox.start..inbox.end, 0);
                inbox.end -= inbox.start;
                inbox.start = 0;
            }
            assert_eq!(got, ["p:p", "m:hello", "m:bin"], "chunk {chunk}");
        }
        let mut inbox = Inbox::new(4);
        let big = frame(0x81, b"hello");
        inbox.buf[..big.len()].copy_from_slice(&big);
        inbox.end = big.len();
        assert!(inbox.drain(|_| {}).is_err(), "above max_message");
        let mut inbox = Inbox::new(16);
        let masked = [0x81, 0x81, 1, 2, 3, 4, 5];
        inbox.buf[..masked.len()].copy_from_slice(&masked);
        inbox.end = masked.len();
        assert!(inbox.drain(|_| {}).is_err(), "masked server frame");
        let mut inbox = Inbox::new(16);
        inbox.buf[..2].copy_from_slice(&[0x80, 0]);
        inbox.end = 2;
        assert!(
            inbox.drain(|_| {}).is_err(),
            "continuation out of a message"
        );
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max").unwrap(), Rate::Max);
        assert_eq!(parse_rate("0").unwrap(), Rate::Max);
        assert_eq!(parse_rate("5").unwrap(), Rate::Fixed(5.0));
        assert_eq!(parse_rate("0.5").unwrap(), Rate::Fixed(0.5));
        for bad in ["-1", "nan", "inf", "fast", "", "1e9"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    /// Pusher's worked example of HTTP API authentication.
    #[cfg(feature = "pusher")]
    #[test]
    fn pusher_signature_matches_the_worked_example() {
        let app = PusherApp {
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = pusher_auth_query(&app, "POST", "/apps/3/events", body, 1353088179);
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn urls_follow_the_dialect() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
            plan(&cli.args).map_err(|e| e.to_string())
        };
        let p = parse(&[
            "ws://127.0.0.1:9/x",
            "--mode",
            "fanout",
            "--size",
            "100",
            "--topics",
            "2",
            "--url",
            "ws://127.0.0.1:10",
        ])
        .unwrap();
        assert_eq!(p.targets.len(), 2);
        assert_eq!(p.targets[1][1].uri, "ws://127.0.0.1:10/topics/fanout-1");
        assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/topics/fanout-0");
        let pusher = parse(&[
            "ws://127.0.0.1:9",
            "--mode",
            "fanout",
            "--dialect",
            "pusher",
            "--app-id",
            "a1",
            "--app-key",
            "k1",
        ]);
        #[cfg(feature = "pusher")]
        {
            let p = pusher.unwrap();
            assert_eq!(
                p.targets[0][0].uri,
                "ws://127.0.0.1:9/app/k1?protocol=7&client=duplex-bench&version=0.1"
            );
            assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/apps/a1/events");
        }
        #[cfg(not(feature = "pusher"))]
        assert!(pusher.is_err_and(|e| e.contains("--features pusher")));
        let p = parse(&[
            "ws://127.0.0.1:9/t/{topic}",
            "--mode",
            "fanout",
            "--dialect",
            "plain",
            "--publish-url",
            "http://127.0.0.1:9/t/{topic}",
        ])
        .unwrap();
        assert_eq!(p.targets[0][0].uri, "ws://127.0.0.1:9/t/fanout-0");
        assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/t/fanout-0");
        for bad in [
            &["ws://127.0.0.1:9", "--mode", "fanout", "--dialect", "plain"][..],
            &["ws://127.0.0.1:9", "--mode", "fanout", "--size", "10"],
            &["ws://127.0.0.1:9", "--mode", "fanout", "--subscribers", "0"],
            &[
                "ws://127.0.0.1:9",
                "--mode",
                "fanout",
                "--topics",
                "2000",
                "--subscribers",
                "10",
            ],
            &["ws://127.0.0.1:9", "--mode", "fanout", "--rate", "-3"],
            &["ws://127.0.0.1:9", "--mode", "fanout", "--in-flight", "0"],
            &[
                "ws://127.0.0.1:9",
                "--mode",
                "fanout",
                "--publish-url",
                "ws://127.0.0.1:9/",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
