//! Topics in `duplex serve`: a WebSocket on `/topics/{name}` subscribes to
//! the topic and publishes every message it sends to it; `POST
//! /topics/{name}` publishes the request body; `GET /metrics` shows the
//! counters. The hub itself (queues, slow consumers, Redis) is
//! `duplex-hub`'s; this module only wires it to connections and requests.

use bytes::Bytes;
use duplex::{CloseCode, Event, Message, Utf8Bytes, WebSocket};
use duplex_hub::{Hub, HubError, RecvError, Subscription};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::serve::Open;
use crate::shutdown::Fired;

/// The path prefix of topics.
pub(crate) const PREFIX: &str = "/topics/";

/// The topic a path names, if it is under `/topics/` (not yet validated).
pub(crate) fn topic_of(path: &str) -> Option<&str> {
    path.strip_prefix(PREFIX)
}

/// A subscriber's connection: messages published to the topic go out, and
/// messages it sends are published to the topic (everyone subscribed gets
/// them, the sender included). Ends on close, on shutdown (1001), when the
/// subscriber falls behind by a whole queue (1008, "slow consumer"), or,
/// dropped without a closing handshake, when one message takes longer than
/// the hub's `send_timeout` to write (a peer that stopped reading).
pub(crate) async fn session<S>(
    mut ws: WebSocket<S>,
    mut subscription: Subscription,
    open: Open,
    mut shutdown: Fired,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hub = open.hub();
    let topic = subscription.topic().to_owned();
    let mut closing = false;
    loop {
        tokio::select! {
            event = ws.next() => match event {
                Some(Event::Message(message)) => {
                    // Published, then delivered through the subscription
                    // like everyone's: one order for every subscriber.
                    let _ = hub.publish(&topic, message);
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            },
            received = subscription.recv(), if !closing => match received {
                Ok(broadcast) => {
                    let timeout = hub.config().send_timeout;
                    // What else is queued goes out in the same write (a
                    // queue's worth at most). Each message is compressed
                    // once for every subscriber that can share it. Fails
                    // only once the connection is closing; its Close event
                    // follows from `next`.
                    let batch = async {
                        ws.feed_broadcast(&broadcast).await?;
                        for _ in 1..hub.config().queue {
                            let Some(next) = subscription.try_recv() else { break };
                            ws.feed_broadcast(&next).await?;
                        }
                        ws.flush().await
                    };
                    if tokio::time::timeout(timeout, batch).await.is_err() {
                        tracing::info!(topic, ?timeout, "dropping a subscriber that stopped reading");
                        hub.metrics().lagged_closed();
                        return;
                    }
                }
                Err(RecvError::Lagged(queue)) => {
                    tracing::info!(topic, queue, "closing a slow subscriber");
                    closing = true;
                    let _ = ws.close_with(CloseCode::POLICY_VIOLATION, "slow consumer").await;
                }
                Err(RecvError::Closed) => {
                    closing = true;
                    let _ = ws.close_with(CloseCode::GOING_AWAY, "").await;
                }
            },
            () = &mut shutdown, if !closing => {
                closing = true;
                let _ = ws.close_with(CloseCode::GOING_AWAY, "server shutting down").await;
            }
        }
    }
}

/// `POST /topics/{name}`: publishes the body, text if the request says
/// `text/*` or `application/json` (and it is UTF-8), binary otherwise.
/// Answers `200` with `{"topic":…,"delivered":N}` (local subscribers), `400`
/// for a bad topic or text that is not UTF-8, `413` above `max_size`.
pub(crate) async fn publish<B>(
    request: Request<B>,
    topic: &str,
    hub: &Hub,
    max_size: usize,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if request.method() != Method::POST {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST a message to a topic\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if let Err(e) = duplex_hub::validate_topic(topic) {
        return text(StatusCode::BAD_REQUEST, &format!("{e}\n"));
    }
    let is_text = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("text/") || v.starts_with("application/json")
        });
    let body = match Limited::new(request.into_body(), max_size).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a message is at most {max_size} bytes\n"),
            );
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}\n")),
    };
    let message = if is_text {
        match Utf8Bytes::try_from_bytes(body) {
            Ok(text) => Message::Text(text),
            Err(_) => return text(StatusCode::BAD_REQUEST, "the text body is not UTF-8\n"),
        }
    } else {
        Message::Binary(body)
    };
    match hub.publish(topic, message) {
        Ok(delivered) => {
            let body = format!("{{\"topic\":\"{topic}\",\"delivered\":{delivered}}}\n");
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("static response")
        }
        Err(e @ (HubError::InvalidTopic(_) | HubError::TooManyTopics(_))) => {
            text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
    }
}

/// `GET /metrics`: the hub's counters in the Prometheus text format.
pub(crate) fn metrics(hub: &Hub) -> Response<Full<Bytes>> {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(Full::new(Bytes::from(hub.metrics().render())))
        .expect("static response")
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &'static [u8], content_type: Option<&str>) -> Request<Full<Bytes>> {
        let mut builder = Request::post("/topics/t");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    async fn body_of(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn posting_publishes_text_or_binary() {
        let hub = Hub::new(duplex_hub::HubConfig::default());
        let mut sub = hub.subscribe("t").unwrap();
        let response = publish(post(b"hello", Some("text/plain")), "t", &hub, 100).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body_of(response).await,
            "{\"topic\":\"t\",\"delivered\":1}\n"
        );
        assert_eq!(*sub.recv().await.unwrap().message(), Message::text("hello"));
        let response = publish(post(b"\x00\x01", None), "t", &hub, 100).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            *sub.recv().await.unwrap().message(),
            Message::binary(&b"\x00\x01"[..])
        );
    }

    #[tokio::test]
    async fn bad_posts_get_their_status() {
        let hub = Hub::new(duplex_hub::HubConfig::default());
        let too_big = publish(post(b"0123456789", None), "t", &hub, 5).await;
        assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bad_text = publish(post(b"\xff", Some("text/plain")), "t", &hub, 5).await;
        assert_eq!(bad_text.status(), StatusCode::BAD_REQUEST);
        let bad_topic = publish(post(b"x", None), "a b", &hub, 5).await;
        assert_eq!(bad_topic.status(), StatusCode::BAD_REQUEST);
        let get = Request::get("/topics/t")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = publish(get, "t", &hub, 5).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        assert_eq!(hub.metrics().snapshot().published, 0);
    }

    #[test]
    fn topic_paths() {
        assert_eq!(topic_of("/topics/news"), Some("news"));
        assert_eq!(topic_of("/topics/"), Some(""));
        assert_eq!(topic_of("/"), None);
        assert_eq!(topic_of("/topicsx"), None);
    }
}
