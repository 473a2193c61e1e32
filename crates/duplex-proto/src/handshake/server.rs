//! The server's side of the opening handshake (RFC 6455 §4.2): read the
//! client's Upgrade request, check it, and answer 101 or an HTTP error.
//!
//! The steps are separate functions so that each I/O layer uses the ones it
//! needs: a raw socket server calls [`parse_request`] on the bytes it has read
//! and then [`validate_request`]; a hyper or axum integration already holds an
//! `http::Request` and starts at `validate_request`, which is generic over the
//! body. Either way the answer is [`response`] (101) or [`reject`] (an error
//! status with a plain-text reason), serialised with
//! [`write_response`](super::write_response).
//!
//! Over HTTP/2 (RFC 8441) the request is an extended CONNECT instead of a
//! GET with `Upgrade`: [`validate_connect_request`] checks it, and the same
//! [`response`] answers 200 instead of 101, since there is no key to hash.
//!
//! Subprotocol choice ([`select_protocol`]) follows the server's order of
//! preference; Origin checks belong to the I/O layer (RFC 6455 §10.2 leaves
//! the policy to the server), and extension negotiation to the extensions
//! module, which receives the raw offers in [`RequestInfo::extensions`].

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::{
    EXTENSIONS_NAME, HOST_NAME, HandshakeError, KEY_NAME, MAX_HEADERS, VERSION, VERSION_NAME,
    accept_key, header_has_token, header_list, is_token, is_valid_key, parse_limited,
    single_header, to_header_map,
};

