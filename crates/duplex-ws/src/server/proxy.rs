//! Behind a load balancer: which peers are trusted to say who their clients
//! are, and how they say it.
//!
//! A connection from a trusted proxy ([`Server::trusted_proxies`]) either
//! opens with a PROXY protocol header (HAProxy's v1 text or v2 binary form;
//! [`Server::proxy_protocol`]), read before TLS and HTTP, or names its
//! client in each request's `X-Forwarded-For`. The client's address then
//! takes the proxy's place everywhere: the per-address limits, the logs, and
//! [`ConnectionInfo::peer_addr`](super::ConnectionInfo::peer_addr); the
//! proxy's own is [`ConnectionInfo::proxy_addr`](super::ConnectionInfo::proxy_addr).
//!
//! Only the networks the operator names are trusted: anyone else's
//! `X-Forwarded-For` is ignored, and a PROXY header is never looked for on
//! their connections. In `X-Forwarded-For` the client is the rightmost
//! address that is not a trusted proxy: each proxy appends the address it
//! saw, so everything left of that the client could have written itself.
//!
//! [`Server::trusted_proxies`]: super::Server::trusted_proxies
//! [`Server::proxy_protocol`]: super::Server::proxy_protocol

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
pub use ipnet::IpNet;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The proxies a server trusts.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

/// Why a trusted proxy's word was not taken; the connection or request is
/// refused (closed, or 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ProxyError {
    #[error("X-Forwarded-For names something that is not an address: {0:?}")]
    BadForwardedFor(String),
    #[error("the connection does not open with a PROXY protocol header")]
    NoProxyHeader,
    #[error("the PROXY protocol header is malformed: {0}")]
    BadProxyHeader(String),
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// The signature that opens a v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (the spec's own bound).
const V1_MAX: usize = 107;

/// The most a v2 header may carry after its 16 fixed bytes: addresses and
/// TLVs (a cloud load balancer's few dozen bytes of them fit many times
/// over). Longer is refused rather than buffered.
const V2_MAX_PAYLOAD: usize = 4096;

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets: nets.into() }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client a trusted proxy's request names in `X-Forwarded-For`:
    /// the rightmost address that is not a trusted proxy (or, when all are,
    /// the leftmost); `None` when there is no such header (the proxy's own
    /// request, a health check).
    pub(crate) fn forwarded_for(&self, headers: &HeaderMap) -> Result<Option<IpAddr>, ProxyError> {
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let value = value
                .to_str()
                .map_err(|_| ProxyError::BadForwardedFor("(not ASCII)".into()))?;
            entries.extend(value.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        let mut client = None;
        for entry in entries.iter().rev() {
            let ip = parse_forwarded(entry)
                .ok_or_else(|| ProxyError::BadForwardedFor((*entry).to_owned()))?;
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        Ok(client)
    }
}

/// One `X-Forwarded-For` entry: an address, with a port or without
/// (`192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

/// Reads the PROXY protocol header a trusted proxy's connection opens
/// with, and nothing past it: the client's address, or `None` when the
/// proxy speaks for itself (v1 `UNKNOWN`, v2 `LOCAL`: its health checks).
pub(crate) async fn read_proxy_header(
    stream: &mut TcpStream,
) -> Result<Option<SocketAddr>, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Io(e.to_string());
    // v1's shortest header, "PROXY UNKNOWN\r\n", is longer than v2's
    // signature: 12 bytes are there in either case.
    let mut head = vec![0u8; V2_SIGNATURE.len()];
    stream.read_exact(&mut head).await.map_err(io)?;
    if head == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await.map_err(io)?;
        head.extend_from_slice(&rest);
        let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if length > V2_MAX_PAYLOAD {
            return Err(ProxyError::BadProxyHeader(format!(
                "{length} bytes of addresses and TLVs, more than {V2_MAX_PAYLOAD}"
            )));
        }
        head.resize(16 + length, 0);
        stream.read_exact(&mut head[16..]).await.map_err(io)?;
        return v2_address(&head);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyError::NoProxyHeader);
    }
    // Up to the CRLF, and not a byte further: what follows is the TLS or
    // HTTP that hyper reads. What has arrived is looked at without taking
    // it, and only the header's part is taken: one read, not one a byte.
    let mut more = [0u8; V1_MAX];
    while !head.ends_with(b"\r\n") {
        let room = V1_MAX - head.len();
        if room == 0 {
            return Err(ProxyError::BadProxyHeader(format!(
                "no CRLF in its first {V1_MAX} bytes"
            )));
        }
        let seen = stream.peek(&mut more[..room]).await.map_err(io)?;
        if seen == 0 {
            return Err(ProxyError::Io("closed inside the PROXY header".into()));
        }
        // The CRLF may begin on the last byte already taken.
        let take = if head.ends_with(b"\r") && more[0] == b'\n' {
            1
        } else {
            more[..seen]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(seen, |at| at + 2)
        };
        stream.read_exact(&mut more[..take]).await.map_err(io)?;
        head.extend_from_slice(&more[..take]);
    }
    v1_address(&head)
}

