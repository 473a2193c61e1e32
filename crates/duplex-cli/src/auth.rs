//! The flags of who may use `duplex serve`: the token key
//! (`--token-secret`, `--token-secret-file`, `DUPLEX_TOKEN_SECRET`,
//! `--token-public-key`) and the API key (`--api-key`, `--api-key-file`,
//! `DUPLEX_API_KEY`). Secrets are read here and handed to
//! [`duplex_hub::auth`]; they are never printed or logged.
//!
//! The environment variables are read here rather than by clap's `env`:
//! clap would count a variable as the flag given, so a `DUPLEX_TOKEN_SECRET`
//! left in the environment would conflict with `--token-public-key` or
//! `--token-secret-file` on the command line. A flag always wins over the
//! environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use duplex_hub::auth::{ApiKey, TokenVerifier};

/// A secret given on the command line or in the environment. Its `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// A secret from `--flag`, its `--flag-file` (the file's contents less a
/// final line break, so that `echo KEY > file` works), or else the
/// environment variable `env`.
pub(crate) fn secret_from(
    value: Option<&Secret>,
    file: Option<&Path>,
    flag: &str,
    env: &str,
) -> Result<Option<Secret>, String> {
    let secret = match (value, file) {
        (Some(value), _) => value.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--{flag}-file {}: {e}", path.display()))?;
            Secret(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, None) => match std::env::var_os(env) {
            Some(value) => Secret(
                value
                    .into_string()
                    .map_err(|_| format!("{env} is not UTF-8"))?,
            ),
            None => return Ok(None),
        },
    };
    if secret.0.is_empty() {
        return Err(format!("--{flag} (or {env}) is empty"));
    }
    Ok(Some(secret))
}

/// Who may connect, subscribe, publish and read /metrics.
#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    /// HS256 secret of the tokens that every WebSocket (topics and echo)
    /// then needs, as Authorization: Bearer TOKEN, the subprotocol
    /// bearer.TOKEN (a browser's way, kept out of URLs) or ?token=TOKEN: 401
    /// without a valid one, 403 for a topic outside its `subscribe` claim;
    /// a message on a topic outside its `publish` claim closes the
    /// connection with 1008 "publish not allowed", and so does its expiry
    /// (1008 "token expired"). `duplex token` makes one. Default: the
    /// environment's DUPLEX_TOKEN_SECRET, when no other token flag is given.
    #[arg(
        long,
        value_name = "SECRET",
        conflicts_with_all = ["token_secret_file", "token_public_key"]
    )]
    token_secret: Option<Secret>,
    /// Read the HS256 token secret from FILE (a final line break is not
    /// part of it).
    #[arg(long, value_name = "FILE", conflicts_with = "token_public_key")]
    token_secret_file: Option<PathBuf>,
    /// Public key in PEM of the tokens' issuer: RS256 for an RSA key,
    /// ES256 for an EC P-256 key. Tokens of any other algorithm, and
    /// `alg: none`, are refused. Repeat it as KID=FILE to take several keys
    /// (an issuer rotating them): a token is checked with the key its
    /// header's `kid` names.
    #[arg(long, value_name = "[KID=]FILE")]
    token_public_key: Vec<String>,
    /// Tokens must name AUD in their `aud` claim (401 otherwise).
    #[arg(long, value_name = "AUD")]
    token_audience: Option<String>,
    /// Tokens must name ISS in their `iss` claim (401 otherwise).
    #[arg(long, value_name = "ISS")]
    token_issuer: Option<String>,
    /// Key that POST /topics/NAME and GET /metrics then need as
    /// Authorization: Bearer KEY (401 otherwise). /healthz stays open.
    /// Default: the environment's DUPLEX_API_KEY, when --api-key-file is not
    /// given.
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_file")]
    api_key: Option<Secret>,
    /// Read the API key from FILE (a final line break is not part of it).
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// With a token key: let anyone POST /topics/NAME. Without it, a POST
    /// needs the API key or a token whose `publish` claim covers the topic
    /// (Authorization: Bearer TOKEN), and /metrics the API key or a token
    /// with publish `*`.
    #[arg(long)]
    pub(crate) open_post: bool,
}

