//! Close codes (RFC 6455 §7.4), a leaf that errors and frames map to.
//!
//! Three different sets of codes matter:
//! - codes that may appear on the wire, which a received Close frame is
//!   checked against ([`CloseCode::is_valid_on_wire`]);
//! - 1005 and 1006, which only ever describe a close to the application and
//!   are never sent;
//! - the codes a browser lets a page pass to `close()`: 1000 and 3000–4999
//!   ([`CloseCode::is_allowed_for_application`]).

use std::fmt;

/// A close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a type of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: the Close frame carried no code. Never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a Close frame. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message was not UTF-8, or a payload did not match its type.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the message violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Never sent on the wire.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether a Close frame may carry this code (§7.4.1, §7.4.2 and the
    /// IANA registry): 1000–1003, 1007–1014 and the 3000–4999 range.
    /// 1004 is reserved, 1005, 1006 and 1015 are for reporting only, and
    /// everything below 1000 or from 5000 on is unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether an application may pass this code to `close()`, by the
    /// browser's rule (WHATWG WebSocket standard): 1000 or 3000–4999.
    pub fn is_allowed_for_application(self) -> bool {
        matches!(self.0, 1000 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

/// `code == 1000`, as the browser's `CloseEvent.code` is compared.
impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_the_rfc_and_registry() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }

    #[test]
    fn application_codes_follow_the_browser() {
        assert!(CloseCode(1000).is_allowed_for_application());
        assert!(CloseCode(3000).is_allowed_for_application());
        assert!(CloseCode(4999).is_allowed_for_application());
        assert!(!CloseCode(1001).is_allowed_for_application());
        assert!(!CloseCode(2999).is_allowed_for_application());
        assert!(!CloseCode(5000).is_allowed_for_application());
    }

    #[test]
    fn a_code_compares_with_its_number() {
        assert!(CloseCode::NORMAL == 1000);
        assert!(CloseCode::GOING_AWAY != 1000);
    }
}
