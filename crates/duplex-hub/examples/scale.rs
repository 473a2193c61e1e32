//! What each backplane engine costs, side by side in one run: for one
//! Redis, a Redis Cluster (3 masters, 3 replicas) and NATS JetStream,
//! four `duplex serve` nodes, thousands of duplex.v1 subscribers spread
//! over them and over a thousand topics (on every shard), and publishers
//! at a set rate. It reports deliveries a second, publish-to-delivery
//! p50/p99, each node's CPU time per delivery, the backplane's CPU time
//! per message, and what was lost or duplicated; then, halfway, it crashes
//! the backplane (kill -9: the one Redis, restarted empty 2 s later; a
//! cluster master, whose replica takes over; the NATS server, restarted on
//! its store 2 s later) and reports how long publishes were refused or
//! held (the longer of the span of refusals and the slowest
//! acknowledgement after the crash) and how many gaps subscribers were
//! told of.
//!
//! Run by `scripts/scale.sh` (which builds it and `duplex`):
//!
//! ```text
//! scale --duplex target/release/duplex [--engines redis,cluster,nats]
//!       [--secs 30] [--subscribers 8000] [--topics 1000] [--rate 400]
//!       [--logs DIR]
//! ```
//!
//! Every server it starts is its own, on free loopback ports. A lost
//! message (acknowledged, never delivered to a subscriber of its topic,
//! and no gap told) or a duplicate fails the run: it prints the table,
//! then `scale: PASS` or `scale: FAIL (why)`, and exits 0 only on a pass.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_hub::client::{Client, ClientError, Event, Options};
use duplex_ws::{ClientBuilder, Message};

