//! Limits per peer address, checked once when a TCP connection is
//! accepted (never per message): how many connections one address may hold
//! open, and how fast it may open new ones (a token bucket).
//!
//! An IPv6 peer is counted by its /64, the block one host or one home is
//! given, so that an attacker cannot take a fresh address for each
//! connection; an IPv4-mapped IPv6 address counts as the IPv4 address.
//!
//! Loopback peers are exempt unless asked otherwise: on a public server a
//! loopback peer is the operator's own tooling, or a reverse proxy on the
//! same host, whose connections are all its clients' (a limit per address
//! would then be one limit for everyone, and the proxy limits its own
//! clients); and local benchmarks open 10,000 connections from 127.0.0.1.
//!
//! The table holds one entry per address with a connection open (bounded
//! by the server's connection limit) and, so that closing and reopening
//! does not reset the bucket, at most [`MAX_IDLE_PEERS`] entries of
//! addresses with none open whose bucket is not yet full again. Past that
//! cap an address with no connection open is forgotten: a flood from more
//! addresses than that escapes the rate limit (the connection limits still
//! hold) rather than growing the table or locking out new clients.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default for [`Server::max_connections_per_ip`](crate::Server::max_connections_per_ip):
/// 256. Far more than one browser opens (a handful per site), enough for a
/// busy office or a carrier-grade NAT behind one address, and small enough
/// that one address cannot take more than a sliver of the default
/// connection limit (100,000).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// The default for [`Server::connection_rate`](crate::Server::connection_rate):
/// 100 new connections a second per address, in bursts of up to 200. Every
/// client behind one NAT reconnecting at once after a restart fits in the
/// burst; a script opening connections in a loop is slowed to a rate the
/// accept loop and the handshakes shrug off.
pub const DEFAULT_CONNECTION_RATE: (u32, u32) = (100, 200);

/// Entries kept for addresses with no connection open (for their token
/// bucket): 65,536 entries of a few dozen bytes, a few MiB at most.
pub const MAX_IDLE_PEERS: usize = 65_536;

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    TooMany(usize),
    TooFast(u32),
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRefusal::TooMany(max) => write!(
                f,
                "closing a new connection: this address has {max} open, its limit"
            ),
            PeerRefusal::TooFast(rate) => write!(
                f,
                "closing a new connection: this address opens more than {rate} a second"
            ),
        }
    }
}

/// The limits, and the table of peers they count.
#[derive(Debug)]
pub(crate) struct PeerLimits {
    max_per_ip: usize,
    /// Tokens a second and bucket size; `None` for no rate limit.
    rate: Option<(u32, u32)>,
    limit_loopback: bool,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    peers: HashMap<IpAddr, Peer>,
    /// Entries with no connection open.
    idle: usize,
    last_sweep: Instant,
}

#[derive(Debug)]
struct Peer {
    open: usize,
    tokens: f64,
    at: Instant,
}

impl Peer {
    /// Adds the tokens earned since the last look.
    fn refill(&mut self, rate: Option<(u32, u32)>, now: Instant) {
        if let Some((per_second, burst)) = rate {
            let earned =
                now.saturating_duration_since(self.at).as_secs_f64() * f64::from(per_second);
            self.tokens = (self.tokens + earned).min(f64::from(burst));
        }
        self.at = now;
    }

    fn bucket_full(&self, rate: Option<(u32, u32)>) -> bool {
        rate.is_none_or(|(_, burst)| self.tokens >= f64::from(burst))
    }
}

impl PeerLimits {
    pub(crate) fn new(max_per_ip: usize, rate: Option<(u32, u32)>, limit_loopback: bool) -> Self {
        PeerLimits {
            max_per_ip: max_per_ip.max(1),
            // A bucket must hold at least one token, or no one gets in.
            rate: rate
                .filter(|&(per_second, _)| per_second > 0)
                .map(|(per_second, burst)| (per_second, burst.max(1))),
            limit_loopback,
            table: Mutex::new(Table {
                peers: HashMap::new(),
                idle: 0,
                last_sweep: Instant::now(),
            }),
        }
    }

    /// A new connection from `ip`: counted (the guard uncounts it), exempt
    /// (`None`), or refused.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<PeerGuard>, PeerRefusal> {
        let ip = ip.to_canonical();
        if ip.is_loopback() && !self.limit_loopback {
            return Ok(None);
        }
        self.take(peer_key(ip)).map(Some)
    }

    /// One more for `key`, if its limits allow.
    fn take(self: &Arc<Self>, key: IpAddr) -> Result<PeerGuard, PeerRefusal> {
        let now = Instant::now();
        let mut table = self.lock();
        let rate = self.rate;
        // An entry kept with no connection open is counted idle.
        let was_idle = table.peers.get(&key).is_some_and(|peer| peer.open == 0);
        let burst = rate.map_or(0.0, |(_, burst)| f64::from(burst));
        let peer = table.peers.entry(key).or_insert(Peer {
            open: 0,
            tokens: burst,
            at: now,
        });
        peer.refill(rate, now);
        if peer.open >= self.max_per_ip {
            return Err(PeerRefusal::TooMany(self.max_per_ip));
        }
        if let Some((per_second, _)) = rate {
            if peer.tokens < 1.0 {
                // An entry new to the table has a full bucket, so this one
                // was there already: the table did not grow.
                return Err(PeerRefusal::TooFast(per_second));
            }
            peer.tokens -= 1.0;
        }
        peer.open += 1;
        if was_idle {
            table.idle -= 1;
        }
        drop(table);
        Ok(PeerGuard {
            limits: Arc::clone(self),
            key,
        })
    }

    /// One of `key`'s connections closed.
    fn release(&self, key: IpAddr) {
        let now = Instant::now();
        let mut table = self.lock();
        let rate = self.rate;
        let Some(peer) = table.peers.get_mut(&key) else {
            return;
        };
        peer.open -= 1;
        if peer.open > 0 {
            return;
        }
        peer.refill(rate, now);
        if peer.bucket_full(rate) {
            table.peers.remove(&key);
            return;
        }
        if table.idle >= MAX_IDLE_PEERS {
            table.sweep(rate, now);
        }
        if table.idle >= MAX_IDLE_PEERS {
            // Still full: forget this one rather than grow.
            table.peers.remove(&key);
        } else {
            table.idle += 1;
        }
    }

    /// How many addresses the table holds, for tests.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let table = self.lock();
        (table.peers.len(), table.idle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    /// Drops the idle entries whose bucket has filled up again (they are
    /// as good as absent), at most once a second: the sweep walks the
    /// whole table.
    fn sweep(&mut self, rate: Option<(u32, u32)>, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let before = self.peers.len();
        self.peers.retain(|_, peer| {
            if peer.open > 0 {
                return true;
            }
            peer.refill(rate, now);
            !peer.bucket_full(rate)
        });
        self.idle -= before - self.peers.len();
    }
}

