//! TEMPORARY placeholder until the real module lands.
#![allow(missing_docs, unreachable_pub, dead_code, unused_variables)]
use crate::Role;
#[derive(Debug, Clone, Copy, Default)]
pub struct DeflateParams;
#[derive(Debug, thiserror::Error)]
pub enum DeflateError { #[error("too large")] TooLarge, #[error("corrupt {0}")] Corrupt(String) }
#[derive(Debug)]
pub struct Deflate;
impl Deflate {
    pub fn new(role: Role, params: DeflateParams, level: u32, threshold: usize) -> Self { Deflate }
    pub fn should_compress(&self, len: usize) -> bool { unimplemented!() }
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DeflateError> { unimplemented!() }
    pub fn decompress(&mut self, input: &[u8], out: &mut Vec<u8>, max_output: usize) -> Result<(), DeflateError> { unimplemented!() }
    pub fn finish_message(&mut self, out: &mut Vec<u8>, max_output: usize) -> Result<(), DeflateError> { unimplemented!() }
}
