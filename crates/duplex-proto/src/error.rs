//! What a peer can do wrong, one variant per rule, and the close code each
//! fault earns (RFC 6455 §7.4.1). Keeping "which code for which fault" in one
//! `match` makes it one place to read and to test.

use crate::close_code::CloseCode;

/// The peer broke a rule of RFC 6455 or RFC 7692, or a configured limit.
///
/// When [`crate::Connection`] reports one of these it has already queued a
/// Close frame with [`ProtocolError::close_code`], and the connection is
/// failed: the caller writes what is pending and closes the socket.
///
/// Non-exhaustive: a rule or failure added later is a new variant, not a
/// breaking change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// §5.2: an RSV bit was set that no negotiated extension defines.
    #[error("reserved bit set without an extension that defines it")]
    ReservedBits,
    /// RFC 7692 §6.1: RSV1 means "compressed" only on the first frame of a
    /// data message; never on control frames or continuations.
    #[error("RSV1 set on a control or continuation frame")]
    Rsv1NotOnFirstFrame,
    /// §5.2: the most significant bit of a 64-bit length must be 0.
    #[error("64-bit payload length with its most significant bit set")]
    LengthMsbSet,
    /// §5.5: control frames must not be fragmented.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// §5.5: control frames carry at most 125 bytes.
    #[error("control frame payload of {0} bytes (max 125)")]
    ControlTooLong(u64),
    /// §5.1: a server must fail a connection on an unmasked client frame.
    #[error("client frame not masked")]
    UnmaskedFrame,
    /// §5.1: a client must fail a connection on a masked server frame.
    #[error("server frame masked")]
    MaskedFrame,
    /// §5.4: a continuation frame with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// §5.4: a new data message began before the fragmented one finished.
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    /// §5.5.1: a Close body of one byte cannot hold a code.
    #[error("close frame body of 1 byte")]
    CloseBodyTooShort,
    /// §7.4: a code that may not appear in a Close frame.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// §5.5.1: the close reason must be UTF-8.
    #[error("close reason is not UTF-8")]
    InvalidCloseReason,
    /// §8.1: text must be UTF-8.
    #[error("text message is not UTF-8")]
    InvalidUtf8,
    /// A frame longer than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The frame's declared payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message longer than the configured limit (after decompression).
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// RFC 7692: a compressed message that does not inflate.
    #[error("compressed message is corrupt: {0}")]
    InflateFailed(String),
    /// A compressed message inflated past what the I/O layer's shared
    /// budget had left for it
    /// ([`Connection::set_inflate_allowance`](crate::Connection::set_inflate_allowance)):
    /// the server is busy, not the peer wrong (1013, try again later).
    #[error("message inflated past the {allowance} bytes the server had left for it")]
    InflateBudget {
        /// What was left for it.
        allowance: usize,
    },
}

impl ProtocolError {
    /// The close code this fault is answered with (§7.4.1).
    pub fn close_code(&self) -> CloseCode {
        use ProtocolError::*;
        match self {
            InvalidUtf8 | InvalidCloseReason | InflateFailed(_) => CloseCode::INVALID_PAYLOAD,
            FrameTooLarge { .. } | MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            InflateBudget { .. } => CloseCode::TRY_AGAIN_LATER,
            ReservedOpcode(_)
            | ReservedBits
            | Rsv1NotOnFirstFrame
            | LengthMsbSet
            | FragmentedControl
            | ControlTooLong(_)
            | UnmaskedFrame
            | MaskedFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseBodyTooShort
            | InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// A send the caller asked for that cannot be made.
///
/// Non-exhaustive: a rule or failure added later is a new variant, not a
/// breaking change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A Close frame was already sent or received (§5.5.1: no data after it).
    #[error("the connection is closing or closed")]
    Closed,
    /// §5.5: a ping or pong payload over 125 bytes.
    #[error("control frame payload of {0} bytes (max 125)")]
    ControlTooLong(usize),
    /// The close code may not be sent (see [`CloseCode`]).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// The close reason is over 123 bytes.
    #[error("close reason of {0} bytes (max 123)")]
    ReasonTooLong(usize),
    /// The compressor failed; the message was not sent.
    #[error("compression failed: {0}")]
    Compression(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_maps_to_its_close_code() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(
            ProtocolError::InvalidCloseReason.close_code(),
            CloseCode(1007)
        );
        assert_eq!(
            ProtocolError::InflateFailed("x".into()).close_code(),
            CloseCode(1007)
        );
        assert_eq!(
            ProtocolError::MessageTooLarge { max: 1 }.close_code(),
            CloseCode(1009)
        );
        assert_eq!(
            ProtocolError::FrameTooLarge { len: 2, max: 1 }.close_code(),
            CloseCode(1009)
        );
        assert_eq!(
            ProtocolError::InflateBudget { allowance: 1 }.close_code(),
            CloseCode(1013)
        );
        for e in [
            ProtocolError::ReservedOpcode(3),
            ProtocolError::ReservedBits,
            ProtocolError::Rsv1NotOnFirstFrame,
            ProtocolError::LengthMsbSet,
            ProtocolError::FragmentedControl,
            ProtocolError::ControlTooLong(126),
            ProtocolError::UnmaskedFrame,
            ProtocolError::MaskedFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::CloseBodyTooShort,
            ProtocolError::InvalidCloseCode(999),
        ] {
            assert_eq!(e.close_code(), CloseCode(1002), "{e}");
        }
    }
}
