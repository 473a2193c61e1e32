//! Fossil deltas (duplex-hub's `delta`): applying arbitrary bytes as a
//! delta, and encoding then applying arbitrary pairs.
//!
//! Input: a limit byte (the limit is `2^(b % 17)` bytes), a split byte
//! (the rest is cut at `b`·len/256 into a source and a second part), then
//! the bytes. The second part is applied to the source as a delta, and is
//! also the target of a delta encoded from the source.
//!
//! Checks: nothing panics; a delta that applies makes exactly what it
//! declares, within the limit; an encoded delta applies and gives the
//! target back; between two UTF-8 texts the encoded delta is UTF-8.

#![no_main]

use duplex_hub::delta::{apply, declared_len, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, split, rest @ ..] = data else {
        return;
    };
    let limit = 1usize << (limit % 17);
    let at = usize::from(*split) * rest.len() / 256;
    let (source, other) = rest.split_at(at);

    if let Ok(made) = apply(source, other, limit) {
        assert!(made.len() <= limit);
        assert_eq!(declared_len(other), Some(made.len() as u64));
    }

    let text = std::str::from_utf8(source).is_ok() && std::str::from_utf8(other).is_ok();
    let delta = encode(source, other, text);
    assert_eq!(apply(source, &delta, other.len()).as_deref(), Ok(other));
    if text {
        assert!(std::str::from_utf8(&delta).is_ok(), "{delta:?}");
    }
});
