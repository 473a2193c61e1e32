//! The frame header: opcodes, FIN and RSV bits, the mask bit and key, and the
//! three length forms (RFC 6455 §5.2).
//!
//! This module only reads and writes headers and knows the rules that a
//! header alone can break. Rules that need the connection's state (masking
//! by role, continuation sequencing, negotiated extensions) live in
//! [`crate::Connection`].

use crate::error::ProtocolError;

/// A frame's opcode (RFC 6455 §5.2, §11.8).
///
/// Exhaustive on purpose: these are all the opcodes RFC 6455 defines (the
/// others are reserved and rejected), so a `match` needs no wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: starts or answers the closing handshake.
    Close,
    /// 0x9: asks the peer for a pong.
    Ping,
    /// 0xA: answers a ping, or a unidirectional heartbeat.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte; reserved opcodes
    /// (0x3–0x7, 0xB–0xF) are a protocol error (§5.2).
    pub fn from_u8(value: u8) -> Result<OpCode, ProtocolError> {
        Ok(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xa => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The opcode's wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
        }
    }

    /// Close, ping and pong (§5.5): at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest header: 2 bytes, an 8-byte length and a 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of a message.
    pub fin: bool,
    /// RSV1: "compressed" under permessage-deflate (RFC 7692 §6).
    pub rsv1: bool,
    /// RSV2: no extension defines it.
    pub rsv2: bool,
    /// RSV3: no extension defines it.
    pub rsv3: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header for a single unfragmented frame with no RSV bits.
    pub fn new(opcode: OpCode, payload_len: usize, mask: Option<[u8; 4]>) -> Self {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: payload_len as u64,
        }
    }

    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not hold the whole header yet, and
    /// otherwise the header and its length in bytes.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7f {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let n = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                // §5.2: "the most significant bit MUST be 0".
                if n >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(bytes) = buf.get(len..len + 4) else {
                return Ok(None);
            };
            len += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        if opcode.is_control() {
            // §5.5: control frames are never fragmented and carry ≤ 125 bytes.
            if !header.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong(payload_len));
            }
        }
        Ok(Some((header, len)))
    }

    /// The encoded length of this header.
    pub fn len(&self) -> usize {
        let mask = if self.mask.is_some() { 4 } else { 0 };
        mask + match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        }
    }

    /// A header always has at least two bytes; provided for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Encodes the header into `out`, returning the number of bytes written.
    /// The length uses the shortest form, as §5.2 requires.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// Appends the encoded header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = self.encode(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn rfc_examples() {
        // §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x05, b'H']);
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.payload_len, 5);
        assert_eq!(h.mask, None);
        // §5.7: a masked "Hello".
        let (h, n) = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        // §5.7: 256 bytes binary in a single unmasked frame.
        let (h, n) = parse_all(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.payload_len, n), (256, 4));
        // §5.7: 64 KiB binary.
        let (h, n) = parse_all(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for i in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..i]).unwrap(), None, "prefix {i}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn length_with_most_significant_bit_is_rejected() {
        let bytes = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::parse(&bytes), Err(ProtocolError::LengthMsbSet));
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControl)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 0x7e, 0x00, 0x7e]),
            Err(ProtocolError::ControlTooLong(126))
        );
        assert!(FrameHeader::parse(&[0x89, 0x7d]).unwrap().is_some());
    }

    #[test]
    fn rsv_bits_are_decoded() {
        let (h, _) = parse_all(&[0xf2, 0x00]);
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
        let (h, _) = parse_all(&[0xa2, 0x00]);
        assert!(!h.rsv1 && h.rsv2 && !h.rsv3);
    }

    #[test]
    fn encode_uses_the_shortest_length_form() {
        for (len, expect) in [(0usize, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let h = FrameHeader::new(OpCode::Binary, len, None);
            let mut buf = [0; MAX_HEADER_LEN];
            assert_eq!(h.encode(&mut buf), expect);
            assert_eq!(h.len(), expect);
        }
    }

    fn any_opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(
            fin in any::<bool>(), rsv1 in any::<bool>(), rsv2 in any::<bool>(), rsv3 in any::<bool>(),
            opcode in any_opcode(), mask in any::<Option<[u8; 4]>>(),
            payload_len in prop_oneof![0u64..=125, 126u64..=65535, 65536u64..(1u64 << 63)],
        ) {
            let fin = fin || opcode.is_control();
            let payload_len = if opcode.is_control() { payload_len % 126 } else { payload_len };
            let h = FrameHeader { fin, rsv1, rsv2, rsv3, opcode, mask, payload_len };
            let mut buf = [0; MAX_HEADER_LEN];
            let n = h.encode(&mut buf);
            prop_assert_eq!(FrameHeader::parse(&buf[..n]).unwrap(), Some((h, n)));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::parse(&bytes);
        }
    }
}
