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

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::{
    ACCEPT_NAME, EXTENSIONS_NAME, HandshakeError, MAX_HEADERS, PROTOCOL_NAME, VERSION, accept_key,
    generate_key, header_has_token, header_list, is_token, is_valid_key, parse_limited,
    single_header, to_header_map,
};

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
        if let Some(name) = self.headers.keys().find(|name| is_reserved(name)) {
            return Err(HandshakeError::ReservedHeader(name.as_str().to_owned()));
        }

        let mut req = Request::new(());
        *req.method_mut() = Method::GET;
        *req.version_mut() = Version::HTTP_11;
        // Origin form, so the request can go to hyper as it is; the
        // authority travels in Host (RFC 9112 §3.2.1).
        let path = match self.uri.path() {
            "" => "/",
            path => path,
        };
        let target = match self.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        *req.uri_mut() = Uri::try_from(target).map_err(|_| HandshakeError::BadRequestTarget)?;

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
        let offered_extensions = extensions.is_some();
        if let Some(extensions) = extensions {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }

        let handshake = ClientHandshake {
            accept: accept_key(key.as_bytes()),
            key,
            protocols: self.protocols.clone(),
            offered_extensions,
        };
        Ok((req, handshake))
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

/// What the client remembers between sending the request and reading the
/// response: the key, the accept value it implies, and what was offered.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
    accept: String,
    protocols: Vec<String>,
    offered_extensions: bool,
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
    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `Sec-WebSocket-Accept` the server must answer with.
    pub fn expected_accept(&self) -> &str {
        &self.accept
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
    /// Generic over the body so that a hyper client can pass its response.
    pub fn validate_response<B>(&self, res: &Response<B>) -> Result<(), HandshakeError> {
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
            Some(accept) if accept != self.accept.as_bytes() => {
                return Err(HandshakeError::BadAccept);
            }
            Some(_) => {}
        }
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
        assert_eq!(hs.key(), RFC_KEY);
        assert_eq!(hs.expected_accept(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
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
}
