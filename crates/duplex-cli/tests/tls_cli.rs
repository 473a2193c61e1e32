//! The built `duplex` binary over TLS: `serve --tls-cert --tls-key` with
//! `connect wss:// --ca`, bad certificate files failing the start, plain
//! and TLS crossed over, the TLS handshake timeout, and SIGHUP reload.
//! Certificates are made at run time with rcgen.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use duplex_testing::pki::{Ca, KeyFormat, KeyKind};

use common::{BIN, Server, bench, connect, spawn_connect, stderr_of};

/// A CA, and a certificate for 127.0.0.1 and localhost signed by it, on disk.
struct Files {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(name: &str, kind: KeyKind, format: KeyFormat) -> Files {
        let dir = duplex_testing::pki::temp_dir(name);
        let mut files = Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        files.renew("duplex CLI test CA", kind, format);
        files
    }

    /// A new CA and certificate in the same files.
    fn renew(&mut self, ca_name: &str, kind: KeyKind, format: KeyFormat) {
        let ca = Ca::new(ca_name);
        let (cert, key) = ca
            .leaf(&["127.0.0.1", "localhost"], kind)
            .write(&self.dir, format);
        assert_eq!((cert, key), (self.cert.clone(), self.key.clone()));
        std::fs::write(&self.ca, ca.pem()).unwrap();
    }

    /// The CA as it is now, in a file of its own.
    fn keep_ca(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::copy(&self.ca, &path).unwrap();
        path
    }
}

