//! Who may connect, subscribe and publish: JSON Web Tokens for WebSockets,
//! an API key for `POST /topics/{name}` and `GET /metrics`.
//!
//! A [`TokenVerifier`] holds one key and one algorithm: an HS256 secret
//! ([`TokenVerifier::hs256`]) or a public key in PEM, RS256 or ES256
//! ([`TokenVerifier::public_key_pem`]). A token is accepted only if
//!
//! - its header names exactly that algorithm: `alg: none`, and any other
//!   algorithm (an HS256 token against an RS256 key, the classic confusion),
//!   is [`TokenError::WrongAlgorithm`];
//! - its signature verifies ([`TokenError::BadSignature`]);
//! - it has `sub` (a string: who the client is) and `exp` (integer seconds
//!   since 1970), and `exp` is not past by more than the leeway,
//!   [`DEFAULT_LEEWAY`] (5 s) unless set ([`TokenError::Expired`]). The
//!   leeway absorbs a little clock skew between the issuer and this server;
//! - its `subscribe` and `publish` claims, when present, are lists of topic
//!   names or patterns ([`TokenError::Malformed`] otherwise). A pattern
//!   `prefix.*` matches every topic that starts with `prefix.` and goes on
//!   (`chat.*` matches `chat.x` and `chat.x.y`, not `chat`); `*` matches
//!   every topic. A claim left out grants nothing.
//!
//! With a verifier set ([`HubService::tokens`](crate::HubService::tokens)),
//! every WebSocket upgrade needs a token, as `?token=TOKEN` in the URL (the
//! only way a browser's `new WebSocket(url)` can send one) or as
//! `Authorization: Bearer TOKEN`; the header wins when both are given. The
//! answers:
//!
//! | what | answer |
//! |---|---|
//! | no token, or one that is malformed, expired, forged or of the wrong algorithm | **401** with `WWW-Authenticate: Bearer` (RFC 6750 §3: `error="invalid_token"` and a description, except for a missing token) and a body that says why |
//! | a topic outside the `subscribe` claim | **403** with `WWW-Authenticate: Bearer error="insufficient_scope"` |
//! | a message sent on a topic outside the `publish` claim | the connection is closed with **1008** `"publish not allowed"`; the message is not published |
//! | the token's `exp` (plus the leeway) passes while connected | the connection is closed with **1008** `"token expired"`, by a timer set at `exp`, not a check per message |
//!
//! Both closes are 1008 (policy violation, RFC 6455 §7.4.1), as Centrifugo
//! and Pusher-like servers close for a policy; the reason tells a client
//! whether a fresh token ([`TOKEN_EXPIRED`](crate::TOKEN_EXPIRED)) or other rights
//! ([`PUBLISH_NOT_ALLOWED`]) would help.
//!
//! An [`ApiKey`] guards `POST /topics/{name}` and `GET /metrics`
//! ([`HubService::api_key`](crate::HubService::api_key)): the request must
//! carry `Authorization: Bearer KEY`, else **401**. The key is compared as a
//! SHA-256 digest in constant time. `GET /healthz` stays open for load
//! balancers.
//!
//! No secret and no token is ever logged or put in an error: errors say
//! what is wrong with a token, never what it is.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use duplex_hub::auth::{ApiKey, Claims, TokenVerifier, sign_hs256};
//! use duplex_hub::{Hub, HubConfig, HubService};
//!
//! let verifier = TokenVerifier::hs256(b"secret").unwrap();
//! let claims = Claims::new("alice", SystemTime::now() + Duration::from_secs(3600))
//!     .subscribe(["news", "chat.*"])
//!     .publish(["chat.*"]);
//! let token = sign_hs256(b"secret", &claims).unwrap();
//! let claims = verifier.verify(&token).unwrap();
//! assert!(claims.may_subscribe("chat.room") && !claims.may_publish("news"));
//!
//! let service = HubService::new(Hub::new(HubConfig::default()))
//!     .tokens(verifier)
//!     .api_key(ApiKey::new("key").unwrap());
//! # drop(service);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderValue, Request, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::name;

