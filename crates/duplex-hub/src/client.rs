//! A client for duplex.v1 (`docs/protocol.md`): subscribe to topics, resume
//! after a reconnect from the last offset seen, publish with an
//! acknowledgement, ask who is there.
//!
//! ```no_run
//! # async fn run() -> Result<(), duplex_hub::client::ClientError> {
//! use duplex_hub::client::{Client, Event};
//!
//! let client = Client::connect("ws://127.0.0.1:8080/topics").await?;
//! let mut news = client.subscribe("news", None, false).await?;
//! let published = client.publish("news", "hello").await?;
//! println!("published at offset {}", published.offset);
//! while let Some(event) = news.next().await {
//!     if let Event::Message { offset, message } = event {
//!         println!("{offset}: {message:?}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! One task owns the connection. When it drops (the server went away, or
//! no frame came for `ping_interval` + 10 s), the task reconnects with
//! exponential backoff and full jitter ([`Options`]) and subscribes to
//! every topic again from the last offset it delivered, so that each
//! message arrives once and in order. Each (re)subscription is an
//! [`Event::Subscribed`]; `recovered: Some(false)` there says messages were
//! lost for good (the history no longer reached back): reload. Requests
//! made while disconnected fail with [`ClientError::Disconnected`].
//!
//! A subscription's events wait in a queue of [`Options::queue`]; while it
//! is full the task stops reading, and the server eventually closes a
//! connection that falls that far behind (then the client resumes).

use std::collections::HashMap;
use std::time::Duration;

use duplex_ws::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::HubError;
use crate::name::TopicName;
use crate::since::Since;
use crate::v1::{ClientFrame, ErrorCode, Frame, PROTOCOL, Request, payload_fields};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// How long the server has to say `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past `ping_interval` a silent connection counts as alive.
const PING_GRACE: Duration = Duration::from_secs(10);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[from] duplex_ws::Error),
    /// The server did not speak duplex.v1.
    #[error("the server does not speak duplex.v1: {0}")]
    Protocol(String),
    /// The server answered with an error.
    #[error("{code:?}: {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The connection is down (the client is reconnecting); the request
    /// may or may not have been carried out.
    #[error("disconnected from the server")]
    Disconnected,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A topic name that breaks the topic-name rule; nothing was sent.
    #[error(transparent)]
    InvalidTopic(#[from] HubError),
}

/// How the client reconnects and queues.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The first delay before reconnecting, and the least. Default 0.5 s.
    pub min_backoff: Duration,
    /// The longest delay between attempts. Default 30 s: a server that is
    /// down for long is not hammered by its clients.
    pub max_backoff: Duration,
    /// Events queued per subscription. Default 1024.
    pub queue: usize,
    /// Whether subscriptions ask for text messages as Fossil deltas from
    /// the message before (`docs/protocol.md`, "Deltas"): a state that
    /// changes a little per message costs the change on the wire. The
    /// client rebuilds each message; [`Event::Message`] is the same either
    /// way. Default off.
    pub delta: bool,
    /// The largest message a delta may rebuild; a delta that declares more
    /// is refused like a broken one (the client reconnects and resumes).
    /// Default 64 MiB, the socket's own message limit.
    pub max_message: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: 1024,
            delta: false,
            max_message: 64 << 20,
        }
    }
}

impl Options {
    /// With subscriptions that ask for deltas ([`Options::delta`]).
    pub fn delta(mut self, delta: bool) -> Self {
        self.delta = delta;
        self
    }
}

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message of the topic.
    Message {
        /// Its offset.
        offset: u64,
        /// The message.
        message: Message,
    },
    /// The subscription began, began again after a reconnect, or its
    /// epoch changed. `recovered: Some(false)`: messages were lost.
    Subscribed {
        /// The topic's epoch.
        epoch: String,
        /// The topic's newest offset then.
        offset: u64,
        /// Whether every message after the offset resumed from follows.
        recovered: Option<bool>,
    },
    /// A client subscribed (with `presence`).
    Join(ClientFrame),
    /// A client left (with `presence`).
    Leave(ClientFrame),
}

/// A publish's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The topic's epoch.
    pub epoch: String,
    /// The message's offset.
    pub offset: u64,
}