/// One counted connection of a peer; uncounted when the last clone of it
/// goes (a connection's task and the WebSockets upgraded on it share it).
#[derive(Debug)]
pub(crate) struct PeerGuard {
    limits: Arc<PeerLimits>,
    key: IpAddr,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

/// A connection's [`PeerGuard`], in its requests' extensions, so that an
/// HTTP/1.1 connection upgraded to a WebSocket stays counted for as long
/// as the WebSocket lives.
#[derive(Debug, Clone)]
pub(crate) struct PeerSlot {
    guard: Arc<PeerGuard>,
    /// Taken for one request (a client behind a proxy that names it in
    /// `X-Forwarded-For`), not for the connection: a WebSocket upgraded
    /// from it needs no other.
    pub(crate) per_request: bool,
}

impl PeerSlot {
    pub(crate) fn new(guard: PeerGuard, per_request: bool) -> PeerSlot {
        PeerSlot {
            guard: Arc::new(guard),
            per_request,
        }
    }

    /// One more count for the same address, as a new connection would take
    /// (the connection limit and the rate both): what a WebSocket over
    /// HTTP/2 takes, so that an address opening many on one connection is
    /// held to the limits of one opening many connections.
    pub(crate) fn another(&self) -> Result<PeerSlot, PeerRefusal> {
        let guard = &self.guard;
        guard
            .limits
            .take(guard.key)
            .map(|guard| PeerSlot::new(guard, false))
    }
}

/// The address a canonical `ip` is counted as: itself, or its /64.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_is_held_to_its_count_and_gets_room_back_as_connections_close() {
        let limits = Arc::new(PeerLimits::new(2, None, false));
        let a = limits.admit(ip("192.0.2.1")).unwrap().unwrap();
        let b = limits.admit(ip("192.0.2.1")).unwrap().unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.1")).unwrap_err(),
            PeerRefusal::TooMany(2)
        );
        // Another address is counted apart.
        let other = limits.admit(ip("192.0.2.2")).unwrap().unwrap();
        drop(a);
        let c = limits.admit(ip("192.0.2.1")).unwrap().unwrap();
        drop((b, c, other));
        // No connection open and no rate to remember: no entry left.
        assert_eq!(limits.len(), (0, 0));
    }

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let limits = Arc::new(PeerLimits::new(1, None, false));
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap().unwrap();
        assert!(limits.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(limits.admit(ip("2001:db8:1:3::1")).unwrap().is_some());
        let _v4 = limits.admit(ip("192.0.2.7")).unwrap().unwrap();
        assert!(limits.admit(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let exempt = Arc::new(PeerLimits::new(1, Some((1, 1)), false));
        for _ in 0..10 {
            assert!(exempt.admit(ip("127.0.0.1")).unwrap().is_none());
            assert!(exempt.admit(ip("::1")).unwrap().is_none());
            assert!(exempt.admit(ip("::ffff:127.0.0.1")).unwrap().is_none());
        }
        let limited = Arc::new(PeerLimits::new(1, None, true));
        let _one = limited.admit(ip("127.0.0.1")).unwrap().unwrap();
        assert!(limited.admit(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn the_rate_refuses_past_the_burst_and_refills_over_time() {
        let limits = Arc::new(PeerLimits::new(100, Some((20, 3)), false));
        for _ in 0..3 {
            drop(limits.admit(ip("192.0.2.1")).unwrap());
        }
        assert_eq!(
            limits.admit(ip("192.0.2.1")).unwrap_err(),
            PeerRefusal::TooFast(20)
        );
        // Kept while its bucket refills, though nothing is open.
        assert_eq!(limits.len(), (1, 1));
        // One token every 50 ms.
        std::thread::sleep(Duration::from_millis(60));
        let back = limits.admit(ip("192.0.2.1")).unwrap().unwrap();
        assert_eq!(limits.len(), (1, 0));
        drop(back);
        assert_eq!(limits.len(), (1, 1));
    }

    #[test]
    fn idle_entries_are_capped() {
        let limits = Arc::new(PeerLimits::new(10, Some((1, 1)), false));
        // Each address opens and closes one connection: its bucket is
        // empty afterwards, so the entry is kept, up to the cap.
        for n in 0..(MAX_IDLE_PEERS as u32 + 1000) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + n));
            drop(limits.admit(addr).unwrap());
        }
        let (len, idle) = limits.len();
        assert_eq!((len, idle), (MAX_IDLE_PEERS, MAX_IDLE_PEERS));
    }
}
