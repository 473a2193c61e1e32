//! The opening handshake: the HTTP/1.1 Upgrade request and its 101 response
//! (RFC 6455 §4), and the client's HTTP/2 extended CONNECT and its 200
//! response (RFC 8441 §4–5).
//!
//! This module owns what both ends share: the key and accept computation
//! (§4.2.2, §1.3), the [`HandshakeError`] type with one variant per rule and
//! its HTTP status, the head size limits, parsing an HTTP head with
//! `httparse`, serialising an `http` head to bytes, and case-insensitive
//! matching of comma-separated header tokens (RFC 9110 §5.6.1). The client's
//! side (build a request, check the response) is in [`client`]; the server's
//! side (check a request, answer or reject it) is in [`server`].
//!
//! Requests and responses are `http` types so that a hyper or axum
//! integration can reuse the checks; nothing here reads a socket. Bytes
//! following the head belong to the WebSocket connection, so the parse
//! functions report how many bytes the head took and never consume more.
//!
//! Extension offers and answers cross this module as raw header values:
//! negotiating them is the business of the extensions module.

pub mod client;
pub mod server;

pub use client::{ClientHandshake, ClientRequest, Negotiated};
pub use server::RequestInfo;

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{HeaderMap, HeaderName};
use http::{HeaderValue, StatusCode};
use sha1::{Digest as _, Sha1};

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3, §4.2.2).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The default bound on the size of an HTTP head, in bytes.
///
/// A browser's handshake is well under 2 KiB; cookies and long
/// `Authorization` tokens push real ones to a few KiB. 16 KiB leaves room for
/// those while capping what a peer that never sends CRLF CRLF can make us
/// buffer. The I/O layer passes its configured value to the parse functions.
pub const MAX_HEAD_SIZE: usize = 16 * 1024;

/// The most header lines accepted in one head.
///
/// A handshake needs about ten; 64 leaves room for proxies and cookies while
/// bounding the per-parse header table.
pub const MAX_HEADERS: usize = 64;

/// The only protocol version this crate speaks (RFC 6455 §4.1, §11.6).
pub(crate) const VERSION: &str = "13";

