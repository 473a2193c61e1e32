//! Fossil deltas (<https://fossil-scm.org/home/doc/tip/www/delta_format.wiki>):
//! the encoding of one message as the changes from the message before it,
//! which a duplex.v1 subscription asks for with `"delta":"fossil"`
//! (`docs/protocol.md`). The server [`encode`]s one delta per message of a
//! topic; the Rust client and duplex.js [`apply`] it to the message they
//! hold. Centrifugo, Sockudo and Ably send the same format, so its decoders
//! exist in every language.
//!
//! A delta is text: the target's length, then segments that copy a range
//! of the source (`COUNT@OFFSET,`) or insert literal bytes (`COUNT:BYTES`),
//! then a checksum of the target (`SUM;`), every number in Fossil's base 64.
//! Between two UTF-8 texts, [`encode`] cuts copies at character
//! boundaries, so that every literal is whole characters and the delta is
//! UTF-8 itself: it travels in a JSON string as it is.
//!
//! [`apply`] takes bytes from the network: it checks every count and offset
//! against the source, the delta and the declared length (which the caller
//! bounds) before it copies, and the checksum at the end, so a malformed or
//! hostile delta is an [`Error`], never a panic nor an allocation past the
//! caller's limit.

/// Fossil's digits, in order of value.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// The block the encoder indexes the source by: a match shorter than this
/// is not looked for.
const BLOCK: usize = 16;

/// How many blocks of the source with the same hash are tried at one
/// position of the target.
const MAX_CANDIDATES: usize = 64;

/// The bytes compared while looking for copies, per byte of the target:
/// past it the rest is inserted as it is. A source made of one repeated
/// block (every block a candidate everywhere) must not make a message
/// from a publisher cost more than a few passes over it.
const WORK_PER_BYTE: usize = 32;

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not the format: a missing separator, a number past 2^53, a byte
    /// that is no command.
    #[error("malformed delta: {0}")]
    Malformed(&'static str),
    /// A copy reaches past the end of the source.
    #[error("a copy reaches past the source's {0} bytes")]
    CopyOutOfRange(usize),
    /// The segments make more or less than the declared length.
    #[error("the delta makes {made} bytes, not the {declared} it declares")]
    Length {
        /// The length in the header.
        declared: usize,
        /// What the segments add up to (as far as they were read).
        made: usize,
    },
    /// The declared length is over the caller's limit.
    #[error("the delta declares {0} bytes, over the limit")]
    TooLarge(usize),
    /// The result is not what the delta was made from.
    #[error("checksum mismatch")]
    Checksum,
}

/// The delta that turns `source` into `target`. With `text` (both are
/// UTF-8), copies begin and end on character boundaries of `target`, so
/// that the delta is UTF-8 too.
pub fn encode(source: &[u8], target: &[u8], text: bool) -> Vec<u8> {
    let mut out = String::with_capacity(target.len() / 4 + 16);
    put_number(&mut out, target.len() as u64);
    out.push('\n');
    let mut delta = out.into_bytes();
    let boundary = |at: usize| !text || at >= target.len() || (target[at] & 0xC0) != 0x80;

    let index = Index::new(source);
    // `done`: what of the target the delta makes so far; `at`: where the
    // window of BLOCK bytes that is looked up starts.
    let mut done = 0;
    let mut at = 0;
    let mut hash = Rolling::default();
    let mut budget = WORK_PER_BYTE * target.len() + (1 << 16);
    if index.is_some() && target.len() >= BLOCK {
        hash.start(&target[..BLOCK]);
    }
    while let Some(index) = &index
        && at + BLOCK <= target.len()
        && budget > 0
    {
        let mut best: Option<(usize, usize, usize)> = None; // (target start, source start, len)
        for block in index.candidates(hash.value()).take(MAX_CANDIDATES) {
            let src = block * BLOCK;
            let forward = common_prefix(&source[src..], &target[at..]);
            budget = budget.saturating_sub(forward + 1);
            if forward < BLOCK {
                continue; // a hash collision, or less than a block
            }
            let back = common_suffix(&source[..src], &target[done..at]);
            budget = budget.saturating_sub(back + 1);
            let (mut t0, mut s0, mut t1) = (at - back, src - back, at + forward);
            while !boundary(t0) && t0 < t1 {
                t0 += 1;
                s0 += 1;
            }
            while !boundary(t1) && t1 > t0 {
                t1 -= 1;
            }
            let len = t1 - t0;
            // Worth a copy only if it is shorter than the bytes it replaces.
            let cost = digits(len as u64) + digits(s0 as u64) + 2;
            if len > cost && best.is_none_or(|(_, _, l)| len > l) {
                best = Some((t0, s0, len));
            }
        }
        if let Some((t0, s0, len)) = best {
            if t0 > done {
                put_insert(&mut delta, &target[done..t0]);
            }
            put_copy(&mut delta, len, s0);
            done = t0 + len;
            at = done;
            if at + BLOCK <= target.len() {
                hash.start(&target[at..at + BLOCK]);
            }
            continue;
        }
        if at + BLOCK >= target.len() || budget == 0 {
            break;
        }
        hash.roll(target[at], target[at + BLOCK]);
        at += 1;
    }
    if done < target.len() {
        put_insert(&mut delta, &target[done..]);
    }
    let mut tail = String::new();
    put_number(&mut tail, u64::from(checksum(target)));
    tail.push(';');
    delta.extend_from_slice(tail.as_bytes());
    delta
}

