//! permessage-deflate decompression (RFC 7692 §7.2.2) of arbitrary bytes
//! under a message size limit.
//!
//! Input: a configuration byte (bits 0–2: the peer's window bits, 8 + n;
//! bit 3: no context takeover), a limit byte (the limit is `2^(b % 17)`
//! bytes, 1 B to 64 KiB), a chunk-size byte (the payload arrives as frames
//! of `b + 1` bytes), then the compressed payload, received as two messages
//! in a row (the second inflates in the context the first left).
//!
//! Checks: nothing panics; after every call the output holds at most the
//! limit (on success) or one byte more (on `TooLarge`), and its buffer never
//! grew past the limit plus one byte; errors are `TooLarge` or `Corrupt`,
//! never the compressor's; and the first message comes out as a one-shot
//! inflater makes of the payload and the §7.2.2 tail in one buffer: the same
//! bytes, too large exactly when that is over the limit, corrupt exactly
//! when that fails.

#![no_main]

use duplex_proto::Role;
use duplex_proto::extensions::{Deflate, DeflateError, DeflateParams};
use flate2::{Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;

/// RFC 7692 §7.2.2: appended by the receiver to each message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fuzz_target!(|data: &[u8]| {
    let [config, limit, chunk, payload @ ..] = data else {
        return;
    };
    let params = DeflateParams {
        client_max_window_bits: 8 + (config & 7),
        client_no_context_takeover: config & 8 != 0,
        ..DeflateParams::default()
    };
    let limit = 1usize << (limit % 17);
    let chunk = usize::from(*chunk) + 1;
    // A server inflates what the client compressed.
    let mut deflate = Deflate::new(Role::Server, params, 6, 0);
    let first = message(&mut deflate, payload, chunk, limit);
    // An empty payload never reaches the inflater (see the deflate module).
    if !payload.is_empty() {
        match (&first, reference(payload, limit)) {
            (Ok(out), Reference::Inflated(expected)) => assert_eq!(out, &expected),
            (Err(DeflateError::TooLarge), Reference::OverLimit) => {}
            (Err(DeflateError::Corrupt(_)), Reference::Corrupt) => {}
            (first, reference) => panic!("inflated as {first:?}, one-shot: {reference:?}"),
        }
    }
    let _ = message(&mut deflate, payload, chunk, limit);
});

/// One message: `payload` in frames of `chunk` bytes, then the tail.
fn message(
    deflate: &mut Deflate,
    payload: &[u8],
    chunk: usize,
    limit: usize,
) -> Result<Vec<u8>, DeflateError> {
    let mut out = Vec::new();
    let mut result = Ok(());
    for frame in payload.chunks(chunk) {
        result = deflate.decompress(frame, &mut out, limit);
        check(&result, &out, limit);
        if result.is_err() {
            break;
        }
    }
    // The connection ends a message with `finish_message` even after a
    // failure, to free the inflater.
    let finished = deflate.finish_message(&mut out, limit);
    if result.is_ok() {
        check(&finished, &out, limit);
        result = finished;
    }
    result.map(|()| out)
}

fn check(result: &Result<(), DeflateError>, out: &[u8], limit: usize) {
    match result {
        Ok(()) => assert!(out.len() <= limit, "{} bytes out, limit {limit}", out.len()),
        Err(DeflateError::TooLarge) => assert!(out.len() <= limit + 1),
        Err(DeflateError::Corrupt(reason)) => assert!(!reason.is_empty()),
        Err(e) => panic!("inflating failed as compressing does: {e}"),
    }
}

#[derive(Debug)]
enum Reference {
    Inflated(Vec<u8>),
    OverLimit,
    Corrupt,
}

/// What a one-shot raw inflater with a 32 KiB window makes of the payload and
/// the tail, stopping at the end of the stream or of the input.
fn reference(payload: &[u8], limit: usize) -> Reference {
    let mut inflater = Decompress::new(false);
    let input = [payload, &TAIL[..]].concat();
    // One byte of room past the limit tells "at the limit" from "over it".
    let mut out = Vec::with_capacity(limit + 1);
    let mut pos = 0;
    loop {
        let before = (inflater.total_in(), out.len());
        let status = inflater.decompress_vec(&input[pos..], &mut out, FlushDecompress::None);
        pos += (inflater.total_in() - before.0) as usize;
        if out.len() > limit {
            return Reference::OverLimit;
        }
        match status {
            Err(_) => return Reference::Corrupt,
            Ok(Status::StreamEnd) => return Reference::Inflated(out),
            Ok(_) if pos == input.len() || (inflater.total_in(), out.len()) == before => {
                return Reference::Inflated(out);
            }
            Ok(_) => {}
        }
    }
}