/// Who is subscribed to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Subscriptions on every node.
    pub count: u64,
    /// At most 1,000 of them.
    pub clients: Vec<ClientFrame>,
}

enum Command {
    Subscribe {
        topic: TopicName,
        since: Option<Since>,
        presence: bool,
        events: mpsc::Sender<Event>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Unsubscribe {
        topic: TopicName,
    },
    Publish {
        topic: TopicName,
        message: Message,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    Presence {
        topic: TopicName,
        reply: oneshot::Sender<Result<Presence, ClientError>>,
    },
}

/// A duplex.v1 connection that reconnects by itself. Dropping it closes
/// the connection.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    queue: usize,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscribed topic's events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Topic {
    topic: TopicName,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Sender<Command>,
}

impl Topic {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next event; `None` once the client is closed or the server
    /// ended the subscription (a token that no longer allows it).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Unsubscribe {
            topic: self.topic.clone(),
        });
    }
}

impl Client {
    /// Connects to the duplex.v1 endpoint at `url` (`ws://host:port/topics`).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(ClientBuilder::new(url), Options::default()).await
    }

    /// Connects with `builder` (TLS roots, headers such as `Authorization:
    /// Bearer`, limits), used again for every reconnection, and `options`.
    /// Fails if the first connection fails.
    pub async fn connect_with(
        builder: ClientBuilder,
        options: Options,
    ) -> Result<Client, ClientError> {
        let builder = builder.protocols([PROTOCOL]);
        let (ws, ping_interval) = open(&builder).await?;
        let (commands, rx) = mpsc::channel(64);
        let queue = options.queue.max(1);
        let task = tokio::spawn(
            Task {
                builder,
                options,
                ws: Some(ws),
                ping_interval,
                last_frame: Instant::now(),
                subscriptions: HashMap::new(),
                pending: HashMap::new(),
                next_id: 0,
                attempt: 0,
            }
            .run(rx),
        );
        Ok(Client {
            commands,
            task,
            queue,
        })
    }

    /// Subscribes to `topic`: live messages, or with `since` first those
    /// retained after it. With `presence`, joins and leaves too.
    pub async fn subscribe(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
        since: Option<Since>,
        presence: bool,
    ) -> Result<Topic, ClientError> {
        let topic = topic.try_into()?;
        let (events_tx, events) = mpsc::channel(self.queue);
        let (reply, answer) = oneshot::channel();
        self.send(Command::Subscribe {
            topic: topic.clone(),
            since,
            presence,
            events: events_tx,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)??;
        Ok(Topic {
            topic,
            events,
            commands: self.commands.clone(),
        })
    }

    /// Publishes `message` to `topic`; returns its offset.
    pub async fn publish(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
        message: impl Into<Message>,
    ) -> Result<Ack, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish {
            topic: topic.try_into()?,
            message: message.into(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Who is subscribed to `topic`, on every node.
    pub async fn presence(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
    ) -> Result<Presence, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Presence {
            topic: topic.try_into()?,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    async fn send(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// Connects and reads the `welcome`: the socket and the ping interval.
async fn open(builder: &ClientBuilder) -> Result<(Socket, Duration), ClientError> {
    let mut ws = builder.clone().connect().await?;
    if ws.protocol() != Some(PROTOCOL) {
        return Err(ClientError::Protocol("no duplex.v1 subprotocol".into()));
    }
    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, async {
        loop {
            match ws.recv().await {
                Ok(Some(Message::Text(text))) => return Some(text),
                Ok(Some(Message::Binary(_))) => {}
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(text)) = welcome else {
        return Err(ClientError::Protocol("no welcome".into()));
    };
    match serde_json::from_str(text.as_str()) {
        Ok(Frame::Welcome { ping_interval, .. }) => {
            Ok((ws, Duration::from_secs(ping_interval.clamp(1, 3600))))
        }
        _ => Err(ClientError::Protocol(format!(
            "expected welcome, got {text}"
        ))),
    }
}

struct Sub {
    events: mpsc::Sender<Event>,
    epoch: String,
    /// The last offset delivered.
    last: u64,
    presence: bool,
    /// With deltas, the last message delivered if it was text: what the
    /// next delta applies to.
    base: Option<duplex_ws::Utf8Bytes>,
}

enum Pending {
    Subscribe {
        topic: TopicName,
        since: Option<Since>,
        presence: bool,
        events: mpsc::Sender<Event>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Resubscribe {
        topic: TopicName,
        since: Since,
    },
    Publish(oneshot::Sender<Result<Ack, ClientError>>),
    Presence(oneshot::Sender<Result<Presence, ClientError>>),
    Unsubscribe,
}

impl Pending {
    fn fail(self, error: impl Fn() -> ClientError) {
        match self {
            Pending::Subscribe { reply, .. } => drop(reply.send(Err(error()))),
            Pending::Publish(reply) => drop(reply.send(Err(error()))),
            Pending::Presence(reply) => drop(reply.send(Err(error()))),
            Pending::Resubscribe { .. } | Pending::Unsubscribe => {}
        }
    }
}

/// What woke the task up.
enum Step {
    Command(Option<Command>),
    Event(Option<duplex_ws::Event>),
    Silent,
}

struct Task {
    builder: ClientBuilder,
    options: Options,
    ws: Option<Socket>,
    ping_interval: Duration,
    last_frame: Instant,
    subscriptions: HashMap<TopicName, Sub>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    attempt: u32,
}

/// Where a subscription resumed from `since` stands before its first
/// message: the server's own rule (docs/protocol.md).
fn start_offset(since: Option<&Since>, epoch: &str, offset: u64) -> u64 {
    match since {
        Some(s) if s.offset <= offset && s.epoch.as_deref().is_none_or(|e| e == epoch) => s.offset,
        _ => offset,
    }
}

/// Why a delta could not be applied.
#[derive(Debug, thiserror::Error)]
enum DeltaError {
    #[error("no message {0} to apply it to")]
    NoBase(u64),
    #[error(transparent)]
    Delta(#[from] crate::delta::Error),
    #[error("it makes no UTF-8 text")]
    NotText,
}

/// The text message at `offset` from `delta` and the subscription's last
/// message, which must be the one before it.
fn rebuild(
    sub: &Sub,
    offset: u64,
    delta: &str,
    max: usize,
) -> Result<duplex_ws::Utf8Bytes, DeltaError> {
    let base = sub
        .base
        .as_ref()
        .filter(|_| sub.last.checked_add(1) == Some(offset))
        .ok_or(DeltaError::NoBase(offset.saturating_sub(1)))?;
    let bytes = crate::delta::apply(base.as_bytes(), delta.as_bytes(), max)?;
    String::from_utf8(bytes)
        .map(Into::into)
        .map_err(|_| DeltaError::NotText)
}

impl Task {
    /// The `delta` field of this client's subscribe requests.
    fn delta(&self) -> Option<String> {
        self.options
            .delta
            .then(|| crate::v1::DELTA_FOSSIL.to_owned())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            if self.ws.is_none() {
                let delay = self.backoff();
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        command = commands.recv() => match command {
                            None => return,
                            Some(command) => self.refuse(command),
                        },
                    }
                }
                self.reconnect().await;
                continue;
            }
            let deadline = self.last_frame + self.ping_interval + PING_GRACE;
            let ws = self.ws.as_mut().expect("connected");
            let step = tokio::select! {
                command = commands.recv() => Step::Command(command),
                event = ws.next() => Step::Event(event),
                () = tokio::time::sleep_until(deadline) => Step::Silent,
            };
            match step {
                Step::Command(None) => {
                    if let Some(ws) = self.ws.as_mut() {
                        let _ = ws.close(1000, "").await;
                    }
                    return;
                }
                Step::Command(Some(command)) => self.command(command).await,
                Step::Event(Some(duplex_ws::Event::Message(Message::Text(text)))) => {
                    self.last_frame = Instant::now();
                    match serde_json::from_str::<Frame>(text.as_str()) {
                        Ok(frame) => self.frame(frame).await,
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a frame this client does not know");
                        }
                    }
                }
                Step::Event(Some(duplex_ws::Event::Error(e))) => {
                    tracing::info!(error = %e, "duplex.v1 connection failed");
                }
                Step::Event(Some(duplex_ws::Event::Close { code, reason, .. })) => {
                    tracing::info!(code = code.0, reason, "duplex.v1 connection closed");
                }
                Step::Event(Some(_)) => {}
                Step::Event(None) => self.lost(),
                Step::Silent => {
                    tracing::info!(
                        "no frame from the server for {:?}: reconnecting",
                        self.ping_interval + PING_GRACE
                    );
                    self.lost();
                }
            }
        }
    }

    /// The next reconnection delay: exponential, with full jitter, between
    /// the options' bounds.
    fn backoff(&mut self) -> Duration {
        let min = self.options.min_backoff.as_secs_f64();
        let max = self.options.max_backoff.as_secs_f64().max(min);
        let cap = (min * 2f64.powi(self.attempt.min(30) as i32)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(rand::random_range(min..=cap.max(min)))
    }

    fn lost(&mut self) {
        self.ws = None;
        for (_, pending) in self.pending.drain() {
            pending.fail(|| ClientError::Disconnected);
        }
    }

    async fn reconnect(&mut self) {
        match open(&self.builder).await {
            Ok((ws, ping_interval)) => {
                tracing::info!(
                    "duplex.v1 reconnected; resuming {} topics",
                    self.subscriptions.len()
                );
                self.ws = Some(ws);
                self.ping_interval = ping_interval;
                self.last_frame = Instant::now();
                self.attempt = 0;
                let resume: Vec<_> = self
                    .subscriptions
                    .iter()
                    .map(|(topic, sub)| {
                        let since = Since {
                            epoch: Some(sub.epoch.clone()),
                            offset: sub.last,
                        };
                        (topic.clone(), since, sub.presence)
                    })
                    .collect();
                for (topic, since, presence) in resume {
                    let request = Request::Subscribe {
                        id: None,
                        topic: topic.clone(),
                        since: Some(crate::v1::SinceFrame {
                            epoch: since.epoch.clone(),
                            offset: since.offset,
                        }),
                        presence,
                        delta: self.delta(),
                    };
                    self.request(request, Pending::Resubscribe { topic, since })
                        .await;
                }
            }
            Err(e) => tracing::info!(error = %e, "duplex.v1 reconnection failed"),
        }
    }

    /// A command while disconnected.
    fn refuse(&mut self, command: Command) {
        match command {
            Command::Subscribe { reply, .. } => drop(reply.send(Err(ClientError::Disconnected))),
            Command::Publish { reply, .. } => drop(reply.send(Err(ClientError::Disconnected))),
            Command::Presence { reply, .. } => drop(reply.send(Err(ClientError::Disconnected))),
            Command::Unsubscribe { topic } => drop(self.subscriptions.remove(&topic)),
        }
    }

    /// Sends `request` with a fresh id, remembering what its reply is for.
    async fn request(&mut self, request: Request, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        let request = match request {
            Request::Subscribe {
                topic,
                since,
                presence,
                delta,
                ..
            } => Request::Subscribe {
                id: Some(id),
                topic,
                since,
                presence,
                delta,
            },
            Request::Unsubscribe { topic, .. } => Request::Unsubscribe {
                id: Some(id),
                topic,
            },
            Request::Publish {
                topic, data, b64, ..
            } => Request::Publish {
                id: Some(id),
                topic,
                data,
                b64,
            },
            Request::Presence { topic, .. } => Request::Presence {
                id: Some(id),
                topic,
            },
            Request::Ping { .. } => Request::Ping { id: Some(id) },
        };
        let Some(ws) = self.ws.as_mut() else {
            pending.fail(|| ClientError::Disconnected);
            return;
        };
        if ws.send(Message::text(request.to_text())).await.is_err() {
            pending.fail(|| ClientError::Disconnected);
            self.lost();
            return;
        }
        self.pending.insert(id, pending);
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                topic,
                since,
                presence,
                events,
                reply,
            } => {
                if self.subscriptions.contains_key(&topic) {
                    let _ = reply.send(Err(ClientError::Refused {
                        code: ErrorCode::AlreadySubscribed,
                        message: format!("already subscribed to {topic}"),
                    }));
                    return;
                }
                let request = Request::Subscribe {
                    id: None,
                    topic: topic.clone(),
                    since: since.as_ref().map(|s| crate::v1::SinceFrame {
                        epoch: s.epoch.clone(),
                        offset: s.offset,
                    }),
                    presence,
                    delta: self.delta(),
                };
                let pending = Pending::Subscribe {
                    topic,
                    since,
                    presence,
                    events,
                    reply,
                };
                self.request(request, pending).await;
            }
            Command::Unsubscribe { topic } => {
                if self.subscriptions.remove(&topic).is_some() {
                    let request = Request::Unsubscribe { id: None, topic };
                    self.request(request, Pending::Unsubscribe).await;
                }
            }
            Command::Publish {
                topic,
                message,
                reply,
            } => {
                let (data, b64) = payload_fields(&message);
                let request = Request::Publish {
                    id: None,
                    topic,
                    data,
                    b64,
                };
                self.request(request, Pending::Publish(reply)).await;
            }
            Command::Presence { topic, reply } => {
                let request = Request::Presence { id: None, topic };
                self.request(request, Pending::Presence(reply)).await;
            }
        }
    }

    async fn frame(&mut self, frame: Frame) {
        match frame {
            Frame::Message {
                topic,
                offset,
                data,
                b64,
                delta,
            } => {
                let max = self.options.max_message;
                let Some(sub) = self.subscriptions.get_mut(topic.as_str()) else {
                    return;
                };
                let message = match delta {
                    Some(delta) => match rebuild(sub, offset, &delta, max) {
                        Ok(text) => Message::Text(text),
                        Err(e) => {
                            // Nothing after it can be rebuilt either: resume
                            // from the last message delivered, which the
                            // server sends whole.
                            tracing::warn!(%topic, offset, error = %e, "a delta did not apply; reconnecting");
                            sub.base = None;
                            self.lost();
                            return;
                        }
                    },
                    None => match crate::v1::payload_message(data, b64) {
                        Some(message) => message,
                        None => return,
                    },
                };
                sub.last = offset;
                sub.base = match &message {
                    Message::Text(text) if self.options.delta => Some(text.clone()),
                    _ => None,
                };
                let _ = sub.events.send(Event::Message { offset, message }).await;
            }
            Frame::Join { topic, .. } | Frame::Leave { topic, .. }
                if !self.subscriptions.contains_key(topic.as_str()) => {}
            Frame::Join {
                topic,
                client,
                user,
            } => {
                let event = Event::Join(ClientFrame { client, user });
                let _ = self.subscriptions[topic.as_str()].events.send(event).await;
            }
            Frame::Leave {
                topic,
                client,
                user,
            } => {
                let event = Event::Leave(ClientFrame { client, user });
                let _ = self.subscriptions[topic.as_str()].events.send(event).await;
            }
            Frame::Subscribed {
                id,
                topic,
                epoch,
                offset,
                recovered,
                ..
            } => self.subscribed(id, topic, epoch, offset, recovered).await,
            Frame::Published {
                id, epoch, offset, ..
            } => {
                if let Some(Pending::Publish(reply)) = id.and_then(|id| self.pending.remove(&id)) {
                    let _ = reply.send(Ok(Ack { epoch, offset }));
                }
            }
            Frame::Presence {
                id, count, clients, ..
            } => {
                if let Some(Pending::Presence(reply)) = id.and_then(|id| self.pending.remove(&id)) {
                    let _ = reply.send(Ok(Presence { count, clients }));
                }
            }
            Frame::Error { id, code, message } => {
                let Some(pending) = id.and_then(|id| self.pending.remove(&id)) else {
                    tracing::info!(?code, message, "duplex.v1 error");
                    return;
                };
                match pending {
                    Pending::Resubscribe { topic, .. } if code == ErrorCode::Unavailable => {
                        // The server cannot serve the topic now: try again
                        // later, from the same offset.
                        tracing::info!(%topic, message, "resubscribing failed; reconnecting");
                        self.lost();
                    }
                    Pending::Resubscribe { topic, .. } => {
                        tracing::warn!(%topic, ?code, message, "the server ended a subscription");
                        self.subscriptions.remove(&topic);
                    }
                    other => other.fail(|| ClientError::Refused {
                        code,
                        message: message.clone(),
                    }),
                }
            }
            Frame::Welcome { ping_interval, .. } => {
                self.ping_interval = Duration::from_secs(ping_interval.clamp(1, 3600));
            }
            Frame::Ping | Frame::Pong { .. } | Frame::Unsubscribed { .. } => {}
        }
    }

    async fn subscribed(
        &mut self,
        id: Option<u64>,
        topic: String,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
    ) {
        let event = Event::Subscribed {
            epoch: epoch.clone(),
            offset,
            recovered,
        };
        match id.and_then(|id| self.pending.remove(&id)) {
            Some(Pending::Subscribe {
                topic,
                since,
                presence,
                events,
                reply,
            }) => {
                let last = start_offset(since.as_ref(), &epoch, offset);
                let _ = events.send(event).await;
                self.subscriptions.insert(
                    topic,
                    Sub {
                        events,
                        epoch,
                        last,
                        presence,
                        base: None,
                    },
                );
                let _ = reply.send(Ok(()));
            }
            Some(Pending::Resubscribe { topic, since }) => {
                let Some(sub) = self.subscriptions.get_mut(&topic) else {
                    return;
                };
                sub.last = start_offset(Some(&since), &epoch, offset);
                sub.epoch = epoch;
                sub.base = None;
                let _ = sub.events.send(event).await;
            }
            Some(other) => other.fail(|| ClientError::Protocol("unexpected subscribed".into())),
            None => {
                // The topic's epoch changed under a live subscription.
                let Some(sub) = self.subscriptions.get_mut(topic.as_str()) else {
                    return;
                };
                sub.epoch = epoch;
                sub.last = offset;
                sub.base = None;
                let _ = sub.events.send(event).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_subscription_starts_where_the_server_does() {
        let since = |epoch: Option<&str>, offset| Since {
            epoch: epoch.map(str::to_owned),
            offset,
        };
        assert_eq!(start_offset(None, "e", 7), 7);
        assert_eq!(start_offset(Some(&since(None, 3)), "e", 7), 3);
        assert_eq!(start_offset(Some(&since(Some("e"), 3)), "e", 7), 3);
        assert_eq!(start_offset(Some(&since(Some("old"), 3)), "e", 7), 7);
        assert_eq!(start_offset(Some(&since(None, 9)), "e", 7), 7);
    }

    #[test]
    fn a_delta_applies_only_to_the_message_before_it() {
        let (events, _rx) = mpsc::channel(1);
        let before = "{\"px\":101.25,\"qty\":1200,\"sym\":\"ACME\"}";
        let after = "{\"px\":101.75,\"qty\":1200,\"sym\":\"ACME\"}";
        let mut sub = Sub {
            events,
            epoch: "e".into(),
            last: 4,
            presence: false,
            base: Some(before.into()),
        };
        let delta = crate::delta::encode(before.as_bytes(), after.as_bytes(), true);
        let delta = std::str::from_utf8(&delta).unwrap();
        assert_eq!(rebuild(&sub, 5, delta, 1 << 20).unwrap().as_str(), after);
        assert!(matches!(
            rebuild(&sub, 6, delta, 1 << 20),
            Err(DeltaError::NoBase(5))
        ));
        assert!(matches!(
            rebuild(&sub, 5, delta, 8),
            Err(DeltaError::Delta(crate::delta::Error::TooLarge(_)))
        ));
        sub.base = Some("something else entirely, as long".into());
        assert!(matches!(
            rebuild(&sub, 5, delta, 1 << 20),
            Err(DeltaError::Delta(_))
        ));
        sub.base = None;
        assert!(matches!(
            rebuild(&sub, 5, delta, 1 << 20),
            Err(DeltaError::NoBase(4))
        ));
    }

    #[test]
    fn backoff_grows_with_full_jitter_within_bounds() {
        let mut task = Task {
            builder: ClientBuilder::new("ws://127.0.0.1:1/topics"),
            options: Options {
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                ..Options::default()
            },
            ws: None,
            ping_interval: Duration::from_secs(25),
            last_frame: Instant::now(),
            subscriptions: HashMap::new(),
            pending: HashMap::new(),
            next_id: 0,
            attempt: 0,
        };
        assert!(task.backoff() <= Duration::from_millis(100));
        let later: Vec<_> = (0..50).map(|_| task.backoff()).collect();
        assert!(
            later
                .iter()
                .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(2))
        );
        let distinct: std::collections::HashSet<_> = later.iter().collect();
        assert!(distinct.len() > 10, "jittered");
    }
}
