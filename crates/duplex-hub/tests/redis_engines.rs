//! The Redis engine beyond one plain server: `rediss://` with a CA made at
//! run time, and Sentinel through a failover (1 master, 1 replica, 3
//! sentinels; two nodes over duplex.v1: nothing acknowledged lost, offsets
//! that run on, `/healthz` naming the new master, resume on the other
//! node). Each test starts its own `redis-server`s on free loopback ports.
#![cfg(feature = "server")]

mod common;
use common as v1;

use std::path::Path;
use std::time::{Duration, Instant};

use duplex_hub::backplane::{Backplane, BackplaneError, RedisOptions};
use duplex_hub::{Hub, HubConfig, Subscription};
use duplex_testing::{Redis, free_port};
use duplex_ws::Message;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_a_failover_and_a_subscriber_resumes_on_the_other_node() {
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
    let (a, _ha, pa) = v1::node(&url).await;
    let (b, _hb, pb) = v1::node(&url).await;
    assert_eq!(pa.state().engine(), "redis+sentinel");
    let topics = vec!["s.one".to_owned(), "s.two".to_owned()];
    let run = v1::failover(a, b, [&pa.state(), &pb.state()], &topics, || {
        // Written to the replica too before the crash: a failover that
        // loses nothing acknowledged.
        assert_eq!(
            duplex_testing::cli(master_port, &["WAIT", "1", "5000"]).trim(),
            "1"
        );
        master.kill();
    })
    .await;
    println!(
        "sentinel failover: publishes refused for {:?}; {} acknowledged, {} received, told of a \
         gap {} times",
        run.window,
        run.acked.len(),
        run.received.len(),
        run.told
    );
    assert!(
        run.missing().is_empty() && run.told == 0,
        "acknowledged, never delivered: {:?}; gaps told: {}",
        run.missing(),
        run.told
    );
    // The sentinels name the replica now, and so do both nodes' /healthz.
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
    let promoted = format!("\"address\":\"127.0.0.1:{replica_port}\",\"up\":true");
    for addr in [a, b] {
        v1::healthy(addr, Duration::from_secs(20), |body| {
            body.contains(&promoted)
        })
        .await;
    }
    // A subscriber of A resumes on B from five before the end: the
    // history crossed the failover.
    let (epoch, last) = run.last["s.one"].clone();
    let mut back = v1::connect(b).await;
    let reply = v1::ask(
        &mut back,
        json!({"op":"subscribe","id":1,"topic":"s.one","since":{"epoch":epoch,"offset":last - 5}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(last), Some(true)),
        "{reply}"
    );
    for offset in last - 4..=last {
        assert_eq!(v1::frame(&mut back).await["offset"].as_u64(), Some(offset));
    }
}
