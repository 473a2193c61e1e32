//! Every limit and timeout of a connection, with the reason for its default.

use std::time::Duration;

use duplex_proto::Limits;
use duplex_proto::extensions::deflate::DeflateConfig;

/// Settings shared by clients and servers.
///
/// Every limit that untrusted input could push on has a default here, chosen
/// so that one misbehaving peer cannot take a server down.
///
/// Start from [`Config::server`] or [`Config::client`] and change what you
/// need, field by field or with the setter of the same name
/// (`Config::server().max_message_size(1 << 20)`); the struct is
/// `#[non_exhaustive]`, so that new limits can come without breaking anyone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The largest frame payload accepted. Default 16 MiB, as tungstenite:
    /// a frame is checked against this before any payload is buffered.
    pub max_frame_size: usize,
    /// The largest message accepted, after decompression. Default 64 MiB, as
    /// tungstenite: above what any ordinary message needs, and a hard stop
    /// for a peer that streams fragments forever.
    pub max_message_size: usize,
    /// The largest HTTP head of the opening handshake. Default 16 KiB, which
    /// fits any browser's request with room for cookies.
    pub max_handshake_size: usize,
    /// How long the opening handshake may take. Default 10 s: a slow or
    /// silent peer must not hold a socket forever. A client counts from the
    /// TCP connect, through TLS for `wss://`, to the 101 answer.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's answer to our Close frame, and then
    /// for the TCP connection to end. Default 10 s, as Python websockets.
    pub close_timeout: Duration,
    /// Keepalive: send a Ping this often. Default 20 s, as Python
    /// websockets; `None` turns keepalive off. A peer that vanished without
    /// closing (a dropped network, a suspended laptop) otherwise holds its
    /// connection, and its memory, forever. Pings go out while the
    /// connection is read (`next`, `recv` or the `Stream`).
    pub ping_interval: Option<Duration>,
    /// Keepalive: fail the connection (close code 1011, reported as 1006)
    /// when a keepalive Ping has no Pong this long after it was sent.
    /// Default 20 s, as Python websockets.
    pub ping_timeout: Duration,
    /// How long a `send`, `feed`, `flush`, `ping` or `close` (and the
    /// reading side, when the peer's unread answers fill the write buffer)
    /// may wait for the socket to take any byte before the connection is
    /// failed ([`Error::WriteTimeout`](crate::Error::WriteTimeout),
    /// reported as 1006). Default 60 s; `None` waits as long as TCP does.
    /// tungstenite, `ws` and Python websockets have none by default, but
    /// then a peer that stops reading holds the sender, its connection and
    /// its write buffer until TCP gives up (many minutes): a minute is far
    /// longer than any live peer stays silent while data waits for it (the
    /// Autobahn fuzzer, four cases at once on a loaded machine, passes
    /// every case with 20 s), and short enough that peers that stop
    /// reading cannot pile up on a public server.
    pub write_timeout: Option<Duration>,
    /// How long a peer may take to finish a data message once its first
    /// frame began (all fragments of a fragmented one, or the payload of
    /// an unfragmented one), before the connection is failed with close
    /// code 1008 (policy violation: the message is not too big, the peer
    /// broke the server's rule on time;
    /// [`Error::MessageTimeout`](crate::Error::MessageTimeout)). `None`
    /// allows any time. Default 30 s: a peer that starts messages and
    /// never ends them otherwise holds what it sent (up to
    /// `max_message_size` each) for as long as keepalive finds it alive;
    /// 30 s carries a 64 MiB message at 18 Mbit/s, and a few megabytes over
    /// the slowest mobile link. Raise it for large uploads over slow links.
    pub fragment_timeout: Option<Duration>,
    /// A budget for the bytes that partly received messages hold, shared
    /// with every connection given the same one (counted after
    /// decompression). A connection whose message would take the total
    /// past it is failed with close code 1013, try again later
    /// ([`Error::MessageBudget`](crate::Error::MessageBudget)): the message
    /// is within `max_message_size`, the server as a whole is short of
    /// room, and a retry later may well succeed (1009 would tell the peer
    /// its message is too big, which it is not). Default `None`: a lone
    /// connection is bounded by `max_message_size`; a
    /// [`Server`](crate::Server) gives its own budget
    /// ([`Server::message_budget`](crate::Server::message_budget), default
    /// 256 MiB) to every WebSocket whose config names none. Give one here
    /// to share a budget between the [`Upgrade`](crate::Upgrade)s of an
    /// HTTP server of your own.
    ///
    /// The total is checked before each read: between two checks one
    /// connection may go past it by what one read (at most 1 MiB) brings,
    /// or what that inflates to, before it is failed.
    pub message_budget: Option<crate::MessageBudget>,
    /// `send` waits while more than this many bytes are queued for the
    /// socket (back-pressure). Default 1 MiB: big enough to batch many small
    /// messages into one write, small enough to bound memory per slow peer.
    pub write_buffer_high_water: usize,
    /// How much to read from the socket at a time. Default 16 KiB.
    pub read_buffer_size: usize,
    /// permessage-deflate (RFC 7692): `None` turns it off. Clients offer it
    /// by default; [`Config::server`] leaves it off unless asked.
    pub deflate: Option<DeflateConfig>,
    /// Subprotocols: offered by a client in order of preference, supported
    /// by a server. Empty by default.
    pub protocols: Vec<String>,
    /// Set `TCP_NODELAY` on sockets (default on): a WebSocket message is
    /// usually worth sending now, and duplex batches writes itself.
    pub nodelay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_handshake_size: 16 << 10,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            write_timeout: Some(Duration::from_secs(60)),
            fragment_timeout: Some(Duration::from_secs(30)),
            message_budget: None,
            write_buffer_high_water: 1 << 20,
            read_buffer_size: 16 << 10,
            deflate: Some(DeflateConfig::default()),
            protocols: Vec::new(),
            nodelay: true,
        }
    }
}

