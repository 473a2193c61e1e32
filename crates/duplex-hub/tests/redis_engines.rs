//! The Redis engine beyond one plain server: `rediss://` with a CA made at
//! run time, and Sentinel through a failover (1 master, 1 replica, 3
//! sentinels). Each test starts its own `redis-server`s on free loopback
//! ports.

#[path = "support/redis.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_hub::backplane::{Backplane, BackplaneError, RedisOptions};
use duplex_hub::{Hub, HubConfig, RecvError, Subscription};
use duplex_ws::Message;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::{Redis, free_port};

/// Publishes on `from` until `to` has received one (the subscription has
/// crossed Redis); drains what else came.
async fn warm_up(from: &Hub, to: &mut Subscription) {
    for _ in 0..100 {
        let _ = from.publish(to.topic(), Message::text("warm-up")).await;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), to.recv()).await {
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), to.recv()).await
            {
            }
            return;
        }
    }
    panic!("the backplane never relayed");
}

/// A CA, and a certificate it signed for 127.0.0.1 with its key, as PEM.
fn certificates(name: &str) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates("duplex test CA");
    let port = free_port();
    let port_text = port.to_string();
    let (ca_file, cert_file, key_file) = (
        write(dir.path(), "ca.pem", &ca),
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
    );
    let _redis = Redis::spawn(
        port,
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{port}/");
    let trusted = RedisOptions::default().root_ca(ca.into_bytes());
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let pa = Backplane::redis_with(&a, &url, &trusted).await.unwrap();
    let _pb = Backplane::redis_with(&b, &url, &trusted).await.unwrap();
    assert!(pa.state().is_connected());
    let mut on_b = b.subscribe("t").unwrap();
    warm_up(&a, &mut on_b).await;
    let published = a.publish("t", Message::text("over TLS")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.offset(), got.message()),
        (published.offset, &Message::text("over TLS"))
    );

    // The system's roots, or another CA, do not vouch for this server.
    let (other, _, _) = certificates("another CA");
    let untrusted = RedisOptions::default().root_ca(other.into_bytes());
    for options in [RedisOptions::default(), untrusted] {
        let hub = Hub::new(HubConfig::default());
        let err = Backplane::redis_with(&hub, &url, &options)
            .await
            .unwrap_err();
        assert!(matches!(err, BackplaneError::Unreachable { .. }), "{err}");
    }
    // Plain redis:// to a TLS port is not Redis talking.
    let hub = Hub::new(HubConfig::default());
    let plain = format!("redis://127.0.0.1:{port}/");
    let err = Backplane::redis(&hub, &plain).await.unwrap_err();
    assert!(matches!(err, BackplaneError::Unreachable { .. }), "{err}");
}

/// One sentinel's process and its config file (Sentinel rewrites it).
fn sentinel(dir: &Path, master_port: u16) -> Redis {
    let port = free_port();
    let config = write(
        dir,
        &format!("sentinel-{port}.conf"),
        &format!(
            "port {port}\nbind 127.0.0.1\n\
             sentinel monitor group 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds group 1000\n\
             sentinel failover-timeout group 4000\n\
             sentinel parallel-syncs group 1\n"
        ),
    );
    Redis::spawn(port, &[&config, "--sentinel"])
}

async fn query(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut c).await
}

/// The text of a field in a Sentinel reply (a flat list of names and
/// values, or a map).
fn field(value: &redis::Value, name: &str) -> Option<String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| text(&pair[1])),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// Waits until `what` holds, for at most `limit`.
async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a subscriber saw: each message's epoch, offset and text, and how
/// often it was told that messages were lost (and subscribed again).
#[derive(Default)]
struct Seen {
    messages: Vec<(Arc<str>, u64, String)>,
    told: usize,
    segments: Vec<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_a_failover_and_reports_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let master_port = free_port();
    let mut master = Redis::start_on(master_port);
    let replica_port = free_port();
    let _replica = Redis::start_with(
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    );
    let sentinels: Vec<Redis> = (0..3).map(|_| sentinel(dir.path(), master_port)).collect();
    let sentinel_ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
    // Every sentinel knows the replica and the two other sentinels: a
    // failover needs two of them to agree.
    until(Duration::from_secs(30), "sentinels ready", async || {
        for &port in &sentinel_ports {
            let Ok(master) = query(port, &["SENTINEL", "MASTER", "group"]).await else {
                return false;
            };
            if field(&master, "num-slaves").as_deref() != Some("1")
                || field(&master, "num-other-sentinels").as_deref() != Some("2")
            {
                return false;
            }
        }
        true
    })
    .await;

    until(Duration::from_secs(30), "the replica in sync", async || {
        let Ok(redis::Value::BulkString(info)) =
            query(replica_port, &["INFO", "replication"]).await
        else {
            return false;
        };
        String::from_utf8_lossy(&info).contains("master_link_status:up")
    })
    .await;

