//! The client's side of the opening handshake (RFC 6455 §4.1) on arbitrary
//! bytes: `parse_response` (which validates) against a request with the
//! RFC's fixed key, then the subprotocol and permessage-deflate answer.
//!
//! Checks: nothing panics; the head size limit holds; every error maps to an
//! HTTP status (a client never sends one, but the mapping is total); an
//! accepted response is a 101 with the right `Sec-WebSocket-Accept` and at
//! most one subprotocol, one that was offered; an extension answer to a
//! request that offered none is refused, and one to a request that offered
//! permessage-deflate either yields parameters within RFC 7692's range or a
//! typed error.

#![no_main]

use std::sync::OnceLock;

use duplex_proto::extensions::DeflateConfig;
use duplex_proto::handshake::{
    ClientHandshake, ClientRequest, HandshakeError, MAX_HEAD_SIZE, accept_key,
};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

/// The key of RFC 6455 §1.2, whose accept is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Requests offering subprotocols `chat` and `superchat`: one with the
/// default permessage-deflate offer, one with no extension.
fn handshakes() -> &'static [ClientHandshake; 2] {
    static HANDSHAKES: OnceLock<[ClientHandshake; 2]> = OnceLock::new();
    HANDSHAKES.get_or_init(|| {
        let request = ClientRequest::new(http::Uri::from_static("ws://server.example.com/chat"))
            .protocol("chat")
            .protocol("superchat");
        let with_deflate = request
            .clone()
            .extensions(DeflateConfig::default().client_offer());
        let build = |r: ClientRequest| r.build_with_key(RFC_KEY.into()).expect("valid request").1;
        [build(with_deflate), build(request)]
    })
}

fuzz_target!(|data: &[u8]| {
    for (i, handshake) in handshakes().iter().enumerate() {
        let offered_deflate = i == 0;
        for max_head in [MAX_HEAD_SIZE, data.len() / 2 + 1] {
            match handshake.parse_response(data, max_head) {
                Ok(None) => assert!(data.len() < max_head),
                Ok(Some((response, len))) => {
                    assert!(len <= data.len() && len <= max_head);
                    check_accepted(handshake, &response, offered_deflate);
                }
                Err(e) => {
                    if let HandshakeError::HeadersTooLarge(limit) = e {
                        assert_eq!(limit, max_head);
                    }
                    assert!(e.status().is_client_error(), "{e} -> {}", e.status());
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
});

fn check_accepted(
    handshake: &ClientHandshake,
    response: &http::Response<()>,
    offered_deflate: bool,
) {
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let accept = response.headers()[http::header::SEC_WEBSOCKET_ACCEPT].as_bytes();
    assert_eq!(
        accept.trim_ascii(),
        accept_key(RFC_KEY.as_bytes()).as_bytes()
    );
    let negotiated = handshake.negotiated(response);
    if let Some(protocol) = &negotiated.protocol {
        assert!(handshake.protocols().contains(protocol), "{protocol:?}");
    }
    let values: Vec<&str> = negotiated.extensions.iter().map(String::as_str).collect();
    if !offered_deflate {
        // Validation refuses any extension answer to a request without an
        // offer; what is left can only be empty list elements.
        let blank = |v: &&str| v.split(',').all(|item| item.trim().is_empty());
        assert!(values.iter().all(blank), "{values:?}");
        return;
    }
    match DeflateConfig::default().client_accept(&values) {
        Ok(Some(params)) => {
            for bits in [params.server_max_window_bits, params.client_max_window_bits] {
                assert!((8..=15).contains(&bits), "{params:?}");
            }
        }
        // An answer of empty list elements (`Sec-WebSocket-Extensions: ,`)
        // names no extension (RFC 9110 §5.6.1).
        Ok(None) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