struct Args {
    duplex: String,
    engines: Vec<String>,
    secs: u64,
    subscribers: usize,
    topics: usize,
    rate: u64,
    logs: String,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        duplex: "target/release/duplex".into(),
        engines: vec!["redis".into(), "cluster".into(), "nats".into()],
        secs: 30,
        subscribers: 8000,
        topics: 1000,
        rate: 400,
        logs: "target/test-logs".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--duplex" => args.duplex = value.clone(),
            "--logs" => args.logs = value.clone(),
            "--engines" => {
                args.engines = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = args
                    .engines
                    .iter()
                    .find(|e| !["redis", "cluster", "nats"].contains(&e.as_str()))
                {
                    return Err(format!("--engines: {bad} is not redis, cluster or nats"));
                }
            }
            "--secs" => args.secs = number()?.max(10),
            "--subscribers" => args.subscribers = number()?.max(1) as usize,
            "--topics" => args.topics = number()?.max(1) as usize,
            "--rate" => args.rate = number()?.clamp(1, 1_000_000),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
fn cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command may hold spaces: the fields start after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

/// Clock ticks a second (`getconf CLK_TCK`, 100 on Linux), read once.
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The backplane under test, its processes, and how to crash it.
enum Backing {
    Redis(duplex_testing::Redis),
    Cluster(duplex_testing::cluster::RedisCluster),
    Nats {
        server: duplex_testing::nats::Nats,
        _store: tempfile::TempDir,
    },
}

impl Backing {
    fn start(engine: &str) -> Backing {
        match engine {
            "redis" => Backing::Redis(duplex_testing::Redis::start()),
            "cluster" => Backing::Cluster(duplex_testing::cluster::RedisCluster::start(3, 1)),
            _ => {
                let store = tempfile::tempdir().unwrap();
                Backing::Nats {
                    server: duplex_testing::nats::Nats::start(store.path()),
                    _store: store,
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backing::Redis(_) => "redis",
            Backing::Cluster(_) => "redis+cluster",
            Backing::Nats { .. } => "nats",
        }
    }

    fn flags(&self) -> Vec<String> {
        match self {
            Backing::Redis(r) => vec!["--redis".into(), r.url()],
            Backing::Cluster(c) => vec!["--redis".into(), c.url()],
            Backing::Nats { server, .. } => vec!["--nats".into(), server.url()],
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Backing::Redis(r) => vec![r.pid()],
            Backing::Cluster(c) => c.nodes.iter().map(duplex_testing::Redis::pid).collect(),
            Backing::Nats { server, .. } => vec![server.pid()],
        }
    }

    /// CPU time of every process of the backplane (those that died count
    /// no more).
    fn cpu(&self) -> Duration {
        self.pids().into_iter().map(cpu).sum()
    }

    /// The crash: kill -9, and for one Redis and NATS a restart on the
    /// same port 2 s later (Redis empty, NATS on its store).
    fn crash(&mut self) {
        match self {
            Backing::Redis(r) => {
                let port = r.port;
                r.kill();
                std::thread::sleep(Duration::from_secs(2));
                *r = duplex_testing::Redis::start_on(port);
            }
            Backing::Cluster(c) => c.nodes[0].kill(),
            Backing::Nats { server, .. } => {
                server.kill();
                std::thread::sleep(Duration::from_secs(2));
                server.restart();
            }
        }
    }
}

/// `duplex serve` over the backplane; returns once it listens.
fn start_node(args: &Args, flags: &[String], name: &str) -> Result<(Proc, String), String> {
    let log = std::fs::File::create(format!("{}/scale-node-{name}.log", args.logs))
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(&args.duplex)
        .args(["serve", "--bind", "127.0.0.1:0", "--history-size", "100"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", args.duplex))?;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let Some(addr) = line.trim().strip_prefix("listening on ws://") else {
        let _ = child.kill();
        return Err(format!("node {name} did not start: {line}"));
    };
    Ok((Proc(child), format!("ws://{addr}/topics")))
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    epoch: String,
    last: u64,
    received: u64,
    duplicates: u64,
    /// Offsets skipped with no gap told.
    unreported: u64,
    gaps_told: u64,
    latencies_us: Vec<u32>,
}

/// Counters every task adds to.
#[derive(Default)]
struct Totals {
    measuring: AtomicBool,
    deliveries: AtomicU64,
    /// Deliveries in the measured window, per node.
    per_node: [AtomicU64; 4],
    acked: AtomicU64,
    acked_in_window: AtomicU64,
    refused: AtomicU64,
    /// Milliseconds since the start of the first and last refused
    /// publish after the crash.
    first_refused_ms: AtomicU64,
    last_refused_ms: AtomicU64,
    /// The longest a publish took to be acknowledged after the crash, in
    /// milliseconds: a client that retries (redis-rs on a cluster) waits
    /// out a failover rather than being refused.
    slowest_ms: AtomicU64,
}

async fn connect(url: &str) -> Result<Client, ClientError> {
    let mut options = Options::default();
    options.min_backoff = Duration::from_millis(100);
    options.max_backoff = Duration::from_secs(1);
    options.queue = 4096;
    tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect_with(ClientBuilder::new(url), options),
    )
    .await
    .unwrap_or(Err(ClientError::Disconnected))
}

/// One subscriber: subscribes, then follows the topic until `stop`.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    url: String,
    node: usize,
    topic: String,
    start: Instant,
    totals: Arc<Totals>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    subscribed: Arc<AtomicU64>,
) {
    let Ok(client) = connect(&url).await else {
        return;
    };
    let Ok(mut sub) = client.subscribe(&topic, None, false).await else {
        return;
    };
    subscribed.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        else {
            continue;
        };
        let mut seen = seen.lock().unwrap();
        match event {
            Event::Subscribed {
                epoch,
                offset,
                recovered,
            } => {
                if recovered == Some(false) || (!seen.epoch.is_empty() && seen.epoch != epoch) {
                    seen.gaps_told += 1;
                }
                if seen.epoch != epoch || recovered == Some(false) {
                    seen.last = offset;
                }
                seen.epoch = epoch;
            }
            Event::Message { offset, message } => {
                if offset <= seen.last {
                    seen.duplicates += 1;
                    continue;
                }
                if offset > seen.last + 1 {
                    seen.unreported += offset - seen.last - 1;
                }
                seen.last = offset;
                seen.received += 1;
                totals.deliveries.fetch_add(1, Ordering::Relaxed);
                if totals.measuring.load(Ordering::Relaxed) {
                    totals.per_node[node].fetch_add(1, Ordering::Relaxed);
                    if let Message::Text(t) = &message
                        && let Ok(sent_us) = t.as_str().parse::<u64>()
                    {
                        let now_us = start.elapsed().as_micros() as u64;
                        seen.latencies_us
                            .push(now_us.saturating_sub(sent_us).min(u32::MAX as u64) as u32);
                    }
                }
            }
            _ => {}
        }
    }
}

/// One node's publisher: `rate` a second over `topics`, each message its
/// send time; what was acknowledged is kept per topic.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    url: String,
    topics: Arc<Vec<String>>,
    first: usize,
    rate: u64,
    start: Instant,
    totals: Arc<Totals>,
    stop: Arc<AtomicBool>,
    highest: Arc<Mutex<HashMap<String, (String, u64)>>>,
    crashed: Arc<AtomicBool>,
) {
    let mut client = connect(&url).await.ok();
    let every = Duration::from_micros(1_000_000 / rate.max(1));
    let mut next = tokio::time::Instant::now();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        next += every;
        tokio::time::sleep_until(next).await;
        if client.is_none() {
            client = connect(&url).await.ok();
        }
        let Some(c) = &client else { continue };
        let topic = &topics[n % topics.len()];
        n += 7;
        let sent = start.elapsed().as_micros().to_string();
        let asked = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), c.publish(topic, sent)).await {
            Ok(Ok(ack)) => {
                if crashed.load(Ordering::Relaxed) {
                    let took = asked.elapsed().as_millis() as u64;
                    totals.slowest_ms.fetch_max(took, Ordering::Relaxed);
                }
                totals.acked.fetch_add(1, Ordering::Relaxed);
                if totals.measuring.load(Ordering::Relaxed) {
                    totals.acked_in_window.fetch_add(1, Ordering::Relaxed);
                }
                let mut highest = highest.lock().unwrap();
                let h = highest.entry(topic.clone()).or_default();
                if h.0 != ack.epoch || ack.offset > h.1 {
                    *h = (ack.epoch, ack.offset);
                }
            }
            other => {
                totals.refused.fetch_add(1, Ordering::Relaxed);
                if crashed.load(Ordering::Relaxed) {
                    let ms = start.elapsed().as_millis() as u64;
                    let _ = totals.first_refused_ms.compare_exchange(
                        0,
                        ms,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    totals.last_refused_ms.fetch_max(ms, Ordering::Relaxed);
                }
                if matches!(other, Ok(Err(ClientError::Disconnected)) | Err(_)) {
                    client = None;
                }
            }
        }
    }
}

