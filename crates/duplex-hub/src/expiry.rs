//! The token-expiry rule, once for every WebSocket served with tokens (raw
//! topic subscribers, duplex.v1 connections, and an application's own
//! routes, such as `duplex serve`'s echo): a connection whose token expires
//! while it is open is closed with 1008 "token expired" (RFC 6455 §7.4.1,
//! policy violation, as Centrifugo does), by one timer set at `exp` plus the
//! verifier's leeway, not by a check per message.

use std::future::pending;
use std::pin::Pin;

use duplex_ws::{CloseCode, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::auth::Claims;

/// The close reason of a connection whose token expired (code 1008).
pub const TOKEN_EXPIRED: &str = "token expired";

/// When a connection's token expires, if it has one.
///
/// ```no_run
/// # async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
/// #     mut ws: duplex_ws::WebSocket<S>, claims: Option<duplex_hub::auth::Claims>) {
/// use duplex_hub::Expiry;
/// let mut expiry = Expiry::of(claims.as_ref());
/// loop {
///     tokio::select! {
///         event = ws.next() => if event.is_none() { break },
///         () = expiry.fired() => { let _ = Expiry::close(&mut ws).await; }
///     }
/// }
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Expiry {
    /// Boxed: a connection without a token should not pay for a timer in
    /// its future.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Expiry {
    /// The close code of the rule.
    pub const CODE: CloseCode = CloseCode::POLICY_VIOLATION;
    /// The close reason of the rule.
    pub const REASON: &'static str = TOKEN_EXPIRED;

    /// The expiry of `claims`' token; without a token, never.
    pub fn of(claims: Option<&Claims>) -> Self {
        Expiry {
            timer: claims.map(|claims| Box::pin(claims.expiry())),
        }
    }

    /// No token: [`Expiry::fired`] never completes.
    pub fn never() -> Self {
        Expiry::default()
    }

    /// Completes once, when the token expires (at once if it already has);
    /// after that, and without a token, it never does, so that it can sit
    /// in a `select!` loop for the connection's life.
    pub async fn fired(&mut self) {
        match &mut self.timer {
            Some(timer) => {
                timer.as_mut().await;
                self.timer = None;
            }
            None => pending().await,
        }
    }

    /// Starts the closing handshake the rule asks for: 1008 "token expired".
    pub async fn close<S>(ws: &mut WebSocket<S>) -> Result<(), duplex_ws::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::info!("closing a connection whose token expired");
        ws.close_with(Self::CODE, Self::REASON).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn claims(exp_in: u64) -> Claims {
        Claims::new(
            "alice",
            std::time::SystemTime::now() + Duration::from_secs(exp_in),
        )
    }

    /// It fires once at expiry, then never again; without a token, never.
    #[tokio::test(start_paused = true)]
    async fn fires_once_at_expiry_and_never_without_a_token() {
        let mut expiry = Expiry::of(Some(&claims(2)));
        let started = tokio::time::Instant::now();
        expiry.fired().await;
        let waited = started.elapsed();
        assert!(
            waited > Duration::from_secs(1) && waited <= Duration::from_secs(2),
            "{waited:?}"
        );
        let again = tokio::time::timeout(Duration::from_secs(3600), expiry.fired()).await;
        assert!(again.is_err(), "fired twice");
        let mut never = Expiry::of(None);
        let fired = tokio::time::timeout(Duration::from_secs(3600), never.fired()).await;
        assert!(fired.is_err());
        assert_eq!((Expiry::CODE.0, Expiry::REASON), (1008, "token expired"));
    }
}
