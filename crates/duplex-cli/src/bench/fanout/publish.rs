//! The publisher of a fan-out run: POSTs over keep-alive HTTP/1.1
//! connections (hyper's client), in the dialect of the server under load.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::plan::{Dialect, FanoutPlan, Target};
#[cfg(feature = "pusher")]
use super::plan::{PusherApp, topic_name};
use super::shared::Shared;
use super::stamp::Stamp;
use crate::bench::error::BenchError;

/// How long one POST may take.
pub(super) const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest POST answer body read (the rest is an error).
const MAX_ANSWER: usize = 64 << 10;
/// The Pusher event name of the benchmark's messages.
#[cfg(feature = "pusher")]
const PUSHER_EVENT: &str = "fanout";

/// One keep-alive HTTP/1.1 connection of the publisher.
pub(super) struct Poster {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: std::net::SocketAddr,
}

async fn connect_poster(addr: std::net::SocketAddr) -> Result<Poster, BenchError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| BenchError::UnexpectedReply(format!("HTTP: {e}")))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "publish connection ended");
        }
    });
    Ok(Poster { sender, addr })
}

/// POSTs one publish and, at rate max, holds its slot until every
/// subscriber has it (or `--deliver-timeout`).
pub(super) async fn publish_one(
    plan: Rc<FanoutPlan>,
    shared: Rc<RefCell<Shared>>,
    pool: Rc<RefCell<Vec<Poster>>>,
    stamp: Stamp,
    done: Option<oneshot::Receiver<()>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let target = &plan.publish[stamp.topic as usize];
    let result = tokio::time::timeout(POST_TIMEOUT, post(&plan, target, &pool, stamp)).await;
    let result = result.unwrap_or_else(|_| Err(BenchError::Timeout));
    {
        let mut s = shared.borrow_mut();
        s.posts -= 1;
        match &result {
            Ok(()) => {
                s.acked[stamp.topic as usize].insert(stamp.seq);
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish failed");
                s.publish_errors += 1;
                s.first_publish_error.get_or_insert_with(|| e.to_string());
                s.pending.remove(&(stamp.topic, stamp.seq));
            }
        }
    }
    if result.is_ok()
        && let Some(done) = done
    {
        let _ = tokio::time::timeout(plan.deliver_timeout, done).await;
        shared
            .borrow_mut()
            .pending
            .remove(&(stamp.topic, stamp.seq));
    }
    drop(permit);
}

async fn post(
    plan: &FanoutPlan,
    target: &Target,
    pool: &RefCell<Vec<Poster>>,
    stamp: Stamp,
) -> Result<(), BenchError> {
    let reuse = {
        let mut pool = pool.borrow_mut();
        let at = pool
            .iter()
            .position(|p| p.addr == target.addr && !p.sender.is_closed());
        at.map(|i| pool.swap_remove(i))
    };
    let mut poster = match reuse {
        Some(p) => p,
        None => connect_poster(target.addr).await?,
    };
    let request = publish_request(plan, target, stamp)?;
    let http_error = |e: hyper::Error| BenchError::UnexpectedReply(format!("HTTP: {e}"));
    poster.sender.ready().await.map_err(http_error)?;
    let response = poster
        .sender
        .send_request(request)
        .await
        .map_err(http_error)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| BenchError::UnexpectedReply(format!("POST answer: {e}")))?
        .to_bytes();
    pool.borrow_mut().push(poster);
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(BenchError::UnexpectedReply(format!(
            "POST {}: {status} {}",
            target.uri,
            text.trim()
        )));
    }
    Ok(())
}

fn publish_request(
    plan: &FanoutPlan,
    target: &Target,
    stamp: Stamp,
) -> Result<http::Request<Full<Bytes>>, BenchError> {
    let payload = stamp.encode(plan.size);
    let host = target.uri.authority().map(|a| a.as_str()).unwrap_or("");
    let builder = http::Request::post(target.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, host);
    let (builder, body) = match plan.dialect {
        Dialect::Duplex | Dialect::V1 | Dialect::Plain => {
            let mut b = builder.header(http::header::CONTENT_TYPE, "text/plain");
            if let Some(key) = &plan.api_key {
                b = b.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            (b, payload)
        }
        // Refused when the plan is made.
        #[cfg(not(feature = "pusher"))]
        Dialect::Pusher => unreachable!("--dialect pusher without the pusher feature"),
        #[cfg(feature = "pusher")]
        Dialect::Pusher => {
            let path = target.uri.path();
            let data = String::from_utf8_lossy(&payload).into_owned();
            let body = serde_json::json!({
                "name": PUSHER_EVENT,
                "channels": [topic_name(stamp.topic as usize)],
                "data": data,
            })
            .to_string()
            .into_bytes();
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let query = pusher_auth_query(&plan.app, "POST", path, &body, timestamp);
            let b = http::Request::post(format!("{path}?{query}"))
                .header(http::header::HOST, host)
                .header(http::header::CONTENT_TYPE, "application/json");
            (b, body)
        }
    };
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| BenchError::Usage(format!("{}: {e}", target.uri)))
}

#[cfg(feature = "pusher")]
/// The query string that signs a Pusher HTTP API request: `auth_key`,
/// `auth_timestamp`, `auth_version`, `body_md5` and `auth_signature`, the
/// HMAC-SHA256 of "METHOD\nPATH\nQUERY" under the app secret.
fn pusher_auth_query(
    app: &PusherApp,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    use hmac::{KeyInit, Mac};
    use md5::Digest;
    let body_md5 = hex(&md5::Md5::digest(body));
    let params = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        app.key
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(app.secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{method}\n{path}\n{params}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    format!("{params}&auth_signature={signature}")
}

#[cfg(feature = "pusher")]
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "pusher")]
    use super::*;

    /// Pusher's worked example of HTTP API authentication.
    #[cfg(feature = "pusher")]
    #[test]
    fn pusher_signature_matches_the_worked_example() {
        let app = PusherApp {
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = pusher_auth_query(&app, "POST", "/apps/3/events", body, 1353088179);
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }
}
