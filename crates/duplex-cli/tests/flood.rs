//! `duplex serve` under peers that flood and never read, measured from
//! outside: the server's resident memory (VmRSS, and its peak VmHWM, from
//! /proc/PID/status) before and after several seconds of Ping floods, echo
//! floods and a fragmented message that never ends, each offering far more
//! than the server should take in. The figures are printed (run with
//! `--nocapture` to see them). Also: a fragmented message left unfinished
//! is failed with 1008 at `--fragment-timeout`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, raw_upgrade};

/// How much the server's peak memory may grow under the floods. The
/// bounds it rests on: per connection the write buffer (1 MiB) and one
/// read; for the unfinished message, the message budget given below.
const MAX_GROWTH_KIB: u64 = 64 << 10;

/// One field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// A masked client frame (zero key: the payload reads as is).
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![b0];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// A WebSocket whose 101 answer was read, and nothing after it.
fn upgraded(addr: &str, path: &str) -> TcpStream {
    let mut stream = raw_upgrade(addr, path);
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Offers `chunk` to the socket again and again until `deadline`, never
/// reading; returns the bytes offered and the bytes the socket took.
fn flood(mut stream: TcpStream, chunk: &[u8], deadline: Instant) -> (u64, u64) {
    stream
        .set_write_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let (mut offered, mut taken) = (0u64, 0u64);
    // Whole frames only: a partial write leaves the rest to finish first.
    let mut pending: &[u8] = chunk;
    while Instant::now() < deadline {
        offered += pending.len() as u64;
        match stream.write(pending) {
            Ok(n) => {
                taken += n as u64;
                pending = &pending[n..];
                if pending.is_empty() {
                    pending = chunk;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // The server failed the connection (a limit fired): that
            // peer is done.
            Err(_) => break,
        }
    }
    (offered, taken)
}

#[test]
fn floods_from_peers_that_never_read_leave_the_server_memory_bounded() {
    let server = Server::start(&["--message-budget", &(16u32 << 20).to_string()]);
    let pid = server.child.id();
    let addr = server.addr.clone();
    // Warm up: one echo, so the runtime's first allocations are done.
    let out = common::connect(&format!("ws://{addr}/"), "warm\n", &[]);
    assert!(out.status.success(), "{out:?}");
    let rss_before = status_kib(pid, "VmRSS");

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut peers = Vec::new();
    // Four Ping floods: 8,000 Pings of 125 bytes per chunk, each asking
    // for a Pong the peer never reads.
    let ping: Vec<u8> = (0..8000)
        .flat_map(|_| client_frame(0x89, &[b'p'; 125]))
        .collect();
    // Four echo floods: 16 KiB messages, each echoed to a peer that never
    // reads.
    let echo: Vec<u8> = (0..64)
        .flat_map(|_| client_frame(0x82, &[b'e'; 16 << 10]))
        .collect();
    // One message that never ends: 1 MiB fragments, forever.
    let mut fragments = client_frame(0x02, &[b'f'; 1 << 20]);
    let continuation = client_frame(0x00, &[b'f'; 1 << 20]);
    for (kind, chunk) in [("ping", &ping), ("echo", &echo)] {
        for _ in 0..4 {
            let stream = upgraded(&addr, "/");
            let chunk = chunk.clone();
            peers.push((
                kind,
                std::thread::spawn(move || flood(stream, &chunk, deadline)),
            ));
        }
    }
    {
        let mut stream = upgraded(&addr, "/");
        stream.write_all(&fragments).unwrap();
        fragments.clear();
        peers.push((
            "fragments",
            std::thread::spawn(move || flood(stream, &continuation, deadline)),
        ));
    }
    let mut offered_total = 0;
    for (kind, peer) in peers {
        let (offered, taken) = peer.join().unwrap();
        println!(
            "{kind} flood: offered {} MiB, the socket took {:.1} MiB",
            offered >> 20,
            taken as f64 / f64::from(1u32 << 20)
        );
        offered_total += offered;
    }
    let rss_after = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    println!(
        "duplex serve: VmRSS {rss_before} KiB before, {rss_after} KiB after \
         (growth {} KiB); peak VmHWM {peak} KiB (growth {} KiB); {} MiB offered in all",
        rss_after.saturating_sub(rss_before),
        peak.saturating_sub(rss_before),
        offered_total >> 20
    );
    assert!(offered_total >= 200 << 20, "offered {offered_total} bytes");
    assert!(
        peak.saturating_sub(rss_before) < MAX_GROWTH_KIB,
        "the server grew from {rss_before} KiB to a peak of {peak} KiB"
    );
    // The unfinished message was failed at the budget (1013); the server
    // still echoes.
    server.wait_for_log("message budget");
    let out = common::connect(&format!("ws://{addr}/"), "still here\n", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
}

#[test]
fn an_unfinished_fragmented_message_is_failed_with_1008_at_the_fragment_timeout() {
    let server = Server::start(&["--fragment-timeout", "1"]);
    let mut stream = upgraded(&server.addr, "/");
    stream
        .write_all(&client_frame(0x01, b"the start of"))
        .unwrap();
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut wire = Vec::new();
    stream.read_to_end(&mut wire).unwrap();
    let elapsed = started.elapsed();
    assert!(wire.len() >= 4 && wire[0] == 0x88, "{wire:?}");
    assert_eq!(u16::from_be_bytes([wire[2], wire[3]]), 1008);
    // The fragment timeout's 1008, not another policy's.
    let reason = String::from_utf8_lossy(&wire[4..2 + usize::from(wire[1] & 0x7f)]);
    assert!(reason.contains("not finished in time"), "{reason}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "failed after {elapsed:?}"
    );
    println!("unfinished message failed with 1008 after {elapsed:?}");
    server.wait_for_log("message timed out");
}
