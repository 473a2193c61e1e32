//! `duplex bench fanout URL`: subscribers on topics and a publisher, to
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
//! `POST /topics/{topic}`, `--api-key` as a bearer token), `v1` (the same
//! publishes; subscribers speak duplex.v1 on `/topics`), `pusher`
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
//!
//! The flags and the plan they make are in [`plan`](mod@plan), the stamp and the sets
//! of sequence numbers in [`stamp`], the books every task keeps in
//! [`shared`], the publisher in [`publish`]; the subscribers and the run
//! itself here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_proto::OpCode;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, oneshot, watch};

use super::client::{Buffer, Conn, Dialer, Event, Messages, client_frame, rand_key, send};
use super::error::BenchError;
use super::fd_limit::raise_fd_limit;
use super::report::Report;

mod plan;
mod publish;
mod shared;
mod stamp;

pub(crate) use plan::FanoutArgs;
use plan::{Dialect, FanoutPlan, Rate, SPARE_FDS, plan, topic_name};
use publish::{POST_TIMEOUT, Poster, publish_one};
use shared::{Pending, Shared, Tally, acked_total};
use stamp::{MAX_SEQ, SeqSet, Stamp};

/// Handshakes (and subscriptions) in progress at once.
const OPENERS: usize = 64;
/// How long one subscriber may take to connect and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a message may have beyond `--size` (a Pusher envelope).
const ENVELOPE_ROOM: usize = 4 << 10;

pub(super) fn run(args: &FanoutArgs) -> Result<Report, BenchError> {
    let plan = plan(args)?;
    raise_fd_limit(plan.subscribers as u64 + SPARE_FDS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, run_plan(Rc::new(plan)))?;
    Ok(Report {
        json: result.json(),
        summary: result.summary(),
        ok: true,
    })
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

async fn run_plan(plan: Rc<FanoutPlan>) -> Result<FanoutResult, BenchError> {
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
        rss_before: measured(plan.sampler.rss()),
        ..Samples::default()
    };
    let key = rand_key();
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
    samples.rss_idle = measured(plan.sampler.rss());

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
    Ok(FanoutResult {
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
        let (shared, at_start, sampler) = (
            Rc::clone(shared),
            Rc::clone(&at_start),
            plan.sampler.clone(),
        );
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let s = shared.borrow();
            at_start.set(Some((
                measured(sampler.cpu_us()),
                s.received,
                acked_total(&s),
            )));
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
        (measured(plan.sampler.cpu_us()), s.received, acked_total(&s))
    };
    samples.rss_end = measured(plan.sampler.rss());
    if let Some((cpu_start, received_start, acked_start)) = at_start.get() {
        samples.deliveries = received_end - received_start;
        samples.publishes = acked_end - acked_start;
        samples.cpu_us = cpu_start.zip(cpu_end).map(|(a, b)| b.saturating_sub(a));
    }
}

/// At the window's start: the servers' CPU time, unique deliveries and
/// acknowledged publishes so far.
type WindowStart = (Option<u64>, u64, u64);

/// One subscriber: connects, subscribes, then books every message until the
/// run stops. Returns how many acknowledged publishes it got.
async fn subscriber(
    plan: Rc<FanoutPlan>,
    shared: Rc<RefCell<Shared>>,
    openers: Rc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    dialer: Dialer,
    topic: u32,
    key: [u8; 4],
) -> u64 {
    let mut messages = Messages::new(plan.size + ENVELOPE_ROOM);
    let mut buffer = messages.buffer();
    let opened = {
        let Ok(_permit) = openers.acquire().await else {
            return 0;
        };
        tokio::time::timeout(
            OPEN_TIMEOUT,
            open(&plan, &dialer, topic, key, &mut messages, &mut buffer),
        )
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
            messages.drain(&mut buffer, |event| {
                match event {
                    Event::Message(m) => {
                        if plan.dialect == Dialect::Pusher && is_pusher_ping(m) {
                            out.extend(client_frame(
                                OpCode::Text,
                                br#"{"event":"pusher:pong","data":{}}"#,
                                key,
                            ));
                        } else if matches!(plan.dialect, Dialect::Duplex | Dialect::Plain)
                            || Stamp::find(m).is_some()
                        {
                            // Pusher and duplex.v1 frames other than
                            // messages carry no stamp.
                            shared.borrow_mut().deliver(topic, &mut seen, m);
                        }
                    }
                    Event::Ping(p) => out.extend(client_frame(OpCode::Pong, p, key)),
                }
                Ok(())
            })?;
            if !out.is_empty() {
                send(&mut stream, &out).await?;
            }
            tokio::select! {
                read = buffer.read_some(&mut stream) => read?,
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
    dialer: &Dialer,
    topic: u32,
    key: [u8; 4],
    messages: &mut Messages,
    buffer: &mut Buffer,
) -> Result<Conn, BenchError> {
    let mut stream = dialer.open(buffer).await?;
    match plan.dialect {
        Dialect::Duplex | Dialect::Plain => return Ok(stream),
        Dialect::V1 => return subscribe_v1(stream, topic, key, messages, buffer).await,
        Dialect::Pusher => {}
    }
    // Pusher: connection_established, then subscribe and wait for
    // subscription_succeeded.
    let channel = topic_name(topic as usize);
    let subscribe = serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel },
    })
    .to_string();
    send(
        &mut stream,
        &client_frame(OpCode::Text, subscribe.as_bytes(), key),
    )
    .await?;
    loop {
        let mut subscribed = false;
        let mut refused = None;
        let mut out = Vec::new();
        messages.drain(buffer, |event| {
            match event {
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
            }
            Ok(())
        })?;
        if let Some(why) = refused {
            return Err(BenchError::UnexpectedReply(why));
        }
        if !out.is_empty() {
            send(&mut stream, &out).await?;
        }
        if subscribed {
            return Ok(stream);
        }
        buffer.read_some(&mut stream).await?;
    }
}

