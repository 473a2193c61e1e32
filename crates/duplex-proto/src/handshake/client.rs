//! The client's side of the opening handshake (RFC 6455 §4.1): build the
//! Upgrade request, then check the server's response against it.
//!
//! [`ClientRequest`] describes what to ask for; [`ClientRequest::build`]
//! turns it into an `http::Request` (serialise it with
//! [`write_request`](super::write_request), or hand it to hyper) and a
//! [`ClientHandshake`] that remembers the key and the offered subprotocols.
//! [`ClientHandshake::parse_response`] reads the answer from raw bytes, or
//! [`ClientHandshake::validate_response`] checks one hyper already parsed;
//! [`ClientHandshake::negotiated`] then says which subprotocol and extensions
//! the server chose. Extension answers are returned raw: the extensions
//! module, which built the offer, is the one that can judge them.
//!
//! [`ClientRequest::build_http2`] is the same handshake over HTTP/2
//! (RFC 8441 §4–5): an extended CONNECT on a stream of an HTTP/2 connection,
//! answered with 200. It carries the same version, subprotocol and extension
//! headers and none of the Upgrade machinery (no key, no `Upgrade`, no
//! `Connection`, no `Host`), so [`ClientHandshake::validate_response`] checks
//! the status and the subprotocol and extension answers exactly as for
//! HTTP/1.1, and [`ClientHandshake::negotiated`] reads them the same way.
//! The `:protocol` pseudo-header is not an `http` header: the HTTP/2 layer
//! sets it to [`CONNECT_PROTOCOL`] (with hyper, the `hyper::ext::Protocol`
//! request extension).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::{
    ACCEPT_NAME, EXTENSIONS_NAME, HOST_NAME, HandshakeError, MAX_HEADERS, PROTOCOL_NAME, VERSION,
    accept_key, generate_key, header_has_token, header_list, is_token, is_valid_key, parse_limited,
    single_header, to_header_map,
};

/// The value of the `:protocol` pseudo-header of an extended CONNECT that
/// opens a WebSocket over HTTP/2 (RFC 8441 §5).
pub const CONNECT_PROTOCOL: &str = "websocket";

