//! The Close frame body (RFC 6455 §5.5.1, §7.1.5): a code the wire may
//! carry and a UTF-8 reason that fits a control frame. The codes
//! themselves are `close_code`'s.

use bytes::{BufMut, Bytes};

use crate::close_code::CloseCode;
use crate::error::ProtocolError;
use crate::frame::MAX_CONTROL_PAYLOAD;

/// The largest reason a Close frame can carry: 125 bytes minus the code.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// The body of a Close frame: a code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Why, for humans; at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Decodes a received Close payload. An empty payload means "no status"
    /// (`Ok(None)`, reported as 1005).
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
        match payload {
            [] => Ok(None),
            // §5.5.1: if there is a body, its first two bytes are the code.
            [_] => Err(ProtocolError::CloseBodyTooShort),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                // §5.5.1: the reason is UTF-8 text.
                let reason = simdutf8::basic::from_utf8(reason)
                    .map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(Some(CloseFrame::new(code, reason)))
            }
        }
    }

    /// Encodes the payload of a Close frame. Reasons longer than
    /// [`MAX_REASON_LEN`] are cut at a character boundary so that the frame
    /// stays a valid control frame.
    pub fn encode(&self) -> Bytes {
        let reason = truncate_utf8(&self.reason, MAX_REASON_LEN);
        let mut out = Vec::with_capacity(2 + reason.len());
        out.put_u16(self.code.0);
        out.extend_from_slice(reason.as_bytes());
        Bytes::from(out)
    }
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a
/// character.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_close_bodies() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::CloseBodyTooShort)
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8, b'o', b'k']),
            Ok(Some(CloseFrame::new(CloseCode::NORMAL, "ok")))
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xed]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8, 0xff]),
            Err(ProtocolError::InvalidCloseReason)
        );
    }

    #[test]
    fn encode_round_trips_and_truncates_at_a_char_boundary() {
        let frame = CloseFrame::new(CloseCode(4000), "bye");
        assert_eq!(CloseFrame::parse(&frame.encode()), Ok(Some(frame)));
        let long = "é".repeat(100); // 200 bytes
        let encoded = CloseFrame::new(CloseCode::NORMAL, long).encode();
        assert!(encoded.len() <= MAX_CONTROL_PAYLOAD);
        assert!(CloseFrame::parse(&encoded).is_ok());
    }
}
