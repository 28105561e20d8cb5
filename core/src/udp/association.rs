//! One UDP association's decisions: which datagrams are relayed, and where.
//!
//! An [`Association`] is created when a session's UDP ASSOCIATE succeeds and lives as long as
//! its control connection. The driver owns the sockets — one facing the client, others facing
//! destinations — and hands every datagram to the association, which says whether and where
//! to send it:
//!
//! * **The client.** Only datagrams from the control connection's IP address are accepted.
//!   The source port is the one the request announced when it gave an IP address with a port
//!   other than 0; otherwise the port of the first datagram from that address is latched.
//!   Everything else is a [`Stranger`](Dropped::Stranger).
//! * **Client → destination.** The header is parsed and fragments are reassembled (RFC 1928
//!   §7). The destination then meets the access rules (command `udp_associate`) in the same
//!   two steps as a CONNECT: a denied name is never resolved, and a name's address is checked
//!   before anything is sent to it. The rules'
//!   [protected destinations](crate::rules::ProtectedDestinations) apply to each datagram's
//!   address the same way ([`Dropped::Protected`]). A destination a datagram is sent to is recorded as
//!   *contacted*.
//! * **Destination → client.** A datagram is relayed only from an address and port the client
//!   has contacted (so no third party can inject datagrams into the association), and only
//!   once the client's port is known; it goes to the client encapsulated with its source.
//! * **Idle.** The association ends after the policy's `udp_idle` without a datagram relayed
//!   either way; [`poll_timeout`](Association::poll_timeout) says when to check.
//!
//! The set of contacted destinations is the driver's choice of storage through
//! [`Contacted`]: [`PeerList`] is a fixed-capacity list for small devices; a host may use a
//! hash set. A full set records no more destinations, so replies from new ones are dropped —
//! it never lets a stranger in.

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::reassembly::{Reassembler, ReassemblyError};
use crate::addr::{Addr, Domain};
use crate::rules::{Action, Decision, Protection, Query, Refusal, Rules, Verdict};
use crate::server::Octets;
use crate::time::Instant;
use crate::wire::Command;
use crate::wire::udp::encapsulate;

/// The destinations an association has sent to.
pub trait Contacted {
    /// Whether `addr` was recorded.
    fn contains(&self, addr: &SocketAddr) -> bool;
    /// Records `addr`; returns `false` when the set is full and `addr` was not recorded.
    fn insert(&mut self, addr: SocketAddr) -> bool;
}

/// A [`Contacted`] set of at most `N` destinations in a fixed array, searched linearly: for
/// the few destinations of an embedded device's associations.
#[derive(Clone, Debug, Default)]
pub struct PeerList<const N: usize>(heapless::Vec<SocketAddr, N>);

impl<const N: usize> PeerList<N> {
    /// An empty list.
    pub const fn new() -> Self {
        Self(heapless::Vec::new())
    }

    // One copy of the search, shared by `contains` and `insert`.
    #[inline(never)]
    fn find(&self, addr: &SocketAddr) -> bool {
        self.0.contains(addr)
    }
}

impl<const N: usize> Contacted for PeerList<N> {
    fn contains(&self, addr: &SocketAddr) -> bool {
        self.find(addr)
    }

    fn insert(&mut self, addr: SocketAddr) -> bool {
        self.find(&addr) || self.0.push(addr).is_ok()
    }
}

