//! Matching UDP datagrams to UDP ASSOCIATE sessions.
//!
//! A successful UDP ASSOCIATE reply names the relay (`BND.ADDR:BND.PORT`; an unspecified
//! address means "the server's address"). From then until the control connection closes, a
//! datagram is the session's when it goes from the client's IP to the relay (client → relay)
//! or from the relay to the client (relay → client). The client's UDP port is taken from the
//! request when it named one, else from the first datagram whose SOCKS UDP header parses; from
//! then on it must match, which separates the client from destinations on the same host (the
//! relay often uses one socket for both legs). No port is guessed.

use core::net::{IpAddr, SocketAddr};

use crate::engine::{Table, table};

/// One registered association.
#[derive(Debug)]
struct Association {
    conn: usize,
    client_ip: IpAddr,
    client_port: Option<u16>,
    active: bool,
}

/// Which way a matched datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Client → relay.
    Up,
    /// Relay → client.
    Down,
}

/// The association table.
#[derive(Debug, Default)]
pub struct UdpMatcher {
    by_relay: Table<Relay, Vec<Association>>,
    /// The relay of every registered connection, until it is removed (closed or not).
    relay_of: Table<usize, Relay>,
}

/// A relay's address as the tables key it (canonical: see [`canon`]), hashed as one integer
/// when IPv4: every UDP datagram is looked up twice while associations exist, and
/// `SocketAddr`'s derived hash feeds the hasher field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Relay(SocketAddr);

impl core::hash::Hash for Relay {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        match self.0 {
            SocketAddr::V4(v4) => {
                state.write_u64(u64::from(v4.ip().to_bits()) << 16 | u64::from(v4.port()));
            }
            SocketAddr::V6(_) => self.0.hash(state),
        }
    }
}

/// Normalises IPv4-mapped IPv6 addresses so both spellings match.
fn canon(sa: SocketAddr) -> SocketAddr {
    match sa {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => sa,
        },
        SocketAddr::V4(_) => sa,
    }
}

impl UdpMatcher {
    /// An empty table whose hash is keyed with `seed` (see `Options::hash_seed`).
    pub fn new(seed: u64) -> Self {
        Self {
            by_relay: table(seed),
            relay_of: table(seed),
        }
    }

    /// Registers connection `conn`'s association: relay address (already resolved against the
    /// server's address), client IP, and the client port the request announced (0 = unknown).
    pub fn register(&mut self, conn: usize, relay: SocketAddr, client_ip: IpAddr, port: u16) {
        self.relay_of.insert(conn, Relay(canon(relay)));
        self.by_relay
            .entry(Relay(canon(relay)))
            .or_default()
            .push(Association {
                conn,
                client_ip: canon(SocketAddr::new(client_ip, 0)).ip(),
                client_port: (port != 0).then_some(port),
                active: true,
            });
    }

    /// The control connection `conn` closed: its association ends.
    pub fn close(&mut self, conn: usize) {
        let Some(relay) = self.relay_of.get(&conn) else {
            return;
        };
        if let Some(list) = self.by_relay.get_mut(relay) {
            for a in list.iter_mut().filter(|a| a.conn == conn) {
                a.active = false;
            }
        }
    }

    /// Connection `conn` was reported: forgets its association, so the table holds only the
    /// live connections'. Touches only its relay's list (a sweep over every relay for each
    /// connection reported was a visible share of the time on 200,000 connections).
    pub fn remove(&mut self, conn: usize) {
        let Some(relay) = self.relay_of.remove(&conn) else {
            return;
        };
        if let Some(list) = self.by_relay.get_mut(&relay) {
            list.retain(|a| a.conn != conn);
            if list.is_empty() {
                self.by_relay.remove(&relay);
            }
        }
    }

    /// True if nothing is registered (fast path).
    pub fn is_empty(&self) -> bool {
        self.by_relay.is_empty()
    }

    /// Matches a datagram. `header_ok` says whether its payload parses as a SOCKS UDP header;
    /// it is asked only when the client port still has to be learnt. Returns the connection
    /// index and direction.
    pub fn classify(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        header_ok: &mut dyn FnMut() -> bool,
    ) -> Option<(usize, Way)> {
        let (src, dst) = (canon(src), canon(dst));
        if let Some(list) = self.by_relay.get_mut(&Relay(dst)) {
            // Newest association first: port reuse across sessions.
            for a in list.iter_mut().rev().filter(|a| a.active) {
                if a.client_ip != src.ip() {
                    continue;
                }
                match a.client_port {
                    Some(p) if p == src.port() => return Some((a.conn, Way::Up)),
                    Some(_) => {}
                    None => {
                        if header_ok() {
                            a.client_port = Some(src.port());
                            return Some((a.conn, Way::Up));
                        }
                    }
                }
            }
        }
        if let Some(list) = self.by_relay.get(&Relay(src)) {
            for a in list.iter().rev().filter(|a| a.active) {
                if a.client_ip == dst.ip() && a.client_port == Some(dst.port()) {
                    return Some((a.conn, Way::Down));
                }
            }
        }
        None
    }
}