/// How far past its `exp` a token is still taken: clock skew between the
/// issuer and this server.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// The close reason of a connection that sent a message to a topic its
/// token does not let it publish on (code 1008).
pub const PUBLISH_NOT_ALLOWED: &str = "publish not allowed";

/// The signature algorithms a [`TokenVerifier`] can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256, a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA public key.
    Rs256,
    /// ECDSA on P-256 with SHA-256, an EC public key.
    Es256,
}

impl Algorithm {
    /// The name in a token's header (`HS256`, `RS256`, `ES256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key or a secret cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret (or API key) is empty.
    #[error("the secret is empty")]
    EmptySecret,
    /// The PEM is not an RSA or EC public key.
    #[error("not an RSA or EC public key in PEM: {0}")]
    InvalidPublicKey(String),
}

/// Why a token was refused. Each is answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The request carries no token.
    #[error("a token is required: give it as ?token= or Authorization: Bearer")]
    Missing,
    /// Not a JWT, or its claims are not what this server needs.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Its `exp` is past (by more than the leeway).
    #[error("the token has expired")]
    Expired,
    /// The signature does not verify with the configured key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The header names another algorithm than the configured one, or
    /// `none`.
    #[error("the token is signed with {found}, this server takes only {expected}")]
    WrongAlgorithm {
        /// The configured algorithm.
        expected: Algorithm,
        /// What the token's header says.
        found: String,
    },
    /// Its `nbf` is still ahead (by more than the leeway).
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    /// Its header's `kid` names no key of this server (or it has none,
    /// and this server has several).
    #[error("the token's key is not one this server knows (`kid` {0:?})")]
    UnknownKey(Option<String>),
}

/// Why a token could not be signed ([`sign_hs256`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The secret is empty.
    #[error("the secret is empty")]
    EmptySecret,
    /// A `subscribe` or `publish` entry is neither a topic name nor a
    /// pattern.
    #[error("{0:?} is not a topic name, a `prefix.*` pattern or `*`")]
    InvalidPattern(String),
    /// The signing itself failed.
    #[error("cannot sign the token: {0}")]
    Jwt(String),
}

/// What a token says: who the client is, until when, and which topics it
/// may subscribe to and publish on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publish: Vec<String>,
    /// Whom it is for: written by [`Claims::audience`], checked by
    /// [`TokenVerifier::audience`] (one name or a list, as RFC 7519 allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    /// Who issued it: written by [`Claims::issuer`], checked by
    /// [`TokenVerifier::issuer`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// The leeway of the verifier that accepted it.
    #[serde(skip)]
    leeway: Duration,
}

impl Claims {
    /// Claims for `subject` that expire at `expires_at` (whole seconds) and
    /// grant nothing yet.
    pub fn new(subject: impl Into<String>, expires_at: SystemTime) -> Claims {
        let exp = expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Claims {
            sub: subject.into(),
            exp,
            subscribe: Vec::new(),
            publish: Vec::new(),
            aud: None,
            iss: None,
            leeway: Duration::ZERO,
        }
    }

    /// Names whom the token is for (`aud`).
    pub fn audience(mut self, audience: impl Into<String>) -> Claims {
        self.aud = Some(serde_json::Value::String(audience.into()));
        self
    }

