//! The frames of duplex.v1, the topic subprotocol (`docs/protocol.md`):
//! what a client may send ([`Request`]) and what a server sends
//! ([`Frame`]), as JSON text messages, for the server's session and the
//! Rust [`client`](crate::client) alike. Parsing a request checks
//! everything the spec asks of it, so that the session only sees requests
//! it can act on; anything else is a [`BadRequest`] with the reason.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use duplex_ws::Message;
use serde::{Deserialize, Serialize};

use crate::name::TopicName;

/// The subprotocol name.
pub const PROTOCOL: &str = "duplex.v1";
/// The largest request id: 2^53 − 1, the largest integer JavaScript holds
/// exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;
/// The delta format a subscription may ask for: Fossil's
/// ([`delta`](crate::delta)).
pub const DELTA_FOSSIL: &str = "fossil";
/// The most clients a `presence` reply lists.
pub const MAX_PRESENCE_CLIENTS: usize = 1000;

/// Where a resuming subscription starts: after `offset` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinceFrame {
    /// The epoch of `offset`; absent for the topic's current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The last offset seen.
    pub offset: u64,
}

impl From<SinceFrame> for crate::since::Since {
    fn from(since: SinceFrame) -> Self {
        crate::since::Since {
            epoch: since.epoch,
            offset: since.offset,
        }
    }
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Request {
    /// Subscribe to a topic, from `since` if given.
    Subscribe {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: TopicName,
        /// Resume after this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<SinceFrame>,
        /// Also deliver join/leave frames.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        presence: bool,
        /// Deliver text messages as deltas from the one before, in this
        /// format: [`DELTA_FOSSIL`] is the one there is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
    },
    /// Leave a topic.
    Unsubscribe {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: TopicName,
    },
    /// Publish a message (exactly one of `data` and `b64`).
    Publish {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: TopicName,
        /// A text payload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// A binary payload, standard base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b64: Option<String>,
    },
    /// Who is subscribed to a topic.
    Presence {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: TopicName,
    },
    /// A `pong`, please.
    Ping {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl Request {
    /// The request id.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Subscribe { id, .. }
            | Request::Unsubscribe { id, .. }
            | Request::Publish { id, .. }
            | Request::Presence { id, .. }
            | Request::Ping { id } => *id,
        }
    }

    /// The request as a text frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a request always serializes")
    }
}

/// What is wrong with a request: answered with a `bad_request` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The request's id, when it had a valid one.
    pub id: Option<u64>,
    /// Why.
    pub message: String,
}

/// The most a request may nest (objects and arrays in fields this version
/// does not read, which are skipped): deep enough for any extension, and
/// the skipping recurses once per level.
pub const MAX_DEPTH: usize = 32;

/// The operations, as `op` names them.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Subscribe,
    Unsubscribe,
    Publish,
    Presence,
    Ping,
}

/// A request's `id` alone: read first, so that a request that is wrong in
/// any other way is still answered with its id.
#[derive(Deserialize)]
struct IdField {
    #[serde(default)]
    id: Option<u64>,
}

/// Every field a request of this version may have, each of its own type.
/// A request is read straight into it: fields it does not name are
/// skipped without being kept (serde's `IgnoredAny`), so a frame costs the
/// strings the server keeps and nothing is built for the rest, however
/// many values it holds.
#[derive(Deserialize)]
struct Fields {
    op: Op,
    topic: Option<String>,
    since: Option<SinceFrame>,
    #[serde(default)]
    presence: bool,
    data: Option<String>,
    b64: Option<String>,
    delta: Option<String>,
}