/// One `--token-public-key [KID=]FILE`, read: a value that names an
/// existing file is a file, whatever it holds; else `KID=` before the path
/// names the key.
fn key_name(value: &str) -> (Option<&str>, &str) {
    match value.split_once('=') {
        Some((kid, path))
            if !Path::new(value).exists()
                && !kid.is_empty()
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            (Some(kid), path)
        }
        _ => (None, value),
    }
}

/// The verifier of one `--token-public-key`, named `kid` if given.
fn public_key(value: &str, kid: Option<&str>, path: &str) -> Result<TokenVerifier, String> {
    let fail = |e: &dyn std::fmt::Display| format!("--token-public-key {value}: {e}");
    let pem = std::fs::read(path).map_err(|e| fail(&e))?;
    let verifier = TokenVerifier::public_key_pem(&pem).map_err(|e| fail(&e))?;
    Ok(match kid {
        Some(kid) => verifier.kid(kid),
        None => verifier,
    })
}

impl AuthArgs {
    /// The token verifier, if a token key is given.
    pub(crate) fn verifier(&self) -> Result<Option<TokenVerifier>, String> {
        let verifier = if self.token_public_key.is_empty() {
            let secret = secret_from(
                self.token_secret.as_ref(),
                self.token_secret_file.as_deref(),
                "token-secret",
                "DUPLEX_TOKEN_SECRET",
            )?;
            match secret {
                Some(s) => TokenVerifier::hs256(s.as_bytes())
                    .map_err(|e| format!("--token-secret: {e}"))?,
                None => {
                    if self.token_audience.is_some() || self.token_issuer.is_some() {
                        return Err("--token-audience and --token-issuer need a token key \
                             (--token-secret or --token-public-key)"
                            .to_owned());
                    }
                    return Ok(None);
                }
            }
        } else {
            let several = self.token_public_key.len() > 1;
            let mut keys = None::<TokenVerifier>;
            for value in &self.token_public_key {
                let (kid, path) = key_name(value);
                if several && kid.is_none() {
                    return Err(format!(
                        "--token-public-key {value}: with several keys, name each as KID=FILE"
                    ));
                }
                let key = public_key(value, kid, path)?;
                keys = Some(match keys {
                    Some(keys) => keys.or(key),
                    None => key,
                });
            }
            keys.expect("at least one --token-public-key")
        };
        let mut verifier = verifier;
        if let Some(audience) = &self.token_audience {
            verifier = verifier.audience(audience);
        }
        if let Some(issuer) = &self.token_issuer {
            verifier = verifier.issuer(issuer);
        }
        Ok(Some(verifier))
    }

    /// The API key, if one is given.
    pub(crate) fn api_key(&self) -> Result<Option<ApiKey>, String> {
        let key = secret_from(
            self.api_key.as_ref(),
            self.api_key_file.as_deref(),
            "api-key",
            "DUPLEX_API_KEY",
        )?;
        key.map(|k| ApiKey::new(k.as_bytes()).map_err(|e| format!("--api-key: {e}")))
            .transpose()
    }
}

/// The one line `duplex serve` says at start about what is open to
/// anyone, or `None` when nothing is.
pub(crate) fn open_doors(tokens: bool, api_key: bool, open_post: bool) -> Option<&'static str> {
    match (tokens, api_key, open_post) {
        (false, false, _) => Some(
            "duplex: no --token-secret or --token-public-key: any client may connect, subscribe \
             and publish; no --api-key: anyone may POST to topics and read /metrics",
        ),
        (false, true, _) => Some(
            "duplex: no --token-secret or --token-public-key: any client may connect, subscribe \
             and publish by WebSocket",
        ),
        (true, _, true) => Some("duplex: --open-post: anyone may POST to topics"),
        (true, _, false) => None,
    }
}