/// duplex.v1: `subscribe`, then wait for `subscribed` (a `welcome` and
/// `ping`s may come first).
async fn subscribe_v1(
    mut stream: Conn,
    topic: u32,
    key: [u8; 4],
    messages: &mut Messages,
    buffer: &mut Buffer,
) -> Result<Conn, BenchError> {
    let subscribe = serde_json::json!({"op": "subscribe", "topic": topic_name(topic as usize)});
    let frame = client_frame(OpCode::Text, subscribe.to_string().as_bytes(), key);
    send(&mut stream, &frame).await?;
    loop {
        let mut subscribed = false;
        let mut refused = None;
        let mut out = Vec::new();
        messages.drain(buffer, |event| {
            match event {
                Event::Message(m) => {
                    let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
                    match v.get("type").and_then(|t| t.as_str()) {
                        Some("subscribed") => subscribed = true,
                        Some("error") => refused = Some(String::from_utf8_lossy(m).into_owned()),
                        _ => {}
                    }
                }
                Event::Ping(p) => out.extend(client_frame(OpCode::Pong, p, key)),
            }
            Ok(())
        })?;
        if let Some(why) = refused {
            return Err(BenchError::UnexpectedReply(why));
        }
        if !out.is_empty() {
            send(&mut stream, &out).await?;
        }
        if subscribed {
            return Ok(stream);
        }
        buffer.read_some(&mut stream).await?;
    }
}

/// The outcome of a run.
struct FanoutResult {
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

impl FanoutResult {
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
                "pids": p.sampler.pids(),
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

/// A sample of the servers, or none if one of them exited: a fan-out run
/// still reports its deliveries and latencies (a cluster run may lose a
/// node), with the figure that needs every pid as `null`.
fn measured(sample: Result<Option<u64>, BenchError>) -> Option<u64> {
    sample.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a server can no longer be sampled");
        None
    })
}
