//! `duplex token`: an HS256 token for testing a `duplex serve
//! --token-secret`, signed by [`duplex_hub::auth::sign_hs256`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use duplex_hub::auth::Claims;

use crate::auth::{Secret, secret_from};

/// Arguments of `duplex token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The HS256 secret, the server's --token-secret. Default: the
    /// environment's DUPLEX_TOKEN_SECRET.
    #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
    secret: Option<Secret>,
    /// Read the secret from FILE (a final line break is not part of it).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Who the client is (the `sub` claim).
    #[arg(long, value_name = "NAME")]
    sub: String,
    /// A topic, a pattern `prefix.*` (below prefix) or `*` (every topic)
    /// the client may subscribe to; repeatable, or comma-separated.
    #[arg(long, value_name = "TOPIC", value_delimiter = ',')]
    subscribe: Vec<String>,
    /// A topic or pattern the client may publish on (as --subscribe).
    #[arg(long, value_name = "TOPIC", value_delimiter = ',')]
    publish: Vec<String>,
    /// How long the token is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_name = "TTL", value_parser = parse_ttl)]
    ttl: Duration,
    /// Whom the token is for (the `aud` claim), for a server's
    /// --token-audience.
    #[arg(long, value_name = "AUD")]
    aud: Option<String>,
    /// Who issued it (the `iss` claim), for a server's --token-issuer.
    #[arg(long, value_name = "ISS")]
    iss: Option<String>,
}

pub(crate) fn run(args: TokenArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let secret = secret_from(
        args.secret.as_ref(),
        args.secret_file.as_deref(),
        "secret",
        "DUPLEX_TOKEN_SECRET",
    )?
    .ok_or("--secret, --secret-file or DUPLEX_TOKEN_SECRET is required")?;
    let expires_at = SystemTime::now()
        .checked_add(args.ttl)
        .ok_or("--ttl is too long")?;
    let mut claims = Claims::new(args.sub, expires_at)
        .subscribe(args.subscribe)
        .publish(args.publish);
    if let Some(aud) = args.aud {
        claims = claims.audience(aud);
    }
    if let Some(iss) = args.iss {
        claims = claims.issuer(iss);
    }
    let token = duplex_hub::auth::sign_hs256(secret.as_bytes(), &claims)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{token}")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number of s, m, h or d"))?;
    let seconds = number
        .checked_mul(scale)
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("{text:?}: a TTL is at least 1 s and at most u64 seconds"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "1w", "-1h", "0", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
