//! [`OriginPolicy`]: which web pages may use the server, against
//! cross-site WebSocket hijacking and DNS rebinding.
//!
//! A browser lets any page open a WebSocket to any server, with the user's
//! cookies, and tells the server which page it was in `Origin` (RFC 6455
//! §10.2 leaves the check to the server); the same goes for a `POST` that
//! needs no CORS preflight (a `text/plain` body). So every upgrade, and
//! every request with a side effect that carries an `Origin`, is checked:
//!
//! - allowed by default: the server's own origin (the scheme and `Host` the
//!   request came to), and clients that send no `Origin` at all (they are
//!   not browsers, and could say anything);
//! - allowed while the server listens on loopback only, for development:
//!   any loopback origin (`localhost`, `127.0.0.1`, `[::1]`, any port);
//! - allowed when configured: exact origins and `https://*.example.com`
//!   patterns ([`OriginPolicy::allow`]), or any ([`OriginPolicy::any`]).
//!   `null` only so: it is what a page opened from a file sends, but also
//!   a sandboxed iframe of any site, so it proves nothing.
//!
//! DNS rebinding makes an attacker's name resolve to the server's address,
//! so that a page of the attacker's is same-origin with the server; its
//! requests still name the attacker's host in `Host`. So `Host` is checked
//! on every request (421 Misdirected Request), whatever the origin policy:
//! loopback names and addresses are always accepted, and while the server
//! listens on loopback nothing else is unless named with
//! [`OriginPolicy::allow_host`]; on another address, once any name is
//! given, only those (as Django's `ALLOWED_HOSTS`).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};

/// Which web pages may use the server (against cross-site WebSocket
/// hijacking) and which names it answers to (against DNS rebinding): by
/// default the server's own origin, clients that send no `Origin`, and on
/// loopback any loopback page and name; [`allow`](Self::allow),
/// [`any`](Self::any) and [`allow_host`](Self::allow_host) add to it.
/// `Origin: null` only when allowed by name.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Pattern>,
    /// Names `Host` may carry besides loopback ones: `example.com`, or
    /// `.example.com` for it and every subdomain. Lower case, no port.
    hosts: Vec<String>,
}

/// One allowed origin: exact, or any subdomain of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `scheme://*.domain[:port]`: `scheme://` and `.domain[:port]`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

/// A pattern given to [`OriginPolicy::allow`] that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an origin: expected scheme://host[:port], or scheme://*.domain[:port], with no path"
)]
pub struct InvalidOrigin(pub String);

/// A name given to [`OriginPolicy::allow_host`] that is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name: expected name.example.com or .example.com, with no port")]
pub struct InvalidHost(pub String);

/// Why a request was refused by the policy, with its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginRefusal {
    /// The `Origin` is not allowed (403).
    #[error(
        "origin {origin} may not use this server; allow it with --allowed-origin {origin} (or Server::origins)"
    )]
    Origin {
        /// The refused origin.
        origin: String,
    },
    /// The server listens on loopback only, and `Host` names something else:
    /// DNS rebinding (421).
    #[error(
        "Host {host} is not a loopback name: this server listens on loopback only (DNS rebinding is refused)"
    )]
    Host {
        /// The refused `Host`.
        host: String,
    },
    /// `Host` is none of the names the server was given (421).
    #[error(
        "Host {host} is not a name of this server; allow it with --allowed-host {name} (or OriginPolicy::allow_host)"
    )]
    UnknownHost {
        /// The refused `Host`.
        host: String,
        /// Its name, without the port.
        name: String,
    },
}

impl OriginRefusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            OriginRefusal::Origin { .. } => StatusCode::FORBIDDEN,
            OriginRefusal::Host { .. } | OriginRefusal::UnknownHost { .. } => {
                StatusCode::MISDIRECTED_REQUEST
            }
        }
    }

    /// The answer: the status and one line saying why.
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        super::refusal(self.status(), self)
    }
}

impl OriginPolicy {
    /// The server's own origin and clients without `Origin` (plus, on
    /// loopback, any loopback origin; `null` only by [`allow`](Self::allow)).
    pub fn new() -> OriginPolicy {
        OriginPolicy::default()
    }

    /// Every origin: for a public API meant to be used from any site, where
    /// no cookie or address grants anything.
    pub fn any() -> OriginPolicy {
        OriginPolicy {
            any: true,
            ..OriginPolicy::default()
        }
    }

