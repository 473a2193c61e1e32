//! The hub's soak: two `duplex serve` nodes on one Redis, thousands of
//! duplex.v1 subscribers that connect to either node, resume from the last
//! offset they saw, and drop at random, while a publisher runs; halfway
//! through one node is killed (SIGKILL) and started again on its port.
//! At the end every subscriber must account for every offset of its topic
//! from the one it started after: received exactly once and in order, or
//! inside a gap the hub reported (`recovered: false`, a new epoch). A lost
//! offset nobody was told of, a duplicate, or an acknowledged publish that
//! no subscriber can reach fails the run. The nodes' resident memory is
//! sampled throughout and must stay flat after warm-up.
//!
//! Run by `scripts/soak.sh` (which builds it and `duplex`):
//!
//! ```text
//! soak --duplex target/release/duplex [--secs 600] [--subscribers 5000]
//!      [--topics 20] [--rate 100] [--logs DIR]
//! ```
//!
//! Starts its own redis-server on a free loopback port; targets loopback
//! only. Prints its figures, then `soak: PASS` or `soak: FAIL (why)`, and
//! exits 0 only on a pass.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_hub::Since;
use duplex_hub::client::{Client, ClientError, Event, Options};
use duplex_ws::ClientBuilder;

struct Args {
    duplex: String,
    secs: u64,
    subscribers: usize,
    topics: usize,
    rate: u64,
    logs: String,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        duplex: "target/release/duplex".into(),
        secs: 600,
        subscribers: 5000,
        topics: 20,
        rate: 100,
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
            "--secs" => args.secs = number()?.max(10),
            "--subscribers" => args.subscribers = number()?.max(1) as usize,
            "--topics" => args.topics = number()?.max(1) as usize,
            "--rate" => args.rate = number()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A small, seedable generator: the soak needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `duplex serve` on `port` (0: any) over Redis; returns once it listens.
fn start_node(args: &Args, name: &str, port: u16, redis: u16) -> Result<(Proc, u16), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{}/soak-node-{name}.log", args.logs))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut child = Command::new(&args.duplex)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--redis", &format!("redis://127.0.0.1:{redis}/")])
            // Ten seconds of each topic's messages: longer than any
            // subscriber is away (a second between sessions, a node's
            // restart), and full early, so that memory settles in the
            // warm-up rather than growing with the run.
            .args(["--history-size", &history_size(args).to_string()])
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("{}: {e}", args.duplex))?;
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if let Some(addr) = line.trim().strip_prefix("listening on ws://") {
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            return Ok((Proc(child), port));
        }
        let _ = child.wait();
        // The port of a killed node may take a moment to be free again.
        if Instant::now() > deadline {
            return Err(format!("node {name} did not start on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ten seconds of one topic's messages, at least 50.
fn history_size(args: &Args) -> u64 {
    (args.rate * 10 / args.topics as u64).max(50)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// What one subscriber saw of its topic.
#[derive(Default)]
struct Ledger {
    epoch: Option<String>,
    /// The offset it started after (in the current epoch).
    start: u64,
    /// The last offset delivered.
    last: u64,
    /// A `recovered: false` not yet followed by a message: the next jump
    /// is a reported gap.
    gap_open: bool,
    received: u64,
    in_gaps: u64,
    silent: u64,
    duplicates: u64,
    epochs_changed: u64,
    recovered_false: u64,
    sessions: u64,
    /// What was accounted for in epochs before the current one.
    before_epoch: u64,
}

impl Ledger {
    fn since(&self) -> Option<Since> {
        self.epoch.as_ref().map(|epoch| Since {
            epoch: Some(epoch.clone()),
            offset: self.last,
        })
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Subscribed {
                epoch,
                offset,
                recovered,
            } => {
                if self.epoch.as_deref() != Some(&epoch) {
                    if self.epoch.is_some() {
                        // A new epoch is a reported gap: what was left of
                        // the old one is gone, and the new one starts over.
                        self.epochs_changed += 1;
                        self.gap_open = true;
                        self.before_epoch = self.received + self.in_gaps + self.silent;
                        self.last = 0;
                        self.start = 0;
                    } else {
                        self.start = offset;
                        self.last = offset;
                    }
                    self.epoch = Some(epoch);
                }
                if recovered == Some(false) {
                    self.recovered_false += 1;
                    self.gap_open = true;
                }
            }
            Event::Message { offset, .. } => {
                if offset <= self.last {
                    self.duplicates += 1;
                    return;
                }
                let skipped = offset - self.last - 1;
                if skipped > 0 {
                    if self.gap_open {
                        self.in_gaps += skipped;
                    } else {
                        self.silent += skipped;
                    }
                }
                self.gap_open = false;
                self.received += 1;
                self.last = offset;
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Published {
    acked: AtomicU64,
    failed: AtomicU64,
    /// Per topic, the highest offset acknowledged.
    highest: Mutex<HashMap<usize, u64>>,
}

async fn connect(url: &str) -> Result<Client, ClientError> {
    let mut options = Options::default();
    options.min_backoff = Duration::from_millis(100);
    options.max_backoff = Duration::from_secs(1);
    options.queue = 4096;
    tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect_with(ClientBuilder::new(url), options),
    )
    .await
    .unwrap_or(Err(ClientError::Disconnected))
}

/// One subscriber: sessions of 2–15 s on a random node, 0–1 s apart,
/// each resuming from the last offset seen, until `stop`.
async fn subscriber(
    id: usize,
    topic: String,
    urls: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    // Spread the first connections over two seconds.
    tokio::time::sleep(rng.millis(0, 2000)).await;
    while !stop.load(Ordering::Relaxed) {
        let url = &urls[rng.below(urls.len() as u64) as usize];
        let session = rng.millis(2000, 15_000);
        let _ = run_session(url, &topic, &ledger, session, &stop).await;
        tokio::time::sleep(rng.millis(0, 1000)).await;
    }
}

/// One connection: subscribe from where the ledger is, take events for
/// `length` (or until `stop`), then drop the connection.
async fn run_session(
    url: &str,
    topic: &str,
    ledger: &Mutex<Ledger>,
    length: Duration,
    stop: &AtomicBool,
) -> Result<(), ClientError> {
    let client = connect(url).await?;
    let since = ledger.lock().unwrap().since();
    let mut sub = client.subscribe(topic, since, false).await?;
    ledger.lock().unwrap().sessions += 1;
    let end = tokio::time::Instant::now() + length;
    loop {
        tokio::select! {
            event = sub.next() => match event {
                Some(event) => ledger.lock().unwrap().event(event),
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(end) => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
    }
}

/// After the run: resume once more and take everything up to the topic's
/// newest offset. Returns that offset.
async fn drain(url: &str, topic: &str, ledger: &Mutex<Ledger>) -> Result<u64, String> {
    let client = connect(url).await.map_err(|e| e.to_string())?;
    let since = ledger.lock().unwrap().since();
    let mut sub = client
        .subscribe(topic, since, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut newest = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(newest) = newest
            && ledger.lock().unwrap().last >= newest
        {
            return Ok(newest);
        }
        let event = tokio::time::timeout_at(deadline, sub.next())
            .await
            .map_err(|_| format!("{topic}: not caught up within 60 s"))?
            .ok_or_else(|| format!("{topic}: subscription ended"))?;
        if let Event::Subscribed { offset, .. } = &event {
            newest = Some(*offset);
        }
        ledger.lock().unwrap().event(event);
    }
}

async fn publisher(
    urls: Arc<Vec<String>>,
    topics: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
    published: Arc<Published>,
) {
    let mut clients: Vec<Option<Client>> = (0..urls.len()).map(|_| None).collect();
    let mut next = tokio::time::Instant::now();
    let every = Duration::from_micros(1_000_000 / rate);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        next += every;
        tokio::time::sleep_until(next).await;
        let topic = (n % topics as u64) as usize;
        let node = (n / topics as u64 % urls.len() as u64) as usize;
        n += 1;
        // As a publisher would: to one node, and to the other when that
        // one fails (a message that fails twice is counted as not sent;
        // one whose answer was lost may still have been published).
        let mut done = false;
        for node in [node, (node + 1) % urls.len()] {
            if clients[node].is_none() {
                clients[node] = connect(&urls[node]).await.ok();
            }
            let Some(client) = &clients[node] else {
                continue;
            };
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                client.publish(&format!("soak.{topic}"), format!("m{n}")),
            )
            .await;
            match sent {
                Ok(Ok(ack)) => {
                    published.acked.fetch_add(1, Ordering::Relaxed);
                    let mut highest = published.highest.lock().unwrap();
                    let h = highest.entry(topic).or_default();
                    *h = (*h).max(ack.offset);
                    done = true;
                    break;
                }
                Ok(Err(ClientError::Disconnected)) | Err(_) => clients[node] = None,
                Ok(Err(_)) => {}
            }
        }
        if !done {
            published.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => {
            println!("soak: PASS");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("soak: FAIL ({why})");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.logs).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(format!("{}/soak-redis.log", args.logs))
        .map_err(|e| format!("{}/soak-redis.log: {e}", args.logs))?;
    let redis = duplex_testing::Redis::start_logged(log);
    let (pid_redis, redis_port) = (redis.pid(), redis.port);
    let (node_a, port_a) = start_node(&args, "a", 0, redis_port)?;
    let (node_b, port_b) = start_node(&args, "b", 0, redis_port)?;
    let pid_a = node_a.0.id();
    let node_b = Arc::new(Mutex::new(Some(node_b)));
    let urls = Arc::new(vec![
        format!("ws://127.0.0.1:{port_a}/topics"),
        format!("ws://127.0.0.1:{port_b}/topics"),
    ]);
    println!(
        "soak: {} s, {} subscribers on {} topics, {} messages/s, history {} a topic, nodes :{port_a} and :{port_b}, redis :{redis_port}",
        args.secs,
        args.subscribers,
        args.topics,
        args.rate,
        history_size(&args)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Published::default());
    let ledgers: Vec<_> = (0..args.subscribers)
        .map(|_| Arc::new(Mutex::new(Ledger::default())))
        .collect();
    let mut tasks = Vec::new();
    for (id, ledger) in ledgers.iter().enumerate() {
        tasks.push(tokio::spawn(subscriber(
            id,
            format!("soak.{}", id % args.topics),
            Arc::clone(&urls),
            Arc::clone(&stop),
            Arc::clone(ledger),
        )));
    }
    let pub_task = tokio::spawn(publisher(
        Arc::clone(&urls),
        args.topics,
        args.rate,
        Arc::clone(&stop),
        Arc::clone(&published),
    ));

    // Memory, every 5 s; the node killed is measured again from its restart.
    let started = Instant::now();
    let total = Duration::from_secs(args.secs);
    let warm_up = total / 4;
    let kill_at = total / 2;
    let mut samples_a = Vec::new();
    let mut samples_b: Vec<(Duration, u64)> = Vec::new();
    let mut samples_redis = Vec::new();
    let mut restarted_at = None;
    let mut killed = false;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = started.elapsed();
        if !killed && now >= kill_at {
            killed = true;
            let old = node_b.lock().unwrap().take();
            drop(old); // SIGKILL, and reaped
            println!("soak: {:.0} s: node b killed", now.as_secs_f64());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let args_ref = &args;
            let (proc, _) = start_node(args_ref, "b", port_b, redis_port)?;
            *node_b.lock().unwrap() = Some(proc);
            restarted_at = Some(started.elapsed());
            println!(
                "soak: {:.0} s: node b started again on :{port_b}",
                started.elapsed().as_secs_f64()
            );
        }
        if now.as_secs().is_multiple_of(5) {
            if let Some(rss) = rss_kib(pid_a) {
                samples_a.push((now, rss));
            }
            if let Some(rss) = rss_kib(pid_redis) {
                samples_redis.push((now, rss));
            }
            let pid_b = node_b.lock().unwrap().as_ref().map(|p| p.0.id());
            if let Some(rss) = pid_b.and_then(rss_kib) {
                samples_b.push((now, rss));
            }
            let sessions: u64 = ledgers.iter().map(|l| l.lock().unwrap().sessions).sum();
            println!(
                "soak: {:>4.0} s: node a {:.1} MiB, node b {:.1} MiB, redis {:.1} MiB, {} acknowledged, {} sessions",
                now.as_secs_f64(),
                mib(samples_a.last().map_or(0, |s| s.1)),
                mib(samples_b.last().map_or(0, |s| s.1)),
                mib(samples_redis.last().map_or(0, |s| s.1)),
                published.acked.load(Ordering::Relaxed),
                sessions,
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    pub_task.await.map_err(|e| e.to_string())?;
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    // Let the last publishes reach every node before the final resume.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut drains = Vec::new();
    for (id, ledger) in ledgers.iter().enumerate() {
        let url = urls[id % urls.len()].clone();
        let ledger = Arc::clone(ledger);
        let topic = format!("soak.{}", id % args.topics);
        drains.push(tokio::spawn(
            async move { drain(&url, &topic, &ledger).await },
        ));
        // Not all 5,000 at once: the nodes' connection rate is exempt on
        // loopback, but the final resume should not be a thundering herd.
        if id % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut newest_by_topic: HashMap<usize, u64> = HashMap::new();
    let mut failures = Vec::new();
    for (id, drain) in drains.into_iter().enumerate() {
        match drain.await.map_err(|e| e.to_string())? {
            Ok(newest) => {
                let seen = newest_by_topic.entry(id % args.topics).or_insert(newest);
                if *seen != newest {
                    failures.push(format!(
                        "topic {}: newest offset {newest} for one subscriber, {seen} for another",
                        id % args.topics
                    ));
                }
            }
            Err(e) => failures.push(format!("subscriber {id}: {e}")),
        }
    }

    // The accounts.
    let mut totals = Ledger::default();
    let mut unaccounted = 0u64;
    for ledger in &ledgers {
        let l = ledger.lock().unwrap();
        totals.received += l.received;
        totals.in_gaps += l.in_gaps;
        totals.silent += l.silent;
        totals.duplicates += l.duplicates;
        totals.epochs_changed += l.epochs_changed;
        totals.recovered_false += l.recovered_false;
        totals.sessions += l.sessions;
        if l.received + l.in_gaps + l.silent - l.before_epoch != l.last - l.start {
            unaccounted += 1;
        }
    }
    let highest = published.highest.lock().unwrap().clone();
    for (topic, acked) in &highest {
        let newest = newest_by_topic.get(topic).copied().unwrap_or(0);
        if *acked > newest {
            failures.push(format!(
                "topic {topic}: offset {acked} acknowledged, but its newest is {newest}"
            ));
        }
    }
    let acked = published.acked.load(Ordering::Relaxed);
    let failed = published.failed.load(Ordering::Relaxed);
    println!(
        "soak: published {acked} acknowledged, {failed} not (node down or timed out); \
         {} sessions; deliveries {}; offsets inside reported gaps {} ({} recovered:false, {} new epochs); \
         silent losses {}; duplicates {}; subscribers whose count is off {unaccounted}",
        totals.sessions,
        totals.received,
        totals.in_gaps,
        totals.recovered_false,
        totals.epochs_changed,
        totals.silent,
        totals.duplicates,
    );

    // Memory: flat after warm-up. Node a from the end of warm-up; node b
    // from a warm-up after its restart.
    let restarted_at = restarted_at.unwrap_or_default();
    let judge = |name: &str,
                 samples: &[(Duration, u64)],
                 from: Duration,
                 failures: &mut Vec<String>| {
        let after: Vec<u64> = samples
            .iter()
            .filter(|s| s.0 >= from)
            .map(|s| s.1)
            .collect();
        let (Some(first), Some(last), Some(max)) =
            (after.first(), after.last(), after.iter().max())
        else {
            return;
        };
        println!(
            "soak: {name} RSS after warm-up ({:.0} s on): first {:.1} MiB, last {:.1} MiB, highest {:.1} MiB",
            from.as_secs_f64(),
            mib(*first),
            mib(*last),
            mib(*max)
        );
        // Flat: allocator noise and buffers that come and go, not growth
        // with the messages or the sessions.
        let bound = first + first / 2 + (32 << 10);
        if *last > bound {
            failures.push(format!(
                "{name}: RSS grew from {:.1} MiB to {:.1} MiB after warm-up",
                mib(*first),
                mib(*last)
            ));
        }
    };
    judge("a", &samples_a, warm_up, &mut failures);
    judge("b", &samples_b, restarted_at + warm_up / 2, &mut failures);
    judge("redis", &samples_redis, warm_up, &mut failures);

    if totals.silent > 0 {
        failures.push(format!("{} offsets lost without a word", totals.silent));
    }
    if totals.duplicates > 0 {
        failures.push(format!("{} offsets delivered twice", totals.duplicates));
    }
    if unaccounted > 0 {
        failures.push(format!("{unaccounted} subscribers' counts do not add up"));
    }
    if acked == 0 || totals.received == 0 {
        failures.push("nothing was published or delivered".into());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        for f in failures.iter().take(20) {
            println!("soak: {f}");
        }
        Err(format!("{} problems", failures.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_ws::Message;

    fn subscribed(epoch: &str, offset: u64, recovered: Option<bool>) -> Event {
        Event::Subscribed {
            epoch: epoch.into(),
            offset,
            recovered,
        }
    }

    fn message(offset: u64) -> Event {
        Event::Message {
            offset,
            message: Message::text("m"),
        }
    }

    fn accounted(l: &Ledger) -> bool {
        l.received + l.in_gaps + l.silent - l.before_epoch == l.last - l.start
    }

    #[test]
    fn every_offset_is_received_reported_or_counted_as_lost() {
        let mut l = Ledger::default();
        l.event(subscribed("e", 10, None));
        for o in [11, 12] {
            l.event(message(o));
        }
        // A resume that was told of its gap.
        l.event(subscribed("e", 20, Some(false)));
        l.event(message(18));
        // A jump nobody reported, then a repeat.
        l.event(message(21));
        l.event(message(21));
        assert_eq!(
            (l.received, l.in_gaps, l.silent, l.duplicates),
            (4, 5, 2, 1)
        );
        assert!(accounted(&l));
        assert_eq!(
            l.since().map(|s| (s.epoch, s.offset)),
            Some((Some("e".into()), 21))
        );
    }

    #[test]
    fn a_new_epoch_is_a_reported_gap_and_starts_the_count_again() {
        let mut l = Ledger::default();
        l.event(subscribed("e1", 0, None));
        l.event(message(1));
        l.event(subscribed("e2", 5, Some(false)));
        l.event(message(3));
        assert_eq!((l.epochs_changed, l.in_gaps, l.silent), (1, 2, 0));
        assert!(accounted(&l));
    }
}