    /// Names who issued the token (`iss`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Claims {
        self.iss = Some(issuer.into());
        self
    }

    /// Adds topics or patterns that the client may subscribe to.
    pub fn subscribe<I, S>(mut self, patterns: I) -> Claims
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subscribe.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Adds topics or patterns that the client may publish on.
    pub fn publish<I, S>(mut self, patterns: I) -> Claims
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.publish.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Who the client is (`sub`).
    pub fn subject(&self) -> &str {
        &self.sub
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.exp))
            // Beyond what the platform's clock holds: as good as never.
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(1 << 40))
    }

    /// Whether the `subscribe` claim covers `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| pattern_matches(p, topic))
    }

    /// Whether the `publish` claim covers `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| pattern_matches(p, topic))
    }

    /// Whether the `publish` claim is `*`: every topic, as an operator's
    /// token (what `GET /metrics` asks of a token).
    pub fn may_publish_everywhere(&self) -> bool {
        self.publish.iter().any(|p| p == "*")
    }

    /// A timer that fires when the token stops being valid: at `exp` plus
    /// the leeway of the verifier that accepted it (at once if that is
    /// past).
    pub fn expiry(&self) -> tokio::time::Sleep {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(self.exp)
            .saturating_add(self.leeway)
            .saturating_sub(now);
        // `sleep` caps a far deadline by itself.
        tokio::time::sleep(left)
    }

    fn check_patterns(&self) -> Result<(), String> {
        match self
            .subscribe
            .iter()
            .chain(&self.publish)
            .find(|p| !valid_pattern(p))
        {
            Some(bad) => Err(bad.clone()),
            None => Ok(()),
        }
    }
}

/// Whether `pattern` (a topic, `prefix.*` or `*`) covers `topic`.
fn pattern_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty()),
        None => pattern == topic,
    }
}

fn valid_pattern(pattern: &str) -> bool {
    pattern == "*" || name::check(pattern.strip_suffix(".*").unwrap_or(pattern)).is_ok()
}

/// Verifies tokens with one key and its algorithm, or several told apart
/// by their `kid` ([`TokenVerifier::kid`], [`TokenVerifier::or`]: keys
/// rotated by the issuer). Cheap to clone; its `Debug` shows the
/// algorithms, never a key.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<Vec<Key>>,
    leeway: Duration,
    audience: Option<Arc<str>>,
    issuer: Option<Arc<str>>,
}