/// `source` changed by `delta`: at most `max` bytes, or an [`Error`].
pub fn apply(source: &[u8], delta: &[u8], max: usize) -> Result<Vec<u8>, Error> {
    let mut input = Reader { rest: delta };
    let declared = input.number()?;
    let declared = usize::try_from(declared).map_err(|_| Error::TooLarge(usize::MAX))?;
    if declared > max {
        return Err(Error::TooLarge(declared));
    }
    input.expect(b'\n')?;
    let mut out = Vec::with_capacity(declared);
    let too_long = |made: usize| Error::Length { declared, made };
    loop {
        let count = input.number()?;
        match input.byte()? {
            b'@' => {
                let offset = input.number()?;
                input.expect(b',')?;
                let (count, offset) = (count as usize, offset as usize);
                if out.len() + count > declared {
                    return Err(too_long(out.len() + count));
                }
                let end = offset
                    .checked_add(count)
                    .filter(|&end| end <= source.len())
                    .ok_or(Error::CopyOutOfRange(source.len()))?;
                out.extend_from_slice(&source[offset..end]);
            }
            b':' => {
                let count = count as usize;
                if out.len() + count > declared {
                    return Err(too_long(out.len() + count));
                }
                let literal = input.take(count)?;
                out.extend_from_slice(literal);
            }
            b';' => {
                if out.len() != declared {
                    return Err(too_long(out.len()));
                }
                if u64::from(checksum(&out)) != count {
                    return Err(Error::Checksum);
                }
                return Ok(out);
            }
            _ => return Err(Error::Malformed("a segment is neither @, : nor ;")),
        }
    }
}

/// The length the delta declares for its result, to bound before applying.
pub fn declared_len(delta: &[u8]) -> Option<u64> {
    Reader { rest: delta }.number().ok()
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A base-64 number: at least one digit, at most 2^53 − 1 (no count or
    /// offset of a real delta comes near, and every language holds it).
    fn number(&mut self) -> Result<u64, Error> {
        let mut value: u64 = 0;
        let mut len = 0;
        while let Some(&b) = self.rest.get(len)
            && let Some(digit) = digit_value(b)
        {
            value = value * 64 + u64::from(digit);
            if value >= 1 << 53 {
                return Err(Error::Malformed("a number past 2^53"));
            }
            len += 1;
        }
        if len == 0 {
            return Err(Error::Malformed("a number expected"));
        }
        self.rest = &self.rest[len..];
        Ok(value)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or(Error::Malformed("it ends before its checksum"))?;
        self.rest = rest;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), Error> {
        if self.byte()? == want {
            Ok(())
        } else {
            Err(Error::Malformed("a separator is missing"))
        }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], Error> {
        if count > self.rest.len() {
            return Err(Error::Malformed("a literal runs past the end"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }
}

fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'_' => Some(36),
        b'a'..=b'z' => Some(b - b'a' + 37),
        b'~' => Some(63),
        _ => None,
    }
}

fn put_number(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 63) as usize];
        n >>= 6;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// How many base-64 digits `n` takes.
fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 64 {
        n >>= 6;
        d += 1;
    }
    d
}

fn put_insert(delta: &mut Vec<u8>, literal: &[u8]) {
    let mut head = String::new();
    put_number(&mut head, literal.len() as u64);
    head.push(':');
    delta.extend_from_slice(head.as_bytes());
    delta.extend_from_slice(literal);
}

fn put_copy(delta: &mut Vec<u8>, len: usize, offset: usize) {
    let mut seg = String::new();
    put_number(&mut seg, len as u64);
    seg.push('@');
    put_number(&mut seg, offset as u64);
    seg.push(',');
    delta.extend_from_slice(seg.as_bytes());
}

