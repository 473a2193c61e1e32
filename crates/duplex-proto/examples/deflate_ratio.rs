//! How well permessage-deflate compresses a JSON-like stream, and what it
//! costs per message, with the settings a connection can run with.
//!
//! ```sh
//! cargo run --release -p duplex-proto --example deflate_ratio [MESSAGES]
//! ```
//!
//! The corpus is `MESSAGES` (default 200) JSON updates of 0.2 to 8 KB, made
//! deterministically: a feed of orders and quotes whose field names, shapes
//! and many values repeat from one message to the next, as a push service's
//! do. Each setting compresses them in order as one server connection would
//! (context takeover on), a client inflates them to check the round trip,
//! and it prints bytes in and out, the ratio, and the time per message. The
//! timings are one run's: compare them with each other, not across machines.

use std::time::Instant;

use duplex_proto::Role;
use duplex_proto::extensions::{Deflate, DeflateParams};

/// A small deterministic generator (SplitMix64), so the corpus is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SYMBOLS: &[&str] = &[
    "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "BRK.B", "JPM", "V", "XOM", "UNH",
];
const VENUES: &[&str] = &["XNAS", "XNYS", "BATS", "ARCX", "IEXG"];
const SIDES: &[&str] = &["buy", "sell"];
const STATUSES: &[&str] = &["new", "partially_filled", "filled", "cancelled"];
const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank", "grace"];

/// One update of roughly `size` bytes.
fn update(rng: &mut Rng, seq: usize, size: usize) -> Vec<u8> {
    let mut s = format!(
        r#"{{"type":"update","seq":{seq},"ts":"2026-11-30T16:{:02}:{:02}.{:03}Z","source":"feed-{}","items":["#,
        seq / 60 % 60,
        seq % 60,
        rng.below(1000),
        rng.below(4)
    );
    let mut first = true;
    while s.len() + 2 < size {
        if !first {
            s.push(',');
        }
        first = false;
        if rng.below(3) == 0 {
            s.push_str(&format!(
                r#"{{"kind":"order","id":"ord_{:08x}","user":"{}","symbol":"{}","side":"{}","qty":{},"price":{}.{:02},"status":"{}","venue":"{}"}}"#,
                rng.next() as u32,
                rng.pick(USERS),
                rng.pick(SYMBOLS),
                rng.pick(SIDES),
                rng.below(500) + 1,
                rng.below(900) + 10,
                rng.below(100),
                rng.pick(STATUSES),
                rng.pick(VENUES),
            ));
        } else {
            s.push_str(&format!(
                r#"{{"kind":"quote","symbol":"{}","bid":{}.{:02},"ask":{}.{:02},"bid_size":{},"ask_size":{},"venue":"{}"}}"#,
                rng.pick(SYMBOLS),
                rng.below(900) + 10,
                rng.below(100),
                rng.below(900) + 10,
                rng.below(100),
                rng.below(100) * 100,
                rng.below(100) * 100,
                rng.pick(VENUES),
            ));
        }
    }
    s.push_str("]}");
    s.into_bytes()
}

fn corpus(messages: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(15);
    (0..messages)
        .map(|seq| {
            // Sizes spread over 0.2 to 8 KB, most of them small.
            let r = rng.below(1000) as f64 / 1000.0;
            let size = 200 + (7800.0 * r * r) as usize;
            update(&mut rng, seq, size)
        })
        .collect()
}

struct Setting {
    name: &'static str,
    window_bits: u8,
    keep_zlib_state: bool,
}

fn main() {
    let messages = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("MESSAGES is a number"))
        .unwrap_or(200);
    let corpus = corpus(messages);
    let plain: usize = corpus.iter().map(Vec::len).sum();
    let sizes: Vec<usize> = corpus.iter().map(Vec::len).collect();
    println!(
        "corpus: {messages} JSON updates, {plain} bytes, {} to {} bytes each (mean {})",
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
        plain / messages.max(1)
    );
    let settings = [
        Setting {
            name: "15-bit windows, zlib state kept (before)",
            window_bits: 15,
            keep_zlib_state: true,
        },
        Setting {
            name: "15-bit windows, zlib state freed (after)",
            window_bits: 15,
            keep_zlib_state: false,
        },
        Setting {
            name: "13-bit windows, zlib state freed",
            window_bits: 13,
            keep_zlib_state: false,
        },
        Setting {
            name: "12-bit windows, zlib state freed",
            window_bits: 12,
            keep_zlib_state: false,
        },
        Setting {
            name: "12-bit windows, zlib state kept",
            window_bits: 12,
            keep_zlib_state: true,
        },
    ];
    println!(
        "{:<48} {:>9} {:>9} {:>7} {:>13} {:>13}",
        "setting", "in", "out", "ratio", "deflate µs/msg", "inflate µs/msg"
    );
    for setting in &settings {
        let params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: setting.window_bits,
            client_max_window_bits: setting.window_bits,
        };
        // Best of a few rounds for the times; the sizes are the same each round.
        let mut best = (f64::MAX, f64::MAX);
        let mut out_bytes = 0;
        for _ in 0..5 {
            let mut server =
                Deflate::new(Role::Server, params, 6, 0).keep_zlib_state(setting.keep_zlib_state);
            let mut client =
                Deflate::new(Role::Client, params, 6, 0).keep_zlib_state(setting.keep_zlib_state);
            let mut compressed = Vec::with_capacity(corpus.len());
            let start = Instant::now();
            for m in &corpus {
                let mut out = Vec::new();
                server.compress(m, &mut out).expect("compresses");
                compressed.push(out);
            }
            let deflate = start.elapsed().as_secs_f64();
            let start = Instant::now();
            for (c, m) in compressed.iter().zip(&corpus) {
                let mut out = Vec::new();
                client
                    .decompress(c, &mut out, usize::MAX)
                    .expect("inflates");
                client
                    .finish_message(&mut out, usize::MAX)
                    .expect("inflates");
                assert_eq!(&out, m, "round trip");
            }
            let inflate = start.elapsed().as_secs_f64();
            best = (best.0.min(deflate), best.1.min(inflate));
            out_bytes = compressed.iter().map(Vec::len).sum();
        }
        let per_message = |secs: f64| secs * 1e6 / corpus.len().max(1) as f64;
        println!(
            "{:<48} {:>9} {:>9} {:>6.2}x {:>13.1} {:>13.1}",
            setting.name,
            plain,
            out_bytes,
            plain as f64 / out_bytes.max(1) as f64,
            per_message(best.0),
            per_message(best.1),
        );
    }
}