/// One engine's row of the table.
struct Row {
    engine: &'static str,
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    node_us_per_delivery: Vec<f64>,
    backplane_us_per_message: f64,
    refused_for: Duration,
    gaps_told: u64,
    lost: u64,
    duplicates: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

async fn run_engine(args: &Args, engine: &str) -> Result<Row, String> {
    let mut backing = tokio::task::spawn_blocking({
        let engine = engine.to_owned();
        move || Backing::start(&engine)
    })
    .await
    .map_err(|e| e.to_string())?;
    let flags = backing.flags();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c", "d"] {
        nodes.push(start_node(args, &flags, &format!("{engine}-{name}"))?);
    }
    let urls: Vec<String> = nodes.iter().map(|(_, url)| url.clone()).collect();
    let topics: Arc<Vec<String>> =
        Arc::new((0..args.topics).map(|i| format!("scale.{i}")).collect());
    let start = Instant::now();
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let crashed = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicU64::new(0));
    let mut seens = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.subscribers {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let topic = topics[i % topics.len()].clone();
        seens.push((topic.clone(), Arc::clone(&seen)));
        tasks.push(tokio::spawn(subscriber(
            urls[i % urls.len()].clone(),
            i % urls.len(),
            topic,
            start,
            Arc::clone(&totals),
            Arc::clone(&stop),
            seen,
            Arc::clone(&subscribed),
        )));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (subscribed.load(Ordering::Relaxed) as usize) < args.subscribers {
        if Instant::now() > deadline {
            return Err(format!(
                "{engine}: {} of {} subscribed within 120 s",
                subscribed.load(Ordering::Relaxed),
                args.subscribers
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let highest = Arc::new(Mutex::new(HashMap::new()));
    let mut publishers = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        publishers.push(tokio::spawn(publisher(
            url.clone(),
            Arc::clone(&topics),
            i,
            args.rate / urls.len() as u64,
            start,
            Arc::clone(&totals),
            Arc::clone(&stop_publishing),
            Arc::clone(&highest),
            Arc::clone(&crashed),
        )));
    }
    // Warm-up, then the measured window: the first half, before the crash.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(args.secs / 2 - 2);
    let node_pids: Vec<u32> = nodes.iter().map(|(p, _)| p.0.id()).collect();
    let node_cpu0: Vec<Duration> = node_pids.iter().map(|&p| cpu(p)).collect();
    let backplane_cpu0 = backing.cpu();
    totals.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    totals.measuring.store(false, Ordering::Relaxed);
    let node_cpu: Vec<Duration> = node_pids
        .iter()
        .zip(&node_cpu0)
        .map(|(&p, &c0)| cpu(p).saturating_sub(c0))
        .collect();
    let backplane_cpu = backing.cpu().saturating_sub(backplane_cpu0);

    // The crash, then the second half.
    crashed.store(true, Ordering::Relaxed);
    let crash_ms = start.elapsed().as_millis() as u64;
    backing = tokio::task::spawn_blocking(move || {
        backing.crash();
        backing
    })
    .await
    .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(args.secs / 2)).await;
    stop_publishing.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = p.await;
    }
    // Let every subscriber catch up to the last acknowledged offset of its
    // topic (or 20 s).
    let highest = highest.lock().unwrap().clone();
    let caught_up = || {
        seens.iter().all(|(topic, seen)| {
            let seen = seen.lock().unwrap();
            highest
                .get(topic)
                .is_none_or(|(e, o)| seen.epoch != *e || seen.last >= *o)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !caught_up() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    let mut latencies = Vec::new();
    let (mut lost, mut duplicates, mut gaps_told) = (0, 0, 0);
    for (topic, seen) in &seens {
        let mut seen = seen.lock().unwrap();
        latencies.append(&mut seen.latencies_us);
        duplicates += seen.duplicates;
        gaps_told += seen.gaps_told;
        lost += seen.unreported;
        if let Some((e, o)) = highest.get(topic)
            && seen.epoch == *e
            && seen.last < *o
        {
            lost += o - seen.last;
        }
    }
    latencies.sort_unstable();
    let in_window = totals.acked_in_window.load(Ordering::Relaxed).max(1);
    let (first, last) = (
        totals.first_refused_ms.load(Ordering::Relaxed),
        totals.last_refused_ms.load(Ordering::Relaxed),
    );
    let refused_for = if first == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(last.saturating_sub(crash_ms.min(first)))
    }
    .max(Duration::from_millis(
        totals.slowest_ms.load(Ordering::Relaxed),
    ));
    Ok(Row {
        engine: backing.name(),
        deliveries_per_s: totals
            .per_node
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            / window.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        node_us_per_delivery: node_cpu
            .iter()
            .zip(&totals.per_node)
            .map(|(c, n)| c.as_secs_f64() * 1e6 / n.load(Ordering::Relaxed).max(1) as f64)
            .collect(),
        backplane_us_per_message: backplane_cpu.as_secs_f64() * 1e6 / in_window as f64,
        refused_for,
        gaps_told,
        lost,
        duplicates,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = std::fs::create_dir_all(&args.logs);
    println!(
        "scale: 4 nodes, {} subscribers on {} topics, {} publishes/s, {} s an engine (crash at half)",
        args.subscribers, args.topics, args.rate, args.secs
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for engine in &args.engines {
        match run_engine(&args, engine).await {
            Ok(row) => {
                if row.lost > 0 || row.duplicates > 0 {
                    failures.push(format!(
                        "{}: {} lost with no gap told, {} duplicated",
                        row.engine, row.lost, row.duplicates
                    ));
                }
                rows.push(row);
            }
            Err(e) => failures.push(e),
        }
    }
    println!(
        "{:<14} {:>12} {:>8} {:>8} {:>30} {:>12} {:>12} {:>6} {:>6} {:>5}",
        "engine",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "node CPU µs/delivery (a b c d)",
        "store µs/msg",
        "unavailable",
        "gaps",
        "lost",
        "dup"
    );
    for r in &rows {
        let nodes: Vec<String> = r
            .node_us_per_delivery
            .iter()
            .map(|us| format!("{us:.1}"))
            .collect();
        println!(
            "{:<14} {:>12.0} {:>8.2} {:>8.2} {:>30} {:>12.1} {:>11.1}s {:>6} {:>6} {:>5}",
            r.engine,
            r.deliveries_per_s,
            r.p50_ms,
            r.p99_ms,
            nodes.join(" "),
            r.backplane_us_per_message,
            r.refused_for.as_secs_f64(),
            r.gaps_told,
            r.lost,
            r.duplicates
        );
    }
    if failures.is_empty() {
        println!("scale: PASS");
        ExitCode::SUCCESS
    } else {
        println!("scale: FAIL ({})", failures.join("; "));
        ExitCode::FAILURE
    }
}