    /// Accepts `name` in `Host` as well (any port): exact
    /// (`push.example.com`), or with a leading dot (`.example.com`) that
    /// name and every subdomain of it. Loopback names are always accepted.
    pub fn allow_host(mut self, name: &str) -> Result<OriginPolicy, InvalidHost> {
        let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = lower.strip_prefix('.').unwrap_or(&lower);
        if !is_dns_name(bare) && bare.parse::<IpAddr>().is_err() {
            return Err(InvalidHost(name.to_owned()));
        }
        self.hosts.push(lower);
        Ok(self)
    }

    /// Allows `origin` as well: exact (`https://app.example.com`,
    /// `http://localhost:3000`, `null`), or every subdomain of a domain
    /// (`https://*.example.com`, which does not match `example.com`
    /// itself). Compared case-insensitively; a default port may be left out.
    pub fn allow(mut self, origin: &str) -> Result<OriginPolicy, InvalidOrigin> {
        let invalid = || InvalidOrigin(origin.to_owned());
        let lower = origin.trim().to_ascii_lowercase();
        if lower == "null" {
            self.allowed.push(Pattern::Exact(lower));
            return Ok(self);
        }
        let (scheme, rest) = lower.split_once("://").ok_or_else(invalid)?;
        if !matches!(scheme, "http" | "https")
            || rest.is_empty()
            || rest.contains(['/', '?', '#', '@'])
        {
            return Err(invalid());
        }
        let pattern = match rest.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => Pattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{}", strip_default_port(scheme, domain)),
            },
            Some(_) => return Err(invalid()),
            None if rest.contains('*') => return Err(invalid()),
            None => Pattern::Exact(format!("{scheme}://{}", strip_default_port(scheme, rest))),
        };
        self.allowed.push(pattern);
        Ok(self)
    }

    /// Whether every origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Checks a request to a server listening on `local` (`tls` for
    /// `https://` and `wss://`): its `Host` (the `:authority` over HTTP/2)
    /// always, its `Origin` if it is an upgrade or has a side effect (a
    /// `GET` of a page may come from anywhere).
    pub fn check<B>(
        &self,
        request: &http::Request<B>,
        local: SocketAddr,
        tls: bool,
    ) -> Result<(), OriginRefusal> {
        let headers = request.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let checked =
            has_side_effect(request.method()) || super::upgrade::is_upgrade_request(request);
        self.check_parts(headers, host, local, tls, checked)
    }

    fn check_parts(
        &self,
        headers: &HeaderMap,
        host: Option<&str>,
        local: SocketAddr,
        tls: bool,
        checked: bool,
    ) -> Result<(), OriginRefusal> {
        let loopback = local.ip().is_loopback();
        let host = host.map(str::trim);
        if let Some(host) = host
            && !is_loopback_host(host)
        {
            let name = host_name(host);
            let listed = self
                .hosts
                .iter()
                .any(|allowed| match allowed.strip_prefix('.') {
                    Some(domain) => {
                        name == domain
                            || name
                                .strip_suffix(domain)
                                .is_some_and(|sub| sub.ends_with('.'))
                    }
                    None => name == *allowed,
                });
            if !listed && loopback {
                return Err(OriginRefusal::Host {
                    host: host.to_owned(),
                });
            }
            if !listed && !self.hosts.is_empty() {
                return Err(OriginRefusal::UnknownHost {
                    host: host.to_owned(),
                    name,
                });
            }
        }
        if !checked || self.any {
            return Ok(());
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = normalize(origin.to_str().unwrap_or(""));
        let scheme = if tls { "https" } else { "http" };
        let own = host.is_some_and(|host| origin == normalize(&format!("{scheme}://{host}")));
        let dev = loopback && is_loopback_origin(&origin);
        if own || dev || self.matches(&origin) {
            Ok(())
        } else {
            Err(OriginRefusal::Origin { origin })
        }
    }

    fn matches(&self, normalized: &str) -> bool {
        self.allowed.iter().any(|pattern| match pattern {
            Pattern::Exact(exact) => exact == normalized,
            Pattern::Subdomains { scheme, suffix } => normalized
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(is_dns_name),
        })
    }
}

/// Whether a request with this method changes something, so that a page of
/// another origin must not be able to send it.
pub(crate) fn has_side_effect(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An origin in lower case, without its scheme's default port, for
/// comparing.
fn normalize(origin: &str) -> String {
    let origin = origin.trim().to_ascii_lowercase();
    match origin.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", strip_default_port(scheme, rest)),
        None => origin,
    }
}