    let url = format!(
        "redis+sentinel://{}/group",
        sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let pa = Backplane::redis(&a, &url).await.unwrap();
    let pb = Backplane::redis(&b, &url).await.unwrap();
    assert_eq!(pa.state().engine(), "redis+sentinel");
    let mut on_b = b.subscribe("t").unwrap();
    warm_up(&a, &mut on_b).await;

    // B follows the topic, subscribing again whenever it is told of a gap.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let follower = {
        let (b, seen) = (b.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut sub = on_b;
            loop {
                match sub.recv().await {
                    Ok(d) => {
                        let Message::Text(t) = d.message() else {
                            continue;
                        };
                        seen.lock().unwrap().messages.push((
                            d.epoch().into(),
                            d.offset(),
                            t.as_str().to_owned(),
                        ));
                    }
                    Err(RecvError::Lost) => {
                        let mut seen = seen.lock().unwrap();
                        seen.told += 1;
                        let at = seen.messages.len();
                        seen.segments.push(at);
                        drop(seen);
                        sub = b.subscribe("t").unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        })
    };

    // A publishes every 20 ms throughout; the master dies after 1 s.
    let mut acked: Vec<(Arc<str>, u64, String)> = Vec::new();
    let started = Instant::now();
    let mut killed_at = None;
    let mut window = None;
    let mut recovered_at = None;
    for i in 0.. {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            // Written to the replica too before the crash: what the
            // failover may lose is only what follows.
            let waited = query(master_port, &["WAIT", "1", "5000"]).await;
            assert_eq!(waited, Ok(redis::Value::Int(1)), "the replica has it all");
            master.kill();
            killed_at = Some(Instant::now());
        }
        let text = format!("m{i}");
        let result = tokio::time::timeout(
            Duration::from_secs(6),
            a.publish("t", Message::text(text.clone())),
        )
        .await;
        if let Ok(Ok(published)) = result {
            acked.push((published.epoch, published.offset, text));
            if let Some(at) = killed_at
                && window.is_none()
            {
                window = Some(at.elapsed());
            }
        }
        if window.is_some() && recovered_at.is_none() && pb.state().is_connected() {
            recovered_at = Some(Instant::now());
        }
        if recovered_at.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no failover within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = window.unwrap();
    println!(
        "sentinel failover: publishes refused for {window:?}, {} acknowledged",
        acked.len()
    );
    // The sentinels name the replica now, and both nodes are connected.
    let now_master = query(
        sentinel_ports[0],
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "group"],
    )
    .await
    .unwrap();
    assert!(
        format!("{now_master:?}").contains(&replica_port.to_string()),
        "{now_master:?}"
    );
    until(
        Duration::from_secs(20),
        "both nodes connected",
        async || pa.state().is_connected() && pb.state().is_connected(),
    )
    .await;

    // Every acknowledged publish reached B, or B was told of a gap; what B
    // received runs without a hole between the gaps it was told of.
    let last = acked.last().unwrap().2.clone();
    until(
        Duration::from_secs(20),
        "the last publish delivered",
        async || seen.lock().unwrap().messages.iter().any(|m| m.2 == last),
    )
    .await;
    follower.abort();
    let seen = seen.lock().unwrap();
    let received: BTreeSet<&str> = seen.messages.iter().map(|m| m.2.as_str()).collect();
    let missing: Vec<&str> = acked
        .iter()
        .map(|m| m.2.as_str())
        .filter(|t| !received.contains(t))
        .collect();
    println!(
        "sentinel failover: {} received, {} acknowledged but not received, told of a gap {} times",
        seen.messages.len(),
        missing.len(),
        seen.told
    );
    // The replica had every write (WAIT), and nothing was acknowledged
    // while there was no master: nothing is lost, no gap is reported.
    assert!(
        missing.is_empty() && seen.told == 0,
        "acknowledged, never delivered: {missing:?}; gaps reported: {}",
        seen.told
    );
    let mut bounds = vec![0];
    bounds.extend(&seen.segments);
    bounds.push(seen.messages.len());
    for run in bounds.windows(2) {
        for pair in seen.messages[run[0]..run[1]].windows(2) {
            let ((e0, o0, _), (e1, o1, _)) = (&pair[0], &pair[1]);
            assert!(
                e0 == e1 && *o1 == o0 + 1,
                "a hole without a report: {e0}/{o0} then {e1}/{o1}"
            );
        }
    }
    // And acknowledged offsets agree with what B received.
    for (epoch, offset, text) in &acked {
        if let Some(m) = seen.messages.iter().find(|m| &m.2 == text) {
            assert_eq!((&m.0, m.1), (epoch, *offset), "{text}");
        }
    }
}
