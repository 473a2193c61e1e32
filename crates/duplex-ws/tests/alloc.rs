//! The hot path allocates nothing: once warmed up, echoing a message that
//! fits the read buffer costs no heap allocation, on the server or on the
//! client.
//!
//! A counting global allocator counts per thread, and only while that
//! thread's switch is on. The server runs on its own thread with its own
//! single-threaded runtime, the client on the test's thread with another, so
//! each side's count is exactly what that side's code allocated between two
//! points of its own loop. Nothing is timed: the counts are deterministic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use duplex_ws::{Event, Message};
use tokio::net::TcpListener;

/// Counts the allocations of the threads that ask for it.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted. `const` and
    /// free of destructors, so reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations while counting.
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the bookkeeping touches only
// `const` thread-locals without destructors, which never allocate.
// Exercised by every test in this file.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts this thread's allocations from now until [`stop_counting`].
fn start_counting() {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
}

fn stop_counting() -> u64 {
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

/// Messages echoed before counting starts: buffers reach their working
/// size, lazily created runtime structures exist.
const WARMUP: usize = 200;

/// Makes tokio create the one structure it allocates lazily on the hot path:
/// the list of tasks that yielded. A task yields when its cooperative budget
/// runs out, which may first happen at any message; yielding once during the
/// warm-up makes that list exist before counting starts.
async fn warm_up_runtime() {
    tokio::task::yield_now().await;
}
/// Messages echoed while counting.
const MEASURED: usize = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// How the two sides drive their `WebSocket`.
#[derive(Debug, Clone, Copy)]
struct Pattern {
    /// The client sends this many messages (in one write) before reading
    /// their replies.
    burst: usize,
    /// The server queues each reply with `feed` (as `duplex serve` does, so
    /// the replies to one read go out in one write) rather than `send`.
    server_feeds: bool,
}

const PING_PONG: Pattern = Pattern {
    burst: 1,
    server_feeds: false,
};

/// Echoes `WARMUP + MEASURED` copies of `message` over loopback TCP and
/// returns the allocations (server, client) made during the last `MEASURED`.
fn echo_allocations(message: Message, pattern: Pattern) -> (u64, u64) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut ws = duplex_ws::accept(stream).await.unwrap();
            warm_up_runtime().await;
            let mut echoed = 0;
            let mut allocations = None;
            while let Some(event) = ws.next().await {
                match event {
                    Event::Open => {}
                    Event::Message(m) => {
                        if pattern.server_feeds {
                            ws.feed(m).await.unwrap();
                        } else {
                            ws.send(m).await.unwrap();
                        }
                        echoed += 1;
                        if echoed == WARMUP {
                            start_counting();
                        } else if echoed == WARMUP + MEASURED {
                            allocations = Some(stop_counting());
                        }
                    }
                    Event::Close { .. } => {}
                    Event::Error(e) => panic!("server: {e}"),
                }
            }
            allocations.expect("the server echoed every message")
        })
    });
    let addr = addr_rx.recv().unwrap();
    let client = runtime().block_on(async move {
        let mut ws = duplex_ws::connect(&format!("ws://{addr}/")).await.unwrap();
        warm_up_runtime().await;
        let mut allocations = 0;
        let mut sent = 0;
        while sent < WARMUP + MEASURED {
            if sent == WARMUP {
                start_counting();
            }
            for _ in 0..pattern.burst {
                ws.feed(message.clone()).await.unwrap();
            }
            ws.flush().await.unwrap();
            for _ in 0..pattern.burst {
                let reply = ws.recv().await.unwrap().expect("a reply");
                assert_eq!(reply.len(), message.len());
            }
            sent += pattern.burst;
            if sent == WARMUP + MEASURED {
                allocations = stop_counting();
            }
        }
        ws.close(1000, "").await.unwrap();
        while ws.next().await.is_some() {}
        allocations
    });
    (server.join().unwrap(), client)
}

fn assert_no_allocation(message: Message, pattern: Pattern) {
    let what = format!("{message:?} ({pattern:?})");
    let (server, client) = echo_allocations(message, pattern);
    assert_eq!(
        server, 0,
        "server: {server} allocations over {MEASURED} echoes of {what}"
    );
    assert_eq!(
        client, 0,
        "client: {client} allocations over {MEASURED} round trips of {what}"
    );
}

#[test]
fn echo_of_20_byte_binary_messages_allocates_nothing() {
    assert_no_allocation(Message::binary(Bytes::from_static(&[7; 20])), PING_PONG);
}

#[test]
fn echo_of_1_kib_binary_messages_allocates_nothing() {
    assert_no_allocation(Message::binary(Bytes::from_static(&[7; 1024])), PING_PONG);
}

#[test]
fn echo_of_1_kib_text_messages_allocates_nothing() {
    let text: &'static str = Box::leak("é".repeat(512).into_boxed_str());
    assert_no_allocation(Message::text(duplex_ws::Utf8Bytes::from(text)), PING_PONG);
}

/// Several messages per read, replies batched into one write.
#[test]
fn batched_echo_allocates_nothing() {
    let pattern = Pattern {
        burst: 10,
        server_feeds: true,
    };
    assert_no_allocation(Message::binary(Bytes::from_static(&[7; 20])), pattern);
    assert_no_allocation(Message::binary(Bytes::from_static(&[7; 1024])), pattern);
}

/// A message larger than the read buffer (16 KiB) is read into a receive
/// buffer that grows once, then is reused: no allocation per message either.
#[test]
fn echo_of_64_kib_messages_allocates_nothing() {
    let big: &'static [u8] = Box::leak(vec![7u8; 64 << 10].into_boxed_slice());
    assert_no_allocation(Message::binary(Bytes::from_static(big)), PING_PONG);
}

/// The counter itself works: a `Vec` on a counting thread is seen.
#[test]
fn the_counter_counts() {
    start_counting();
    let v: Vec<u8> = Vec::with_capacity(10);
    drop(v);
    assert_eq!(stop_counting(), 1);
}
