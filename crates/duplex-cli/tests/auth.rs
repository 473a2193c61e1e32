//! Who may use `duplex serve`, end to end through the built binary: tokens
//! on every WebSocket (401 and 403, by query and by header, `alg: none`,
//! expiry while connected), publish rights, the API key on POST and
//! /metrics, `duplex token`, secrets from files, and no secret printed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Output};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use common::{BIN, Server, UPGRADE_HEADERS, http_status};
use duplex_hub::auth::Claims;

const SECRET: &str = "the cli test secret";
const KEY: &str = "the-cli-api-key";

/// `duplex serve` with a token secret and an API key.
fn guarded() -> Server {
    Server::start(&["--token-secret", SECRET, "--api-key", KEY])
}

/// A token from `duplex token --secret SECRET --sub alice ARGS...`.
fn mint(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["token", "--secret", SECRET, "--sub", "alice"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A token signed here, `secs` from now (negative: expired), with `secret`.
fn sign(secret: &str, secs: i64, subscribe: &[&str]) -> String {
    let now = SystemTime::now();
    let exp = if secs >= 0 {
        now + Duration::from_secs(secs.unsigned_abs())
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    let claims = Claims::new("alice", exp).subscribe(subscribe.iter().copied());
    duplex_hub::auth::sign_hs256(secret.as_bytes(), &claims).unwrap()
}

/// An upgrade request to `path` with `headers`: the status and the head
/// and body of the answer (a 101 leaves the connection open, so only what
/// `Content-Length` says is read).
fn upgrade(server: &Server, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}{UPGRADE_HEADERS}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    let mut text = String::from_utf8_lossy(&head).into_owned();
    let length = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    text.push_str(&String::from_utf8_lossy(&body));
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A `duplex connect` that stays connected until its stdin is closed.
struct Client {
    child: Child,
    stdin: ChildStdin,
}

impl Client {
    fn open(url: &str, extra: &[&str]) -> Client {
        let mut child = common::spawn_connect(url, extra);
        let stdin = child.stdin.take().unwrap();
        Client { child, stdin }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits (up to `secs`) for it to exit by itself, its stdin still open.
    fn exits_within(mut self, secs: u64) -> Output {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let out = self.child.wait_with_output().unwrap();
                panic!(
                    "still connected after {secs} s: {}",
                    common::stderr_of(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Client { child, stdin } = self;
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    }
}

#[test]
fn websockets_without_a_valid_token_get_401_and_why() {
    let server = guarded();
    for path in ["/topics/news", "/echo", "/"] {
        let (status, answer) = upgrade(&server, path, "");
        assert_eq!(status, 401, "{path}: {answer}");
        assert!(
            answer.contains("www-authenticate: Bearer realm=\"duplex\"\r\n"),
            "{answer}"
        );
        assert!(answer.contains("a token is required"), "{answer}");
    }
    let expired = sign(SECRET, -60, &["news"]);
    let (status, answer) = upgrade(&server, &format!("/topics/news?token={expired}"), "");
    assert_eq!(status, 401);
    assert!(answer.contains("error=\"invalid_token\""), "{answer}");
    assert!(answer.contains("the token has expired"), "{answer}");

    let forged = sign("not the secret", 60, &["news"]);
    let (status, answer) = upgrade(&server, &format!("/echo?token={forged}"), "");
    assert_eq!(status, 401);
    assert!(answer.contains("signature does not verify"), "{answer}");

    // `alg: none`: the claims of a valid token, the signature dropped.
    let valid = mint(&["--subscribe", "news"]);
    let (_, rest) = valid.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{payload}.");
    let (status, answer) = upgrade(&server, &format!("/topics/news?token={unsigned}"), "");
    assert_eq!(status, 401);
    assert!(answer.contains("signed with none"), "{answer}");

    let (status, answer) = upgrade(
        &server,
        "/topics/news",
        "Authorization: Bearer not-a-jwt\r\n",
    );
    assert_eq!(status, 401);
    assert!(answer.contains("malformed token"), "{answer}");
    server.wait_for_log("refusing a WebSocket: no valid token");
    // Nothing of a token reaches the log.
    let logs = server.stderr.lock().unwrap().join("\n");
    assert!(
        !logs.contains(&expired) && !logs.contains(&forged),
        "{logs}"
    );
}

#[test]
fn tokens_by_query_or_header_open_what_their_claims_allow() {
    let server = guarded();
    let token = mint(&["--subscribe", "news,chat.*", "--ttl", "10m"]);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(
        upgrade(&server, &format!("/topics/news?token={token}"), "").0,
        101
    );
    assert_eq!(upgrade(&server, "/topics/chat.room", &bearer).0, 101);
    assert_eq!(upgrade(&server, "/echo", &bearer).0, 101);
    // A browser's way: the token as a subprotocol, never answered with.
    let offered = format!("Sec-WebSocket-Protocol: bearer.{token}\r\n");
    for path in ["/topics/news", "/echo"] {
        let (status, answer) = upgrade(&server, path, &offered);
        assert_eq!(status, 101, "{path}: {answer}");
        assert!(!answer.contains("bearer."), "{path}: {answer}");
    }
    let (status, answer) = upgrade(&server, &format!("/topics/sport?token={token}"), "");
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("error=\"insufficient_scope\""), "{answer}");
    assert!(
        answer.contains("does not allow subscribing to \"sport\""),
        "{answer}"
    );
    assert_eq!(upgrade(&server, "/topics/chat", &bearer).0, 403);

    // The echo, through `duplex connect` with the token in the header.
    let out = common::connect(
        &format!("ws://{}/echo", server.addr),
        "hello\n",
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn audience_and_issuer_are_checked_when_asked_for() {
    let server = Server::start(&[
        "--token-secret",
        SECRET,
        "--token-audience",
        "push",
        "--token-issuer",
        "https://app.example",
    ]);
    let with = |extra: &[&str]| {
        let mut args = vec!["--subscribe", "news"];
        args.extend_from_slice(extra);
        let token = mint(&args);
        upgrade(&server, &format!("/topics/news?token={token}"), "")
    };
    assert_eq!(
        with(&["--aud", "push", "--iss", "https://app.example"]).0,
        101
    );
    let (status, answer) = with(&["--aud", "api", "--iss", "https://app.example"]);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("`aud`"), "{answer}");
    let (status, answer) = with(&["--aud", "push"]);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("iss"), "{answer}");
    assert_eq!(with(&[]).0, 401);
}

#[test]
fn several_public_keys_must_be_named() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--token-public-key",
            "a.pem",
            "--token-public-key",
            "b.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = common::stderr_of(&out);
    assert!(stderr.contains("name each as KID=FILE"), "{stderr}");
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--token-audience", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(common::stderr_of(&out).contains("need a token key"));
}

#[test]
fn publishing_needs_the_publish_claim() {
    let server = guarded();
    let addr = server.addr.clone();
    let reader = mint(&["--subscribe", "news"]);
    let writer = mint(&["--subscribe", "news", "--publish", "news"]);
    let mut refused = Client::open(&format!("ws://{addr}/topics/news?token={reader}"), &[]);
    let mut allowed = Client::open(&format!("ws://{addr}/topics/news?token={writer}"), &[]);
    refused.send("not allowed");
    let out = refused.exits_within(15);
    let stderr = common::stderr_of(&out);
    assert!(
        stderr.contains("closed: code 1008, reason \"publish not allowed\""),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing published"
    );
    allowed.send("allowed");
    let mut stdout = allowed.child.stdout.take().unwrap();
    let mut line = [0u8; 8];
    stdout.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"allowed\n");
    let _ = allowed.child.kill();
    let _ = allowed.child.wait();
}

#[test]
fn a_token_that_expires_while_connected_closes_with_1008() {
    let server = guarded();
    let addr = server.addr.clone();
    // Valid for one more second, then the server's leeway of five.
    let token = mint(&["--subscribe", "news", "--ttl", "1s"]);
    let start = Instant::now();
    let echo = Client::open(&format!("ws://{addr}/echo?token={token}"), &[]);
    let topic = Client::open(&format!("ws://{addr}/topics/news?token={token}"), &[]);
    for client in [echo, topic] {
        let stderr = common::stderr_of(&client.exits_within(20));
        assert!(
            stderr.contains("closed: code 1008, reason \"token expired\""),
            "{stderr}"
        );
    }
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

fn post(server: &Server, authorization: Option<&str>) -> (u16, String) {
    let authorization = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    http_status(
        &server.addr,
        format!(
            "POST /topics/news HTTP/1.1\r\nHost: localhost\r\n{authorization}\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        ),
    )
}

fn get(server: &Server, path: &str, authorization: Option<&str>) -> u16 {
    let authorization = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    http_status(
        &server.addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
        ),
    )
    .0
}

#[test]
fn the_api_key_guards_post_and_metrics() {
    let server = guarded();
    let (status, answer) = post(&server, None);
    assert_eq!(status, 401);
    assert!(answer.contains("www-authenticate: Bearer"), "{answer}");
    assert_eq!(post(&server, Some("Bearer wrong")).0, 401);
    let (status, answer) = post(&server, Some(&format!("Bearer {KEY}")));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(get(&server, "/metrics", None), 401);
    assert_eq!(
        get(&server, "/metrics", Some(&format!("Bearer {KEY}"))),
        200
    );
    assert_eq!(get(&server, "/healthz", None), 200);
    server.wait_for_log("serving");
    let logs = server.stderr.lock().unwrap().join("\n");
    assert!(!logs.contains("no --"), "nothing is open: {logs}");
    assert!(!logs.contains(KEY) && !logs.contains(SECRET), "{logs}");
}

#[test]
fn secrets_from_files_and_the_environment() {
    let dir = std::env::temp_dir().join(format!("duplex-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    let key_file = dir.join("key");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let server = Server::start(&[
        "--token-secret-file",
        secret_file.to_str().unwrap(),
        "--api-key-file",
        key_file.to_str().unwrap(),
    ]);
    // `duplex token` takes the secret from the environment.
    let out = Command::new(BIN)
        .args(["token", "--sub", "bob", "--subscribe", "*"])
        .env("DUPLEX_TOKEN_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        upgrade(&server, &format!("/topics/any.thing?token={token}"), "").0,
        101
    );
    assert_eq!(post(&server, Some(&format!("Bearer {KEY}"))).0, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_open_server_says_so_and_a_redis_password_is_never_printed() {
    let server = Server::start(&[]);
    server.wait_for_log(
        "duplex: no --token-secret or --token-public-key: any client may connect, subscribe and \
         publish; no --api-key",
    );
    assert_eq!(upgrade(&server, "/topics/news", "").0, 101);
    assert_eq!(post(&server, None).0, 200);
    drop(server);

    // A port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--redis"])
        .arg(format!("redis://user:s3cret-pw@127.0.0.1:{port}/"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = common::stderr_of(&out);
    assert!(stderr.contains("cannot use --redis"), "{stderr}");
    assert!(stderr.contains("redis://user:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[test]
fn a_redis_url_or_ca_that_cannot_work_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("duplex-redis-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let missing = dir.join("missing.pem");
    let not_pem = not_pem.to_str().unwrap();
    let missing = missing.to_str().unwrap();
    for (args, expected) in [
        (
            &["--redis", "redis+sentinel://127.0.0.1:1"][..],
            "no master name",
        ),
        (&["--redis", "memcached://127.0.0.1:1"][..], "scheme"),
        (
            &["--redis", "redis://127.0.0.1:1/", "--redis-ca", not_pem][..],
            "a CA is for TLS",
        ),
        (
            &["--redis", "rediss://127.0.0.1:1/", "--redis-ca", not_pem][..],
            "no PEM certificate",
        ),
        (
            &["--redis", "rediss://127.0.0.1:1/", "--redis-ca", missing][..],
            "cannot read --redis-ca",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = common::stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