/// `Sec-WebSocket-Key` with the RFC's capitalisation, for error messages.
pub(crate) const KEY_NAME: &str = "Sec-WebSocket-Key";
/// `Sec-WebSocket-Version`, RFC spelling.
pub(crate) const VERSION_NAME: &str = "Sec-WebSocket-Version";
/// `Sec-WebSocket-Accept`, RFC spelling.
pub(crate) const ACCEPT_NAME: &str = "Sec-WebSocket-Accept";
/// `Sec-WebSocket-Protocol`, RFC spelling.
pub(crate) const PROTOCOL_NAME: &str = "Sec-WebSocket-Protocol";
/// `Sec-WebSocket-Extensions`, RFC spelling.
pub(crate) const EXTENSIONS_NAME: &str = "Sec-WebSocket-Extensions";
/// `Host`.
pub(crate) const HOST_NAME: &str = "Host";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`:
/// base64(SHA-1(key ‖ [`GUID`])) (RFC 6455 §4.2.2 item 5.4).
///
/// `key` is the header value as sent, without surrounding whitespace.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded
/// (RFC 6455 §4.1: "randomly selected ... for each connection").
pub fn generate_key() -> String {
    BASE64.encode(rand::random::<[u8; 16]>())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of exactly 16 bytes
/// (RFC 6455 §4.1, §11.3.1).
pub(crate) fn is_valid_key(key: &str) -> bool {
    // 16 bytes encode to 24 characters; checking the length first keeps a
    // hostile multi-KiB value from being decoded at all.
    key.len() == 24 && BASE64.decode(key).is_ok_and(|raw| raw.len() == 16)
}

/// Why an opening handshake failed: one variant per rule of RFC 6455 §4
/// (and of HTTP/1.1 where the handshake leans on it).
///
/// [`HandshakeError::status`] maps each to the HTTP status a server answers
/// with, and [`server::reject`] builds that answer. Variants only a client
/// can detect (a bad response, a bad request to build) map to 400 for
/// completeness; a client never sends a status.
///
/// An incomplete head is not an error: the parse functions return `Ok(None)`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head is not valid HTTP/1.x (RFC 9112).
    #[error("malformed HTTP head: {0}")]
    Http(httparse::Error),
    /// The head is longer than the configured limit.
    #[error("HTTP head larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// The head has more than [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// A header name or value is not valid for HTTP (RFC 9110 §5.5).
    #[error("invalid header field")]
    BadHeader,
    /// The request target is not a valid URI (RFC 9112 §3.2).
    #[error("invalid request target")]
    BadRequestTarget,
    /// The request method is not GET (RFC 6455 §4.1 item 2).
    #[error("the method must be GET")]
    MethodNotGet,
    /// The HTTP version is older than 1.1 (RFC 6455 §4.1 item 2, §4.2.1).
    #[error("HTTP/1.1 or later is required")]
    HttpVersion,
    /// The request declares a body (`Transfer-Encoding`, or a
    /// `Content-Length` other than 0): the bytes after an Upgrade request's
    /// head must be WebSocket frames, and reading them as a body (or the
    /// reverse) is how requests get smuggled past a proxy.
    #[error("an Upgrade request must not have a body")]
    UnexpectedBody,
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// An HTTP/2 CONNECT whose `:protocol` pseudo-header is missing or not
    /// `websocket` (RFC 8441 §4): a plain CONNECT asks for a tunnel, which
    /// a WebSocket server does not offer.
    #[error("the :protocol of an HTTP/2 CONNECT must be \"websocket\", got {0:?}")]
    BadConnectProtocol(String),
    /// A header that must appear once appears on several lines.
    #[error("{0} header appears more than once")]
    DuplicateHeader(&'static str),
    /// `Upgrade` is missing or does not name `websocket` (RFC 6455 §4.1,
    /// §4.2.1 item 3).
    #[error("the Upgrade header must be \"websocket\"")]
    BadUpgrade,
    /// `Connection` is missing or lacks the `Upgrade` token
    /// (RFC 6455 §4.1, §4.2.1 item 4).
    #[error("the Connection header must contain \"Upgrade\"")]
    BadConnection,
    /// `Sec-WebSocket-Version` is not 13 (RFC 6455 §4.2.1 item 6, §4.4).
    #[error("unsupported WebSocket version; only 13 is supported")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is not base64 of exactly 16 bytes
    /// (RFC 6455 §4.1, §4.2.1 item 5).
    #[error("Sec-WebSocket-Key must be base64 of 16 bytes")]
    BadKey,
    /// A subprotocol name is not an HTTP token, or is repeated in an offer
    /// (RFC 6455 §4.1, §11.3.4).
    #[error("invalid subprotocol {0:?}")]
    InvalidProtocol(String),
    /// The response status is not 101 Switching Protocols (RFC 6455 §4.1).
    #[error("expected status 101, got {0}")]
    BadStatus(u16),
    /// The response to an extended CONNECT (WebSocket over HTTP/2) is not
    /// 200 OK, the status by which a server agrees (RFC 8441 §5).
    #[error("the server answered the extended CONNECT with status {0}, not 200")]
    ConnectStatus(u16),
    /// `Sec-WebSocket-Accept` does not match the key sent (RFC 6455 §4.1).
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// The server chose a subprotocol the client did not offer
    /// (RFC 6455 §4.1).
    #[error("server chose subprotocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    /// The server's `Sec-WebSocket-Protocol` names more than one subprotocol
    /// (RFC 6455 §4.2.2: "a single value").
    #[error("server chose more than one subprotocol")]
    MultipleProtocols,
    /// The server answered with extensions though the client offered none
    /// (RFC 6455 §4.1).
    #[error("server chose extensions {0:?}, none were offered")]
    UnexpectedExtensions(String),
    /// The URI to connect to has no scheme, or one other than ws, wss, http
    /// or https (RFC 6455 §3).
    #[error("unsupported URI scheme {0:?}; expected ws or wss")]
    UnsupportedScheme(String),
    /// The URI to connect to has no host (RFC 6455 §3).
    #[error("the URI has no host")]
    MissingHost,
    /// A user header would replace one the handshake itself sets.
    #[error("header {0} is set by the handshake and cannot be overridden")]
    ReservedHeader(String),
    /// A value to put in a header is not a valid header value.
    #[error("invalid value for the {0} header")]
    BadHeaderValue(&'static str),
}

impl HandshakeError {
    /// The HTTP status a server answers this failure with.
    ///
    /// - 426 Upgrade Required when the request is not a WebSocket upgrade at
    ///   all (`BadUpgrade`, typically a browser opening the URL) or asks for
    ///   another version (`UnsupportedVersion`, RFC 6455 §4.2.2 names 426);
    ///   [`server::reject`] adds the `Upgrade` and `Sec-WebSocket-Version`
    ///   headers RFC 9110 §15.5.22 and RFC 6455 §4.4 require.
    /// - 405 Method Not Allowed for a method other than GET: RFC 6455 §4.2.1
    ///   allows any fitting error code and 405 tells the client exactly what
    ///   is wrong; `reject` adds the `Allow: GET` header RFC 9110 §15.5.6
    ///   requires.
    /// - 431 Request Header Fields Too Large for a head over the size or
    ///   header-count limit (RFC 6585 §5).
    /// - 400 Bad Request for everything else, including HTTP/1.0 (505 is for
    ///   a major version the server does not speak, and 1.0 is still 1.x).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadUpgrade | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeadersTooLarge(_) | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<httparse::Error> for HandshakeError {
    fn from(err: httparse::Error) -> Self {
        match err {
            httparse::Error::TooManyHeaders => Self::TooManyHeaders,
            other => Self::Http(other),
        }
    }
}

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty HTTP token (RFC 9110 §5.6.2).
///
/// Subprotocol names must be tokens (RFC 6455 §4.1), as must extension names
/// (§9.1).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// The elements of a comma-separated header list, across every line of the
/// header, with optional whitespace trimmed and empty elements skipped
/// (RFC 9110 §5.6.1 requires recipients to accept those).
pub(crate) fn header_list<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// Whether the comma-separated header `name` contains `token`, compared
/// ASCII case-insensitively: `Connection: keep-alive, Upgrade` contains
/// `upgrade` (RFC 6455 §4.1, §4.2.1; RFC 9110 §7.6.1 makes connection
/// options case-insensitive).
pub(crate) fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    header_list(headers, name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// The single value of header `name`, trimmed, if it appears exactly once.
///
/// `Ok(None)` when absent; `DuplicateHeader` when on several lines, since
/// a second key, version or accept would leave it unclear which to check.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<&'a [u8]>, HandshakeError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(label));
    }
    Ok(Some(first.as_bytes().trim_ascii()))
}

/// The header lines of a parsed head as a `HeaderMap`, keeping repeated
/// lines as separate values so duplicates stay detectable.
pub(crate) fn to_header_map(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HandshakeError::BadHeader)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HandshakeError::BadHeader)?;
        map.append(name, value);
    }
    Ok(map)
}

/// Decide what a partial parse means under the size limit.
///
/// `parse` runs on at most `max_head` bytes of `buf`, so a head is never
/// read past the limit; if it is still incomplete once the buffer holds that
/// many bytes, it never will fit.
pub(crate) fn parse_limited<T>(
    buf: &[u8],
    max_head: usize,
    parse: impl FnOnce(&[u8]) -> Result<Option<(T, usize)>, HandshakeError>,
) -> Result<Option<(T, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(max_head)];
    match parse(window)? {
        Some(done) => Ok(Some(done)),
        None if buf.len() >= max_head => Err(HandshakeError::HeadersTooLarge(max_head)),
        None => Ok(None),
    }
}

/// A parse result with the parsed head dropped, so tests can compare it
/// (`http::Request` and `Response` are not `PartialEq`).
#[cfg(test)]
pub(crate) fn head_len<T>(
    parsed: Result<Option<(T, usize)>, HandshakeError>,
) -> Result<Option<usize>, HandshakeError> {
    parsed.map(|head| head.map(|(_, len)| len))
}

/// Appends the head of `req` to `out`: request line, headers, blank line.
///
/// The request line always says `HTTP/1.1` (the handshake is an HTTP/1.1
/// mechanism) and uses the origin form of the target (path and query,
/// RFC 9112 §3.2.1) even if `req` holds an absolute `ws://` URI; the
/// authority travels in `Host`. The body is not written.
pub fn write_request<B>(req: &http::Request<B>, out: &mut Vec<u8>) {
    let uri = req.uri();
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(query) = uri.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(req.headers(), out);
}

