//! Messages as the application sees them, and the reassembly of a message
//! from its fragments (RFC 6455 §5.4, §5.6).
//!
//! Control frames may arrive between the fragments of a data message; they
//! are handled by [`crate::Connection`] and never touch the message being
//! reassembled here.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::utf8::{InvalidUtf8, Utf8Validator};

/// A complete data message.
///
/// Exhaustive on purpose: RFC 6455 §5.6 has two data types, text and binary,
/// so a `match` needs no wildcard.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: UTF-8, checked on receipt.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Message {
        Message::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Message {
        Message::Binary(b.into())
    }

    /// The payload bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREVIEW: usize = 64;
        match self {
            Message::Text(t) if t.len() > PREVIEW => {
                write!(f, "Text({} bytes)", t.len())
            }
            Message::Text(t) => write!(f, "Text({:?})", t.as_str()),
            Message::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b.into())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

/// Shared, immutable UTF-8 bytes: a `str` that can be cloned and sliced out
/// of a receive buffer without copying.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes that are valid UTF-8, or returns them back.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            Ok(Utf8Bytes(bytes))
        } else {
            Err(bytes)
        }
    }

    /// Wraps bytes the caller has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees UTF-8: `try_from_bytes`
        // checks, `From<String>` / `From<&str>` start from a `str`, and
        // `from_validated` is only called on bytes the incremental validator
        // or simdutf8 accepted. `Bytes` is immutable, so it stays valid.
        // Tested by `utf8_bytes_checks_on_construction` (runs under Miri).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A data message being reassembled from its fragments.
#[derive(Debug)]
pub(crate) struct Reassembly {
    /// Text messages are validated piece by piece as payload arrives.
    utf8: Option<Utf8Validator>,
    /// RFC 7692: the message's first frame had RSV1 set.
    pub(crate) compressed: bool,
    /// The (decompressed) payload so far.
    pub(crate) buf: Vec<u8>,
    /// How much of `buf` the UTF-8 validator has seen.
    validated: usize,
}

impl Reassembly {
    pub(crate) fn new(text: bool, compressed: bool) -> Self {
        Reassembly {
            utf8: text.then(Utf8Validator::new),
            compressed,
            buf: Vec::new(),
            validated: 0,
        }
    }

    /// Validates whatever was appended to `buf` since the last call.
    pub(crate) fn validate_new(&mut self) -> Result<(), InvalidUtf8> {
        if let Some(v) = &mut self.utf8 {
            v.feed(&self.buf[self.validated..])?;
        }
        self.validated = self.buf.len();
        Ok(())
    }

    /// Completes the message.
    pub(crate) fn finish(mut self) -> Result<Message, InvalidUtf8> {
        self.validate_new()?;
        let bytes = Bytes::from(self.buf);
        match self.utf8 {
            Some(v) => {
                v.finish()?;
                Ok(Message::Text(Utf8Bytes::from_validated(bytes)))
            }
            None => Ok(Message::Binary(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembly_validates_text_incrementally() {
        let mut r = Reassembly::new(true, false);
        r.buf.extend_from_slice(&[0xce]);
        r.validate_new().unwrap();
        r.buf.extend_from_slice(&[0xba, b'!']);
        r.validate_new().unwrap();
        assert_eq!(r.finish().unwrap(), Message::text("κ!"));

        let mut r = Reassembly::new(true, false);
        r.buf.extend_from_slice(&[b'a', 0xff]);
        assert!(r.validate_new().is_err());
    }

    #[test]
    fn reassembly_of_text_ending_mid_character_fails() {
        let mut r = Reassembly::new(true, false);
        r.buf.extend_from_slice(&[0xce]);
        assert!(r.finish().is_err());
    }

    #[test]
    fn binary_is_not_validated() {
        let mut r = Reassembly::new(false, false);
        r.buf.extend_from_slice(&[0xff, 0xfe]);
        r.validate_new().unwrap();
        assert_eq!(r.finish().unwrap(), Message::binary(vec![0xff, 0xfe]));
    }

    #[test]
    fn utf8_bytes_checks_on_construction() {
        let ok = Utf8Bytes::try_from_bytes(Bytes::from_static("ok €".as_bytes())).unwrap();
        assert_eq!(ok.as_str(), "ok €");
        assert_eq!(Utf8Bytes::from(String::from("x")).as_str(), "x");
        assert!(Utf8Bytes::try_from_bytes(Bytes::from_static(&[0xff])).is_err());
    }
}