/// Parses and checks a client's text frame: a JSON object with a known
/// `op`, an `id` in range, a valid topic name, and for `publish` exactly
/// one of `data` and `b64` (valid base64).
///
/// It builds no generic JSON tree: the frame is read into typed fields
/// (see `Fields`), values of unknown fields are skipped, and nesting
/// deeper than [`MAX_DEPTH`] is refused before anything is skipped, so
/// that memory is the frame's strings and time is linear in its length.
pub fn parse_request(text: &str) -> Result<Request, BadRequest> {
    let bad = |id, message: String| BadRequest { id, message };
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        // Also keeps serde from reading a struct out of an array.
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Err(e) => Err(bad(None, format!("not JSON: {e}"))),
            Ok(_) => Err(bad(None, "a request is a JSON object".into())),
        };
    }
    if let Some(depth) = too_deep(text) {
        return Err(bad(None, format!("nested deeper than {depth} levels")));
    }
    let id = match serde_json::from_str::<IdField>(text) {
        Ok(IdField { id: Some(id) }) if id > MAX_ID => {
            return Err(bad(None, "id must be an integer from 0 to 2^53 - 1".into()));
        }
        Ok(IdField { id }) => id,
        Err(e) if e.is_data() => {
            return Err(bad(None, "id must be an integer from 0 to 2^53 - 1".into()));
        }
        Err(e) => return Err(bad(None, format!("not JSON: {e}"))),
    };
    let fields: Fields = serde_json::from_str(text).map_err(|e| bad(id, e.to_string()))?;
    let topic = |topic: Option<String>| -> Result<TopicName, BadRequest> {
        let topic = topic.ok_or_else(|| bad(id, "missing field `topic`".into()))?;
        TopicName::new(topic).map_err(|e| bad(id, e.to_string()))
    };
    Ok(match fields.op {
        Op::Subscribe => {
            if fields.delta.as_deref().is_some_and(|d| d != DELTA_FOSSIL) {
                return Err(bad(id, format!("delta must be \"{DELTA_FOSSIL}\"")));
            }
            Request::Subscribe {
                id,
                topic: topic(fields.topic)?,
                since: fields.since,
                presence: fields.presence,
                delta: fields.delta,
            }
        }
        Op::Unsubscribe => Request::Unsubscribe {
            id,
            topic: topic(fields.topic)?,
        },
        Op::Presence => Request::Presence {
            id,
            topic: topic(fields.topic)?,
        },
        Op::Ping => Request::Ping { id },
        Op::Publish => {
            let topic = topic(fields.topic)?;
            match (&fields.data, &fields.b64) {
                (Some(_), None) => {}
                (None, Some(b64)) => {
                    STANDARD
                        .decode(b64)
                        .map_err(|e| bad(id, format!("b64: {e}")))?;
                }
                _ => return Err(bad(id, "exactly one of data and b64".into())),
            }
            Request::Publish {
                id,
                topic,
                data: fields.data,
                b64: fields.b64,
            }
        }
    })
}

/// Whether `text` nests objects and arrays deeper than [`MAX_DEPTH`] (the
/// limit, if so). Brackets inside strings do not count.
fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(MAX_DEPTH);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// An error code (docs/protocol.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, unknown op, a missing or mistyped field, a bad topic.
    BadRequest,
    /// The token does not allow this.
    Forbidden,
    /// Subscribed already.
    AlreadySubscribed,
    /// Not subscribed.
    NotSubscribed,
    /// Past the connection's subscription limit or the topic limit.
    TooMany,
    /// A payload over the server's message limit.
    TooLarge,
    /// The backplane is unreachable.
    Unavailable,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