fn v1_address(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v1::{Addresses, Header};
    let header =
        Header::try_from(header).map_err(|e| ProxyError::BadProxyHeader(format!("v1: {e}")))?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(
            IpAddr::V6(a.source_address).to_canonical(),
            a.source_port,
        )),
        Addresses::Unknown => None,
    })
}

fn v2_address(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v2::{Addresses, Command, Header};
    let header =
        Header::try_from(header).map_err(|e| ProxyError::BadProxyHeader(format!("v2: {e}")))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(
            IpAddr::V6(a.source_address).to_canonical(),
            a.source_port,
        )),
        // A client on a UNIX socket or of no stated family: the proxy's
        // own address stands for it.
        Addresses::Unix(_) | Addresses::Unspecified => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_named_networks_are_trusted() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(p.trusts(ip("10.1.2.3")));
        assert!(
            p.trusts(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(p.trusts(ip("2001:db8::7")));
        assert!(!p.trusts(ip("192.0.2.1")));
        assert!(!TrustedProxies::default().trusts(ip("127.0.0.1")));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let p = proxies(&["10.0.0.0/8"]);
        // What the client wrote itself (the first entry) is not believed.
        assert_eq!(
            p.forwarded_for(&xff(&["6.6.6.6, 198.51.100.7, 10.0.0.2"])),
            Ok(Some(ip("198.51.100.7")))
        );
        assert_eq!(
            p.forwarded_for(&xff(&["6.6.6.6", "198.51.100.7:5000"])),
            Ok(Some(ip("198.51.100.7"))),
            "several header lines are one list; a port is dropped"
        );
        assert_eq!(
            p.forwarded_for(&xff(&["[2001:db8::9]:443"])),
            Ok(Some(ip("2001:db8::9")))
        );
        assert_eq!(
            p.forwarded_for(&xff(&["10.0.0.3, 10.0.0.2"])),
            Ok(Some(ip("10.0.0.3")))
        );
        assert_eq!(p.forwarded_for(&HeaderMap::new()), Ok(None));
        assert_eq!(
            p.forwarded_for(&xff(&["unknown"])),
            Err(ProxyError::BadForwardedFor("unknown".into()))
        );
        // Garbage left of the client is never looked at.
        assert_eq!(
            p.forwarded_for(&xff(&["junk, 198.51.100.7"])),
            Ok(Some(ip("198.51.100.7")))
        );
    }

    /// Writes `bytes` then `after` into a loopback connection and reads the
    /// header from the other end: the address, and the bytes left behind.
    async fn through(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_proxy_header(&mut server).await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        (result, rest)
    }

    #[tokio::test]
    async fn v1_headers_give_the_client_and_leave_the_request() {
        let (addr, rest) = through(b"PROXY TCP4 198.51.100.7 10.0.0.1 5000 443\r\n").await;
        assert_eq!(addr, Ok(Some("198.51.100.7:5000".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (addr, _) = through(b"PROXY TCP6 2001:db8::9 2001:db8::1 5000 443\r\n").await;
        assert_eq!(addr, Ok(Some("[2001:db8::9]:5000".parse().unwrap())));
        let (addr, rest) = through(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(addr, Ok(None));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v1_header_in_pieces_is_read_to_its_crlf_and_no_further() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            for piece in [
                &b"PROXY TCP4 198.51.1"[..],
                b"00.7 10.0.0.1 5000 443\r",
                b"\nGET",
            ] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            client.shutdown().await.unwrap();
        });
        let addr = read_proxy_header(&mut server).await;
        assert_eq!(addr, Ok(Some("198.51.100.7:5000".parse().unwrap())));
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn v2_headers_give_the_client_and_leave_the_request() {
        use ppp::v2::{Builder, Command, Protocol, Version};
        let addresses: (SocketAddr, SocketAddr) = (
            "198.51.100.7:5000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        );
        let header =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                .write_tlv(0x04, b"no-op")
                .unwrap()
                .build()
                .unwrap();
        let (addr, rest) = through(&header).await;
        assert_eq!(addr, Ok(Some(addresses.0)));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(through(&local).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused_without_reading_far() {
        let (addr, _) = through(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(addr, Err(ProxyError::NoProxyHeader));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let (addr, rest) = through(&long).await;
        assert!(
            matches!(addr, Err(ProxyError::BadProxyHeader(_))),
            "{addr:?}"
        );
        assert!(rest.len() > 90, "stopped at the bound, not at the end");
        let (addr, _) = through(b"PROXY TCP4 not an address\r\n").await;
        assert!(
            matches!(addr, Err(ProxyError::BadProxyHeader(_))),
            "{addr:?}"
        );
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (addr, _) = through(&huge).await;
        assert!(
            matches!(addr, Err(ProxyError::BadProxyHeader(_))),
            "{addr:?}"
        );
    }
}
