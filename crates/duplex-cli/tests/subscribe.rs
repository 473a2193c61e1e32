//! `duplex subscribe` and `duplex publish` over duplex.v1, through the built
//! binary: offsets printed, history replayed with `--since`, and a
//! subscriber that resumes after its server restarts, from the history in
//! Redis (a `redis-server` started here), or says that messages were lost
//! when the server kept them in memory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, stderr_of};
use duplex_testing::redis::{Redis, free_port};

/// A `duplex serve` on `port`, killed on drop.
struct Serve(Child);

impl Serve {
    fn start(port: u16, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--threads",
                "1",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on"), "{line:?}");
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `duplex subscribe`; its stdout and stderr lines arrive on channels.
struct Subscribe {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Subscribe {
    fn start(port: u16, topic: &str, extra: &[&str]) -> Subscribe {
        let mut child = Command::new(BIN)
            .args(["subscribe", &format!("ws://127.0.0.1:{port}"), topic])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Subscribe { child, out, err }
    }

    fn line(&self) -> String {
        self.out
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from duplex subscribe within 20 s")
    }

    fn nothing_more(&self) {
        let more = self.out.recv_timeout(Duration::from_millis(500));
        assert!(more.is_err(), "unexpected {more:?}");
    }
}

impl Drop for Subscribe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `duplex publish`: the offsets it printed.
fn publish(port: u16, topic: &str, messages: &[&str]) -> Vec<u64> {
    let out = Command::new(BIN)
        .args(["publish", &format!("ws://127.0.0.1:{port}"), topic])
        .args(messages)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Publishes until a subscriber that is still connecting prints it.
fn publish_until_seen(port: u16, sub: &Subscribe, topic: &str) -> String {
    for _ in 0..50 {
        publish(port, topic, &["probe"]);
        if let Ok(line) = sub.out.recv_timeout(Duration::from_millis(300)) {
            assert!(line.ends_with("\tprobe"), "{line}");
            return line;
        }
    }
    panic!("the subscriber never got a message");
}

#[test]
fn publish_prints_offsets_and_subscribe_replays_and_follows() {
    let port = free_port();
    let _server = Serve::start(port, &[]);
    assert_eq!(publish(port, "news", &["one", "two", "three"]), [1, 2, 3]);
    let sub = Subscribe::start(port, "news", &["--since", "1"]);
    assert_eq!(sub.line(), "2\ttwo");
    assert_eq!(sub.line(), "3\tthree");
    assert_eq!(publish(port, "news", &["four"]), [4]);
    assert_eq!(sub.line(), "4\tfour");
    sub.nothing_more();
    // Without --since: only what comes next.
    let live = Subscribe::start(port, "news", &[]);
    let seen = publish_until_seen(port, &live, "news");
    assert!(seen.starts_with("5\t") || seen.starts_with("6\t"), "{seen}");
}

#[test]
fn subscribe_with_delta_prints_every_message_as_published() {
    let port = free_port();
    let _server = Serve::start(port, &[]);
    let state = |i: usize| {
        format!(
            r#"{{"seq":{i},"board":"{}","note":"état {}"}}"#,
            "x".repeat(200),
            i % 3
        )
    };
    let states: Vec<String> = (0..5).map(state).collect();
    let refs: Vec<&str> = states.iter().map(String::as_str).collect();
    assert_eq!(publish(port, "board", &refs[..1]), [1]);
    let sub = Subscribe::start(port, "board", &["--since", "0", "--delta"]);
    assert_eq!(sub.line(), format!("1\t{}", states[0]));
    assert_eq!(publish(port, "board", &refs[1..]), [2, 3, 4, 5]);
    for (i, s) in states.iter().enumerate().skip(1) {
        assert_eq!(sub.line(), format!("{}\t{s}", i + 1));
    }
    sub.nothing_more();
}

#[test]
fn subscribe_resumes_after_its_server_restarts_over_redis() {
    let redis = Redis::start();
    let (port, other) = (free_port(), free_port());
    let url = redis.url();
    let server = Serve::start(port, &["--redis", &url]);
    let _other = Serve::start(other, &["--redis", &url]);
    let sub = Subscribe::start(port, "t", &["--since", "0"]);
    let mut seen = publish_until_seen(other, &sub, "t");
    // Probes published while it connected follow the first.
    while let Ok(line) = sub.out.recv_timeout(Duration::from_millis(500)) {
        seen = line;
    }
    let last: u64 = seen.split('\t').next().unwrap().parse().unwrap();
    drop(server);
    // Published on the other node while the subscriber's node is down.
    let names: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let offsets = publish(other, "t", &names);
    let _back = Serve::start(port, &["--redis", &url]);
    for (offset, name) in offsets.iter().zip(&names) {
        assert_eq!(sub.line(), format!("{offset}\t{name}"));
    }
    assert_eq!(offsets[0], last + 1, "none skipped");
    sub.nothing_more();
    let err = sub.err.try_recv();
    assert!(err.is_err(), "nothing was lost: {err:?}");
}

#[test]
fn subscribe_says_when_messages_were_lost() {
    let port = free_port();
    let server = Serve::start(port, &[]);
    let sub = Subscribe::start(port, "t", &[]);
    publish_until_seen(port, &sub, "t");
    // The history was in that server's memory.
    drop(server);
    let _back = Serve::start(port, &[]);
    let line = sub
        .err
        .recv_timeout(Duration::from_secs(20))
        .expect("a line on stderr");
    assert!(line.contains("messages were lost"), "{line}");
    assert_eq!(publish(port, "t", &["after"]), [1]);
    assert_eq!(sub.line(), "1\tafter");
}
