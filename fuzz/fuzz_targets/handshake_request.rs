//! The server's side of the opening handshake (RFC 6455 §4.2) on arbitrary
//! bytes: `parse_request`, `validate_request`, extension negotiation, and
//! the answer.
//!
//! Checks: nothing panics; the head size limit holds (a head is at most the
//! limit, and a buffer that reaches it without a head fails); every error
//! maps to a 4xx status and `reject` answers with it. A request that passes
//! validation is answered with a 101 that a client which sent the same key,
//! subprotocols and extension offer accepts, with the subprotocol chosen.

#![no_main]

use duplex_proto::extensions::{DeflateConfig, parse_header};
use duplex_proto::handshake::{
    ClientRequest, HandshakeError, MAX_HEAD_SIZE, server, write_response,
};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The default limit, and one the input can reach.
    for max_head in [MAX_HEAD_SIZE, data.len() / 2 + 1] {
        match server::parse_request(data, max_head) {
            Ok(None) => assert!(data.len() < max_head),
            Ok(Some((request, len))) => {
                assert!(len <= data.len() && len <= max_head);
                match server::validate_request(&request) {
                    Ok(info) => accept(&info),
                    Err(e) => check_rejection(&e),
                }
            }
            Err(e) => {
                if let HandshakeError::HeadersTooLarge(limit) = e {
                    assert_eq!(limit, max_head);
                }
                check_rejection(&e);
            }
        }
    }
});

/// Every failure has a client-error status, and the rejection says it.
fn check_rejection(e: &HandshakeError) {
    let status = e.status();
    assert!(status.is_client_error(), "{e} -> {status}");
    let response = server::reject(e);
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[http::header::CONTENT_LENGTH],
        response.body().len().to_string().as_str()
    );
    let mut wire = Vec::new();
    write_response(&response, &mut wire);
    assert!(wire.ends_with(b"\r\n\r\n"));
}

/// Answers a valid request as a server would, and checks that a client that
/// asked for the same accepts the answer.
fn accept(info: &server::RequestInfo) {
    let key = info.key.clone().expect("HTTP/1.1 requests have a key");
    let chosen = info.protocols.first().cloned();
    let chosen = server::select_protocol(&info.protocols, chosen.as_slice());
    let values: Vec<&str> = info.extensions.iter().map(String::as_str).collect();
    let accepted = parse_header(&values)
        .ok()
        .and_then(|offers| DeflateConfig::default().server_accept(&offers));
    let answer = accepted.as_ref().map(|(_, answer)| answer.as_str());
    let response = server::response(info, chosen.as_deref(), answer);
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut wire = Vec::new();
    write_response(&response, &mut wire);

    // The same request from a client: protocols deduplicated, as a client
    // must not repeat one (§4.1); the raw extension offer.
    let mut client = ClientRequest::new(http::Uri::from_static("ws://localhost/"));
    for protocol in &info.protocols {
        if !client.protocols.contains(protocol) {
            client = client.protocol(protocol.clone());
        }
    }
    if !info.extensions.is_empty() {
        client = client.extensions(info.extensions.join(", "));
    }
    let (_, handshake) = client
        .build_with_key(key)
        .expect("a request the server accepted can be built");
    let (response, len) = handshake
        .parse_response(&wire, MAX_HEAD_SIZE)
        .expect("the client accepts the server's answer")
        .expect("the answer is a whole head");
    assert_eq!(len, wire.len());
    let negotiated = handshake.negotiated(&response);
    assert_eq!(negotiated.protocol, chosen);
    assert_eq!(negotiated.extensions.first().map(String::as_str), answer);
}
