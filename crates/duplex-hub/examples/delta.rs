//! What duplex.v1 deltas save on the wire: one hub, four duplex.v1
//! subscribers of one topic (whole messages, permessage-deflate alone,
//! Fossil deltas alone, both), and a stream of JSON messages published to
//! it. Each subscriber counts the bytes its socket reads from its
//! `subscribed` reply to the last message, frame headers and duplex.v1's
//! envelope included, and checks every message it rebuilds against what
//! was published. Two streams: `board`, the state of 40 instruments of
//! which one to four change per update (what deltas are for), and `feed`,
//! independent news items (where a delta is rarely smaller, and the
//! message goes whole).
//!
//! ```text
//! cargo run --release -p duplex-hub --features server --example delta -- [--messages 2000]
//! ```
//!
//! Everything is in this process, on a free loopback port.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use duplex_hub::{Hub, HubConfig, HubService};
use duplex_ws::{ClientBuilder, Config, DeflateConfig, Event, Message};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream that counts what is read from it.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A deterministic xorshift, so that every run publishes the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` states of a board of 40 instruments: each update moves one to four
/// of them (bid, ask, last, volume) and the sequence and time.
fn board(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut px: Vec<i64> = (0..40).map(|i| 10_000 + i * 250).collect();
    let mut vol: Vec<u64> = vec![0; 40];
    (0..n)
        .map(|seq| {
            for _ in 0..=rng.below(4) {
                let i = rng.below(40) as usize;
                px[i] += rng.below(21) as i64 - 10;
                vol[i] += 100 * (1 + rng.below(50));
            }
            let rows: Vec<Value> = (0..40)
                .map(|i| {
                    let last = px[i] as f64 / 100.0;
                    json!({
                        "sym": format!("SYM{i:02}"),
                        "bid": last - 0.01,
                        "ask": last + 0.01,
                        "last": last,
                        "vol": vol[i],
                        "open": (10_000 + i as i64 * 250) as f64 / 100.0,
                    })
                })
                .collect();
            json!({"seq": seq, "ts": 1_765_000_000_000u64 + seq as u64 * 250, "board": rows})
                .to_string()
        })
        .collect()
}

/// `n` independent news items.
fn feed(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "market",
        "rally",
        "central",
        "bank",
        "holds",
        "rates",
        "shares",
        "tech",
        "slide",
        "earnings",
        "beat",
        "forecast",
        "oil",
        "prices",
        "climb",
        "supply",
        "cuts",
        "bond",
        "yields",
        "fall",
        "inflation",
        "cools",
        "merger",
        "talks",
        "stall",
        "record",
        "high",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|id| {
            let mut words = |k: u64| {
                (0..k)
                    .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let title = words(8);
            let body = words(40);
            json!({"id": id, "title": title, "body": body, "tags": ["markets"]}).to_string()
        })
        .collect()
}

/// What one subscriber read.
struct Read {
    wire: u64,
    deltas: usize,
}

/// Subscribes to `topic` (with deflate and deltas as asked) and returns
/// the task that reads `states.len()` messages and checks each.
async fn subscriber(
    addr: std::net::SocketAddr,
    deflate: bool,
    delta: bool,
    states: Arc<Vec<String>>,
) -> tokio::task::JoinHandle<Read> {
    let read = Arc::new(AtomicU64::new(0));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let stream = Counted {
        inner: tcp,
        read: Arc::clone(&read),
    };
    let config = Config::client().deflate(deflate.then(DeflateConfig::default));
    let mut ws = ClientBuilder::new(format!("ws://{addr}/topics"))
        // After the config, which holds the subprotocols too.
        .config(config)
        .protocols(["duplex.v1"])
        .connect_on(stream)
        .await
        .expect("handshake");
    let mut subscribe = json!({"op": "subscribe", "id": 1, "topic": "t"});
    if delta {
        subscribe["delta"] = json!("fossil");
    }
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    // Up to the reply: what came before it is not the stream's.
    loop {
        let frame = next_frame(&mut ws).await;
        if frame["type"] == "subscribed" {
            break;
        }
    }
    let start = read.load(Ordering::Relaxed);
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        let mut deltas = 0;
        for (i, state) in states.iter().enumerate() {
            let frame = next_frame(&mut ws).await;
            assert_eq!(frame["offset"], i as u64 + 1, "{frame}");
            let text = match (frame["data"].as_str(), frame["delta"].as_str()) {
                (Some(data), None) => data.to_owned(),
                (None, Some(d)) => {
                    deltas += 1;
                    let before = last.as_deref().expect("a delta follows a message");
                    let made = duplex_hub::delta::apply(before.as_bytes(), d.as_bytes(), 1 << 24)
                        .expect("the delta applies");
                    String::from_utf8(made).expect("text")
                }
                _ => panic!("unexpected {frame}"),
            };
            assert_eq!(&text, state, "message {}", i + 1);
            last = Some(text);
        }
        Read {
            wire: read.load(Ordering::Relaxed) - start,
            deltas,
        }
    })
}

async fn next_frame(ws: &mut duplex_ws::WebSocket<Counted>) -> Value {
    loop {
        match ws.next().await {
            Some(Event::Message(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if frame["type"] != "ping" {
                    return frame;
                }
            }
            Some(Event::Open) | Some(Event::Message(_)) => {}
            other => panic!("the subscription ended: {other:?}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let mut messages = 2000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--messages", Some(n)) if n > 1 => messages = n,
            _ => {
                eprintln!("usage: delta [--messages N (at least 2)]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "{messages} messages per stream, bytes read per delivery (frames and envelope included)"
    );
    println!(
        "{:<6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "stream",
        "payload",
        "whole",
        "deflate",
        "delta",
        "both",
        "delta/defl",
        "both/defl",
        "encode"
    );
    for (name, states) in [("board", board(messages)), ("feed", feed(messages))] {
        let states = Arc::new(states);
        // Room for the whole stream in each queue: publishing outruns the
        // subscribers' reading, and this measures bytes, not pacing.
        let hub = Hub::new(HubConfig::default().queue(messages + 64));
        let service = HubService::new(hub.clone())
            .config(Config::server().deflate(Some(DeflateConfig::default())));
        let server = duplex_ws::Server::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let handle = server.handle();
        tokio::spawn(server.serve_service(service));
        let mut readers = Vec::new();
        for (deflate, delta) in [(false, false), (true, false), (false, true), (true, true)] {
            readers.push(subscriber(addr, deflate, delta, Arc::clone(&states)).await);
        }
        for state in states.iter() {
            hub.publish("t", Message::text(state.clone()))
                .await
                .expect("publish");
            tokio::task::yield_now().await;
        }
        let mut wire = Vec::new();
        for reader in readers {
            let read = reader.await.expect("a subscriber failed");
            wire.push((read.wire as f64 / messages as f64, read.deltas));
        }
        handle.shutdown();
        // What the hub's one delta per message costs, outside the server.
        let started = Instant::now();
        for pair in states.windows(2) {
            std::hint::black_box(duplex_hub::delta::encode(
                pair[0].as_bytes(),
                pair[1].as_bytes(),
                true,
            ));
        }
        let encode = started.elapsed().as_secs_f64() * 1e6 / (messages - 1) as f64;
        let payload = states.iter().map(String::len).sum::<usize>() as f64 / messages as f64;
        let [whole, deflate, delta, both] = [wire[0].0, wire[1].0, wire[2].0, wire[3].0];
        println!(
            "{name:<6} {payload:>8.0} {whole:>8.0} {deflate:>8.0} {delta:>8.0} {both:>8.0} {:>9.2}x {:>9.2}x {encode:>6.1}us",
            delta / deflate,
            both / deflate,
        );
        println!(
            "       deltas sent: {} of {} (delta), {} (both)",
            wire[2].1,
            messages - 1,
            wire[3].1
        );
    }
}