/// What to ask the server for: the URI, subprotocols, an extension offer and
/// any extra headers.
///
/// ```
/// # use duplex_proto::handshake::ClientRequest;
/// let (request, handshake) = ClientRequest::new("ws://localhost:8080/chat".parse().unwrap())
///     .protocol("chat")
///     .build()
///     .unwrap();
/// assert_eq!(request.headers()["host"], "localhost:8080");
/// assert_eq!(handshake.protocols(), ["chat"]);
/// ```
///
/// Non-exhaustive, so that a later setting is not a breaking change: start
/// from [`ClientRequest::new`] and set fields or chain the builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientRequest {
    /// Where to connect: `ws://` or `wss://` (RFC 6455 §3), or `http://` /
    /// `https://`, which mean the same. The request line carries its path and
    /// query; `Host` carries its authority.
    pub uri: Uri,
    /// Subprotocols to offer, most preferred first. Each must be an HTTP
    /// token, and none may repeat (RFC 6455 §4.1).
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` offer, as the extensions module wrote
    /// it; `None` or empty offers no extension.
    pub extensions: Option<String>,
    /// Extra headers to send, such as `Origin`, `Authorization` or `Cookie`.
    ///
    /// A `Host` here replaces the one derived from the URI (to reach a
    /// virtual host through an IP address, say). The headers the handshake
    /// sets itself (`Upgrade`, `Connection`, every `Sec-WebSocket-*`) and
    /// those that would give the request a body (`Content-Length`,
    /// `Transfer-Encoding`, after which the server would read our frames as
    /// that body) make [`build`](Self::build) fail with
    /// [`HandshakeError::ReservedHeader`] rather than be silently dropped.
    pub headers: HeaderMap,
}

impl ClientRequest {
    /// A request for `uri` with no subprotocols, extensions or extra headers.
    pub fn new(uri: Uri) -> Self {
        Self {
            uri,
            protocols: Vec::new(),
            extensions: None,
            headers: HeaderMap::new(),
        }
    }

    /// Adds a subprotocol to offer, after those already added.
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.protocols.push(name.into());
        self
    }

    /// Sets the `Sec-WebSocket-Extensions` offer.
    pub fn extensions(mut self, offer: impl Into<String>) -> Self {
        self.extensions = Some(offer.into());
        self
    }

    /// Adds an extra header line; see [`headers`](Self::headers) for which
    /// names are refused.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The Upgrade request, with a fresh random key, and the state needed to
    /// check the response.
    pub fn build(&self) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        self.build_with_key(generate_key())
    }

    /// Like [`build`](Self::build) with a given `Sec-WebSocket-Key`, for
    /// reproducible tests. The key must be base64 of 16 bytes, and outside
    /// tests it must be freshly random for each connection (RFC 6455 §4.1,
    /// §10.3), which is what `build` does.
    pub fn build_with_key(
        &self,
        key: String,
    ) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        if !is_valid_key(&key) {
            return Err(HandshakeError::BadKey);
        }
        let host = host_header(&self.uri)?;
        let extensions = self.checked_offer(is_reserved)?;

        let mut req = Request::new(());
        *req.method_mut() = Method::GET;
        *req.version_mut() = Version::HTTP_11;
        // Origin form, so the request can go to hyper as it is; the
        // authority travels in Host (RFC 9112 §3.2.1).
        *req.uri_mut() =
            Uri::try_from(origin_form(&self.uri)).map_err(|_| HandshakeError::BadRequestTarget)?;

        let headers = req.headers_mut();
        if !self.headers.contains_key(header::HOST) {
            headers.insert(
                header::HOST,
                HeaderValue::try_from(host).map_err(|_| HandshakeError::MissingHost)?,
            );
        }
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).map_err(|_| HandshakeError::BadKey)?,
        );
        let offered_extensions = self.insert_offer(headers, extensions)?;
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }

        let handshake = ClientHandshake {
            form: Form::Http11 {
                accept: accept_key(key.as_bytes()),
                key,
            },
            protocols: self.protocols.clone(),
            offered_extensions,
        };
        Ok((req, handshake))
    }

    /// The extended CONNECT that opens a WebSocket on a stream of an HTTP/2
    /// connection (RFC 8441 §4–5), and the state needed to check the
    /// response.
    ///
    /// - `:method` is CONNECT, and the request's version is HTTP/2.
    /// - The URI is absolute, for the HTTP/2 layer to take `:scheme`,
    ///   `:authority` and `:path` from: `:scheme` is `http` for `ws://` and
    ///   `https` for `wss://` (RFC 8441 §5), `:authority` is what `Host`
    ///   would be over HTTP/1.1 — or a `Host` in [`headers`](Self::headers),
    ///   which HTTP/2 carries there (RFC 9113 §8.3.1) —, `:path` the path
    ///   and query.
    /// - `Sec-WebSocket-Version: 13`, and the subprotocol and extension
    ///   offers as over HTTP/1.1.
    /// - No `Sec-WebSocket-Key`: the `:protocol` pseudo-header supersedes
    ///   the key and accept exchange (RFC 8441 §5). No `Upgrade` or
    ///   `Connection` either, nor any connection-specific header, which
    ///   HTTP/2 forbids (RFC 9113 §8.2.2): those in
    ///   [`headers`](Self::headers) are refused with
    ///   [`HandshakeError::ReservedHeader`].
    ///
    /// The caller sets `:protocol` to [`CONNECT_PROTOCOL`]: it is a
    /// pseudo-header, which `http` types do not carry (hyper takes it as the
    /// `hyper::ext::Protocol` extension). It may send the request only once
    /// the server's SETTINGS enabled extended CONNECT (RFC 8441 §3).
    ///
    /// ```
    /// # use duplex_proto::handshake::ClientRequest;
    /// let (request, _) = ClientRequest::new("wss://example.com/chat".parse().unwrap())
    ///     .build_http2()
    ///     .unwrap();
    /// assert_eq!(request.method(), "CONNECT");
    /// assert_eq!(request.uri(), "https://example.com/chat");
    /// assert!(!request.headers().contains_key("sec-websocket-key"));
    /// ```
    pub fn build_http2(&self) -> Result<(Request<()>, ClientHandshake), HandshakeError> {
        let scheme = self.uri.scheme_str().unwrap_or("");
        let scheme = if scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if scheme.eq_ignore_ascii_case("wss") || scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return Err(HandshakeError::UnsupportedScheme(scheme.to_owned()));
        };
        let authority = match single_header(&self.headers, &header::HOST, HOST_NAME)? {
            Some(host) => std::str::from_utf8(host)
                .map_err(|_| HandshakeError::BadHeaderValue(HOST_NAME))?
                .to_owned(),
            None => host_header(&self.uri)?,
        };
        let extensions = self.checked_offer(is_reserved_http2)?;

        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.version_mut() = Version::HTTP_2;
        *req.uri_mut() = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(origin_form(&self.uri))
            .build()
            .map_err(|_| HandshakeError::BadRequestTarget)?;

        let headers = req.headers_mut();
        let offered_extensions = self.insert_offer(headers, extensions)?;
        for (name, value) in &self.headers {
            if name != header::HOST {
                headers.append(name, value.clone());
            }
        }

        let handshake = ClientHandshake {
            form: Form::Http2,
            protocols: self.protocols.clone(),
            offered_extensions,
        };
        Ok((req, handshake))
    }

    /// Checks what both forms send: subprotocol names, the extension offer
    /// (returned as a header value, `None` if empty) and that no extra
    /// header is one `reserved` refuses.
    fn checked_offer(
        &self,
        reserved: fn(&HeaderName) -> bool,
    ) -> Result<Option<HeaderValue>, HandshakeError> {
        for (i, name) in self.protocols.iter().enumerate() {
            // RFC 6455 §4.1: tokens, "all unique strings".
            if !is_token(name) || self.protocols[..i].contains(name) {
                return Err(HandshakeError::InvalidProtocol(name.clone()));
            }
        }
        let extensions = match self.extensions.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(offer) => Some(
                HeaderValue::from_str(offer)
                    .map_err(|_| HandshakeError::BadHeaderValue(EXTENSIONS_NAME))?,
            ),
        };
        if let Some(name) = self.headers.keys().find(|name| reserved(name)) {
            return Err(HandshakeError::ReservedHeader(name.as_str().to_owned()));
        }
        Ok(extensions)
    }

    /// Inserts the headers both forms share: the version, the subprotocols
    /// offered, the extension offer. Returns whether extensions were
    /// offered.
    fn insert_offer(
        &self,
        headers: &mut HeaderMap,
        extensions: Option<HeaderValue>,
    ) -> Result<bool, HandshakeError> {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(VERSION),
        );
        if !self.protocols.is_empty() {
            let list = self.protocols.join(", ");
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::try_from(list)
                    .map_err(|_| HandshakeError::BadHeaderValue(PROTOCOL_NAME))?,
            );
        }
        let offered = extensions.is_some();
        if let Some(extensions) = extensions {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        Ok(offered)
    }
}

