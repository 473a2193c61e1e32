//! `POST /topics/{name}`: publishing without a socket. The body is the
//! message; the answer says how many local subscribers got it.

use std::error::Error as StdError;

use bytes::Bytes;
use duplex_ws::{Message, Utf8Bytes};
use http::{Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};

use crate::hub::{Hub, HubError, Requester};
use crate::name::TopicName;
use crate::refusal::text;

/// Publishes the body of `request` to `topic`: text if the request says
/// `text/*` or `application/json` (and it is UTF-8), binary otherwise.
/// Answers `200` with `{"topic":…,"epoch":…,"offset":N,"delivered":N}`
/// (the message's place in the topic, and how many local subscribers got
/// it), `400` for a bad topic or text that is not UTF-8, `429` for too
/// many topics (in all, or made by `requester`),
/// `413` above `max_size` bytes, `408` (and `Connection: close`) when the
/// body is not all there within the hub's `body_timeout`, `503` when the
/// backplane cannot reach Redis.
pub(crate) async fn publish<B>(
    request: Request<B>,
    topic: &str,
    hub: &Hub,
    max_size: usize,
    requester: Option<Requester>,
) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let topic = match TopicName::new(topic) {
        Ok(topic) => topic,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    let is_text = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("text/") || v.starts_with("application/json")
        });
    let timeout = hub.config().body_timeout;
    let collect = Limited::new(request.into_body(), max_size).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collect).await else {
        tracing::info!(%topic, ?timeout, "POST body not received in time: 408");
        let mut response = text(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the body did not arrive within {timeout:?}\n"),
        );
        // The rest of the body is not worth waiting for: hyper closes the
        // connection after this answer instead of reading on.
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return response;
    };
    let body = match collected {
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
    match hub
        .publish_checked(&topic, message, requester.as_ref())
        .await
    {
        Ok(published) => {
            // A valid topic name and an epoch need no JSON escaping.
            let body = format!(
                "{{\"topic\":\"{topic}\",\"epoch\":\"{}\",\"offset\":{},\"delivered\":{}}}\n",
                published.epoch, published.offset, published.delivered
            );
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("static response")
        }
        Err(e @ HubError::InvalidTopic(_)) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        Err(e @ (HubError::TooManyTopics(_) | HubError::TooManyTopicsForClient(_))) => {
            text(StatusCode::TOO_MANY_REQUESTS, &format!("{e}\n"))
        }
        Err(e @ HubError::TooLarge(_)) => text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{e}\n")),
        Err(e @ (HubError::Unavailable | HubError::Refused(_))) => {
            text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;

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
        let hub = Hub::new(HubConfig::default());
        let mut sub = hub.subscribe("t").unwrap();
        let response = publish(post(b"hello", Some("text/plain")), "t", &hub, 100, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let epoch = sub.recv().await.unwrap().epoch().to_owned();
        assert_eq!(
            body_of(response).await,
            format!("{{\"topic\":\"t\",\"epoch\":\"{epoch}\",\"offset\":1,\"delivered\":1}}\n")
        );
        let response = publish(post(b"hello", Some("text/plain")), "t", &hub, 100, None).await;
        assert!(body_of(response).await.contains("\"offset\":2,"));
        assert_eq!(*sub.recv().await.unwrap().message(), Message::text("hello"));
        let response = publish(post(b"\x00\x01", None), "t", &hub, 100, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            *sub.recv().await.unwrap().message(),
            Message::binary(&b"\x00\x01"[..])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_gets_408() {
        let hub = Hub::new(HubConfig::default().body_timeout(std::time::Duration::from_secs(10)));
        // A body that sends a byte a second, forever.
        let drip = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Some((
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"x"))),
                (),
            ))
        });
        let request = Request::post("/topics/t")
            .body(http_body_util::StreamBody::new(drip))
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = publish(request, "t", &hub, 1 << 20, None).await;
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(10));
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(hub.metrics().snapshot().published, 0);
    }

    #[tokio::test]
    async fn bad_posts_get_their_status() {
        let hub = Hub::new(HubConfig::default());
        let too_big = publish(post(b"0123456789", None), "t", &hub, 5, None).await;
        assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bad_text = publish(post(b"\xff", Some("text/plain")), "t", &hub, 5, None).await;
        assert_eq!(bad_text.status(), StatusCode::BAD_REQUEST);
        let bad_topic = publish(post(b"x", None), "a b", &hub, 5, None).await;
        assert_eq!(bad_topic.status(), StatusCode::BAD_REQUEST);
        assert_eq!(hub.metrics().snapshot().published, 0);
    }
}
