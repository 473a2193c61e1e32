//! [`Requester`]: who asks for a topic to be made, as the per-client topic
//! quota counts them (a token's user, or an address by its /64).

use std::sync::Arc;

/// Who asks for a topic to be made, for
/// [`HubConfig::max_topics_per_client`](crate::hub::HubConfig::max_topics_per_client): a token's user, or without a
/// token the client's address (an IPv6 address by its /64, the block one
/// host is given).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requester {
    /// A token's `sub`.
    User(Arc<str>),
    /// An address (IPv6 masked to its /64).
    Address(std::net::IpAddr),
}

impl Requester {
    /// The requester of a client at `ip` without a token.
    pub fn address(ip: std::net::IpAddr) -> Requester {
        let ip = ip.to_canonical();
        Requester::Address(match ip {
            std::net::IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(bits.into())
            }
            v4 => v4,
        })
    }

    /// The requester of a client whose token names `user`.
    pub fn user(user: &str) -> Requester {
        Requester::User(user.into())
    }
}
