//! TEMPORARY placeholder until the real module lands.
#![allow(missing_docs, unreachable_pub, dead_code)]
pub mod deflate;
