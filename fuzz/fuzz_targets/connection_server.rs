//! A whole `Connection` in the server role fed arbitrary bytes in arbitrary
//! chunks, with permessage-deflate on or off, sending and echoing as an
//! application would; see `duplex_fuzz::run` for the program format and the
//! invariants checked after every step.

#![no_main]

use duplex_proto::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duplex_fuzz::run(Role::Server, data));
