//! TLS on rustls: `wss://` clients and TLS servers (feature `tls`, on by
//! default).
//!
//! - **Crypto provider**: rustls's `ring` provider, passed explicitly to
//!   every config (never the process-wide default, so no other crate's
//!   choice can make a config fail to build). ring builds with a C compiler
//!   alone; `aws-lc-rs` wants cmake and takes much longer to build.
//! - **Client roots**: the platform's trust store, read once per process by
//!   `rustls-native-certs` (on Linux `/etc/ssl/certs`, or `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR`), plus any root the caller adds
//!   ([`ClientBuilder::add_root_certificate`](crate::ClientBuilder::add_root_certificate),
//!   `--ca FILE` on the command line). That is what browsers, curl and
//!   Python's `ssl` trust on the same machine, and it follows the OS's
//!   updates and an administrator's private CAs; a compiled-in bundle
//!   (webpki-roots) would do neither.
//! - **ALPN** `http/1.1` on both ends: the opening handshake is HTTP/1.1
//!   (RFC 6455 §4.1), and a browser that offers `h2` must not get it. A
//!   client asked for WebSocket over HTTP/2
//!   ([`ClientBuilder::http2`](crate::ClientBuilder::http2)) offers `h2`
//!   alone ([`http2_client_config`]).
//! - **Server reload**: a [`TlsAcceptor`] holds its `ServerConfig` behind a
//!   lock; [`TlsAcceptor::replace`] swaps it for new handshakes only, and
//!   connections already open keep the certificate they started with.
//!
//! Certificate failures are typed ([`TlsError::CertificateExpired`],
//! [`TlsError::WrongHost`], [`TlsError::UnknownIssuer`], …) and so is a peer
//! that does not speak TLS at all, on either end.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, InvalidMessage, RootCertStore, ServerConfig,
};
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

pub use tokio_rustls::rustls;

/// A server-side TLS stream, as [`TlsAcceptor::accept`] returns it.
pub type ServerTlsStream<S> = tokio_rustls::server::TlsStream<S>;

/// A client-side TLS stream, inside [`MaybeTlsStream::Tls`](crate::MaybeTlsStream::Tls).
pub type ClientTlsStream<S> = tokio_rustls::client::TlsStream<S>;

/// The ALPN protocol both ends offer: the opening handshake is HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ALPN protocol of HTTP/2 over TLS (RFC 9113 §3.2), offered alone by a
/// client that opens its WebSockets with extended CONNECT (RFC 8441).
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The largest certificate or key file read. Real chains are a few KiB; the
/// bound keeps a wrong path (`/dev/zero`, a log file) from eating memory.
const MAX_PEM_FILE: u64 = 16 << 20;

/// What a plain-text client gets from a TLS port before it is closed.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 47\r\n\
Connection: close\r\n\
\r\n\
This port speaks TLS: use https:// or wss://.\r\n";