/// What a valid Upgrade request asked for, as [`validate_request`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The client's `Sec-WebSocket-Key`, trimmed, which [`response`] hashes;
    /// `None` over HTTP/2, where RFC 8441 §5 drops the key and the accept.
    pub key: Option<String>,
    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's
    /// order, gathered from every line of the header (RFC 6455 §4.1 allows
    /// the list to span several).
    pub protocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` values, one per header line, for
    /// the extensions module to parse and negotiate (RFC 6455 §9.1).
    pub extensions: Vec<String>,
}

/// Parses an HTTP request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete: read more and call again
/// with the whole buffer. On success returns the request (with an empty body)
/// and the length of the head; bytes after it are WebSocket frames a client
/// may have sent eagerly and belong to the connection.
///
/// At most `max_head` bytes are examined ([`MAX_HEAD_SIZE`](super::MAX_HEAD_SIZE)
/// is a sensible default): a head that has not ended by then fails with
/// [`HandshakeError::HeadersTooLarge`], so a peer cannot make the caller
/// buffer without bound. More than [`MAX_HEADERS`] header lines fail with
/// [`HandshakeError::TooManyHeaders`]. The request is not checked for being
/// a WebSocket upgrade; that is [`validate_request`].
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    parse_limited(buf, max_head, |window| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = parsed.parse(window)? else {
            return Ok(None);
        };
        // httparse fills all three once the head is complete.
        let (Some(method), Some(path), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HandshakeError::Http(httparse::Error::Token));
        };
        let mut req = Request::new(());
        *req.method_mut() = Method::from_bytes(method.as_bytes())
            .map_err(|_| HandshakeError::Http(httparse::Error::Token))?;
        *req.uri_mut() = Uri::try_from(path).map_err(|_| HandshakeError::BadRequestTarget)?;
        *req.version_mut() = match version {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        *req.headers_mut() = to_header_map(parsed.headers)?;
        Ok(Some((req, len)))
    })
}

/// Checks that `req` is a WebSocket Upgrade request (RFC 6455 §4.2.1) and
/// returns what it asks for.
///
/// The rules, in the order checked: method GET; HTTP/1.1 or later; exactly
/// one `Host`; no body (so the bytes after the head are frames);
/// `Upgrade` names `websocket` and `Connection` contains
/// `Upgrade` (both ASCII case-insensitive, comma-separated lists);
/// exactly one `Sec-WebSocket-Version`, equal to 13; exactly one
/// `Sec-WebSocket-Key`, base64 of 16 bytes; every offered subprotocol an
/// HTTP token. The version is checked before the key so that a client
/// speaking another version learns which one to retry with (§4.4).
///
/// Generic over the body so that a hyper or axum integration can pass its
/// own request type; the body is not looked at.
pub fn validate_request<B>(req: &Request<B>) -> Result<RequestInfo, HandshakeError> {
    if req.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version() < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    let headers = req.headers();
    // RFC 9112 §3.2: a request with no Host, or more than one, gets a 400.
    if single_header(headers, &header::HOST, HOST_NAME)?.is_none() {
        return Err(HandshakeError::MissingHeader(HOST_NAME));
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|len| len.as_bytes().trim_ascii() != b"0");
    if has_body {
        return Err(HandshakeError::UnexpectedBody);
    }
    if !header_has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::BadUpgrade);
    }
    if !header_has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::BadConnection);
    }
    check_version(headers)?;
    let key = match single_header(headers, &header::SEC_WEBSOCKET_KEY, KEY_NAME)? {
        None => return Err(HandshakeError::MissingHeader(KEY_NAME)),
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(key) if is_valid_key(key) => key.to_owned(),
            _ => return Err(HandshakeError::BadKey),
        },
    };
    let (protocols, extensions) = offers(headers)?;
    Ok(RequestInfo {
        key: Some(key),
        protocols,
        extensions,
    })
}

/// Checks that `req` is a WebSocket request over HTTP/2 (RFC 8441 §4–5):
/// an extended CONNECT whose `:protocol` pseudo-header is `websocket`.
///
/// `protocol` is that pseudo-header's value, which `http::Request` does not
/// carry: the HTTP/2 layer passes it (hyper has it as the request extension
/// `hyper::ext::Protocol`). The other rules are HTTP/1.1's where they still
/// apply: `Sec-WebSocket-Version` 13 exactly once, subprotocols as tokens,
/// extension offers kept raw. There is no key, and no `Upgrade` or
/// `Connection` header (HTTP/2 forbids connection-specific headers,
/// RFC 9113 §8.2.2, and its own layer refuses them). A CONNECT carries the
/// frames as its body, so a body is no fault here.
///
/// The method check comes first so that a server can try this and
/// [`validate_request`] by the request's method alone.
pub fn validate_connect_request<B>(
    req: &Request<B>,
    protocol: Option<&str>,
) -> Result<RequestInfo, HandshakeError> {
    if req.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotGet);
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case("websocket") => {}
        other => {
            return Err(HandshakeError::BadConnectProtocol(
                other.unwrap_or_default().to_owned(),
            ));
        }
    }
    let headers = req.headers();
    check_version(headers)?;
    let (protocols, extensions) = offers(headers)?;
    Ok(RequestInfo {
        key: None,
        protocols,
        extensions,
    })
}

/// `Sec-WebSocket-Version` present once and 13 (RFC 6455 §4.2.1 item 6).
fn check_version(headers: &http::HeaderMap) -> Result<(), HandshakeError> {
    match single_header(headers, &header::SEC_WEBSOCKET_VERSION, VERSION_NAME)? {
        None => Err(HandshakeError::MissingHeader(VERSION_NAME)),
        Some(version) if version != VERSION.as_bytes() => Err(HandshakeError::UnsupportedVersion),
        Some(_) => Ok(()),
    }
}

/// The subprotocols offered (each a token) and the raw extension offers.
fn offers(headers: &http::HeaderMap) -> Result<(Vec<String>, Vec<String>), HandshakeError> {
    let protocols = header_list(headers, &header::SEC_WEBSOCKET_PROTOCOL)
        .map(|item| match std::str::from_utf8(item) {
            Ok(name) if is_token(name) => Ok(name.to_owned()),
            _ => Err(HandshakeError::InvalidProtocol(
                String::from_utf8_lossy(item).into_owned(),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let extensions = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|value| value.to_str().map(str::trim))
        .filter(|value| !matches!(value, Ok("")))
        .map(|value| {
            value
                .map(str::to_owned)
                .map_err(|_| HandshakeError::BadHeaderValue(EXTENSIONS_NAME))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((protocols, extensions))
}

/// The response accepting `info`: 101 Switching Protocols with the
/// `Sec-WebSocket-Accept` of its key (RFC 6455 §4.2.2), or, for a request
/// over HTTP/2 (no key), 200 with neither `Upgrade` nor the accept
/// (RFC 8441 §5).
///
/// `protocol` is the chosen subprotocol, which must be one the client offered
/// ([`select_protocol`] returns only such); `extensions` is the
/// `Sec-WebSocket-Extensions` answer the extensions module built, if any
/// extension was accepted.
///
/// # Panics
///
/// If `protocol` or `extensions` is not a valid header value (contains a
/// control character). Both come from the server's own configuration, not
/// from the network. In debug builds, also if `protocol` was not offered.
pub fn response(
    info: &RequestInfo,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Response<()> {
    debug_assert!(
        protocol.is_none_or(|p| info.protocols.iter().any(|o| o == p)),
        "RFC 6455 §4.2.2: the server must choose a subprotocol the client offered"
    );
    let mut res = Response::new(());
    if info.key.is_some() {
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    let headers = res.headers_mut();
    if let Some(key) = &info.key {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = accept_key(key.as_bytes());
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::try_from(accept).expect("base64 is a valid header value"),
        );
    }
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).expect("subprotocol is a valid header value"),
        );
    }
    if let Some(extensions) = extensions {
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(extensions).expect("extensions answer is a valid header value"),
        );
    }
    res
}

/// The error response for a request that failed the handshake.
///
/// The status is [`HandshakeError::status`]; the body is one line of plain
/// text saying which rule the request broke, since the people reading it are
/// developers pointing a client at the wrong place. Extra headers follow
/// what each status requires:
///
/// - 426 carries `Upgrade: websocket` (RFC 9110 §15.5.22) with the
///   `Upgrade` connection option (§7.8), and `Sec-WebSocket-Version: 13`,
///   the version to retry with (RFC 6455 §4.4);
/// - 405 carries `Allow: GET` (RFC 9110 §15.5.6);
/// - every rejection carries `Connection: close`: the connection is not
///   reused after a failed handshake.
///
/// `Content-Length` is set; write the head with
/// [`write_response`](super::write_response) and then the body's bytes.
pub fn reject(err: &HandshakeError) -> Response<String> {
    let mut body = format!("WebSocket handshake failed: {err}.\n");
    if matches!(err, HandshakeError::BadUpgrade) {
        // The usual cause is a browser tab or curl opening the URL.
        body.push_str("This address accepts WebSocket connections only; use a WebSocket client.\n");
    }
    let mut res = Response::new(String::new());
    *res.status_mut() = err.status();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    match err {
        HandshakeError::BadUpgrade | HandshakeError::UnsupportedVersion => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                header::CONNECTION,
                HeaderValue::from_static("Upgrade, close"),
            );
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(VERSION),
            );
        }
        HandshakeError::MethodNotGet => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    *res.body_mut() = body;
    res
}

/// The subprotocol to accept: the first of `supported` that the client
/// `offered`, compared exactly.
///
/// The server's order wins, as in Python websockets: the client lists what
/// it can speak, and the server, which knows what it serves best, ranks
/// them. Names are compared case-sensitively, as the IANA registry treats
/// them (RFC 6455 §11.5). `None` means no subprotocol header in the answer;
/// whether to refuse the connection then is the server's policy.
pub fn select_protocol(offered: &[String], supported: &[String]) -> Option<String> {
    supported.iter().find(|s| offered.contains(s)).cloned()
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_HEAD_SIZE, head_len, write_response};
    use super::*;

    /// The request of RFC 6455 §1.2 (with the Origin and version it shows).
    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(text: &str) -> Request<()> {
        let (req, len) = parse_request(text.as_bytes(), MAX_HEAD_SIZE)
            .expect("valid HTTP")
            .expect("complete");
        assert_eq!(len, text.len());
        req
    }

    /// RFC_REQUEST with one header line replaced (or removed, if `with` is empty).
    fn request_with(line: &str, with: &str) -> Request<()> {
        parse(&RFC_REQUEST.replace(&format!("{line}\r\n"), with))
    }

    #[test]
    fn parses_and_validates_rfc_request() {
        let req = parse(RFC_REQUEST);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/chat");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["origin"], "http://example.com");
        let info = validate_request(&req).unwrap();
        assert_eq!(info.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(info.protocols, ["chat", "superchat"]);
        assert!(info.extensions.is_empty());
    }

    #[test]
    fn trailing_frame_bytes_are_not_consumed() {
        let mut buf = RFC_REQUEST.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f]);
        let (_, len) = parse_request(&buf, MAX_HEAD_SIZE).unwrap().unwrap();
        assert_eq!(len, RFC_REQUEST.len());
        assert_eq!(&buf[len..], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f]);
    }

    #[test]
    fn incomplete_until_the_last_byte() {
        let bytes = RFC_REQUEST.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                head_len(parse_request(&bytes[..end], MAX_HEAD_SIZE)),
                Ok(None),
                "at {end}"
            );
        }
        assert!(parse_request(bytes, MAX_HEAD_SIZE).unwrap().is_some());
    }

    #[test]
    fn oversized_head_is_rejected() {
        let big = format!("GET / HTTP/1.1\r\nX-Filler: {}", "a".repeat(100));
        assert_eq!(
            head_len(parse_request(big.as_bytes(), 64)),
            Err(HandshakeError::HeadersTooLarge(64))
        );
        // Not yet at the limit: keep reading.
        assert_eq!(head_len(parse_request(&big.as_bytes()[..63], 64)), Ok(None));
        // A head that fits exactly is fine, even with more bytes behind it.
        let exact = "GET / HTTP/1.1\r\n\r\n";
        let mut buf = exact.as_bytes().to_vec();
        buf.extend_from_slice(&[0; 100]);
        let (_, len) = parse_request(&buf, exact.len()).unwrap().unwrap();
        assert_eq!(len, exact.len());
        assert_eq!(
            HandshakeError::HeadersTooLarge(64).status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn too_many_headers() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(
            head_len(parse_request(text.as_bytes(), MAX_HEAD_SIZE)),
            Err(HandshakeError::TooManyHeaders)
        );
    }

    #[test]
    fn malformed_http() {
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", MAX_HEAD_SIZE),
            Err(HandshakeError::Http(_))
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/2.0\r\n\r\n", MAX_HEAD_SIZE),
            Err(HandshakeError::Http(_))
        ));
    }

    #[test]
    fn method_must_be_get() {
        let req = parse(&RFC_REQUEST.replacen("GET", "POST", 1));
        let err = validate_request(&req).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotGet);
        let res = reject(&err);
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()["allow"], "GET");
    }

    #[test]
    fn http_1_0_is_refused() {
        let req = parse(&RFC_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1));
        assert_eq!(validate_request(&req), Err(HandshakeError::HttpVersion));
    }

    #[test]
    fn host_required_once() {
        let req = request_with("Host: server.example.com", "");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::MissingHeader("Host"))
        );
        let req = request_with("Host: server.example.com", "Host: a\r\nHost: b\r\n");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::DuplicateHeader("Host"))
        );
    }

    #[test]
    fn body_is_refused() {
        let line = "Origin: http://example.com";
        let req = request_with(line, "Content-Length: 0\r\n");
        assert!(validate_request(&req).is_ok());
        let req = request_with(line, "Content-Length: 5\r\n");
        assert_eq!(validate_request(&req), Err(HandshakeError::UnexpectedBody));
        let req = request_with(line, "Transfer-Encoding: chunked\r\n");
        assert_eq!(validate_request(&req), Err(HandshakeError::UnexpectedBody));
    }

    #[test]
    fn upgrade_must_name_websocket_any_case() {
        let req = request_with("Upgrade: websocket", "Upgrade: WebSocket\r\n");
        assert!(validate_request(&req).is_ok());
        let req = request_with("Upgrade: websocket", "Upgrade: h2c, websocket\r\n");
        assert!(validate_request(&req).is_ok());
        let req = request_with("Upgrade: websocket", "Upgrade: h2c\r\n");
        assert_eq!(validate_request(&req), Err(HandshakeError::BadUpgrade));
        // A plain browser GET: told to upgrade.
        let req = request_with("Upgrade: websocket", "");
        let err = validate_request(&req).unwrap_err();
        assert_eq!(err, HandshakeError::BadUpgrade);
        let res = reject(&err);
        assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(res.headers()["upgrade"], "websocket");
    }

    #[test]
    fn connection_must_contain_upgrade_among_others() {
        let req = request_with("Connection: Upgrade", "Connection: keep-alive, UPGRADE\r\n");
        assert!(validate_request(&req).is_ok());
        let req = request_with(
            "Connection: Upgrade",
            "Connection: keep-alive\r\nConnection: upgrade\r\n",
        );
        assert!(validate_request(&req).is_ok());
        let req = request_with("Connection: Upgrade", "Connection: keep-alive\r\n");
        assert_eq!(validate_request(&req), Err(HandshakeError::BadConnection));
        let req = request_with("Connection: Upgrade", "");
        assert_eq!(validate_request(&req), Err(HandshakeError::BadConnection));
    }

    #[test]
    fn wrong_version_gets_426_with_supported_version() {
        let req = request_with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8\r\n");
        let err = validate_request(&req).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion);
        let res = reject(&err);
        assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(res.headers()["sec-websocket-version"], "13");
        assert_eq!(res.headers()["connection"], "Upgrade, close");
    }

    #[test]
    fn version_required_once() {
        let req = request_with("Sec-WebSocket-Version: 13", "");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Version"))
        );
        let req = request_with(
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
        );
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Version"))
        );
    }

    #[test]
    fn key_required_once_and_well_formed() {
        let line = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
        let req = request_with(line, "");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Key"))
        );
        let req = request_with(line, &format!("{line}\r\n{line}\r\n"));
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Key"))
        );
        // 15 bytes, 17 bytes, not base64, empty.
        for bad in [
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "!!!!!!!!!!!!!!!!!!!!!!==",
            "",
        ] {
            let req = request_with(line, &format!("Sec-WebSocket-Key: {bad}\r\n"));
            assert_eq!(
                validate_request(&req),
                Err(HandshakeError::BadKey),
                "{bad:?}"
            );
        }
        assert_eq!(
            reject(&HandshakeError::BadKey).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn protocols_gathered_across_lines_and_must_be_tokens() {
        let line = "Sec-WebSocket-Protocol: chat, superchat";
        let req = request_with(
            line,
            "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b ,c\r\n",
        );
        assert_eq!(validate_request(&req).unwrap().protocols, ["a", "b", "c"]);
        let req = request_with(line, "");
        assert!(validate_request(&req).unwrap().protocols.is_empty());
        let req = request_with(line, "Sec-WebSocket-Protocol: chat, super chat\r\n");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::InvalidProtocol("super chat".into()))
        );
    }

    #[test]
    fn extensions_kept_raw_per_line() {
        let req = request_with(
            "Origin: http://example.com",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Extensions: x-other, y\r\n",
        );
        assert_eq!(
            validate_request(&req).unwrap().extensions,
            ["permessage-deflate; client_max_window_bits", "x-other, y"]
        );
    }

    #[test]
    fn validate_accepts_any_body_type() {
        let (parts, ()) = parse(RFC_REQUEST).into_parts();
        let req = Request::from_parts(parts, String::from("ignored"));
        assert!(validate_request(&req).is_ok());
    }

    #[test]
    fn response_is_rfc_example() {
        let info = validate_request(&parse(RFC_REQUEST)).unwrap();
        let res = response(&info, Some("chat"), None);
        let mut out = Vec::new();
        write_response(&res, &mut out);
        // RFC 6455 §1.2.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
        let res = response(&info, None, Some("permessage-deflate"));
        assert!(!res.headers().contains_key("sec-websocket-protocol"));
        assert_eq!(
            res.headers()["sec-websocket-extensions"],
            "permessage-deflate"
        );
    }

    #[test]
    fn reject_explains_in_plain_text() {
        let res = reject(&HandshakeError::MissingHeader("Sec-WebSocket-Key"));
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.body(),
            "WebSocket handshake failed: missing Sec-WebSocket-Key header.\n"
        );
        assert_eq!(res.headers()["connection"], "close");
        assert_eq!(
            res.headers()["content-length"],
            res.body().len().to_string().as_str()
        );
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    }

    #[test]
    fn server_preference_order_wins() {
        let offered = ["chat".to_string(), "superchat".to_string()];
        let supported = ["superchat".to_string(), "chat".to_string()];
        assert_eq!(
            select_protocol(&offered, &supported).as_deref(),
            Some("superchat")
        );
        assert_eq!(select_protocol(&offered, &["Chat".to_string()]), None);
        assert_eq!(select_protocol(&[], &supported), None);
    }

    /// An RFC 8441 §5 request as Chromium sends it, with `:protocol` given
    /// apart as the HTTP/2 layer does.
    fn connect_request() -> Request<()> {
        Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://server.example.com/chat")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat, superchat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("origin", "http://example.com")
            .body(())
            .unwrap()
    }

    #[test]
    fn http2_connect_is_validated_without_a_key() {
        let info = validate_connect_request(&connect_request(), Some("websocket")).unwrap();
        assert_eq!(info.key, None);
        assert_eq!(info.protocols, ["chat", "superchat"]);
        assert_eq!(info.extensions, ["permessage-deflate"]);
    }

    #[test]
    fn http2_connect_needs_the_websocket_protocol() {
        let req = connect_request();
        assert_eq!(
            validate_connect_request(&req, None),
            Err(HandshakeError::BadConnectProtocol(String::new()))
        );
        assert_eq!(
            validate_connect_request(&req, Some("webtransport")),
            Err(HandshakeError::BadConnectProtocol("webtransport".into()))
        );
        let mut get = connect_request();
        *get.method_mut() = Method::GET;
        assert_eq!(
            validate_connect_request(&get, Some("websocket")),
            Err(HandshakeError::MethodNotGet)
        );
    }

    #[test]
    fn http2_connect_checks_version_and_protocol_tokens() {
        let mut req = connect_request();
        req.headers_mut().remove("sec-websocket-version");
        assert_eq!(
            validate_connect_request(&req, Some("websocket")),
            Err(HandshakeError::MissingHeader(VERSION_NAME))
        );
        req.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            validate_connect_request(&req, Some("websocket")),
            Err(HandshakeError::UnsupportedVersion)
        );
        let mut req = connect_request();
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("a b"));
        assert!(matches!(
            validate_connect_request(&req, Some("websocket")),
            Err(HandshakeError::InvalidProtocol(_))
        ));
    }

    #[test]
    fn http2_response_is_200_without_accept_or_upgrade() {
        let info = validate_connect_request(&connect_request(), Some("websocket")).unwrap();
        let res = response(&info, Some("chat"), Some("permessage-deflate"));
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers();
        assert!(headers.get(header::SEC_WEBSOCKET_ACCEPT).is_none());
        assert!(headers.get(header::UPGRADE).is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(
            headers[header::SEC_WEBSOCKET_EXTENSIONS],
            "permessage-deflate"
        );
    }
}