/// One key of a verifier.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.algorithm)).collect();
        f.debug_struct("TokenVerifier")
            .field("keys", &algorithms)
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Verifies HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Result<TokenVerifier, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        let key = DecodingKey::from_secret(secret)
            .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
        Ok(TokenVerifier::with(key, Algorithm::Hs256))
    }

    /// Verifies tokens signed by the private key of `pem`, a public key in
    /// PEM (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY`): RS256 for an
    /// RSA key, ES256 for an EC key (P-256).
    pub fn public_key_pem(pem: &[u8]) -> Result<TokenVerifier, KeyError> {
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(TokenVerifier::with(key, Algorithm::Es256));
        }
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
        Ok(TokenVerifier::with(key, Algorithm::Rs256))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> TokenVerifier {
        TokenVerifier {
            keys: Arc::new(vec![Key {
                kid: None,
                key,
                algorithm,
            }]),
            leeway: DEFAULT_LEEWAY,
            audience: None,
            issuer: None,
        }
    }

    /// Names this verifier's keys `kid`: a token then needs that `kid` in
    /// its header to be verified with them.
    pub fn kid(mut self, kid: impl Into<String>) -> TokenVerifier {
        let kid = kid.into();
        for key in Arc::make_mut(&mut self.keys) {
            key.kid = Some(kid.clone());
        }
        self
    }

    /// Takes the keys of `other` too: a token is verified with the key its
    /// header's `kid` names, or without a `kid`, with the one key that has
    /// none. So an issuer rotates keys: old and new are both taken until
    /// the old one's tokens have expired.
    pub fn or(mut self, other: TokenVerifier) -> TokenVerifier {
        let other = Arc::try_unwrap(other.keys).unwrap_or_else(|shared| (*shared).clone());
        Arc::make_mut(&mut self.keys).extend(other);
        self
    }

    /// Tokens must name `audience` in `aud` (a string or a list).
    pub fn audience(mut self, audience: impl Into<String>) -> TokenVerifier {
        self.audience = Some(audience.into().into());
        self
    }

    /// Tokens must name `issuer` in `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> TokenVerifier {
        self.issuer = Some(issuer.into().into());
        self
    }

    /// How far past its `exp` a token is still taken, and a connection kept
    /// open. Default: [`DEFAULT_LEEWAY`].
    pub fn leeway(mut self, leeway: Duration) -> TokenVerifier {
        self.leeway = leeway;
        self
    }

    /// The algorithm tokens must be signed with (of the first key).
    pub fn algorithm(&self) -> Algorithm {
        self.keys[0].algorithm
    }

    /// The key a token's header names.
    fn key_for(&self, kid: Option<&str>) -> Result<&Key, TokenError> {
        let found = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                // A server with one key and no names takes any `kid`: many
                // issuers name their key whether or not anyone asks.
                .or_else(|| self.only_unnamed()),
            None => {
                let mut unnamed = self.keys.iter().filter(|k| k.kid.is_none());
                match (unnamed.next(), unnamed.next()) {
                    (Some(key), None) => Some(key),
                    // Without names, one key alone may be taken for any.
                    (None, None) if self.keys.len() == 1 => self.keys.first(),
                    _ => None,
                }
            }
        };
        found.ok_or_else(|| TokenError::UnknownKey(kid.map(str::to_owned)))
    }

    /// The one key, when this verifier has one and it has no name.
    fn only_unnamed(&self) -> Option<&Key> {
        match &self.keys[..] {
            [key] if key.kid.is_none() => Some(key),
            _ => None,
        }
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header is read first, so that `alg: none` (which jsonwebtoken
        // cannot even parse) and a foreign algorithm get their own error.
        let (found, kid) = header_algorithm(token)?;
        let key = self.key_for(kid.as_deref())?;
        if found != key.algorithm.name() {
            return Err(TokenError::WrongAlgorithm {
                expected: key.algorithm,
                found,
            });
        }
        let mut validation = Validation::new(key.algorithm.jwt());
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        // A token not valid yet is refused too (with the same leeway).
        validation.validate_nbf = true;
        validation.validate_aud = false;
        if let Some(audience) = &self.audience {
            validation.set_audience(&[&**audience]);
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".to_owned());
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[&**issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        validation.leeway = self.leeway.as_secs();
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.into_kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidAudience => {
                        TokenError::Malformed("not for this audience (`aud`)".into())
                    }
                    ErrorKind::InvalidIssuer => {
                        TokenError::Malformed("not from this issuer (`iss`)".into())
                    }
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm {
                        expected: key.algorithm,
                        found: "another algorithm".to_owned(),
                    },
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::Malformed(format!("no `{claim}` claim"))
                    }
                    ErrorKind::Json(e) => TokenError::Malformed(format!("its claims: {e}")),
                    other => TokenError::Malformed(format!("{other:?}")),
                }
            })?;
        let mut claims = data.claims;
        claims
            .check_patterns()
            .map_err(|bad| TokenError::Malformed(format!("{bad:?} is not a topic or pattern")))?;
        claims.leeway = self.leeway;
        Ok(claims)
    }

    /// Finds the token of `request` ([`token_from_request`]) and verifies
    /// it.
    pub fn verify_request<B>(&self, request: &Request<B>) -> Result<Claims, TokenError> {
        self.verify(token_from_request(request)?)
    }
}

/// The `alg` and `kid` of a token's header, unverified.
fn header_algorithm(token: &str) -> Result<(String, Option<String>), TokenError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        kid: Option<String>,
    }
    let malformed = |why: &str| TokenError::Malformed(why.to_owned());
    if token.split('.').count() != 3 {
        return Err(malformed("not three dot-separated parts"));
    }
    let (header, _) = token.split_once('.').expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("its header is not base64url"))?;
    let header: RawHeader =
        serde_json::from_slice(&bytes).map_err(|_| malformed("its header is not a JSON object"))?;
    let alg = header
        .alg
        .ok_or_else(|| malformed("its header has no `alg`"))?;
    Ok((alg, header.kid))
}

/// The prefix of the `Sec-WebSocket-Protocol` entry that carries a token:
/// `bearer.TOKEN` (a JWT is all token characters, RFC 9110 §5.6.2), for a
/// browser, which cannot set `Authorization` on a WebSocket, to keep it out
/// of the URL and so out of access logs. The server never answers with it.
pub const PROTOCOL_TOKEN_PREFIX: &str = "bearer.";