/// Everything that can go wrong with TLS: certificates, files, and peers
/// that do not speak it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate is past its validity period.
    #[error("the certificate of {host} has expired{}", validity(.source))]
    CertificateExpired {
        /// The host connected to.
        host: String,
        /// rustls's account, with the dates.
        source: rustls::Error,
    },
    /// The server's certificate is not valid yet (or the clock is wrong).
    #[error("the certificate of {host} is not valid yet{}", validity(.source))]
    CertificateNotYetValid {
        /// The host connected to.
        host: String,
        /// rustls's account, with the dates.
        source: rustls::Error,
    },
    /// The server's certificate does not name the host connected to.
    #[error("the certificate is not valid for {host}: it names {}", names(.presented))]
    WrongHost {
        /// The host connected to.
        host: String,
        /// The names the certificate presents (DNS names and IP addresses).
        presented: Vec<String>,
    },
    /// The server's certificate chain leads to no trusted root.
    #[error(
        "the certificate of {host} is signed by an unknown issuer: its CA is neither a \
         platform root nor an added root certificate"
    )]
    UnknownIssuer {
        /// The host connected to.
        host: String,
    },
    /// Any other reason to reject the server's certificate (bad signature,
    /// wrong key usage, unsupported algorithm, revoked…).
    #[error("the certificate of {host} was rejected: {source}")]
    BadCertificate {
        /// The host connected to.
        host: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A `wss://` client got plain text back: the server does not speak TLS
    /// on that port (a `ws://` endpoint?).
    #[error("{host} answered in plain text, not TLS: is it a ws:// endpoint rather than wss://?")]
    ServerNotTls {
        /// The host connected to.
        host: String,
    },
    /// A TLS server got plain text: an `http://` or `ws://` client on a TLS
    /// port. An HTTP client is answered `400` in plain text.
    #[error("the client sent plain text, not a TLS handshake (http:// or ws:// to a TLS port)")]
    ClientNotTls,
    /// The URL's host is not a valid DNS name or IP address for TLS.
    #[error("{host:?} is not a valid TLS server name")]
    InvalidServerName {
        /// The host.
        host: String,
    },
    /// The TLS handshake failed for another reason (an alert from the peer,
    /// no common protocol version or cipher suite…).
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The socket failed or closed during the TLS handshake.
    #[error("I/O error during the TLS handshake: {0}")]
    Io(std::io::Error),
    /// A certificate or key file cannot be used.
    #[error("{}: {reason}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A root certificate that cannot be used as a trust anchor.
    #[error("invalid root certificate: {0}")]
    InvalidRoot(rustls::Error),
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The names a certificate presents, as rustls lists them
/// (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), without the wrapping.
fn names(presented: &[String]) -> String {
    if presented.is_empty() {
        return "no name".to_owned();
    }
    let bare = |name: &str| {
        name.strip_prefix("DnsName(\"")
            .and_then(|n| n.strip_suffix("\")"))
            .or_else(|| {
                name.strip_prefix("IpAddress(")
                    .and_then(|n| n.strip_suffix(')'))
            })
            .unwrap_or(name)
            .to_owned()
    };
    presented
        .iter()
        .map(|n| bare(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// " (valid until 2002-01-01 00:00:00 UTC, now 2026-…)" from rustls's account.
fn validity(source: &rustls::Error) -> String {
    match source {
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after }) => {
            format!(
                " (valid until {}, now {})",
                utc(not_after.as_secs()),
                utc(time.as_secs())
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time,
            not_before,
        }) => format!(
            " (valid from {}, now {})",
            utc(not_before.as_secs()),
            utc(time.as_secs())
        ),
        _ => String::new(),
    }
}

/// Seconds since the Unix epoch as a UTC date and time (proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

// ---------------------------------------------------------------- files

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(file_error(format!(
            "larger than {} MiB: not a PEM file",
            MAX_PEM_FILE >> 20
        )));
    }
    Ok(bytes)
}

/// Reads every certificate (`BEGIN CERTIFICATE`) of a PEM file: a server's
/// chain, leaf first, or the CA certificates to trust.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = path.as_ref();
    let pem = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            reason: format!("not a valid PEM file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            reason: "no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)".to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file: PKCS#8 (`BEGIN PRIVATE
/// KEY`: RSA, ECDSA or Ed25519), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
/// (`BEGIN EC PRIVATE KEY`). Encrypted keys are refused with that reason.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = path.as_ref();
    let pem = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound
                if contains(&pem, b"BEGIN ENCRYPTED PRIVATE KEY") =>
            {
                "the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)"
                    .to_owned()
            }
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE \
                 KEY\" or \"BEGIN EC PRIVATE KEY\")"
                    .to_owned()
            }
            other => format!("not a valid PEM file: {other}"),
        };
        TlsError::File {
            path: path.to_owned(),
            reason,
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A server configuration from a PEM certificate chain (leaf first) and a
/// PEM private key (RSA, ECDSA or Ed25519; PKCS#8, PKCS#1 or SEC1), with
/// ALPN `http/1.1`. Every failure names the file and the reason, including
/// a key that does not go with the certificate.
pub fn load_server_config(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<ServerConfig, TlsError> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let certs = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::File {
            path: key_path.to_owned(),
            reason: format!(
                "cannot serve this key with the certificate in {}: {e}",
                cert_path.display()
            ),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------- client

/// The platform's root certificates, read once per process.
fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "skipping unreadable platform root certificates");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(loaded.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "ignored unparsable platform root certificates");
        }
        if added == 0 {
            tracing::warn!(
                "no platform root certificates found: wss:// will only trust added roots"
            );
        }
        tracing::debug!(roots = added, "loaded platform root certificates");
        store
    })
}

/// The client configuration duplex uses for `wss://`: the platform's roots
/// plus `extra_roots`, ALPN `http/1.1`, the ring provider. Without extra
/// roots it is built once per process and shared.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    build_client_config(extra_roots, ALPN_HTTP11, &DEFAULT)
}

/// The client configuration for WebSocket over HTTP/2: as
/// [`client_config`], with ALPN `h2` alone, so that a server which cannot
/// speak HTTP/2 refuses the handshake or selects nothing rather than
/// falling back to HTTP/1.1.
#[cfg(feature = "hyper")]
pub fn http2_client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    build_client_config(extra_roots, ALPN_H2, &DEFAULT)
}