/// Why a datagram was not relayed. Nothing else changes: the association goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Dropped {
    /// From an address (or port) that is not the association's client.
    Stranger,
    /// The header did not parse, or the fragment could not be queued.
    Reassembly(ReassemblyError),
    /// The access rules deny the destination.
    Denied(Decision),
    /// The destination is protected and the rule that allowed it does not name it
    /// ([`ProtectedDestinations`](crate::rules::ProtectedDestinations)).
    Protected(Protection),
    /// From a source the client has not contacted.
    NotContacted,
    /// For the client before its port is known (it has sent nothing yet).
    ClientUnknown,
    /// Too large for the driver's buffer once encapsulated.
    TooLarge,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stranger => f.write_str("datagram from a stranger"),
            Self::Reassembly(e) => e.fmt(f),
            Self::Denied(d) => match d.rule {
                Some(i) => write!(f, "destination denied by rule {i}"),
                None => f.write_str("destination denied by the default action"),
            },
            Self::Protected(p) => write!(f, "protected destination ({p})"),
            Self::NotContacted => {
                f.write_str("datagram from an address the client did not contact")
            }
            Self::ClientUnknown => f.write_str("client's UDP port not known yet"),
            Self::TooLarge => f.write_str("datagram too large to encapsulate"),
        }
    }
}

/// What to do with a client's datagram.
#[derive(Debug)]
#[must_use]
pub enum Outbound<'a, C> {
    /// Send `data` to `to`: allowed, and now recorded as contacted.
    Send {
        /// The destination.
        to: SocketAddr,
        /// The payload, without the SOCKS header.
        data: &'a [u8],
    },
    /// The destination is a name: resolve it and call [`Unresolved::resolved`].
    Resolve(Unresolved<'a, C>),
    /// A fragment was queued; nothing to send yet.
    Queued,
}

/// A datagram for a named destination, waiting for the name's address.
#[derive(Debug)]
#[must_use]
pub struct Unresolved<'a, C> {
    name: Domain<'a>,
    port: u16,
    data: &'a [u8],
    query: Query<'a>,
    contacted: &'a mut C,
}

impl<'a, C: Contacted> Unresolved<'a, C> {
    /// The name to resolve.
    pub const fn name(&self) -> Domain<'a> {
        self.name
    }

    /// Step two of the rules for the name's address `ip`: where to send the datagram, now
    /// recorded as contacted, and its payload.
    pub fn resolved(
        self,
        rules: &Rules<'_>,
        ip: IpAddr,
    ) -> Result<(SocketAddr, &'a [u8]), Dropped> {
        rules.check_resolved(&self.query, ip).map_err(|r| match r {
            Refusal::Denied(d) => Dropped::Denied(d),
            Refusal::Protected(p) => Dropped::Protected(p),
            // Only a session's check gives it; the rules alone never do. Fail closed.
            Refusal::Family(_) => Dropped::Denied(Decision {
                action: Action::Deny,
                rule: None,
            }),
        })?;
        let to = SocketAddr::new(ip.to_canonical(), self.port);
        self.contacted.insert(to);
        Ok((to, self.data))
    }
}

/// One UDP association: see the [module documentation](self). `C` stores the contacted
/// destinations; `R` bytes of reassembly (65 507 hold any UDP/IPv4 datagram).
#[derive(Debug)]
pub struct Association<C, const R: usize> {
    client_ip: IpAddr,
    client_port: Option<u16>,
    user: Option<Octets>,
    contacted: C,
    reassembler: Reassembler<R>,
    idle: Duration,
    last_active: Instant,
}

impl<C: Contacted, const R: usize> Association<C, R> {
    /// The association of a client at `client` (the control connection's address) whose
    /// request named `requested` as its UDP source, for the authenticated `user`; it ends
    /// after `idle` without traffic.
    pub fn new(
        client: IpAddr,
        requested: Addr<'_>,
        user: Option<&[u8]>,
        contacted: C,
        idle: Duration,
        now: Instant,
    ) -> Self {
        // Only an address form says which port the client will use; a name (PySocks sends
        // "0") or port 0 means "not known yet".
        let client_port = match requested {
            Addr::Ip(sa) if sa.port() != 0 => Some(sa.port()),
            _ => None,
        };
        Self {
            client_ip: client.to_canonical(),
            client_port,
            user: user.map(|u| {
                let mut o = Octets::new();
                let _ = o.extend_from_slice(u.get(..255).unwrap_or(u));
                o
            }),
            contacted,
            reassembler: Reassembler::new(),
            idle,
            last_active: now,
        }
    }

