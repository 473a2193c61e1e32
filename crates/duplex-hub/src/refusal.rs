//! The HTTP answers to a request that may not: 401 for a missing or bad
//! token or API key, with `WWW-Authenticate: Bearer` (RFC 6750 §3), 403
//! for a token whose claims do not cover the topic. `auth` decides; this
//! says so over HTTP, so that `auth` knows no response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::auth::{ApiKeyError, TokenError};

impl TokenError {
    /// The 401 answer, with `WWW-Authenticate: Bearer` (RFC 6750 §3) and
    /// this error as the body.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let challenge = match self {
            // RFC 6750 §3.1: a request without credentials gets no error code.
            TokenError::Missing => "Bearer realm=\"duplex\"".to_owned(),
            other => format!(
                "Bearer realm=\"duplex\", error=\"invalid_token\", error_description=\"{}\"",
                quotable(&other.to_string())
            ),
        };
        refusal(StatusCode::UNAUTHORIZED, &challenge, &format!("{self}\n"))
    }
}

impl ApiKeyError {
    /// The 401 answer, with `WWW-Authenticate: Bearer` and this error as
    /// the body.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let challenge = match self {
            ApiKeyError::Missing => "Bearer realm=\"duplex\"",
            ApiKeyError::Wrong => "Bearer realm=\"duplex\", error=\"invalid_token\"",
        };
        refusal(StatusCode::UNAUTHORIZED, challenge, &format!("{self}\n"))
    }
}

/// The 403 answer to a subscription outside the token's `subscribe` claim.
pub(crate) fn forbidden_topic(topic: &str) -> Response<Full<Bytes>> {
    refusal(
        StatusCode::FORBIDDEN,
        "Bearer realm=\"duplex\", error=\"insufficient_scope\"",
        &format!("the token does not allow subscribing to {topic:?}\n"),
    )
}

/// The 403 answer to a `POST` to `topic` outside the token's `publish`
/// claim (`None`: `/metrics`, which needs `publish: ["*"]`).
pub(crate) fn forbidden_publish(topic: Option<&str>) -> Response<Full<Bytes>> {
    let body = match topic {
        Some(topic) => format!("the token does not allow publishing to {topic:?}\n"),
        None => "reading /metrics needs the API key or a token with publish [\"*\"]\n".to_owned(),
    };
    refusal(
        StatusCode::FORBIDDEN,
        "Bearer realm=\"duplex\", error=\"insufficient_scope\"",
        &body,
    )
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("static response")
}

/// A refusal with a `WWW-Authenticate` challenge and a text body.
fn refusal(status: StatusCode, challenge: &str, body: &str) -> Response<Full<Bytes>> {
    let mut response = text(status, body);
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `text` fit for a quoted-string: no quotes or backslashes.
fn quotable(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_their_challenge() {
        let response = TokenError::Missing.to_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"duplex\""
        );
        let response = TokenError::Expired.to_response();
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"duplex\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let response = forbidden_topic("sport");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let response = ApiKeyError::Wrong.to_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"duplex\", error=\"invalid_token\""
        );
        assert_eq!(forbidden_publish(None).status(), StatusCode::FORBIDDEN);
    }
}