/// The token a request carries: `Authorization: Bearer TOKEN`, else a
/// `Sec-WebSocket-Protocol` entry `bearer.TOKEN`, else the `token`
/// parameter of the query (taken as is: a JWT needs no escaping). Another
/// `Authorization` scheme (a proxy's `Basic`) is not a token.
pub fn token_from_request<B>(request: &Request<B>) -> Result<&str, TokenError> {
    if let Some(token) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer)
    {
        return Ok(token);
    }
    if let Some(token) = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(PROTOCOL_TOKEN_PREFIX))
        .filter(|t| !t.is_empty())
    {
        return Ok(token);
    }
    request
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Missing)
}

/// The credentials of an `Authorization: Bearer …` value (the scheme is
/// case-insensitive, RFC 7235 §2.1).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// Signs an HS256 token with `claims` (what `duplex token` prints, for
/// tests and tools; production tokens come from the application's own
/// issuer).
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> Result<String, SignError> {
    if secret.is_empty() {
        return Err(SignError::EmptySecret);
    }
    claims.check_patterns().map_err(SignError::InvalidPattern)?;
    let key = EncodingKey::from_secret(secret).map_err(|e| SignError::Jwt(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), claims, &key)
        .map_err(|e| SignError::Jwt(e.to_string()))
}

/// A key that `POST /topics/{name}` and `GET /metrics` need as
/// `Authorization: Bearer KEY`. Only its SHA-256 digest is kept; its
/// `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Why a request was refused by an [`ApiKey`]. Each is answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// No `Authorization: Bearer` header.
    #[error("an API key is required: Authorization: Bearer KEY")]
    Missing,
    /// A key that is not this one.
    #[error("wrong API key")]
    Wrong,
}

impl ApiKey {
    /// The key `key`; it may not be empty.
    pub fn new(key: impl AsRef<[u8]>) -> Result<ApiKey, KeyError> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(ApiKey {
            digest: Sha256::digest(key).into(),
        })
    }

    /// Whether `presented` is the key, in time that depends on neither.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }

    /// Whether `request` carries the key as `Authorization: Bearer KEY`.
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), ApiKeyError> {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(bearer)
            .ok_or(ApiKeyError::Missing)?;
        if self.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(ApiKeyError::Wrong)
        }
    }
}