/// Appends the head of `res` to `out`: status line, headers, blank line.
///
/// The status line always says `HTTP/1.1`. The body is not written: append
/// it yourself (as for [`server::reject`]'s text), after the head.
pub fn write_response<B>(res: &http::Response<B>, out: &mut Vec<u8>) {
    let status = res.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(res.headers(), out);
}

/// Header lines and the terminating blank line. Values cannot contain CR or
/// LF (`HeaderValue` refuses them), so nothing can inject a line.
fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(canonical_name(name).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The conventional capitalisation of a header name (`http` stores names in
/// lower case). Names are case-insensitive (RFC 9110 §5.1), but some deployed
/// servers and middleboxes compare them byte for byte against the RFC's
/// spelling, and writing `Sec-WebSocket-Key` costs nothing.
fn canonical_name(name: &HeaderName) -> Cow<'static, str> {
    let known = match name.as_str() {
        "sec-websocket-key" => KEY_NAME,
        "sec-websocket-accept" => ACCEPT_NAME,
        "sec-websocket-version" => VERSION_NAME,
        "sec-websocket-protocol" => PROTOCOL_NAME,
        "sec-websocket-extensions" => EXTENSIONS_NAME,
        "www-authenticate" => "WWW-Authenticate",
        _ => {
            let mut title = String::with_capacity(name.as_str().len());
            let mut upper = true;
            for c in name.as_str().chars() {
                title.push(if upper { c.to_ascii_uppercase() } else { c });
                upper = c == '-';
            }
            return Cow::Owned(title);
        }
    };
    Cow::Borrowed(known)
}

#[cfg(test)]
mod tests {
    use super::server::{parse_request, reject, response, select_protocol, validate_request};
    use super::*;
    use http::header;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn generated_keys_are_valid_and_fresh() {
        let a = generate_key();
        let b = generate_key();
        assert!(is_valid_key(&a), "{a}");
        assert!(is_valid_key(&b), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn key_must_be_base64_of_16_bytes() {
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        // 15 and 17 bytes.
        assert!(!is_valid_key(&BASE64.encode([0u8; 15])));
        assert!(!is_valid_key(&BASE64.encode([0u8; 17])));
        // Right length, not base64.
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZ!=="));
        // Non-canonical trailing bits.
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_valid_key(""));
    }

    #[test]
    fn tokens() {
        assert!(is_token("chat"));
        assert!(is_token("v2.bin-proto_x"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a,b"));
        assert!(!is_token("caf\u{e9}"));
    }

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn token_match_is_case_insensitive_and_comma_separated() {
        let h = map(&[("connection", "keep-alive, Upgrade")]);
        assert!(header_has_token(&h, &header::CONNECTION, "upgrade"));
        let h = map(&[("connection", "keep-alive"), ("connection", " UPGRADE ,")]);
        assert!(header_has_token(&h, &header::CONNECTION, "upgrade"));
        let h = map(&[("connection", "keep-alive, upgraded")]);
        assert!(!header_has_token(&h, &header::CONNECTION, "upgrade"));
        let h = map(&[("upgrade", "WebSocket")]);
        assert!(header_has_token(&h, &header::UPGRADE, "websocket"));
        assert!(!header_has_token(&h, &header::CONNECTION, "upgrade"));
    }

    #[test]
    fn header_list_skips_empty_elements() {
        let h = map(&[
            ("sec-websocket-protocol", ", a ,,b"),
            ("sec-websocket-protocol", "c"),
        ]);
        let items: Vec<_> = header_list(&h, &header::SEC_WEBSOCKET_PROTOCOL).collect();
        assert_eq!(items, [&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn single_header_detects_duplicates() {
        let h = map(&[("sec-websocket-key", " k "), ("host", "a"), ("host", "b")]);
        assert_eq!(
            single_header(&h, &header::SEC_WEBSOCKET_KEY, KEY_NAME),
            Ok(Some(&b"k"[..]))
        );
        assert_eq!(
            single_header(&h, &header::HOST, HOST_NAME),
            Err(HandshakeError::DuplicateHeader(HOST_NAME))
        );
        assert_eq!(single_header(&h, &header::ORIGIN, "Origin"), Ok(None));
    }

    #[test]
    fn statuses() {
        use HandshakeError as E;
        assert_eq!(E::UnsupportedVersion.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(E::BadUpgrade.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(E::MethodNotGet.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            E::HeadersTooLarge(1).status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            E::TooManyHeaders.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(E::BadKey.status(), StatusCode::BAD_REQUEST);
        assert_eq!(E::HttpVersion.status(), StatusCode::BAD_REQUEST);
        assert_eq!(E::MissingHeader(KEY_NAME).status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            E::from(httparse::Error::Token).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(E::from(httparse::Error::TooManyHeaders), E::TooManyHeaders);
    }

    #[test]
    fn limit_turns_endless_head_into_error() {
        let never = |_: &[u8]| Ok::<Option<((), usize)>, HandshakeError>(None);
        assert_eq!(parse_limited(&[0; 9], 10, never), Ok(None));
        assert_eq!(
            parse_limited(&[0; 10], 10, never),
            Err(HandshakeError::HeadersTooLarge(10))
        );
        // The parser only ever sees the window.
        let seen = parse_limited(&[0; 100], 10, |w| Ok(Some((w.len(), w.len())))).unwrap();
        assert_eq!(seen, Some((10, 10)));
    }

    #[test]
    fn writes_request_head_in_origin_form() {
        let req = http::Request::get("ws://example.com:9000/chat?room=1")
            .header(header::HOST, "example.com:9000")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header("x-custom-thing", "1")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_request(&req, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?room=1 HTTP/1.1\r\n\
             Host: example.com:9000\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Custom-Thing: 1\r\n\r\n"
        );
        let bare = http::Request::get("ws://example.com").body(()).unwrap();
        let mut out = Vec::new();
        write_request(&bare, &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn writes_response_head() {
        let res = http::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_response(&res, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn round_trip_client_server_client() {
        let request = ClientRequest::new("ws://localhost:8080/chat".parse().unwrap())
            .protocol("v2.chat")
            .protocol("v1.chat")
            .extensions("permessage-deflate; client_max_window_bits")
            .header(
                header::ORIGIN,
                HeaderValue::from_static("http://localhost:8080"),
            );
        let (req, client) = request.build().unwrap();
        let mut wire = Vec::new();
        write_request(&req, &mut wire);

        let (req, used) = parse_request(&wire, MAX_HEAD_SIZE).unwrap().unwrap();
        assert_eq!(used, wire.len());
        let info = validate_request(&req).unwrap();
        assert_eq!(info.protocols, ["v2.chat", "v1.chat"]);
        assert_eq!(
            info.extensions,
            ["permessage-deflate; client_max_window_bits"]
        );
        let supported = ["v1.chat".to_string(), "v2.chat".to_string()];
        let chosen = select_protocol(&info.protocols, &supported);
        let res = response(&info, chosen.as_deref(), Some("permessage-deflate"));
        let mut wire = Vec::new();
        write_response(&res, &mut wire);
        wire.extend_from_slice(&[0x81, 0x00]); // a first frame, right behind

        let (res, used) = client
            .parse_response(&wire, MAX_HEAD_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(&wire[used..], [0x81, 0x00]);
        assert_eq!(
            client.negotiated(&res),
            Negotiated {
                protocol: Some("v1.chat".into()),
                extensions: vec!["permessage-deflate".into()],
            }
        );
    }

    #[test]
    fn rejection_round_trips_as_bad_status() {
        let res = reject(&HandshakeError::UnsupportedVersion);
        let mut wire = Vec::new();
        write_response(&res, &mut wire);
        wire.extend_from_slice(res.body().as_bytes());
        let (_, client) = ClientRequest::new("ws://a/".parse().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            head_len(client.parse_response(&wire, MAX_HEAD_SIZE)),
            Err(HandshakeError::BadStatus(426))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(Some((req, used))) = parse_request(&bytes, MAX_HEAD_SIZE) {
                proptest::prop_assert!(used <= bytes.len());
                let _ = validate_request(&req).map(|info| response(&info, None, None));
            }
            let (_, client) = ClientRequest::new("ws://a/".parse().unwrap()).build().unwrap();
            if let Ok(Some((_, used))) = client.parse_response(&bytes, 64) {
                proptest::prop_assert!(used <= 64);
            }
        }

        #[test]
        fn http_like_bytes_never_panic(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..12),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            // Mostly well-formed heads reach the validation code, not just
            // the parser's first error.
            let mut bytes = format!("GET / HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes();
            bytes.extend_from_slice(&tail);
            if let Ok(Some((req, _))) = parse_request(&bytes, MAX_HEAD_SIZE) {
                let _ = validate_request(&req).map_err(|e| reject(&e));
            }
            let mut bytes = format!("HTTP/1.1 101 Switching Protocols\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes();
            bytes.extend_from_slice(&tail);
            let (_, client) = ClientRequest::new("ws://a/".parse().unwrap()).protocol("p").build().unwrap();
            let _ = client.parse_response(&bytes, MAX_HEAD_SIZE);
        }
    }
}