/// Fossil's checksum: the sum of the bytes as big-endian 32-bit words, the
/// last one padded with zeros.
fn checksum(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(4);
    let mut sum = 0u32;
    for word in &mut chunks {
        sum = sum.wrapping_add(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let mut last = [0u8; 4];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    sum.wrapping_add(u32::from_be_bytes(last))
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The source's blocks by hash: `heads[h % len]` is the first block with
/// that hash, `next[block]` the one after it.
struct Index {
    heads: Vec<u32>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Index {
    /// `None` when the source is shorter than a block (nothing to copy).
    fn new(source: &[u8]) -> Option<Index> {
        let blocks = source.len() / BLOCK;
        if blocks == 0 {
            return None;
        }
        let mut index = Index {
            heads: vec![NONE; blocks],
            next: vec![NONE; blocks],
        };
        let mut hash = Rolling::default();
        // Chained from the last block back, so that the first candidate
        // is the earliest: in a repetitive source, the one with the most
        // source after it to match.
        for block in (0..blocks).rev() {
            hash.start(&source[block * BLOCK..(block + 1) * BLOCK]);
            let slot = hash.value() as usize % blocks;
            index.next[block] = index.heads[slot];
            index.heads[slot] = block as u32;
        }
        Some(index)
    }

    fn candidates(&self, hash: u32) -> impl Iterator<Item = usize> + '_ {
        let mut block = self.heads[hash as usize % self.heads.len()];
        std::iter::from_fn(move || {
            if block == NONE {
                return None;
            }
            let this = block as usize;
            block = self.next[this];
            Some(this)
        })
    }
}

/// A rolling hash of a window of [`BLOCK`] bytes (two running sums, as
/// Adler's): moving the window by one byte costs two additions.
#[derive(Default)]
struct Rolling {
    a: u32,
    b: u32,
}

impl Rolling {
    fn start(&mut self, window: &[u8]) {
        let (mut a, mut b) = (0u32, 0u32);
        for (i, &byte) in window.iter().enumerate() {
            a = a.wrapping_add(u32::from(byte));
            b = b.wrapping_add((BLOCK - i) as u32 * u32::from(byte));
        }
        (self.a, self.b) = (a, b);
    }

    fn roll(&mut self, out: u8, incoming: u8) {
        self.a = self
            .a
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(incoming));
        self.b = self
            .b
            .wrapping_sub(BLOCK as u32 * u32::from(out))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

#[cfg(test)]
fn number(n: u64) -> String {
    let mut s = String::new();
    put_number(&mut s, n);
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 1 << 20;

    fn round_trip(source: &[u8], target: &[u8], text: bool) -> Vec<u8> {
        let delta = encode(source, target, text);
        assert_eq!(apply(source, &delta, MAX).as_deref(), Ok(target));
        delta
    }

    #[test]
    fn numbers_are_fossil_s_base_64() {
        assert_eq!(number(0), "0");
        assert_eq!(number(63), "~");
        assert_eq!(number(64), "10");
        assert_eq!(number(4096 + 2 * 64 + 11), "12B");
        let mut r = Reader { rest: b"12B:" };
        assert_eq!(r.number(), Ok(4096 + 2 * 64 + 11));
        assert_eq!(digits(63), 1);
        assert_eq!(digits(64), 2);
    }

    #[test]
    fn the_checksum_sums_big_endian_words_padded_with_zeros() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[1, 0, 0, 0, 2]), 0x0100_0000 + 0x0200_0000);
        assert_eq!(checksum(&[0xff; 8]), 0xffff_fffe);
    }

    #[test]
    fn an_unchanged_state_is_one_copy() {
        let state = br#"{"price":101.25,"volume":1200,"bid":101.2,"ask":101.3}"#;
        let delta = round_trip(state, state, true);
        assert_eq!(
            delta,
            format!(
                "{}\n{}@0,{};",
                number(state.len() as u64),
                number(state.len() as u64),
                number(u64::from(checksum(state)))
            )
            .into_bytes()
        );
    }

    #[test]
    fn a_changed_field_costs_the_change_not_the_message() {
        let before = br#"{"symbol":"ACME","price":101.25,"volume":1200,"bid":101.20,"ask":101.30,"open":99.5,"high":102.0,"low":98.75}"#;
        let after = br#"{"symbol":"ACME","price":101.75,"volume":1300,"bid":101.20,"ask":101.30,"open":99.5,"high":102.0,"low":98.75}"#;
        let delta = round_trip(before, after, true);
        assert!(
            delta.len() < after.len() / 3,
            "{}",
            String::from_utf8_lossy(&delta)
        );
    }

    #[test]
    fn a_short_source_gives_one_insert() {
        let delta = round_trip(b"abc", b"hello, world", false);
        let sum = number(u64::from(checksum(b"hello, world")));
        assert_eq!(delta, format!("C\nC:hello, world{sum};").into_bytes());
        round_trip(b"", b"", false);
        round_trip(b"some source text, long enough", b"", true);
    }

    #[test]
    fn between_texts_copies_cut_at_character_boundaries() {
        // 你 E4 BD A0 and 们 E4 BB AC share their first byte: a copy that
        // ended after it would leave a literal that starts mid-character.
        let before = "{\"消息\":\"你好，世界。今天的天气很好，我们去公园散步吧\"}";
        let after = "{\"消息\":\"们好，世界。今天的天气很好，我们去公园散步吧\"}";
        let delta = round_trip(before.as_bytes(), after.as_bytes(), true);
        assert!(std::str::from_utf8(&delta).is_ok(), "{delta:?}");
        assert!(delta.len() < after.len() / 2);
    }

    #[test]
    fn a_repeated_source_is_encoded_in_linear_time() {
        let source = vec![b'a'; 1 << 20];
        let mut target = source.clone();
        target[500_000] = b'b';
        let delta = round_trip(&source, &target, false);
        assert!(delta.len() < 64, "{}", delta.len());
    }

    #[test]
    fn malformed_deltas_are_errors() {
        let source = b"0123456789abcdef0123456789abcdef";
        for (delta, want) in [
            (&b""[..], Error::Malformed("a number expected")),
            (b"5", Error::Malformed("it ends before its checksum")),
            (b"5\n", Error::Malformed("a number expected")),
            (b"5\n5:abc", Error::Malformed("a literal runs past the end")),
            (
                b"5\n6:abcdef0;",
                Error::Length {
                    declared: 5,
                    made: 6,
                },
            ),
            (b"5\n5@~~,0;", Error::CopyOutOfRange(32)),
            (b"5\n5@0!", Error::Malformed("a separator is missing")),
            (
                b"5\n3@0,1;",
                Error::Length {
                    declared: 5,
                    made: 3,
                },
            ),
            (b"5\n5@0,0;", Error::Checksum),
            (
                b"5\n5#",
                Error::Malformed("a segment is neither @, : nor ;"),
            ),
            (b"~~~~~~~~~~\n", Error::Malformed("a number past 2^53")),
        ] {
            assert_eq!(
                apply(source, delta, MAX),
                Err(want),
                "{}",
                String::from_utf8_lossy(delta)
            );
        }
        // The declared length is bounded before anything is allocated.
        assert_eq!(
            apply(source, b"~~~~~\n", MAX),
            Err(Error::TooLarge(64usize.pow(5) - 1))
        );
        assert_eq!(declared_len(b"10\n"), Some(64));
    }

    /// The format is Fossil's: the reference implementation's port
    /// (the `fossil-delta` crate) applies what this encodes, and this
    /// applies what it encodes.
    #[test]
    fn deltas_are_interchangeable_with_fossil_s() {
        let states: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    r#"{{"seq":{i},"board":[{}],"note":"état {}"}}"#,
                    (0..30)
                        .map(|k| format!(
                            r#"{{"id":{k},"px":{}}}"#,
                            100 + (k * 7 + i * (k % 3)) % 50
                        ))
                        .collect::<Vec<_>>()
                        .join(","),
                    i % 4
                )
            })
            .collect();
        for pair in states.windows(2) {
            let (a, b) = (pair[0].as_bytes(), pair[1].as_bytes());
            let ours = encode(a, b, true);
            assert_eq!(fossil_delta::apply(a, &ours).unwrap(), b);
            // The crate's `delta` takes the target first.
            let theirs = fossil_delta::delta(b, a);
            assert_eq!(apply(a, &theirs, MAX).unwrap(), b);
        }
    }

    proptest! {
        #[test]
        fn any_target_round_trips(source in proptest::collection::vec(any::<u8>(), 0..600),
                                  edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0usize..40), 0..8)) {
            // A target that shares most of the source, as a new state does.
            let mut target = source.clone();
            for (at, byte, len) in edits {
                let at = usize::from(at) % (target.len() + 1);
                target.splice(at..(at + len).min(target.len()), std::iter::repeat_n(byte, len / 2));
            }
            round_trip(&source, &target, false);
        }

        #[test]
        fn any_text_round_trips_as_text(source in "[a-zé你们好 {}\":,0-9]{0,200}", target in "[a-zé你们好 {}\":,0-9]{0,200}") {
            let joined = format!("{source}{target}{source}");
            for (s, t) in [(&source, &target), (&joined, &source), (&source, &joined)] {
                let delta = round_trip(s.as_bytes(), t.as_bytes(), true);
                prop_assert!(std::str::from_utf8(&delta).is_ok());
            }
        }

        #[test]
        fn garbage_never_panics(source in proptest::collection::vec(any::<u8>(), 0..64),
                                delta in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = apply(&source, &delta, 4096);
        }
    }
}
