//! The stamp every fan-out payload starts with, and the sets of sequence
//! numbers the run counts deliveries in.

/// The payload's stamp: which topic, which publish of it, and when it was
/// published (nanoseconds since the run's origin).
///
/// Encoded as `~` and 17 base64url digits (topic 3, sequence 6, time 8),
/// padded with `.` to the payload size: ASCII with nothing JSON escapes, so
/// it travels unchanged inside a Pusher envelope and is found there by its
/// `~`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) topic: u32,
    pub(super) seq: u64,
    pub(super) ts_ns: u64,
}

const STAMP_MARK: u8 = b'~';
const TOPIC_DIGITS: usize = 3;
const SEQ_DIGITS: usize = 6;
const TS_DIGITS: usize = 8;
/// The length of a stamp, the smallest `--size`.
pub(super) const STAMP_LEN: usize = 1 + TOPIC_DIGITS + SEQ_DIGITS + TS_DIGITS;
/// Topics a stamp can name.
pub(super) const MAX_TOPICS: usize = 1 << (6 * TOPIC_DIGITS);
/// Publishes of one topic a stamp can number.
pub(super) const MAX_SEQ: u64 = 1 << (6 * SEQ_DIGITS);
/// Nanoseconds a stamp can hold (78 hours).
pub(super) const MAX_TS: u64 = 1 << (6 * TS_DIGITS);
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Stamp {
    /// The payload: the stamp padded to `size` bytes (at least
    /// [`STAMP_LEN`]). Fields are truncated to their widths, which
    /// [`FanoutPlan`](super::plan::FanoutPlan) keeps them within.
    pub(super) fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.max(STAMP_LEN));
        out.push(STAMP_MARK);
        put_digits(&mut out, u64::from(self.topic), TOPIC_DIGITS);
        put_digits(&mut out, self.seq, SEQ_DIGITS);
        put_digits(&mut out, self.ts_ns, TS_DIGITS);
        out.resize(size.max(STAMP_LEN), b'.');
        out
    }

    /// The stamp at the first `~` of `message`, if that is one.
    pub(super) fn find(message: &[u8]) -> Option<Stamp> {
        let at = message.iter().position(|&b| b == STAMP_MARK)?;
        let digits = message.get(at + 1..at + STAMP_LEN)?;
        let (topic, rest) = digits.split_at(TOPIC_DIGITS);
        let (seq, ts) = rest.split_at(SEQ_DIGITS);
        Some(Stamp {
            topic: u32::try_from(get_digits(topic)?).ok()?,
            seq: get_digits(seq)?,
            ts_ns: get_digits(ts)?,
        })
    }
}

fn put_digits(out: &mut Vec<u8>, value: u64, digits: usize) {
    for i in (0..digits).rev() {
        out.push(DIGITS[((value >> (6 * i)) & 63) as usize]);
    }
}

fn get_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(acc << 6 | u64::from(d))
    })
}

/// A set of sequence numbers (a bit set): what one subscriber received, or
/// which publishes of a topic were acknowledged. It only grows up to the
/// largest number inserted, which callers bound by what was published.
#[derive(Debug, Default, Clone)]
pub(super) struct SeqSet {
    words: Vec<u64>,
    pub(super) len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already.
    pub(super) fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        self.len += u64::from(fresh);
        fresh
    }

    /// Numbers in both sets.
    pub(super) fn common(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        for (topic, seq, ts_ns) in [
            (0, 0, 0),
            (1, 2, 3),
            (MAX_TOPICS as u32 - 1, MAX_SEQ - 1, MAX_TS - 1),
            (17, 123_456_789, 9_876_543_210_123),
        ] {
            let stamp = Stamp { topic, seq, ts_ns };
            for size in [STAMP_LEN, 100, 4096] {
                let payload = stamp.encode(size);
                assert_eq!(payload.len(), size);
                assert!(payload.iter().all(|b| b.is_ascii_graphic()));
                assert_eq!(Stamp::find(&payload), Some(stamp));
            }
        }
    }

    #[test]
    fn stamps_are_found_inside_a_pusher_envelope() {
        let stamp = Stamp {
            topic: 3,
            seq: 99,
            ts_ns: 5_000_000,
        };
        let data = String::from_utf8(stamp.encode(100)).unwrap();
        let envelope = serde_json::json!({"event": "fanout", "channel": "fanout-3", "data": data});
        assert_eq!(Stamp::find(envelope.to_string().as_bytes()), Some(stamp));
    }

    #[test]
    fn bad_stamps_are_none_not_panics() {
        let good = Stamp {
            topic: 1,
            seq: 2,
            ts_ns: 3,
        }
        .encode(40);
        for cut in 0..good.len() {
            let _ = Stamp::find(&good[..cut]);
        }
        assert_eq!(Stamp::find(&good[..STAMP_LEN - 1]), None);
        assert_eq!(Stamp::find(b""), None);
        assert_eq!(Stamp::find(b"no mark here"), None);
        assert_eq!(Stamp::find(b"~AAA!AAAAAAAAAAAAA"), None);
        assert_eq!(Stamp::find(&[b'~'; 5]), None);
        // Every byte after the mark, in every position.
        for pos in 1..STAMP_LEN {
            for b in 0..=255u8 {
                let mut bytes = good.clone();
                bytes[pos] = b;
                let found = Stamp::find(&bytes);
                assert_eq!(found.is_some(), get_digits(&[b]).is_some());
            }
        }
    }

    #[test]
    fn seq_sets_count_duplicates_and_intersections() {
        let mut got = SeqSet::default();
        assert!(got.insert(0));
        assert!(got.insert(64));
        assert!(got.insert(200));
        assert!(!got.insert(64));
        assert_eq!(got.len, 3);
        let mut acked = SeqSet::default();
        for seq in [0, 1, 64, 65] {
            acked.insert(seq);
        }
        assert_eq!(got.common(&acked), 2);
        assert_eq!(acked.common(&got), 2);
        assert_eq!(SeqSet::default().common(&got), 0);
    }
}