/// `url` with its password (or, without one, its whole user part) replaced
/// by `***`, for logs and errors: `redis://:secret@host/` →
/// `redis://:***@host/`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{masked}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of some length";

    fn in_secs(secs: i64) -> SystemTime {
        let now = SystemTime::now();
        if secs >= 0 {
            now + Duration::from_secs(secs.unsigned_abs())
        } else {
            now - Duration::from_secs(secs.unsigned_abs())
        }
    }

    fn alice(expires_in: i64) -> Claims {
        Claims::new("alice", in_secs(expires_in))
            .subscribe(["news", "chat.*"])
            .publish(["chat.*"])
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with this header and payload, signed (or not) by hand.
    fn raw_token(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.as_bytes()),
            b64(signature)
        )
    }

    fn exp_in(secs: i64) -> u64 {
        in_secs(secs).duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_signed_token_gives_its_claims() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        assert_eq!(verifier.algorithm(), Algorithm::Hs256);
        let token = sign_hs256(SECRET, &alice(60)).unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.subject(), "alice");
        assert!(claims.may_subscribe("news"));
        assert!(claims.may_subscribe("chat.room"));
        assert!(!claims.may_subscribe("sport"));
        assert!(claims.may_publish("chat.room"));
        assert!(!claims.may_publish("news"));
        let left = claims
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
    }

    /// An HS256 token signed with `secret`, `extra` merged into its claims
    /// and `kid` in its header.
    fn signed(secret: &[u8], kid: Option<&str>, extra: serde_json::Value) -> String {
        let mut claims = serde_json::json!({"sub": "alice", "exp": exp_in(60)});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    #[test]
    fn rotated_keys_are_told_apart_by_kid() {
        let verifier = TokenVerifier::hs256(b"old secret")
            .unwrap()
            .kid("2026-11")
            .or(TokenVerifier::hs256(b"new secret").unwrap().kid("2026-12"));
        let none = serde_json::json!({});
        for (secret, kid) in [(&b"old secret"[..], "2026-11"), (b"new secret", "2026-12")] {
            assert!(
                verifier
                    .verify(&signed(secret, Some(kid), none.clone()))
                    .is_ok()
            );
        }
        assert_eq!(
            verifier.verify(&signed(b"new secret", Some("2026-11"), none.clone())),
            Err(TokenError::BadSignature),
            "each kid its own key"
        );
        assert_eq!(
            verifier.verify(&signed(b"new secret", Some("2025"), none.clone())),
            Err(TokenError::UnknownKey(Some("2025".into())))
        );
        assert_eq!(
            verifier.verify(&signed(b"new secret", None, none.clone())),
            Err(TokenError::UnknownKey(None)),
            "several keys: a token must say which"
        );
        // One key without a name takes a token with or without a kid.
        let one = TokenVerifier::hs256(SECRET).unwrap();
        assert!(
            one.verify(&signed(SECRET, Some("any"), none.clone()))
                .is_ok()
        );
        assert!(one.verify(&signed(SECRET, None, none)).is_ok());
    }

    #[test]
    fn audience_issuer_and_not_before_are_checked() {
        let verifier = TokenVerifier::hs256(SECRET)
            .unwrap()
            .audience("push")
            .issuer("https://app.example");
        let good = serde_json::json!({"aud": "push", "iss": "https://app.example"});
        assert!(verifier.verify(&signed(SECRET, None, good)).is_ok());
        let listed = serde_json::json!({"aud": ["api", "push"], "iss": "https://app.example"});
        assert!(verifier.verify(&signed(SECRET, None, listed)).is_ok());
        for bad in [
            serde_json::json!({"iss": "https://app.example"}),
            serde_json::json!({"aud": "api", "iss": "https://app.example"}),
            serde_json::json!({"aud": "push"}),
            serde_json::json!({"aud": "push", "iss": "https://evil.example"}),
        ] {
            assert!(
                matches!(
                    verifier.verify(&signed(SECRET, None, bad.clone())),
                    Err(TokenError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Without them configured, `aud` and `iss` are not looked at.
        let plain = TokenVerifier::hs256(SECRET).unwrap();
        assert!(
            plain
                .verify(&signed(SECRET, None, serde_json::json!({"aud": "x"})))
                .is_ok()
        );
        let later = serde_json::json!({"nbf": exp_in(3600)});
        assert_eq!(
            plain.verify(&signed(SECRET, None, later)),
            Err(TokenError::NotYetValid)
        );
        let now = serde_json::json!({"nbf": exp_in(-1)});
        assert!(plain.verify(&signed(SECRET, None, now)).is_ok());
    }

    #[test]
    fn a_token_may_come_as_a_subprotocol() {
        let request = Request::get("/topics")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "duplex.v1, bearer.a.b.c")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&request), Ok("a.b.c"));
        let header_wins = Request::get("/topics?token=q.q.q")
            .header(header::AUTHORIZATION, "Bearer h.h.h")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "bearer.p.p.p")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&header_wins), Ok("h.h.h"));
    }

    #[test]
    fn patterns_match_below_their_prefix_only() {
        let claims = Claims::new("c", in_secs(60)).subscribe(["chat.*", "news"]);
        assert!(claims.may_subscribe("chat.x"));
        assert!(claims.may_subscribe("chat.x.y"));
        assert!(!claims.may_subscribe("chat"));
        assert!(!claims.may_subscribe("chat."));
        assert!(!claims.may_subscribe("chatx.y"));
        assert!(claims.may_subscribe("news"));
        assert!(!claims.may_subscribe("news.x"), "an exact name is exact");
        assert!(
            !claims.may_publish("news"),
            "no publish claim grants nothing"
        );
        let all = Claims::new("c", in_secs(60)).publish(["*"]);
        assert!(all.may_publish("anything.at.all"));
        assert!(!all.may_subscribe("anything"));
        for bad in ["a b", "chat.*.x", "", "*.x"] {
            let claims = Claims::new("c", in_secs(60)).subscribe([bad]);
            assert!(
                matches!(sign_hs256(SECRET, &claims), Err(SignError::InvalidPattern(p)) if p == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expired_tokens_are_refused_past_the_leeway() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let expired = sign_hs256(SECRET, &alice(-60)).unwrap();
        assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
        // Two seconds past: within the default leeway of five.
        let just_past = sign_hs256(SECRET, &alice(-2)).unwrap();
        assert!(verifier.verify(&just_past).is_ok());
        let strict = verifier.leeway(Duration::ZERO);
        assert_eq!(strict.verify(&just_past), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let forged = sign_hs256(b"another secret", &alice(60)).unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
        // Claims changed after signing.
        let token = sign_hs256(SECRET, &alice(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let payload = format!(
            "{{\"sub\":\"alice\",\"exp\":{},\"subscribe\":[\"*\"]}}",
            exp_in(60)
        );
        let tampered = format!("{}.{}.{}", parts[0], b64(payload.as_bytes()), parts[2]);
        assert_eq!(verifier.verify(&tampered), Err(TokenError::BadSignature));
        // A forged signature wins over an expired one: nothing of an
        // unverified token is believed.
        let forged_expired = sign_hs256(b"another secret", &alice(-60)).unwrap();
        assert_eq!(
            verifier.verify(&forged_expired),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let payload = format!("{{\"sub\":\"mallory\",\"exp\":{}}}", exp_in(60));
        let none = raw_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", &payload, b"");
        assert_eq!(
            verifier.verify(&none),
            Err(TokenError::WrongAlgorithm {
                expected: Algorithm::Hs256,
                found: "none".to_owned()
            })
        );
        let hs384 = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS384),
            &alice(60),
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&hs384),
            Err(TokenError::WrongAlgorithm { found, .. }) if found == "HS384"
        ));
        let no_alg = raw_token("{\"typ\":\"JWT\"}", &payload, b"x");
        assert!(matches!(
            verifier.verify(&no_alg),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_tokens_and_claims_are_refused() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        for garbage in ["", "abc", "a.b", "a.b.c", "%%%.x.y"] {
            assert!(
                matches!(verifier.verify(garbage), Err(TokenError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let header = Header::new(jsonwebtoken::Algorithm::HS256);
        let sign =
            |claims: serde_json::Value| jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let no_exp = sign(serde_json::json!({"sub": "alice"}));
        let no_sub = sign(serde_json::json!({"exp": exp_in(60)}));
        let bad_pattern =
            sign(serde_json::json!({"sub": "a", "exp": exp_in(60), "publish": ["a b"]}));
        let not_a_list =
            sign(serde_json::json!({"sub": "a", "exp": exp_in(60), "subscribe": "news"}));
        for token in [no_exp, no_sub, bad_pattern, not_a_list] {
            let err = verifier.verify(&token).unwrap_err();
            assert!(matches!(err, TokenError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key_only() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let verifier = TokenVerifier::public_key_pem(pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(verifier.algorithm(), Algorithm::Es256);
        let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let header = Header::new(jsonwebtoken::Algorithm::ES256);
        let token = jsonwebtoken::encode(&header, &alice(60), &private).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().subject(), "alice");

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let forged = jsonwebtoken::encode(&header, &alice(60), &other).unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));

        // The confusion attack: an HS256 token whose secret is the public
        // key that every client may know.
        let confused = sign_hs256(pair.public_key_pem().as_bytes(), &alice(60)).unwrap();
        assert!(matches!(
            verifier.verify(&confused),
            Err(TokenError::WrongAlgorithm { expected: Algorithm::Es256, found }) if found == "HS256"
        ));
        assert!(matches!(
            TokenVerifier::public_key_pem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            ),
            Err(KeyError::InvalidPublicKey(_))
        ));
        assert!(matches!(
            TokenVerifier::hs256(b""),
            Err(KeyError::EmptySecret)
        ));
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_query() {
        let request = |uri: &str, authorization: Option<&str>| {
            let mut builder = Request::get(uri);
            if let Some(value) = authorization {
                builder = builder.header(header::AUTHORIZATION, value);
            }
            builder.body(()).unwrap()
        };
        let r = request("/topics/t?x=1&token=abc.def.ghi", None);
        assert_eq!(token_from_request(&r), Ok("abc.def.ghi"));
        let r = request("/topics/t", Some("bearer  abc.def.ghi "));
        assert_eq!(token_from_request(&r), Ok("abc.def.ghi"));
        let r = request(
            "/topics/t?token=from.the.query",
            Some("Bearer from.the.header"),
        );
        assert_eq!(token_from_request(&r), Ok("from.the.header"));
        let r = request("/topics/t?token=", Some("Basic dXNlcjpwYXNz"));
        assert_eq!(token_from_request(&r), Err(TokenError::Missing));
        let r = request("/topics/t?mytoken=x", None);
        assert_eq!(token_from_request(&r), Err(TokenError::Missing));

        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let token = sign_hs256(SECRET, &alice(60)).unwrap();
        let r = request(&format!("/topics/news?token={token}"), None);
        assert_eq!(verifier.verify_request(&r).unwrap().subject(), "alice");
    }

    #[test]
    fn api_keys_match_exactly() {
        let key = ApiKey::new("k3y").unwrap();
        assert!(key.matches(b"k3y"));
        assert!(!key.matches(b"k3y "));
        assert!(!key.matches(b""));
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
        let request = |authorization: Option<&str>| {
            let mut builder = Request::post("/topics/t");
            if let Some(value) = authorization {
                builder = builder.header(header::AUTHORIZATION, value);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(key.check(&request(Some("Bearer k3y"))), Ok(()));
        assert_eq!(
            key.check(&request(Some("Bearer nope"))),
            Err(ApiKeyError::Wrong)
        );
        assert_eq!(key.check(&request(Some("k3y"))), Err(ApiKeyError::Missing));
        assert_eq!(key.check(&request(None)), Err(ApiKeyError::Missing));
        assert!(matches!(ApiKey::new(""), Err(KeyError::EmptySecret)));
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        assert!(!format!("{verifier:?}").contains("secret"));
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url_password("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            mask_url_password("redis://user:p@ss@host/"),
            "redis://user:***@host/"
        );
        assert_eq!(
            mask_url_password("rediss://token@host"),
            "rediss://***@host"
        );
        assert_eq!(
            mask_url_password("redis://127.0.0.1:6379/?a=b@c"),
            "redis://127.0.0.1:6379/?a=b@c"
        );
        assert_eq!(mask_url_password("not a url"), "not a url");
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_timer_fires_at_exp_plus_the_leeway() {
        let verifier = TokenVerifier::hs256(SECRET)
            .unwrap()
            .leeway(Duration::from_secs(2));
        let token = sign_hs256(SECRET, &alice(3)).unwrap();
        let claims = verifier.verify(&token).unwrap();
        // `exp` is whole seconds: between 2 and 3 s from now, plus 2.
        let start = tokio::time::Instant::now();
        claims.expiry().await;
        let waited = start.elapsed();
        assert!(
            waited > Duration::from_secs(4) && waited <= Duration::from_secs(5),
            "{waited:?}"
        );
        let past = sign_hs256(SECRET, &alice(-1)).unwrap();
        let claims = verifier.verify(&past).unwrap();
        let start = tokio::time::Instant::now();
        claims.expiry().await;
        assert!(start.elapsed() <= Duration::from_secs(1));
    }
}