impl Config {
    /// The defaults for a client: permessage-deflate offered.
    pub fn client() -> Self {
        Config::default()
    }

    /// The defaults for a server: permessage-deflate off until configured,
    /// since it costs memory per connection.
    pub fn server() -> Self {
        Config {
            deflate: None,
            ..Config::default()
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        // `Limits` is non-exhaustive: limits this config does not set keep
        // duplex-proto's defaults.
        let mut limits = Limits::default();
        limits.max_frame_size = self.max_frame_size;
        limits.max_message_size = self.max_message_size;
        limits
    }
}

/// One setter per field, each named as its field, for building a config in
/// one expression.
macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl Config {
            $(
                #[doc = concat!("Sets [`", stringify!($name), "`](Config::", stringify!($name), ").")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    max_frame_size: usize,
    max_message_size: usize,
    max_handshake_size: usize,
    handshake_timeout: Duration,
    close_timeout: Duration,
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    write_timeout: Option<Duration>,
    fragment_timeout: Option<Duration>,
    message_budget: Option<crate::MessageBudget>,
    write_buffer_high_water: usize,
    read_buffer_size: usize,
    deflate: Option<DeflateConfig>,
    protocols: Vec<String>,
    nodelay: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_set_their_field_and_nothing_else() {
        let config = Config::client()
            .max_message_size(1 << 20)
            .ping_interval(None)
            .deflate(None);
        assert_eq!(config.max_message_size, 1 << 20);
        assert_eq!(config.ping_interval, None);
        assert!(config.deflate.is_none());
        assert_eq!(config.max_frame_size, Config::client().max_frame_size);
    }

    #[test]
    fn timeouts_for_untrusted_peers_are_on_by_default() {
        for config in [Config::server(), Config::client()] {
            assert_eq!(config.write_timeout, Some(Duration::from_secs(60)));
            assert_eq!(config.fragment_timeout, Some(Duration::from_secs(30)));
            assert!(config.message_budget.is_none());
        }
    }
}