/// `duplex serve` with the certificate and key of `files`.
fn serve_tls(files: &Files, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn ca_flag(path: &Path) -> [&str; 2] {
    ["--ca", path.to_str().unwrap()]
}

#[test]
fn connect_wss_talks_to_serve_with_tls() {
    for (kind, format) in [
        (KeyKind::EcdsaP256, KeyFormat::Sec1),
        (KeyKind::Ed25519, KeyFormat::Pkcs8),
        (KeyKind::Rsa2048, KeyFormat::Pkcs1),
    ] {
        let files = Files::new(&format!("cli-echo-{kind:?}"), kind, format);
        let server = serve_tls(&files, &[]);
        let port = server.addr.rsplit(':').next().unwrap().to_owned();
        for url in [
            format!("wss://{}/", server.addr),
            format!("wss://localhost:{port}/path?q=1"),
        ] {
            let out = connect(&url, "hello\nworld\n", &ca_flag(&files.ca));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
            assert!(out.status.success(), "{kind:?} {url}: {}", stderr_of(&out));
            assert!(
                stderr_of(&out).contains("closed: code 1000"),
                "{}",
                stderr_of(&out)
            );
        }
        // Without the CA, the certificate's issuer is unknown: exit 2.
        let out = connect(&format!("wss://{}/", server.addr), "hello\n", &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr_of(&out).contains("unknown issuer"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn connect_http2_opens_its_websocket_as_a_stream_of_an_http2_connection() {
    let files = Files::new("cli-h2", KeyKind::EcdsaP256, KeyFormat::Sec1);
    let server = serve_tls(&files, &[]);
    let url = format!("wss://{}/h2", server.addr);
    let mut extra = ca_flag(&files.ca).to_vec();
    extra.push("--http2");
    let out = connect(&url, "over h2\n", &extra);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over h2\n");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("over HTTP/2"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("closed: code 1000"),
        "{}",
        stderr_of(&out)
    );
    // And over cleartext with prior knowledge (h2c).
    let plain = Server::start(&[]);
    let out = connect(&format!("ws://{}/", plain.addr), "h2c\n", &["--http2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "h2c\n");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("over HTTP/2"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn bad_tls_files_fail_the_start_with_the_path_and_reason() {
    let files = Files::new("cli-bad-files", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let other = Files::new("cli-bad-files-other", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let missing = files.dir.join("missing.pem");
    let garbage = files.dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let cases: [(&Path, &Path, &Path, &str); 5] = [
        (&missing, &files.key, &missing, "No such file"),
        (&files.cert, &missing, &missing, "No such file"),
        (&garbage, &files.key, &garbage, "no certificate"),
        (&files.cert, &garbage, &garbage, "no private key"),
        (&files.cert, &other.key, &other.key, "cannot serve this key"),
    ];
    for (cert, key, named, reason) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{cert:?} {key:?} started");
        assert!(
            out.stdout.is_empty(),
            "it must not listen: {:?}",
            out.stdout
        );
        assert!(stderr.contains(&*named.to_string_lossy()), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // One flag without the other is a usage error.
    let out = Command::new(BIN)
        .args(["serve", "--tls-cert"])
        .arg(&files.cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--tls-key"));
}

#[test]
fn plain_and_tls_crossed_fail_cleanly_and_both_servers_keep_serving() {
    let files = Files::new("cli-crossed", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let tls = serve_tls(&files, &[]);
    let plain = Server::start(&[]);

    // ws:// to the TLS port: the server answers a plain 400.
    let out = connect(&format!("ws://{}/", tls.addr), "hello\n", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("400"), "{}", stderr_of(&out));
    let mut http = TcpStream::connect(&tls.addr).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = http.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 ") && answer.contains("speaks TLS"),
        "{answer}"
    );

    // wss:// to the plain port: the client says the server is not TLS.
    let out = connect(
        &format!("wss://{}/", plain.addr),
        "hello\n",
        &ca_flag(&files.ca),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("not TLS"), "{}", stderr_of(&out));

    for (url, extra) in [
        (format!("wss://{}/", tls.addr), ca_flag(&files.ca).to_vec()),
        (format!("ws://{}/", plain.addr), vec![]),
    ] {
        let out = connect(&url, "still here\n", &extra);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "still here\n",
            "{url}"
        );
        assert!(out.status.success());
    }
    for server in [&tls, &plain] {
        let log = server.stderr.lock().unwrap().join("\n");
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let files = Files::new("cli-timeout", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let server = serve_tls(&files, &["--handshake-timeout", "0.3"]);
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = silent
        .read(&mut buf)
        .expect("the server closes, not the read timeout");
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let mut files = Files::new("cli-sighup", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let old_ca = files.keep_ca("old-ca.pem");
    let server = serve_tls(&files, &[]);
    let url = format!("wss://{}/", server.addr);

    // A connection opened before the reload.
    let mut open = Command::new(BIN)
        .args(["connect", &url])
        .args(ca_flag(&old_ca))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut open_in: ChildStdin = open.stdin.take().unwrap();
    let mut open_out = BufReader::new(open.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(open_in, "before").unwrap();
    open_out.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");

    files.renew(
        "duplex CLI test CA, renewed",
        KeyKind::Ed25519,
        KeyFormat::Pkcs8,
    );
    let new_ca = files.keep_ca("new-ca.pem");
    server.signal("HUP");
    server.wait_for_log("reloaded the TLS certificate");

    // New connections see the new certificate.
    let out = connect(&url, "hello\n", &ca_flag(&old_ca));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("unknown issuer"),
        "{}",
        stderr_of(&out)
    );
    let out = connect(&url, "hello\n", &ca_flag(&new_ca));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\n",
        "{}",
        stderr_of(&out)
    );

    // The open one keeps working.
    line.clear();
    writeln!(open_in, "after").unwrap();
    open_out.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");

    // A bad file: the log says why, and the current certificate stays.
    std::fs::write(&files.key, "not a key\n").unwrap();
    server.signal("HUP");
    let why = server.wait_for_log("not reloaded");
    assert!(
        why.contains("key.pem") && why.contains("no private key"),
        "{why}"
    );
    let out = connect(&url, "still\n", &ca_flag(&new_ca));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "still\n",
        "{}",
        stderr_of(&out)
    );

    drop(open_in);
    let status = open.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bench_measures_a_wss_server() {
    let files = Files::new("cli-bench", KeyKind::EcdsaP256, KeyFormat::Pkcs8);
    let server = serve_tls(&files, &[]);
    let pid = server.child.id().to_string();
    let url = format!("wss://{}/", server.addr);
    let ca = ca_flag(&files.ca);
    let (out, json) = bench(
        "echo",
        &url,
        &[
            ca[0],
            ca[1],
            "--conns",
            "4",
            "--size",
            "65536",
            "--secs",
            "0.5",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
        ],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert!(json["msgs"].as_u64().unwrap() > 0, "{json}");
    assert!(json["server_cpu_us_per_msg"].is_number(), "{json}");

    let (out, json) = bench(
        "idle",
        &url,
        &[ca[0], ca[1], "--conns", "20", "--settle", "0"],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["errors"], 0, "{json}");

    // Without the CA the server's issuer is unknown, and bench says so.
    let (out, json) = bench(
        "echo",
        &url,
        &["--conns", "1", "--secs", "0.1", "--warmup", "0"],
    );
    assert!(!out.status.success());
    assert!(
        json["first_error"]
            .as_str()
            .unwrap()
            .contains("unknown issuer"),
        "{json}"
    );
}

/// Lines of a child's pipe, on a channel.
fn lines_of(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_topic_subscriber_over_wss_and_http2_gets_every_message_while_it_stays_open() {
    let files = Files::new("cli-topic-tls", KeyKind::EcdsaP256, KeyFormat::Sec1);
    let server = serve_tls(&files, &[]);
    let ca = ca_flag(&files.ca);
    // Messages larger than the socket buffers take: the topic's flush pass
    // leaves bytes the TLS layer or the HTTP/2 stream holds, which the
    // subscriber's task must flush while nothing else is written.
    let big = |i: usize| format!("{i:05}{}", "x".repeat(40_000));
    for (topic, http2) in [("over-wss", false), ("over-h2", true)] {
        let url = format!("wss://{}/topics/{topic}", server.addr);
        let mut extra = ca.to_vec();
        if http2 {
            extra.push("--http2");
        }
        let mut sub = spawn_connect(&url, &extra);
        let out = lines_of(sub.stdout.take().unwrap());
        // Published until the subscriber shows it is subscribed.
        let mut seen = false;
        for _ in 0..50 {
            connect(&url, "probe\n", &extra);
            if let Ok(line) = out.recv_timeout(Duration::from_millis(300)) {
                assert_eq!(line, "probe");
                seen = true;
                break;
            }
        }
        assert!(seen, "{topic}: the subscriber never got a message");
        while out.recv_timeout(Duration::from_millis(300)).is_ok() {}
        // Through `duplex publish`: a raw connection would get its own
        // messages back, more than the test reads from it.
        let mut publish = Command::new(BIN)
            .args(["publish", &format!("wss://{}", server.addr), topic])
            .args(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = (0..200).map(|i| big(i) + "\n").collect();
        publish
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let published = publish.wait_with_output().unwrap();
        assert!(published.status.success(), "{}", stderr_of(&published));
        for i in 0..200 {
            let line = out
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{topic}: message {i} never came"));
            assert!(line == big(i), "{topic}: message {i} out of order");
        }
        drop(sub.stdin.take());
        assert!(sub.wait().unwrap().success(), "{topic}");
    }
}
