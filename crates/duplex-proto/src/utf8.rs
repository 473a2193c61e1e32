//! Incremental, fail-fast UTF-8 validation of text messages (RFC 6455 §8.1).
//!
//! A text message may arrive in many frames, and a frame in many reads. The
//! RFC asks an endpoint to fail the connection as soon as it sees bytes that
//! cannot be UTF-8, not at the end of the message, so the validator is fed
//! each piece as it arrives. Up to three bytes of an incomplete code point at
//! the end of a piece are carried over to the next one.

/// The bytes fed so far are not, and cannot become, valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in text")]
// `pub` for the `bench_internals` re-export only.
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub struct InvalidUtf8;

/// Validates a stream of bytes as UTF-8, one piece at a time.
#[derive(Debug, Default, Clone)]
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub struct Utf8Validator {
    /// An incomplete code point left over from the previous piece.
    carry: [u8; 4],
    carry_len: u8,
}

#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece. Fails at the first byte that makes the stream
    /// invalid, even if the code point is not finished yet.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let have = self.carry_len as usize;
            let need = sequence_len(self.carry[0]);
            let take = (need - have).min(input.len());
            self.carry[have..have + take].copy_from_slice(&input[..take]);
            let filled = have + take;
            input = &input[take..];
            match simdutf8::compat::from_utf8(&self.carry[..filled]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; the piece ended inside it.
                    self.carry_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        // The common case: the whole piece is valid.
        if simdutf8::basic::from_utf8(input).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &input[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a code point.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.carry_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// The length of the sequence that `first` starts; only called with bytes
/// that the validator already accepted as a sequence start.
fn sequence_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for p in pieces {
            v.feed(p)?;
        }
        v.finish()
    }

    #[test]
    fn ascii_and_multibyte() {
        assert!(feed_all(&["Hello-µ@ßöäüàá-UTF-8!!".as_bytes()]).is_ok());
        assert!(feed_all(&["κόσμε".as_bytes()]).is_ok());
    }

    #[test]
    fn code_point_split_across_pieces() {
        let s = "€𝄞".as_bytes(); // 3 + 4 bytes
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert!(feed_all(&[&s[..i], &s[i..j], &s[j..]]).is_ok(), "{i} {j}");
            }
        }
    }

    #[test]
    fn fails_at_first_invalid_byte_before_the_end() {
        // "κόσμε" then 0xed 0xa0 0x80 (a surrogate, never valid): the
        // second byte already rules it out, so the first piece after it fails.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(&[0xed]).unwrap();
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
    }

    #[test]
    fn fails_fast_on_invalid_start_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xff]), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xf5]), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xc0]), Err(InvalidUtf8), "overlong start");
    }

    #[test]
    fn message_ending_inside_a_code_point_fails() {
        assert_eq!(feed_all(&[&[0xe2, 0x82]]), Err(InvalidUtf8));
    }

    #[test]
    fn carry_then_invalid_continuation() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2]).unwrap();
        assert_eq!(v.feed(&[0x28, 0xa1]), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(data in proptest::collection::vec(any::<u8>(), 0..64),
                                         a in 0usize..64, b in 0usize..64) {
            let (a, b) = (a.min(data.len()), b.min(data.len()));
            let (a, b) = (a.min(b), a.max(b));
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(feed_all(&[&data[..a], &data[a..b], &data[b..]]).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_byte_by_byte(s in "\\PC*") {
            let mut v = Utf8Validator::new();
            for b in s.as_bytes() {
                prop_assert!(v.feed(std::slice::from_ref(b)).is_ok());
            }
            prop_assert!(v.finish().is_ok());
        }
    }
}
