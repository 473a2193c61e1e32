//! Which end of the connection we are (RFC 6455 §5.1: who masks).

/// Which end of a WebSocket connection this is.
///
/// The role decides masking (RFC 6455 §5.1): a client masks every frame it
/// sends and requires unmasked frames from the server; a server does the reverse.
///
/// Exhaustive on purpose: a connection has two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that opened the connection and sent the HTTP Upgrade request.
    Client,
    /// The end that accepted the Upgrade request.
    Server,
}

impl Role {
    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}
