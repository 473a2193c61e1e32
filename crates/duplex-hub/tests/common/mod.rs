//! Nodes serving duplex.v1 over a backplane, spoken to by hand, for the
//! engines' tests; and the failover run they share: a subscriber on one
//! node, a publisher on the other, the store crashed a second in, and what
//! reached the subscriber checked against what was acknowledged.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duplex_hub::backplane::{Backplane, BackplaneState};
use duplex_hub::{Hub, HubConfig, HubService};
use duplex_ws::{ClientBuilder, Event, MaybeTlsStream, Message, ServerHandle, WebSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A node: `HubService` on a free loopback port over the backplane that
/// `attach` gives the hub.
pub(crate) async fn node_on<F>(attach: F) -> (SocketAddr, ServerHandle, Backplane)
where
    F: AsyncFnOnce(&Hub) -> Backplane,
{
    let hub = Hub::new(HubConfig::default().history_size(1000));
    let backplane = attach(&hub).await;
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve_service(HubService::new(hub).backplane(backplane.state())));
    (addr, handle, backplane)
}

/// A node over the Redis at `url`.
pub(crate) async fn node(url: &str) -> (SocketAddr, ServerHandle, Backplane) {
    node_on(async |hub| Backplane::redis(hub, url).await.unwrap()).await
}

/// A duplex.v1 connection, its `welcome` read.
pub(crate) async fn connect(addr: SocketAddr) -> Client {
    let mut ws = ClientBuilder::new(format!("ws://{addr}/topics"))
        .protocols(["duplex.v1"])
        .connect()
        .await
        .unwrap();
    assert_eq!(frame(&mut ws).await["type"], "welcome");
    ws
}

/// The next frame that is not a `ping`, within 10 s.
pub(crate) async fn frame(ws: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Event::Message(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] != "ping" {
                    return value;
                }
            }
            Ok(Some(Event::Open)) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Sends `request` and returns the reply.
pub(crate) async fn ask(ws: &mut Client, request: Value) -> Value {
    ws.send(Message::text(request.to_string())).await.unwrap();
    frame(ws).await
}

/// `GET /healthz`: the status and the body.
pub(crate) async fn health(addr: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Until `/healthz` of `addr` answers 200 with a body `ok` accepts.
pub(crate) async fn healthy(addr: SocketAddr, limit: Duration, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = health(addr).await;
        if status == 200 && ok(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz still {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a failover run saw.
pub(crate) struct Failover {
    /// From the crash to the first publish on `topics[0]` acknowledged
    /// after it.
    pub(crate) window: Duration,
    pub(crate) acked: BTreeSet<(String, String, u64)>,
    pub(crate) received: BTreeSet<(String, String, u64)>,
    /// Unprompted `subscribed` frames with `recovered: false`.
    pub(crate) told: usize,
    /// Where each topic stands for the subscriber at the end.
    pub(crate) last: BTreeMap<String, (String, u64)>,
}

impl Failover {
    /// Acknowledged, and never received.
    pub(crate) fn missing(&self) -> Vec<&(String, String, u64)> {
        self.acked.difference(&self.received).collect()
    }
}

/// Subscribes on `a` to `topics`, publishes to each on `b` every 20 ms,
/// calls `crash` a second in (once the store has replicated, if it says
/// so), and goes on until `topics[0]` (the crashed one's) takes publishes
/// again and a second more; then waits for `/healthz` 200 on both nodes
/// and drains what the subscriber got. Asserts, as it reads, that every
/// offset follows the one before or comes after a `subscribed` frame with
/// `recovered: false`.
pub(crate) async fn failover(
    a: SocketAddr,
    b: SocketAddr,
    states: [&BackplaneState; 2],
    topics: &[String],
    crash: impl FnOnce(),
) -> Failover {
    let mut sub = connect(a).await;
    let mut last: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (i, topic) in topics.iter().enumerate() {
        let reply = ask(&mut sub, json!({"op":"subscribe","id":i,"topic":topic})).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        last.insert(
            topic.clone(),
            (
                reply["epoch"].as_str().unwrap().to_owned(),
                reply["offset"].as_u64().unwrap(),
            ),
        );
    }
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(event) = sub.next().await {
            let Event::Message(Message::Text(t)) = event else {
                continue;
            };
            let value: Value = serde_json::from_str(t.as_str()).unwrap();
            if tx.send(value).is_err() {
                return;
            }
        }
    });

    let mut publisher = connect(b).await;
    let mut acked = BTreeSet::new();
    let started = Instant::now();
    let mut crash = Some(crash);
    let mut crashed_at = None;
    let mut window = None;
    let mut id = 0u64;
    loop {
        if crashed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            (crash.take().unwrap())();
            crashed_at = Some(Instant::now());
        }
        let mut first_acked = false;
        for topic in topics {
            id += 1;
            let reply = tokio::time::timeout(
                Duration::from_secs(8),
                ask(
                    &mut publisher,
                    json!({"op":"publish","id":id,"topic":topic,"data":format!("{topic}-{id}")}),
                ),
            )
            .await
            .expect("a reply to every publish");
            if reply["type"] == "published" {
                acked.insert((
                    topic.clone(),
                    reply["epoch"].as_str().unwrap().to_owned(),
                    reply["offset"].as_u64().unwrap(),
                ));
                first_acked |= *topic == topics[0];
            } else {
                assert_eq!(reply["code"], "unavailable", "{reply}");
            }
        }
        if let Some(at) = crashed_at
            && first_acked
            && window.is_none()
            && at.elapsed() > Duration::from_millis(100)
        {
            window = Some(at.elapsed());
        }
        if window.is_some_and(|w| crashed_at.unwrap().elapsed() > w + Duration::from_secs(1)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the crashed store took no publish for a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for addr in [a, b] {
        healthy(addr, Duration::from_secs(30), |_| true).await;
    }
    assert!(states.iter().all(|s| s.is_connected()));

    let mut received = BTreeSet::new();
    let mut told = 0;
    let drain_until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = drain_until.saturating_duration_since(Instant::now());
        let Ok(Some(f)) = tokio::time::timeout(left, frames.recv()).await else {
            break;
        };
        let topic = f["topic"].as_str().unwrap_or_default().to_owned();
        match f["type"].as_str() {
            Some("subscribed") => {
                if f.get("id").is_none() {
                    assert_eq!(f["recovered"], false, "{f}");
                    told += 1;
                }
                last.insert(
                    topic,
                    (
                        f["epoch"].as_str().unwrap().to_owned(),
                        f["offset"].as_u64().unwrap(),
                    ),
                );
            }
            Some("message") => {
                let offset = f["offset"].as_u64().unwrap();
                let (epoch, previous) = last.get(&topic).cloned().unwrap();
                assert_eq!(offset, previous + 1, "{topic}: a jump without being told");
                last.insert(topic.clone(), (epoch.clone(), offset));
                received.insert((topic, epoch, offset));
            }
            _ => {}
        }
    }
    Failover {
        window: window.unwrap(),
        acked,
        received,
        told,
        last,
    }
}
