//! What goes on a channel: a message with its topic's epoch and offset, or
//! a presence event, in a few bytes before the payload.
//!
//! A message is `DX2`, its kind (`t` or `b`), the publishing node's id,
//! `{offset}:{epoch}:` and the payload: made by the publish script
//! (`redis/publish.lua`), so that the offset it assigns and the bytes it
//! sends are one. A presence event is `DXP`, `j` or `l`, the node's id and
//! the member as JSON. Anything else on a channel is another program's and
//! is ignored.

use bytes::Bytes;
use duplex_ws::{Message, Utf8Bytes};

use crate::hub::Member;

/// The first bytes of every message payload duplex puts on a channel.
pub const MAGIC: &[u8; 3] = b"DX2";
/// The first bytes of a presence event on a channel.
pub const PRESENCE_MAGIC: &[u8; 3] = b"DXP";

/// The most bytes duplex puts in front of a payload on a channel: magic,
/// kind, node id, offset and epoch.
pub(crate) const PAYLOAD_HEADER: usize = 3 + 1 + 16 + 64;

pub(crate) fn kind_and_bytes(message: &Message) -> (u8, &[u8]) {
    match message {
        Message::Text(text) => (b't', text.as_bytes()),
        Message::Binary(bytes) => (b'b', &bytes[..]),
    }
}

pub(crate) fn message_of(kind: u8, bytes: Bytes) -> Option<Message> {
    match kind {
        b't' => Utf8Bytes::try_from_bytes(bytes).ok().map(Message::Text),
        b'b' => Some(Message::Binary(bytes)),
        _ => None,
    }
}

pub(crate) fn presence_payload(node: [u8; 16], joined: bool, json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRESENCE_MAGIC.len() + 17 + json.len());
    out.extend_from_slice(PRESENCE_MAGIC);
    out.push(if joined { b'j' } else { b'l' });
    out.extend_from_slice(&node);
    out.extend_from_slice(json.as_bytes());
    out
}

/// A payload from a channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A message with its place in the topic.
    Message {
        /// The topic's epoch.
        epoch: String,
        /// The message's offset.
        offset: u64,
        /// The message.
        message: Message,
    },
    /// A presence event of another node (or of this one).
    Presence {
        /// The node that sent it.
        node: [u8; 16],
        /// Joined, or left.
        joined: bool,
        /// Who.
        member: Member,
    },
}

/// Encodes a message as the publish script does: magic, kind, node id,
/// `{offset}:{epoch}:`, payload. For the unit tests of [`decode`] only:
/// production payloads are the script's, and `tests/redis.rs` checks that
/// `decode` reads those.
#[cfg(test)]
pub(crate) fn encode(node: [u8; 16], epoch: &str, offset: u64, message: &Message) -> Bytes {
    let (kind, bytes) = kind_and_bytes(message);
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + node.len() + 32 + bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&node);
    out.extend_from_slice(format!("{offset}:{epoch}:").as_bytes());
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// Decodes a payload from a channel; `None` for anything that is not a
/// well-formed duplex payload (another program's, or text that is not
/// UTF-8).
pub fn decode(payload: &[u8]) -> Option<Decoded> {
    if let Some(rest) = payload.strip_prefix(PRESENCE_MAGIC) {
        let (&kind, rest) = rest.split_first()?;
        let node: [u8; 16] = rest.get(..16)?.try_into().ok()?;
        let member: Member = serde_json::from_slice(&rest[16..]).ok()?;
        let joined = match kind {
            b'j' => true,
            b'l' => false,
            _ => return None,
        };
        return Some(Decoded::Presence {
            node,
            joined,
            member,
        });
    }
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let rest = rest.get(16..)?;
    // The offset and the epoch are short: look for them in the first bytes.
    let head = &rest[..rest.len().min(64)];
    let colon = head.iter().position(|&b| b == b':')?;
    let offset: u64 = std::str::from_utf8(&head[..colon]).ok()?.parse().ok()?;
    let after = &rest[colon + 1..];
    let head = &after[..after.len().min(48)];
    let colon = head.iter().position(|&b| b == b':')?;
    let epoch = std::str::from_utf8(&head[..colon]).ok()?.to_owned();
    let message = message_of(kind, Bytes::copy_from_slice(&after[colon + 1..]))?;
    Some(Decoded::Message {
        epoch,
        offset,
        message,
    })
}

pub(crate) fn message_len(message: &Message) -> usize {
    kind_and_bytes(message).1.len()
}

/// Whether a payload surely carries a message over `max` bytes (its
/// header not counted, taking the offset and epoch at their longest), to
/// drop it before copying it; the exact check follows the decoding.
pub(crate) fn too_large(payload: &[u8], max: usize) -> bool {
    payload.len().saturating_sub(PAYLOAD_HEADER) > max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let node = [7u8; 16];
        for message in [
            Message::text("héllo: a:b"),
            Message::binary(vec![0u8, 255, 1]),
            Message::text(""),
        ] {
            assert_eq!(
                decode(&encode(node, "0123abcd", 42, &message)),
                Some(Decoded::Message {
                    epoch: "0123abcd".into(),
                    offset: 42,
                    message
                })
            );
        }
        let member = Member {
            client: "c-1".into(),
            user: Some("alice".into()),
        };
        let json = serde_json::to_string(&member).unwrap();
        assert_eq!(
            decode(&presence_payload(node, false, &json)),
            Some(Decoded::Presence {
                node,
                joined: false,
                member
            })
        );
    }

    #[test]
    fn the_size_cap_counts_the_message_not_the_header() {
        let node = [9u8; 16];
        let at_limit = encode(
            node,
            &"e".repeat(40),
            u64::MAX,
            &Message::binary(vec![0u8; 100]),
        );
        assert!(!too_large(&at_limit, 100));
        let over = encode(node, "e", 1, &Message::text("x".repeat(200)));
        assert!(too_large(&over, 100));
        assert!(!too_large(b"", 0));
    }

    #[test]
    fn foreign_or_broken_payloads_are_ignored() {
        let node = [1u8; 16];
        let good = encode(node, "e", 5, &Message::text("x"));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&good[..10]), None, "truncated node id");
        let mut bad_kind = good.to_vec();
        bad_kind[3] = b'z';
        assert_eq!(decode(&bad_kind), None);
        let mut bad_utf8 = encode(node, "e", 5, &Message::binary(vec![0xff, 0xfe])).to_vec();
        bad_utf8[3] = b't';
        assert_eq!(decode(&bad_utf8), None);
        let mut bad_offset = good.to_vec();
        bad_offset[20] = b'x';
        assert_eq!(decode(&bad_offset), None);
        assert_eq!(decode(b"DXPj0123456789abcdef{}"), None);
    }
}