/// `host[:port]` without the scheme's default port.
fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Whether `name` is a DNS name: dot-separated labels of letters, digits
/// and hyphens, none empty, none starting or ending with a hyphen.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The name of a `Host` value: lower case, without its port and a final
/// dot; an IPv6 address keeps its brackets.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(rest) => return format!("[{}]", rest.split(']').next().unwrap_or("")),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost`, `*.localhost` (RFC 6761 §6.3), or a loopback address, with
/// or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_loopback_origin(origin: &str) -> bool {
    match origin.split_once("://") {
        Some(("http" | "https", host)) => is_loopback_host(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const LOOPBACK: &str = "127.0.0.1:8080";
    const PUBLIC: &str = "0.0.0.0:8080";

    fn check(
        policy: &OriginPolicy,
        bound: &str,
        host: &str,
        origin: Option<&str>,
    ) -> Result<(), OriginRefusal> {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        policy.check_parts(&headers, Some(host), bound.parse().unwrap(), false, true)
    }

    #[test]
    fn the_own_origin_and_clients_without_one_are_allowed() {
        let policy = OriginPolicy::new();
        for bound in [LOOPBACK, PUBLIC] {
            let host = if bound == LOOPBACK {
                "127.0.0.1:8080"
            } else {
                "example.com:8080"
            };
            assert_eq!(check(&policy, bound, host, None), Ok(()));
            let own = format!("http://{host}");
            assert_eq!(check(&policy, bound, host, Some(&own)), Ok(()));
        }
        assert_eq!(
            check(
                &policy,
                PUBLIC,
                "example.com",
                Some("http://EXAMPLE.com:80")
            ),
            Ok(())
        );
    }

    #[test]
    fn a_foreign_origin_is_refused_with_403() {
        let policy = OriginPolicy::new();
        for (bound, host) in [(LOOPBACK, "127.0.0.1:8080"), (PUBLIC, "example.com")] {
            let refusal = check(&policy, bound, host, Some("https://evil.example")).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
            assert!(
                refusal
                    .to_string()
                    .contains("--allowed-origin https://evil.example")
            );
        }
        // Same host, other scheme or port: another origin.
        assert!(check(&policy, PUBLIC, "example.com", Some("https://example.com")).is_err());
        assert!(
            check(
                &policy,
                PUBLIC,
                "example.com:8080",
                Some("http://example.com:8081")
            )
            .is_err()
        );
    }

    #[test]
    fn on_loopback_any_loopback_origin_is_allowed_and_null_only_when_named() {
        let policy = OriginPolicy::new();
        // A sandboxed iframe of any site sends `null`.
        let refusal = check(&policy, LOOPBACK, "localhost:8080", Some("null")).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        let files = OriginPolicy::new().allow("null").unwrap();
        assert_eq!(
            check(&files, LOOPBACK, "localhost:8080", Some("null")),
            Ok(())
        );
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "https://[::1]:8443",
            "http://app.localhost",
        ] {
            assert_eq!(
                check(&policy, LOOPBACK, "localhost:8080", Some(origin)),
                Ok(()),
                "{origin}"
            );
            assert!(
                check(&policy, PUBLIC, "example.com", Some(origin)).is_err(),
                "{origin}"
            );
        }
    }

    #[test]
    fn named_hosts_are_checked_on_any_address() {
        let policy = OriginPolicy::any()
            .allow_host("push.example.com")
            .unwrap()
            .allow_host(".example.net")
            .unwrap();
        for (bound, host) in [
            (PUBLIC, "push.example.com"),
            (PUBLIC, "PUSH.example.com.:8443"),
            (PUBLIC, "example.net"),
            (PUBLIC, "a.b.example.net"),
            (PUBLIC, "localhost:8080"),
            (PUBLIC, "127.0.0.1"),
            (LOOPBACK, "push.example.com"),
        ] {
            assert_eq!(check(&policy, bound, host, None), Ok(()), "{bound} {host}");
        }
        for (bound, host) in [
            (PUBLIC, "rebind.attacker.example"),
            (PUBLIC, "push.example.com.attacker.example"),
            (PUBLIC, "badexample.net"),
            (LOOPBACK, "rebind.attacker.example"),
        ] {
            let refusal = check(&policy, bound, host, None).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
        let refusal = check(&policy, PUBLIC, "evil.example:80", None).unwrap_err();
        assert!(
            refusal.to_string().contains("--allowed-host evil.example"),
            "{refusal}"
        );
        // Without names, a public server takes any Host, as before.
        assert_eq!(
            check(&OriginPolicy::any(), PUBLIC, "x.example", None),
            Ok(())
        );
        for bad in [
            "",
            "a b",
            "host:80",
            "*.example.com",
            "exa_mple.com",
            "-a.com",
        ] {
            assert!(OriginPolicy::new().allow_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_subdomain_pattern_matches_real_subdomains_only() {
        let policy = OriginPolicy::new().allow("https://*.example.com").unwrap();
        for origin in ["https://a.example.com", "https://a-b.c.example.com"] {
            assert_eq!(
                check(&policy, PUBLIC, "api.x", Some(origin)),
                Ok(()),
                "{origin}"
            );
        }
        for origin in [
            "https://.example.com",
            "https://a..example.com",
            "https://a?.example.com",
            "https://a%2f.example.com",
            "https://a b.example.com",
            "https://-a.example.com",
            "https://user@a.example.com",
        ] {
            assert!(
                check(&policy, PUBLIC, "api.x", Some(origin)).is_err(),
                "{origin}"
            );
        }
    }

    #[test]
    fn on_loopback_a_foreign_host_is_refused_with_421() {
        let policy = OriginPolicy::any();
        let refusal = check(&policy, LOOPBACK, "rebind.example", None).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::MISDIRECTED_REQUEST);
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.2:1",
            "[::1]:8080",
            "LOCALHOST.",
        ] {
            assert_eq!(check(&policy, LOOPBACK, host, None), Ok(()), "{host}");
        }
        assert_eq!(check(&policy, PUBLIC, "rebind.example", None), Ok(()));
        assert_eq!(
            check(&policy, "[::1]:80", "rebind.example:80", None)
                .unwrap_err()
                .status(),
            421
        );
    }

    #[test]
    fn allowed_origins_exact_and_by_subdomain() {
        let policy = OriginPolicy::new()
            .allow("https://app.example.com")
            .unwrap()
            .allow("https://*.example.org")
            .unwrap()
            .allow("http://partner.test:8443")
            .unwrap();
        let host = "api.example.net";
        for ok in [
            "https://app.example.com",
            "https://app.example.com:443",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://partner.test:8443",
        ] {
            assert_eq!(check(&policy, PUBLIC, host, Some(ok)), Ok(()), "{ok}");
        }
        for refused in [
            "http://app.example.com",
            "https://example.org",
            "https://evil-example.org",
            "https://a.example.org:8443",
            "http://partner.test",
        ] {
            assert!(
                check(&policy, PUBLIC, host, Some(refused)).is_err(),
                "{refused}"
            );
        }
        assert_eq!(
            check(&OriginPolicy::any(), PUBLIC, host, Some("https://x.y")),
            Ok(())
        );
    }

    #[test]
    fn only_origins_are_patterns() {
        for bad in [
            "example.com",
            "https://",
            "https://a.com/path",
            "ftp://a.com",
            "https://*",
            "https://a.*.com",
            "https://u@a.com",
        ] {
            assert!(OriginPolicy::new().allow(bad).is_err(), "{bad}");
        }
        assert!(OriginPolicy::new().allow("null").is_ok());
    }

    #[test]
    fn a_page_fetch_is_not_checked_but_its_host_is() {
        let policy = OriginPolicy::new();
        let get = |host: &str| {
            http::Request::get("/")
                .header(header::HOST, host)
                .header(header::ORIGIN, "https://evil.example")
                .body(())
                .unwrap()
        };
        assert_eq!(
            policy.check(&get("example.com"), PUBLIC.parse().unwrap(), false),
            Ok(())
        );
        assert!(
            policy
                .check(&get("rebind.example"), LOOPBACK.parse().unwrap(), false)
                .is_err()
        );
        let post = http::Request::post("/topics/news")
            .header(header::HOST, "example.com")
            .header(header::ORIGIN, "https://evil.example")
            .body(())
            .unwrap();
        assert!(policy.check(&post, PUBLIC.parse().unwrap(), false).is_err());
    }

    #[test]
    fn over_http2_the_authority_is_the_host() {
        let connect = http::Request::connect("https://rebind.example/chat")
            .version(http::Version::HTTP_2)
            .header(header::ORIGIN, "https://rebind.example")
            .body(())
            .unwrap();
        let refusal = OriginPolicy::new()
            .check(&connect, LOOPBACK.parse().unwrap(), true)
            .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(
            OriginPolicy::new().check(&connect, PUBLIC.parse().unwrap(), true),
            Ok(()),
            "same origin over HTTP/2 (CONNECT is checked: it has a side effect)"
        );
    }
}
