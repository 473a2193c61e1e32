//! What parsing one duplex.v1 frame costs in memory: at most a small
//! multiple of the frame's size, whatever the frame holds. A counting
//! allocator (this test binary's own) measures the peak.
#![cfg(feature = "server")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use duplex_hub::v1::parse_request;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are only read by the test.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated while parsing `text`, above what was held before.
fn peak_of(text: &str) -> usize {
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let parsed = parse_request(text);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(parsed);
    peak
}

#[test]
fn a_frame_costs_at_most_twice_its_size_whatever_it_holds() {
    const SIZE: usize = 64 << 10;
    let fill = |unit: &str, head: &str, tail: &str| {
        let n = (SIZE - head.len() - tail.len()) / unit.len();
        format!("{head}{}{tail}", unit.repeat(n))
    };
    let frames = [
        // A flat array in a field the server does not read.
        fill("0,", r#"{"op":"ping","x":["#, "0]}"),
        // Many small objects.
        fill(r#"{"a":1},"#, r#"{"op":"ping","x":["#, "0]}"),
        // Many unknown keys.
        fill(r#""k":0,"#, r#"{"op":"ping","#, r#""id":1}"#),
        // One big string, the payload of a publish.
        fill("a", r#"{"op":"publish","topic":"t","data":""#, r#""}"#),
        // Base64 the server checks.
        fill("AAAA", r#"{"op":"publish","topic":"t","b64":""#, r#""}"#),
        // Not JSON at all after a long prefix.
        fill("[", r#"{"op":"ping","x":"#, ""),
        // A flat array as the whole frame.
        fill("0,", "[", "0]"),
    ];
    for frame in &frames {
        assert!(frame.len() <= SIZE);
        let peak = peak_of(frame);
        assert!(
            peak <= 2 * frame.len(),
            "{}…: {peak} bytes at peak for a frame of {}",
            &frame[..40],
            frame.len()
        );
    }
}