fn build_client_config(
    extra_roots: &[CertificateDer<'static>],
    alpn: &[u8],
    default: &'static OnceLock<Arc<ClientConfig>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    if extra_roots.is_empty()
        && let Some(config) = default.get()
    {
        return Ok(Arc::clone(config));
    }
    let mut roots = platform_roots().clone();
    for root in extra_roots {
        roots.add(root.clone()).map_err(TlsError::InvalidRoot)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let config = Arc::new(config);
    if extra_roots.is_empty() {
        Ok(Arc::clone(default.get_or_init(|| config)))
    } else {
        Ok(config)
    }
}

/// The client half of the TLS handshake over `stream`, for `host` (the SNI
/// name and the name the certificate must carry; an IP address is checked
/// against the certificate's IP addresses and sends no SNI), with failures
/// typed as [`ClientBuilder::connect`](crate::ClientBuilder::connect) types
/// them. For a client that does its own WebSocket handshake (a benchmark).
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> Result<ClientTlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host)
        .map_err(|_| TlsError::InvalidServerName {
            host: host.to_owned(),
        })?
        .to_owned();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| client_error(host, e))?;
    if let Some(version) = stream.get_ref().1.protocol_version() {
        tracing::debug!(host, ?version, "TLS handshake done");
    }
    Ok(stream)
}

fn rustls_error(e: std::io::Error) -> Result<rustls::Error, std::io::Error> {
    if !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        return Err(e);
    }
    let kind = e.kind();
    match e
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(e)) => Ok(*e),
        Some(Err(other)) => Err(std::io::Error::new(kind, other)),
        None => Err(kind.into()),
    }
}

fn client_error(host: &str, e: std::io::Error) -> TlsError {
    let host = host.to_owned();
    let e = match rustls_error(e) {
        Ok(e) => e,
        Err(io) => return TlsError::Io(io),
    };
    match &e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsError::CertificateExpired { host, source: e }
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsError::CertificateNotYetValid { host, source: e }
            }
            CertificateError::NotValidForName => TlsError::WrongHost {
                host,
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext { presented, .. } => TlsError::WrongHost {
                host,
                presented: presented.clone(),
            },
            CertificateError::UnknownIssuer => TlsError::UnknownIssuer { host },
            _ => TlsError::BadCertificate { host, source: e },
        },
        // A TLS record starts with a content type (22 for a handshake) and
        // a version; "HTTP/1.1 400" is neither.
        rustls::Error::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        ) => TlsError::ServerNotTls { host },
        _ => TlsError::Handshake(e),
    }
}

// ---------------------------------------------------------------- server