/// The path and query of `uri`, `/` if it has no path (RFC 9112 §3.2.1's
/// origin form; RFC 8441 §5's `:path`).
fn origin_form(uri: &Uri) -> String {
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// The `Host` value for `uri`: its host, plus the port unless it is the
/// scheme's default (RFC 6455 §4.1 item 4; RFC 9110 §7.2). User information
/// (`user:pass@`) is never sent there.
fn host_header(uri: &Uri) -> Result<String, HandshakeError> {
    let scheme = uri.scheme_str().unwrap_or("");
    let default_port = if scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("wss") || scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return Err(HandshakeError::UnsupportedScheme(scheme.to_owned()));
    };
    let authority = uri.authority().ok_or(HandshakeError::MissingHost)?;
    let host = authority.host();
    if host.is_empty() {
        return Err(HandshakeError::MissingHost);
    }
    Ok(match authority.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    })
}

/// Whether a user may not set header `name`; see [`ClientRequest::headers`].
fn is_reserved(name: &HeaderName) -> bool {
    name == header::UPGRADE
        || name == header::CONNECTION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name.as_str().starts_with("sec-websocket-")
}

/// Whether a user may not set header `name` on an extended CONNECT: those
/// refused over HTTP/1.1, and the connection-specific headers HTTP/2 forbids
/// (RFC 9113 §8.2.2; `TE` may only say `trailers`, which a CONNECT has no
/// use for).
fn is_reserved_http2(name: &HeaderName) -> bool {
    is_reserved(name)
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// What the client remembers between sending the request and reading the
/// response: which form of the handshake it sent and what was offered.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    form: Form,
    protocols: Vec<String>,
    offered_extensions: bool,
}

/// The two forms of the client's handshake.
#[derive(Debug, Clone)]
enum Form {
    /// The Upgrade request of RFC 6455 §4.1, with its key and the accept
    /// value it implies.
    Http11 { key: String, accept: String },
    /// The extended CONNECT of RFC 8441 §5: no key, no accept.
    Http2,
}

/// What the server chose, read from a response that passed
/// [`ClientHandshake::validate_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol the server chose, if any; always one that was offered.
    pub protocol: Option<String>,
    /// The raw `Sec-WebSocket-Extensions` values, one per header line, for
    /// the extensions module to check against the offer and apply.
    pub extensions: Vec<String>,
}

impl ClientHandshake {
    /// The `Sec-WebSocket-Key` sent; `None` for the HTTP/2 form, which
    /// sends none (RFC 8441 §5).
    pub fn key(&self) -> Option<&str> {
        match &self.form {
            Form::Http11 { key, .. } => Some(key),
            Form::Http2 => None,
        }
    }

    /// The `Sec-WebSocket-Accept` the server must answer with; `None` for
    /// the HTTP/2 form.
    pub fn expected_accept(&self) -> Option<&str> {
        match &self.form {
            Form::Http11 { accept, .. } => Some(accept),
            Form::Http2 => None,
        }
    }

    /// Whether this is the HTTP/2 form ([`ClientRequest::build_http2`]).
    pub fn is_http2(&self) -> bool {
        matches!(self.form, Form::Http2)
    }