/// A client in a `presence` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// The connection's id.
    pub client: String,
    /// Its token's `sub`, or `null`.
    pub user: Option<String>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Frame {
    /// The first frame on every connection.
    Welcome {
        /// The protocol version, 1.
        version: u32,
        /// This connection's id.
        client: String,
        /// Seconds between `ping` frames.
        ping_interval: u64,
    },
    /// Sent every `ping_interval`.
    Ping,
    /// The answer to a `ping` request.
    Pong {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A message of a subscribed topic.
    Message {
        /// The topic.
        topic: String,
        /// Its offset.
        offset: u64,
        /// A text payload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// A binary payload, standard base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b64: Option<String>,
        /// A text payload as a delta from the topic's message before
        /// (offset − 1), for a subscription that asked for deltas.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
    },
    /// A client subscribed to a topic watched for presence.
    Join {
        /// The topic.
        topic: String,
        /// The client's id.
        client: String,
        /// Its token's `sub`.
        user: Option<String>,
    },
    /// A client left a topic watched for presence.
    Leave {
        /// The topic.
        topic: String,
        /// The client's id.
        client: String,
        /// Its token's `sub`.
        user: Option<String>,
    },
    /// A subscription began (or its epoch changed: no `id` then).
    Subscribed {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: String,
        /// The topic's epoch.
        epoch: String,
        /// The topic's newest offset when the subscription began.
        offset: u64,
        /// With `since`: whether every message after it follows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The delta format the subscription's messages may come in: the
        /// next message of the topic after any `subscribed` frame is whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
    },
    /// A subscription ended.
    Unsubscribed {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: String,
    },
    /// A publish was assigned its offset.
    Published {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: String,
        /// The topic's epoch.
        epoch: String,
        /// The message's offset.
        offset: u64,
    },
    /// Who is subscribed.
    Presence {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The topic.
        topic: String,
        /// Subscriptions on every node.
        count: u64,
        /// At most 1,000 of them.
        clients: Vec<ClientFrame>,
    },
    /// A request failed and had no effect.
    Error {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What went wrong.
        code: ErrorCode,
        /// Said for a person.
        message: String,
    },
}

impl Frame {
    /// The frame as a text message.
    pub fn to_message(&self) -> Message {
        Message::text(serde_json::to_string(self).expect("a frame always serializes"))
    }

    /// An `error` reply.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Frame {
        Frame::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

/// A payload as its `data` (text) and `b64` (binary) fields.
pub fn payload_fields(message: &Message) -> (Option<String>, Option<String>) {
    match message {
        Message::Text(text) => (Some(text.as_str().to_owned()), None),
        Message::Binary(bytes) => (None, Some(STANDARD.encode(bytes))),
    }
}

/// The message of a `data` or `b64` field (`None` if neither is there or
/// the base64 is bad).
pub fn payload_message(data: Option<String>, b64: Option<String>) -> Option<Message> {
    match (data, b64) {
        (Some(text), None) => Some(Message::text(text)),
        (None, Some(b64)) => STANDARD.decode(b64).ok().map(Message::binary),
        _ => None,
    }
}

/// The `message` frame of a topic's message.
#[cfg(feature = "server")]
pub(crate) fn message_frame(topic: &str, offset: u64, message: &Message) -> String {
    let (data, b64) = payload_fields(message);
    let frame = Frame::Message {
        topic: topic.to_owned(),
        offset,
        data,
        b64,
        delta: None,
    };
    serde_json::to_string(&frame).expect("a frame always serializes")
}

/// The `message` frame of a topic's text message as `delta`, the change
/// from the message before it.
#[cfg(feature = "server")]
pub(crate) fn delta_frame(topic: &str, offset: u64, delta: String) -> String {
    let frame = Frame::Message {
        topic: topic.to_owned(),
        offset,
        data: None,
        b64: None,
        delta: Some(delta),
    };
    serde_json::to_string(&frame).expect("a frame always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r = parse_request(
            r#"{"op":"subscribe","id":1,"topic":"news","since":{"epoch":"e","offset":41},"presence":true}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Subscribe {
                id: Some(1),
                topic: "news".parse().unwrap(),
                since: Some(SinceFrame {
                    epoch: Some("e".into()),
                    offset: 41
                }),
                presence: true,
                delta: None,
            }
        );
        let r = parse_request(r#"{"op":"subscribe","topic":"n","delta":"fossil"}"#).unwrap();
        assert!(matches!(r, Request::Subscribe { delta: Some(d), .. } if d == DELTA_FOSSIL));
        let r = parse_request(r#"{"op":"subscribe","topic":"n","since":{"offset":0}}"#).unwrap();
        assert!(matches!(
            r,
            Request::Subscribe {
                id: None,
                since: Some(SinceFrame {
                    epoch: None,
                    offset: 0
                }),
                presence: false,
                ..
            }
        ));
        let r = parse_request(r#"{"op":"publish","id":3,"topic":"t","b64":"AAE="}"#).unwrap();
        assert_eq!(r.id(), Some(3));
        assert_eq!(
            parse_request(r#"{"op":"ping","id":9007199254740991}"#).unwrap(),
            Request::Ping { id: Some(MAX_ID) }
        );
        // Fields this version does not know are ignored.
        assert!(parse_request(r#"{"op":"ping","future":1}"#).is_ok());
    }

    #[test]
    fn bad_requests_say_why_and_keep_their_id() {
        for (text, id) in [
            ("", None),
            ("nope", None),
            ("[1,2]", None),
            ("\"op\"", None),
            (r#"{"op":"ping","id":-1}"#, None),
            (r#"{"op":"ping","id":9007199254740992}"#, None),
            (r#"{"op":"ping","id":1.5}"#, None),
            (r#"{"op":"dance","id":4}"#, Some(4)),
            (r#"{"id":4}"#, Some(4)),
            (r#"{"op":"subscribe","id":5}"#, Some(5)),
            (r#"{"op":"subscribe","id":5,"topic":"a b"}"#, Some(5)),
            (r#"{"op":"subscribe","id":5,"topic":7}"#, Some(5)),
            (
                r#"{"op":"subscribe","id":5,"topic":"t","since":{"offset":-1}}"#,
                Some(5),
            ),
            (r#"{"op":"publish","id":6,"topic":"t"}"#, Some(6)),
            (
                r#"{"op":"publish","id":6,"topic":"t","data":"x","b64":""}"#,
                Some(6),
            ),
            (r#"{"op":"publish","id":6,"topic":"t","b64":"!!"}"#, Some(6)),
            (
                r#"{"op":"subscribe","id":7,"topic":"t","delta":"xdelta"}"#,
                Some(7),
            ),
            (
                r#"{"op":"subscribe","id":7,"topic":"t","delta":true}"#,
                Some(7),
            ),
        ] {
            let err = parse_request(text).unwrap_err();
            assert_eq!(err.id, id, "{text}: {err}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn values_of_unknown_fields_are_skipped_whatever_they_hold() {
        let many = format!(r#"{{"op":"ping","id":2,"x":[{}0]}}"#, "0,".repeat(30_000));
        assert_eq!(parse_request(&many), Ok(Request::Ping { id: Some(2) }));
        let nested = format!(
            r#"{{"op":"ping","x":{}{}}}"#,
            "[".repeat(30),
            "]".repeat(30)
        );
        assert!(parse_request(&nested).is_ok());
        // Brackets in strings are text, not nesting.
        let quoted = format!(r#"{{"op":"ping","x":"{}\"["}}"#, "[".repeat(100));
        assert!(parse_request(&quoted).is_ok(), "{quoted}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            r#"{{"op":"ping","id":1,"x":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let err = parse_request(&deep).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{err}");
        // Unbalanced, as an attacker sends it: refused by the same rule.
        assert!(parse_request(&format!(r#"{{"x":{}"#, "[".repeat(10_000))).is_err());
    }

    #[test]
    fn a_request_is_an_object_not_an_array_of_its_fields() {
        let err = parse_request(r#"["subscribe", 1, "news"]"#).unwrap_err();
        assert_eq!(err.message, "a request is a JSON object");
        let err = parse_request(&format!("[{}0]", "0,".repeat(30_000))).unwrap_err();
        assert_eq!(err.message, "a request is a JSON object");
    }

    #[cfg(feature = "server")]
    #[test]
    fn frames_are_the_spec_s() {
        let text = |f: Frame| serde_json::to_string(&f).unwrap();
        assert_eq!(
            message_frame("news", 58, &Message::text("hello")),
            r#"{"type":"message","topic":"news","offset":58,"data":"hello"}"#
        );
        assert_eq!(
            message_frame("n", 1, &Message::binary(vec![0u8, 1])),
            r#"{"type":"message","topic":"n","offset":1,"b64":"AAE="}"#
        );
        assert_eq!(
            delta_frame("n", 2, "5\n5@0,2o4;".into()),
            r#"{"type":"message","topic":"n","offset":2,"delta":"5\n5@0,2o4;"}"#
        );
        assert_eq!(text(Frame::Ping), r#"{"type":"ping"}"#);
        assert_eq!(
            text(Frame::Join {
                topic: "t".into(),
                client: "c".into(),
                user: None
            }),
            r#"{"type":"join","topic":"t","client":"c","user":null}"#
        );
        assert_eq!(
            text(Frame::Subscribed {
                id: Some(1),
                topic: "t".into(),
                epoch: "e".into(),
                offset: 0,
                recovered: None,
                delta: None,
            }),
            r#"{"type":"subscribed","id":1,"topic":"t","epoch":"e","offset":0}"#
        );
        assert_eq!(
            text(Frame::error(Some(3), ErrorCode::AlreadySubscribed, "x")),
            r#"{"type":"error","id":3,"code":"already_subscribed","message":"x"}"#
        );
        let back: Frame =
            serde_json::from_str(r#"{"type":"error","code":"new_code","message":""}"#).unwrap();
        assert!(matches!(
            back,
            Frame::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn payloads_round_trip() {
        for m in [Message::text("héllo"), Message::binary(vec![0u8, 255])] {
            let (data, b64) = payload_fields(&m);
            assert_eq!(payload_message(data, b64), Some(m));
        }
        assert_eq!(payload_message(None, None), None);
    }
}