/// Accepts TLS connections with a rustls `ServerConfig` that can be
/// replaced while serving (certificate renewal, SIGHUP): a new handshake
/// uses the config current when its ClientHello arrives; connections already
/// open keep theirs. Clones share the config.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let acceptor = duplex_ws::tls::TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// let (tcp, _) = listener.accept().await?;
/// let tls = acceptor.accept(tcp).await?;
/// let mut ws = duplex_ws::accept(tls).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// Whether every config, the current one and each replacement, offers
    /// ALPN `h2` before `http/1.1` ([`TlsAcceptor::offer_http2`]).
    http2: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor with `config` as it is (set its ALPN to `http/1.1` for
    /// browsers; [`load_server_config`] does).
    pub fn new(config: impl Into<Arc<ServerConfig>>) -> Self {
        TlsAcceptor {
            current: Arc::new(RwLock::new(config.into())),
            http2: Arc::default(),
        }
    }

    /// Offers HTTP/2 by ALPN (`h2`, then `http/1.1`) on this config and on
    /// every one that replaces it (a reload keeps it). Only for a server
    /// that speaks HTTP/2 on the connection, as [`Server`](crate::Server)
    /// does; a stream handed straight to [`accept`](crate::accept) must stay
    /// on `http/1.1`.
    pub fn offer_http2(&self) {
        self.http2.store(true, std::sync::atomic::Ordering::Relaxed);
        self.replace(self.config());
    }

    /// Whether [`offer_http2`](Self::offer_http2) was called.
    pub fn offers_http2(&self) -> bool {
        self.http2.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An acceptor for a PEM certificate chain and key
    /// ([`load_server_config`]).
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(load_server_config(cert_path, key_path)?))
    }

    /// The config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        // A panic elsewhere while holding the lock leaves a whole Arc behind.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Uses `config` for every handshake from now on.
    pub fn replace(&self, config: impl Into<Arc<ServerConfig>>) {
        let mut config = config.into();
        if self.offers_http2() && config.alpn_protocols.first().map(Vec::as_slice) != Some(ALPN_H2)
        {
            let mut with_h2 = (*config).clone();
            with_h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
            config = Arc::new(with_h2);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Loads the files again and, if they are good, uses them from now on;
    /// on error the current config stays.
    pub fn reload_pem_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        self.replace(load_server_config(cert_path, key_path)?);
        Ok(())
    }

    /// The server half of the TLS handshake. A client that sends plain text
    /// is refused with [`TlsError::ClientNotTls`] (after a plain `400`
    /// answer if it looks like HTTP). Not bounded in time: wrap it in a
    /// timeout, with the HTTP handshake that follows.
    pub async fn accept<S>(&self, mut stream: S) -> Result<ServerTlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Look at the first bytes before rustls does: plain HTTP gets a
        // readable answer instead of a TLS alert it cannot parse.
        let mut first = [0u8; 512];
        let n = stream.read(&mut first).await.map_err(TlsError::Io)?;
        if n == 0 {
            return Err(TlsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the TLS handshake",
            )));
        }
        // RFC 8446 §5.1: every TLS connection starts with a handshake record.
        const HANDSHAKE_RECORD: u8 = 22;
        if first[0] != HANDSHAKE_RECORD {
            if first[0].is_ascii_uppercase() {
                let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            }
            let _ = stream.shutdown().await;
            return Err(TlsError::ClientNotTls);
        }
        let mut acceptor = Acceptor::default();
        let mut rest = &first[..n];
        while !rest.is_empty() {
            if acceptor.read_tls(&mut rest).map_err(TlsError::Io)? == 0 {
                break;
            }
        }
        let start = match acceptor.accept() {
            Ok(Some(accepted)) => StartHandshake::from_parts(accepted, stream),
            // The ClientHello goes on past the first read.
            Ok(None) => LazyConfigAcceptor::new(acceptor, stream)
                .await
                .map_err(server_error)?,
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                if alert.write_all(&mut out).is_ok() {
                    let _ = stream.write_all(&out).await;
                }
                return Err(TlsError::Handshake(e));
            }
        };
        start.into_stream(self.config()).await.map_err(server_error)
    }
}

fn server_error(e: std::io::Error) -> TlsError {
    match rustls_error(e) {
        Ok(rustls::Error::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        )) => TlsError::ClientNotTls,
        Ok(e) => TlsError::Handshake(e),
        Err(io) => TlsError::Io(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duplex-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn missing_files_name_the_path_and_the_reason() {
        let err = load_server_config("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/nonexistent/cert.pem: "), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn files_without_pem_blocks_are_refused_with_the_reason() {
        let path = temp_file("empty.pem", b"just some text\n");
        let err = load_certificates(&path).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = load_private_key(&path).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no private key"),
            "{err}"
        );
        let path = temp_file(
            "encrypted.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = load_private_key(&path).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
        let path = temp_file("bad.pem", b"-----BEGIN CERTIFICATE-----\n!!!!\n");
        let err = load_certificates(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid PEM file"), "{err}");
    }

    #[test]
    fn the_default_client_config_offers_http11_and_is_shared() {
        let a = client_config(&[]).unwrap();
        let b = client_config(&[]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
        #[cfg(feature = "hyper")]
        {
            let h2 = http2_client_config(&[]).unwrap();
            assert!(Arc::ptr_eq(&h2, &http2_client_config(&[]).unwrap()));
            assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        }
        let bad_root = CertificateDer::from(vec![1u8, 2, 3]);
        assert!(matches!(
            client_config(&[bad_root]),
            Err(TlsError::InvalidRoot(_))
        ));
    }

    #[test]
    fn wrong_host_lists_the_names_presented() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("example.org").unwrap(),
                presented: vec![
                    "DnsName(\"localhost\")".to_owned(),
                    "IpAddress(127.0.0.1)".to_owned(),
                ],
            }),
        );
        let err = client_error("example.org", e);
        assert!(matches!(err, TlsError::WrongHost { .. }));
        assert_eq!(
            err.to_string(),
            "the certificate is not valid for example.org: it names localhost, 127.0.0.1"
        );
    }

    #[test]
    fn dates_are_readable() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_009_843_200 + 3_723), "2002-01-01 01:02:03 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn the_plain_answer_has_the_right_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