    /// The subprotocols offered, in order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Parses and validates the server's response head from the start of
    /// `buf`.
    ///
    /// `Ok(None)` while the head is incomplete: read more and call again with
    /// the whole buffer. On success returns the response and the length of
    /// its head; bytes after it are the server's first frames and belong to
    /// the connection. At most `max_head` bytes are examined, as in
    /// [`parse_request`](super::server::parse_request). The checks are those of
    /// [`validate_response`](Self::validate_response).
    pub fn parse_response(
        &self,
        buf: &[u8],
        max_head: usize,
    ) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
        let parsed = parse_limited(buf, max_head, |window| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(len) = parsed.parse(window)? else {
                return Ok(None);
            };
            // httparse fills both once the head is complete.
            let (Some(code), Some(version)) = (parsed.code, parsed.version) else {
                return Err(HandshakeError::Http(httparse::Error::Status));
            };
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::from_u16(code)
                .map_err(|_| HandshakeError::Http(httparse::Error::Status))?;
            *res.version_mut() = match version {
                0 => Version::HTTP_10,
                _ => Version::HTTP_11,
            };
            *res.headers_mut() = to_header_map(parsed.headers)?;
            Ok(Some((res, len)))
        })?;
        if let Some((res, _)) = &parsed {
            self.validate_response(res)?;
        }
        Ok(parsed)
    }

    /// Checks the server's response against the request (RFC 6455 §4.1,
    /// the client's checks, in order): status 101; HTTP/1.1; `Upgrade`
    /// exactly `websocket` (any case); `Connection` containing `Upgrade`;
    /// exactly one `Sec-WebSocket-Accept`, equal to the expected value; at
    /// most one subprotocol, and only one that was offered; no extensions
    /// unless some were offered.
    ///
    /// For the HTTP/2 form the status must be 200 (RFC 8441 §5) and there
    /// is no `Upgrade`, `Connection` or accept to check (a
    /// `Sec-WebSocket-Accept` is ignored: nothing was asked that it could
    /// answer); the subprotocol and extension checks are the same.
    ///
    /// Generic over the body so that a hyper client can pass its response.
    pub fn validate_response<B>(&self, res: &Response<B>) -> Result<(), HandshakeError> {
        let expected_accept = match &self.form {
            Form::Http11 { accept, .. } => accept,
            Form::Http2 => {
                if res.status() != StatusCode::OK {
                    return Err(HandshakeError::ConnectStatus(res.status().as_u16()));
                }
                return self.validate_negotiation(res.headers());
            }
        };
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::BadStatus(res.status().as_u16()));
        }
        // RFC 9110 §15.2: 1xx responses do not exist in HTTP/1.0.
        if res.version() < Version::HTTP_11 {
            return Err(HandshakeError::HttpVersion);
        }
        let headers = res.headers();
        // §4.1: the value must match "websocket"; unlike a request's, a
        // response's Upgrade names the one protocol switched to.
        let mut upgrade = header_list(headers, &header::UPGRADE);
        let is_websocket = upgrade
            .next()
            .is_some_and(|item| item.eq_ignore_ascii_case(b"websocket"));
        if !is_websocket || upgrade.next().is_some() {
            return Err(HandshakeError::BadUpgrade);
        }
        if !header_has_token(headers, &header::CONNECTION, "upgrade") {
            return Err(HandshakeError::BadConnection);
        }
        match single_header(headers, &header::SEC_WEBSOCKET_ACCEPT, ACCEPT_NAME)? {
            None => return Err(HandshakeError::MissingHeader(ACCEPT_NAME)),
            Some(accept) if accept != expected_accept.as_bytes() => {
                return Err(HandshakeError::BadAccept);
            }
            Some(_) => {}
        }
        self.validate_negotiation(headers)
    }

    /// The checks both forms share: at most one subprotocol, and only one
    /// that was offered; no extensions unless some were offered
    /// (RFC 6455 §4.1).
    fn validate_negotiation(&self, headers: &HeaderMap) -> Result<(), HandshakeError> {
        let mut chosen = header_list(headers, &header::SEC_WEBSOCKET_PROTOCOL);
        if let Some(protocol) = chosen.next() {
            if chosen.next().is_some() {
                return Err(HandshakeError::MultipleProtocols);
            }
            // Exact comparison, as in `select_protocol` (RFC 6455 §11.5).
            if !self.protocols.iter().any(|p| p.as_bytes() == protocol) {
                return Err(HandshakeError::UnexpectedProtocol(
                    String::from_utf8_lossy(protocol).into_owned(),
                ));
            }
        }
        if !self.offered_extensions {
            let answer: Vec<_> = header_list(headers, &header::SEC_WEBSOCKET_EXTENSIONS)
                .map(String::from_utf8_lossy)
                .collect();
            if !answer.is_empty() {
                return Err(HandshakeError::UnexpectedExtensions(answer.join(", ")));
            }
        }
        Ok(())
    }

    /// The subprotocol and raw extension answer of a response that passed
    /// [`parse_response`](Self::parse_response) or
    /// [`validate_response`](Self::validate_response).
    ///
    /// Values that are not visible ASCII (which validation would have
    /// refused for a subprotocol) are left out.
    pub fn negotiated<B>(&self, res: &Response<B>) -> Negotiated {
        let headers = res.headers();
        let protocol = header_list(headers, &header::SEC_WEBSOCKET_PROTOCOL)
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_owned);
        let extensions = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .collect();
        Negotiated {
            protocol,
            extensions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_HEAD_SIZE, head_len, write_request};
    use super::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The response of RFC 6455 §1.2.
    const RFC_RESPONSE: &str = "HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: chat\r\n\r\n";

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn rfc_handshake() -> ClientHandshake {
        ClientRequest::new(uri("ws://server.example.com/chat"))
            .protocol("chat")
            .protocol("superchat")
            .build_with_key(RFC_KEY.into())
            .unwrap()
            .1
    }

    /// RFC_RESPONSE with one header line replaced (or removed, if `with` is empty).
    fn check(line: &str, with: &str) -> Result<(), HandshakeError> {
        let text = RFC_RESPONSE.replace(&format!("{line}\r\n"), with);
        rfc_handshake()
            .parse_response(text.as_bytes(), MAX_HEAD_SIZE)
            .map(|parsed| assert!(parsed.is_some()))
    }

    #[test]
    fn builds_rfc_request() {
        let (req, hs) = ClientRequest::new(uri("ws://server.example.com/chat"))
            .protocol("chat")
            .protocol("superchat")
            .header(
                header::ORIGIN,
                HeaderValue::from_static("http://example.com"),
            )
            .build_with_key(RFC_KEY.into())
            .unwrap();
        let mut out = Vec::new();
        write_request(&req, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Origin: http://example.com\r\n\r\n"
        );
        assert_eq!(hs.key(), Some(RFC_KEY));
        assert_eq!(hs.expected_accept(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(!hs.is_http2());
        assert_eq!(hs.protocols(), ["chat", "superchat"]);
    }

    #[test]
    fn fresh_key_each_build() {
        let request = ClientRequest::new(uri("ws://a/"));
        let (a, _) = request.build().unwrap();
        let (b, _) = request.build().unwrap();
        assert_ne!(
            a.headers()["sec-websocket-key"],
            b.headers()["sec-websocket-key"]
        );
        assert_eq!(
            request.build_with_key("short".into()).unwrap_err(),
            HandshakeError::BadKey
        );
    }

    #[test]
    fn host_omits_default_port() {
        let host = |s: &str| {
            let (req, _) = ClientRequest::new(uri(s)).build().unwrap();
            req.headers()["host"].to_str().unwrap().to_owned()
        };
        assert_eq!(host("ws://example.com:80/"), "example.com");
        assert_eq!(host("wss://example.com:443/"), "example.com");
        assert_eq!(host("ws://example.com:443/"), "example.com:443");
        assert_eq!(host("wss://example.com:80/"), "example.com:80");
        assert_eq!(host("http://localhost:8080"), "localhost:8080");
        assert_eq!(host("HTTPS://example.com"), "example.com");
        assert_eq!(host("ws://[::1]:9001/"), "[::1]:9001");
        assert_eq!(host("ws://user:secret@example.com/"), "example.com");
    }

    #[test]
    fn request_target_is_origin_form() {
        let target = |s: &str| {
            ClientRequest::new(uri(s))
                .build()
                .unwrap()
                .0
                .uri()
                .to_string()
        };
        assert_eq!(target("ws://example.com"), "/");
        assert_eq!(target("ws://example.com/a/b?x=1&y"), "/a/b?x=1&y");
        assert_eq!(target("ws://example.com?x=1"), "/?x=1");
    }

    #[test]
    fn scheme_and_host_required() {
        assert_eq!(
            ClientRequest::new(uri("ftp://example.com/"))
                .build()
                .unwrap_err(),
            HandshakeError::UnsupportedScheme("ftp".into())
        );
        assert_eq!(
            ClientRequest::new(uri("/chat")).build().unwrap_err(),
            HandshakeError::UnsupportedScheme(String::new())
        );
    }

    #[test]
    fn protocols_must_be_unique_tokens() {
        let build = |p: &[&str]| {
            let mut request = ClientRequest::new(uri("ws://a/"));
            request.protocols = p.iter().map(|s| s.to_string()).collect();
            request.build().map(|(req, _)| req)
        };
        assert!(
            !build(&[])
                .unwrap()
                .headers()
                .contains_key("sec-websocket-protocol")
        );
        assert_eq!(
            build(&["chat", "with space"]).unwrap_err(),
            HandshakeError::InvalidProtocol("with space".into())
        );
        assert_eq!(
            build(&[""]).unwrap_err(),
            HandshakeError::InvalidProtocol("".into())
        );
        assert_eq!(
            build(&["chat", "chat"]).unwrap_err(),
            HandshakeError::InvalidProtocol("chat".into())
        );
    }

    #[test]
    fn extension_offer_sent_verbatim() {
        let request = ClientRequest::new(uri("ws://a/"));
        let (req, _) = request
            .clone()
            .extensions("permessage-deflate; client_max_window_bits")
            .build()
            .unwrap();
        assert_eq!(
            req.headers()["sec-websocket-extensions"],
            "permessage-deflate; client_max_window_bits"
        );
        let (req, _) = request.clone().extensions("  ").build().unwrap();
        assert!(!req.headers().contains_key("sec-websocket-extensions"));
        assert_eq!(
            request.extensions("bad\nvalue").build().unwrap_err(),
            HandshakeError::BadHeaderValue("Sec-WebSocket-Extensions")
        );
    }

    #[test]
    fn handshake_headers_cannot_be_overridden() {
        for name in [
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
            "content-length",
        ] {
            let err = ClientRequest::new(uri("ws://a/"))
                .header(HeaderName::from_static(name), HeaderValue::from_static("x"))
                .build()
                .unwrap_err();
            assert_eq!(err, HandshakeError::ReservedHeader(name.into()));
        }
        // Host may be replaced, and is then sent once.
        let (req, _) = ClientRequest::new(uri("ws://10.0.0.1/"))
            .header(header::HOST, HeaderValue::from_static("chat.example.com"))
            .build()
            .unwrap();
        assert_eq!(req.headers().get_all("host").iter().count(), 1);
        assert_eq!(req.headers()["host"], "chat.example.com");
    }

    #[test]
    fn accepts_rfc_response() {
        let hs = rfc_handshake();
        let (res, len) = hs
            .parse_response(RFC_RESPONSE.as_bytes(), MAX_HEAD_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(len, RFC_RESPONSE.len());
        assert_eq!(
            hs.negotiated(&res),
            Negotiated {
                protocol: Some("chat".into()),
                extensions: vec![]
            }
        );
    }

    #[test]
    fn trailing_frame_bytes_are_not_consumed() {
        let mut buf = RFC_RESPONSE.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        let (_, len) = rfc_handshake()
            .parse_response(&buf, MAX_HEAD_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(&buf[len..], [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }

    #[test]
    fn incomplete_until_the_last_byte() {
        let hs = rfc_handshake();
        let bytes = RFC_RESPONSE.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                head_len(hs.parse_response(&bytes[..end], MAX_HEAD_SIZE)),
                Ok(None),
                "at {end}"
            );
        }
        assert!(hs.parse_response(bytes, MAX_HEAD_SIZE).unwrap().is_some());
    }

    #[test]
    fn oversized_response_is_rejected() {
        let big = format!("HTTP/1.1 101 Switching Protocols\r\nX: {}", "a".repeat(200));
        assert_eq!(
            head_len(rfc_handshake().parse_response(big.as_bytes(), 128)),
            Err(HandshakeError::HeadersTooLarge(128))
        );
    }

    #[test]
    fn status_must_be_101() {
        for (status, code) in [
            ("200 OK", 200),
            ("403 Forbidden", 403),
            ("426 Upgrade Required", 426),
        ] {
            let text = RFC_RESPONSE.replace("101 Switching Protocols", status);
            assert_eq!(
                head_len(rfc_handshake().parse_response(text.as_bytes(), MAX_HEAD_SIZE)),
                Err(HandshakeError::BadStatus(code))
            );
        }
        let text = RFC_RESPONSE.replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(
            head_len(rfc_handshake().parse_response(text.as_bytes(), MAX_HEAD_SIZE)),
            Err(HandshakeError::HttpVersion)
        );
    }

    #[test]
    fn accept_must_match() {
        let line = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(
            check(
                line,
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOp=\r\n"
            ),
            Err(HandshakeError::BadAccept)
        );
        assert_eq!(
            check(line, ""),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Accept"))
        );
        assert_eq!(
            check(line, &format!("{line}\r\n{line}\r\n")),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Accept"))
        );
    }

    #[test]
    fn upgrade_and_connection_checked() {
        assert_eq!(
            check("Upgrade: websocket", "Upgrade: WEBSOCKET\r\n"),
            Ok(())
        );
        assert_eq!(
            check("Upgrade: websocket", "Upgrade: h2c\r\n"),
            Err(HandshakeError::BadUpgrade)
        );
        assert_eq!(
            check("Upgrade: websocket", "Upgrade: websocket, h2c\r\n"),
            Err(HandshakeError::BadUpgrade)
        );
        assert_eq!(
            check("Upgrade: websocket", ""),
            Err(HandshakeError::BadUpgrade)
        );
        assert_eq!(
            check("Connection: Upgrade", "Connection: keep-alive, upgrade\r\n"),
            Ok(())
        );
        assert_eq!(
            check("Connection: Upgrade", ""),
            Err(HandshakeError::BadConnection)
        );
    }

    #[test]
    fn protocol_must_be_one_offered() {
        let line = "Sec-WebSocket-Protocol: chat";
        assert_eq!(check(line, ""), Ok(()));
        assert_eq!(check(line, "Sec-WebSocket-Protocol: superchat\r\n"), Ok(()));
        assert_eq!(
            check(line, "Sec-WebSocket-Protocol: mqtt\r\n"),
            Err(HandshakeError::UnexpectedProtocol("mqtt".into()))
        );
        assert_eq!(
            check(line, "Sec-WebSocket-Protocol: Chat\r\n"),
            Err(HandshakeError::UnexpectedProtocol("Chat".into()))
        );
        assert_eq!(
            check(line, "Sec-WebSocket-Protocol: chat, superchat\r\n"),
            Err(HandshakeError::MultipleProtocols)
        );
        assert_eq!(
            check(
                line,
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"
            ),
            Err(HandshakeError::MultipleProtocols)
        );
        // Nothing offered: any choice is unexpected.
        let (_, hs) = ClientRequest::new(uri("ws://a/"))
            .build_with_key(RFC_KEY.into())
            .unwrap();
        assert_eq!(
            head_len(hs.parse_response(RFC_RESPONSE.as_bytes(), MAX_HEAD_SIZE)),
            Err(HandshakeError::UnexpectedProtocol("chat".into()))
        );
    }

    #[test]
    fn extensions_only_if_offered() {
        let with = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        assert_eq!(
            check("Sec-WebSocket-Protocol: chat", with),
            Err(HandshakeError::UnexpectedExtensions(
                "permessage-deflate".into()
            ))
        );
        let (_, hs) = ClientRequest::new(uri("ws://a/"))
            .extensions("permessage-deflate")
            .build_with_key(RFC_KEY.into())
            .unwrap();
        let text = RFC_RESPONSE.replace("Sec-WebSocket-Protocol: chat\r\n", with);
        let (res, _) = hs
            .parse_response(text.as_bytes(), MAX_HEAD_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(
            hs.negotiated(&res),
            Negotiated {
                protocol: None,
                extensions: vec!["permessage-deflate".into()]
            }
        );
    }

    #[test]
    fn validate_accepts_any_body_type() {
        let res = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(String::new())
            .unwrap();
        assert_eq!(rfc_handshake().validate_response(&res), Ok(()));
    }

    // ------------------------------------------------ HTTP/2 (RFC 8441)

    fn h2_request(uri_text: &str) -> ClientRequest {
        ClientRequest::new(uri(uri_text))
    }

    fn h2_response(status: u16) -> http::response::Builder {
        Response::builder().status(status).version(Version::HTTP_2)
    }

    #[test]
    fn http2_request_is_the_rfc_8441_example() {
        // RFC 8441 §5.1.
        let (req, hs) = h2_request("wss://server.example.com/chat")
            .protocol("chat")
            .protocol("superchat")
            .header(
                header::ORIGIN,
                HeaderValue::from_static("http://www.example.com"),
            )
            .build_http2()
            .unwrap();
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri().scheme_str(), Some("https"));
        assert_eq!(req.uri().authority().unwrap(), "server.example.com");
        assert_eq!(req.uri().path_and_query().unwrap(), "/chat");
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "chat, superchat"),
                ("origin", "http://www.example.com"),
            ]
        );
        assert!(hs.is_http2());
        assert_eq!(hs.key(), None);
        assert_eq!(hs.expected_accept(), None);
        assert_eq!(hs.protocols(), ["chat", "superchat"]);
        assert_eq!(CONNECT_PROTOCOL, "websocket");
    }

    #[test]
    fn http2_scheme_follows_the_websocket_scheme() {
        // RFC 8441 §5: "https" for wss URIs and "http" for ws URIs.
        let scheme = |s: &str| {
            let (req, _) = h2_request(s).build_http2().unwrap();
            req.uri().scheme_str().unwrap().to_owned()
        };
        assert_eq!(scheme("ws://a/"), "http");
        assert_eq!(scheme("WS://a/"), "http");
        assert_eq!(scheme("http://a/"), "http");
        assert_eq!(scheme("wss://a/"), "https");
        assert_eq!(scheme("https://a/"), "https");
        assert_eq!(
            h2_request("ftp://a/").build_http2().unwrap_err(),
            HandshakeError::UnsupportedScheme("ftp".into())
        );
        assert_eq!(
            h2_request("/chat").build_http2().unwrap_err(),
            HandshakeError::UnsupportedScheme(String::new())
        );
    }

    #[test]
    fn http2_authority_and_path() {
        let parts = |s: &str| {
            let (req, _) = h2_request(s).build_http2().unwrap();
            (
                req.uri().authority().unwrap().to_string(),
                req.uri().path_and_query().unwrap().to_string(),
            )
        };
        // As Host over HTTP/1.1: default ports left out, no user information.
        assert_eq!(
            parts("wss://example.com:443"),
            ("example.com".into(), "/".into())
        );
        assert_eq!(
            parts("ws://example.com:8080/a/b?x=1&y"),
            ("example.com:8080".into(), "/a/b?x=1&y".into())
        );
        assert_eq!(
            parts("wss://user:secret@[::1]:9001?x=1"),
            ("[::1]:9001".into(), "/?x=1".into())
        );
        // A Host header becomes the authority, and is not sent as a header
        // (RFC 9113 §8.3.1).
        let (req, _) = h2_request("wss://127.0.0.1:8443/")
            .header(header::HOST, HeaderValue::from_static("chat.example.com"))
            .build_http2()
            .unwrap();
        assert_eq!(req.uri().authority().unwrap(), "chat.example.com");
        assert!(!req.headers().contains_key(header::HOST));
        assert_eq!(
            h2_request("wss://a/")
                .header(header::HOST, HeaderValue::from_static("a"))
                .header(header::HOST, HeaderValue::from_static("b"))
                .build_http2()
                .unwrap_err(),
            HandshakeError::DuplicateHeader("Host")
        );
    }

    #[test]
    fn http2_request_has_no_upgrade_machinery() {
        let (req, _) = h2_request("ws://a/")
            .extensions("permessage-deflate")
            .build_http2()
            .unwrap();
        for name in ["sec-websocket-key", "upgrade", "connection", "host"] {
            assert!(!req.headers().contains_key(name), "{name}");
        }
        assert_eq!(
            req.headers()["sec-websocket-extensions"],
            "permessage-deflate"
        );
        // Nor may a user add it back, or any connection-specific header.
        for name in [
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
            "content-length",
            "transfer-encoding",
            "te",
            "keep-alive",
            "proxy-connection",
        ] {
            let err = h2_request("ws://a/")
                .header(HeaderName::from_static(name), HeaderValue::from_static("x"))
                .build_http2()
                .unwrap_err();
            assert_eq!(err, HandshakeError::ReservedHeader(name.into()), "{name}");
        }
        // TE and Keep-Alive stay allowed over HTTP/1.1.
        assert!(
            h2_request("ws://a/")
                .header(header::TE, HeaderValue::from_static("trailers"))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn http2_offers_are_checked_as_over_http11() {
        let mut request = h2_request("ws://a/");
        request.protocols = vec!["chat".into(), "chat".into()];
        assert_eq!(
            request.build_http2().unwrap_err(),
            HandshakeError::InvalidProtocol("chat".into())
        );
        assert_eq!(
            h2_request("ws://a/")
                .extensions("bad\nvalue")
                .build_http2()
                .unwrap_err(),
            HandshakeError::BadHeaderValue("Sec-WebSocket-Extensions")
        );
    }

    #[test]
    fn http2_status_must_be_200() {
        let (_, hs) = h2_request("wss://a/").build_http2().unwrap();
        let ok = h2_response(200).body(()).unwrap();
        assert_eq!(hs.validate_response(&ok), Ok(()));
        for code in [101, 204, 400, 403, 404, 501] {
            let res = h2_response(code).body(()).unwrap();
            assert_eq!(
                hs.validate_response(&res),
                Err(HandshakeError::ConnectStatus(code)),
                "{code}"
            );
        }
        assert_eq!(
            HandshakeError::ConnectStatus(403).to_string(),
            "the server answered the extended CONNECT with status 403, not 200"
        );
        // And the HTTP/1.1 form still wants 101, not 200.
        let res = Response::builder().status(200).body(()).unwrap();
        assert_eq!(
            rfc_handshake().validate_response(&res),
            Err(HandshakeError::BadStatus(200))
        );
    }

    #[test]
    fn http2_needs_no_accept_upgrade_or_connection() {
        let (_, hs) = h2_request("wss://a/").build_http2().unwrap();
        // A stray accept answers nothing that was asked: ignored.
        let res = h2_response(200)
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        assert_eq!(hs.validate_response(&res), Ok(()));
    }

    #[test]
    fn http2_subprotocol_and_extensions_checked_as_over_http11() {
        let (_, hs) = h2_request("wss://a/")
            .protocol("chat")
            .protocol("superchat")
            .build_http2()
            .unwrap();
        let answer = |name: &str, value: &str| {
            let res = h2_response(200).header(name, value).body(()).unwrap();
            hs.validate_response(&res).map(|()| hs.negotiated(&res))
        };
        assert_eq!(
            answer("sec-websocket-protocol", "superchat"),
            Ok(Negotiated {
                protocol: Some("superchat".into()),
                extensions: vec![]
            })
        );
        assert_eq!(
            answer("sec-websocket-protocol", "mqtt"),
            Err(HandshakeError::UnexpectedProtocol("mqtt".into()))
        );
        assert_eq!(
            answer("sec-websocket-protocol", "chat, superchat"),
            Err(HandshakeError::MultipleProtocols)
        );
        assert_eq!(
            answer("sec-websocket-extensions", "permessage-deflate"),
            Err(HandshakeError::UnexpectedExtensions(
                "permessage-deflate".into()
            ))
        );
        let (_, hs) = h2_request("wss://a/")
            .extensions("permessage-deflate; client_max_window_bits")
            .build_http2()
            .unwrap();
        let res = h2_response(200)
            .header("sec-websocket-extensions", "permessage-deflate")
            .body(())
            .unwrap();
        assert_eq!(hs.validate_response(&res), Ok(()));
        assert_eq!(
            hs.negotiated(&res),
            Negotiated {
                protocol: None,
                extensions: vec!["permessage-deflate".into()]
            }
        );
    }
}