    /// Whether a datagram from `src` is the client's, as
    /// [`handle_client_datagram`](Self::handle_client_datagram) decides it; changes nothing
    /// (a port not known yet is not latched).
    pub fn is_client(&self, src: SocketAddr) -> bool {
        src.ip().to_canonical() == self.client_ip
            && self.client_port.is_none_or(|p| p == src.port())
    }

    /// Takes a datagram that arrived from `src` on the socket facing the client, and says
    /// what to send where ([`Outbound`]) or why it is dropped.
    ///
    /// [`Dropped::Stranger`] changes no state — neither the client's port, nor the idle
    /// timer, nor the reassembly queue — so a driver with one socket for both sides may
    /// offer the same datagram to [`handle_remote_datagram`](Self::handle_remote_datagram)
    /// as a destination's reply.
    #[inline(never)]
    pub fn handle_client_datagram<'a>(
        &'a mut self,
        rules: &Rules<'_>,
        src: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
    ) -> Result<Outbound<'a, C>, Dropped> {
        if src.ip().to_canonical() != self.client_ip
            || self.client_port.is_some_and(|p| p != src.port())
        {
            return Err(Dropped::Stranger);
        }
        self.client_port = Some(src.port());
        self.last_active = now;
        let Self {
            client_ip,
            user,
            contacted,
            reassembler,
            ..
        } = self;
        let Some(whole) = reassembler
            .push_datagram(now, datagram)
            .map_err(Dropped::Reassembly)?
        else {
            return Ok(Outbound::Queued);
        };
        let query = Query {
            client: *client_ip,
            user: user.as_deref(),
            command: Command::UdpAssociate,
            dst: whole.dst.normalized(),
        };
        let verdict = rules.evaluate(&query);
        if let Verdict::Decided(d) = verdict
            && !d.is_allowed()
        {
            return Err(Dropped::Denied(d));
        }
        match query.dst {
            Addr::Ip(sa) => {
                if let Some(d) = verdict.decision() {
                    rules.screen(d, sa.ip()).map_err(Dropped::Protected)?;
                }
                let to = SocketAddr::new(sa.ip().to_canonical(), sa.port());
                contacted.insert(to);
                Ok(Outbound::Send {
                    to,
                    data: whole.data,
                })
            }
            Addr::Domain(name, port) => Ok(Outbound::Resolve(Unresolved {
                name,
                port,
                data: whole.data,
                query,
                contacted,
            })),
        }
    }

    /// Takes a datagram that arrived from `src` on a socket facing destinations: when it is
    /// to be relayed, writes it encapsulated (with `src` as its address) into `out` and
    /// returns the client's address and the length to send.
    #[inline(never)]
    pub fn handle_remote_datagram(
        &mut self,
        src: SocketAddr,
        payload: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<(SocketAddr, usize), Dropped> {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        if !self.contacted.contains(&src) {
            return Err(Dropped::NotContacted);
        }
        let port = self.client_port.ok_or(Dropped::ClientUnknown)?;
        let n = encapsulate(Addr::Ip(src), payload, out).map_err(|_| Dropped::TooLarge)?;
        self.last_active = now;
        Ok((SocketAddr::new(self.client_ip, port), n))
    }

    /// The next deadline: the idle limit, or a pending fragment queue's timer, whichever
    /// comes first. Poll again after every datagram.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.last_active + self.idle;
        Some(
            self.reassembler
                .poll_timeout()
                .map_or(idle, |t| t.min(idle)),
        )
    }

    /// Tells the association the time: abandons an expired fragment queue, and returns
    /// `true` when the association has been idle for its limit and must end.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        self.reassembler.handle_timeout(now);
        now >= self.last_active + self.idle
    }

    /// The client's UDP source, once known: the announced one from the start, else the first
    /// accepted datagram's.
    ///
    /// Once known it never changes, and [`is_client`](Self::is_client) and
    /// [`handle_client_datagram`](Self::handle_client_datagram) accept datagrams from exactly
    /// this address and no other.
    pub fn client(&self) -> Option<SocketAddr> {
        self.client_port
            .map(|port| SocketAddr::new(self.client_ip, port))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::rules::Action;
    use crate::wire::udp::encapsulate;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An association of the client at 192.0.2.10 that announced `expected`.
    fn of_client(expected: SocketAddr) -> Association<PeerList<4>, 1024> {
        Association::new(
            sa("192.0.2.10:1").ip(),
            Addr::Ip(expected),
            None,
            PeerList::new(),
            Duration::from_secs(60),
            Instant::from_millis(0),
        )
    }

    #[test]
    fn test_a_stranger_changes_nothing() {
        let open = Rules::new(&[], Action::Allow);
        let mut a = of_client(sa("0.0.0.0:0"));
        let mut buf = [0u8; 64];
        let n = encapsulate(Addr::Ip(sa("192.0.2.7:53")), b"part", &mut buf).unwrap();
        let whole = buf[..n].to_vec();
        // A first fragment: had it counted, it would latch the port, restart the idle timer
        // and start a reassembly queue.
        buf[2] = 1;
        let frag = &buf[..n];
        let later = Instant::from_millis(30_000);
        let before = a.poll_timeout();
        let r = a.handle_client_datagram(&open, sa("192.0.2.11:5000"), frag, later);
        assert!(matches!(r, Err(Dropped::Stranger)));
        assert_eq!(a.client(), None);
        assert_eq!(a.poll_timeout(), before);
        // The same datagram offered as a reply: not contacted, not delivered.
        let mut out = [0u8; 64];
        let r = a.handle_remote_datagram(sa("192.0.2.11:5000"), frag, &mut out, later);
        assert_eq!(r, Err(Dropped::NotContacted));
        // Once the client's port is latched, another port changes nothing either.
        let now = Instant::from_millis(1);
        let r = a.handle_client_datagram(&open, sa("192.0.2.10:7000"), &whole, now);
        assert!(matches!(r, Ok(Outbound::Send { .. })));
        let before = a.poll_timeout();
        let r = a.handle_client_datagram(&open, sa("192.0.2.10:7001"), frag, later);
        assert!(matches!(r, Err(Dropped::Stranger)));
        assert_eq!(a.client(), Some(sa("192.0.2.10:7000")));
        assert_eq!(a.poll_timeout(), before);
        // Once fixed, exactly that address is the client's, and it stays fixed.
        assert!(a.is_client(sa("192.0.2.10:7000")));
        assert!(!a.is_client(sa("192.0.2.10:7001")));
        assert!(!a.is_client(sa("192.0.2.11:7000")));
        let r = a.handle_client_datagram(&open, sa("192.0.2.10:7000"), &whole, later);
        assert!(matches!(r, Ok(Outbound::Send { .. })));
        assert_eq!(a.client(), Some(sa("192.0.2.10:7000")));
    }

    #[test]
    fn an_announced_port_is_the_client_from_the_start() {
        let open = Rules::new(&[], Action::Allow);
        let mut a = of_client(sa("192.0.2.10:7000"));
        assert_eq!(a.client(), Some(sa("192.0.2.10:7000")));
        let mut buf = [0u8; 64];
        let n = encapsulate(Addr::Ip(sa("192.0.2.7:53")), b"x", &mut buf).unwrap();
        let now = Instant::from_millis(1);
        let r = a.handle_client_datagram(&open, sa("192.0.2.10:7001"), &buf[..n], now);
        assert!(matches!(r, Err(Dropped::Stranger)));
        assert_eq!(a.client(), Some(sa("192.0.2.10:7000")));
    }
}
