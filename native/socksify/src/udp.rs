//! UDP through the proxy: one SOCKS5 UDP ASSOCIATE per program socket.
//!
//! The first datagram a UDP socket sends to a proxied destination (with `sendto`, `sendmsg`,
//! `sendmmsg`, or after `connect`) opens the socket's association: a TCP control connection
//! to the proxy (a descriptor of the shim's own, close-on-exec, kept open for the
//! association's life: the proxy ends the association when it closes) and a UDP ASSOCIATE
//! request naming the socket's local port. From then on:
//!
//! * **Sending.** Each datagram to a proxied destination gets the UDP request header (the
//!   destination as an address, or the name behind a placeholder address) and goes, from
//!   the program's own socket, to the relay the proxy named. Datagrams to `--direct`
//!   destinations go out unchanged.
//! * **Receiving.** The program's socket is the one the relay answers, so poll, select and
//!   epoll report it readable exactly when a reply is there. A datagram from the relay loses
//!   its header and is presented as coming from the address in that header (the
//!   destination); one from a `--direct` address is delivered unchanged; anything else — a
//!   stranger, a malformed header, a fragment (the shim never fragments and drops fragments,
//!   as RFC 1928 lets an implementation do) — is dropped, as the kernel would drop a
//!   datagram for a connected socket from another peer.
//! * **Connected UDP.** `connect` to a proxied destination opens the association and
//!   connects the socket to the relay, so the kernel itself drops datagrams from anyone
//!   else; `send`/`write` add the header for the destination, `recv`/`read` strip it, and
//!   `getpeername` answers the destination. `connect` to AF_UNSPEC dissolves the
//!   connection (the association stays).
//!
//! The header bytes are the core's ([`socksgate_core::wire::udp`]); this module decides, the
//! hooks in [`crate::interpose_udp`] do the I/O.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use socksgate_core::wire::Command;
use socksgate_core::wire::udp::{UdpHeader, encapsulate};
use socksgate_core::{Addr, Domain, Target};

use crate::failure::Failure;
use crate::sys::{self, Errno};
use crate::{log, placeholder, settings, tcp};

/// The longest UDP request header: RSV, FRAG, ATYP, a 255-octet name with its length, port.
pub(crate) const MAX_HEADER: usize = 3 + 1 + 1 + 255 + 2;
/// The largest UDP payload.
pub(crate) const MAX_PAYLOAD: usize = 65_535;

/// Where a datagram goes, as the program named it and as the proxy is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The address the program used (a placeholder for a name the proxy resolves).
    pub(crate) shown: SocketAddr,
    /// What the UDP header carries.
    pub(crate) target: Target,
}

impl std::fmt::Display for Destination {
    /// The address, and the name the proxy is sent when it is a placeholder.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Domain(..) => write!(f, "{} = {}", self.shown, self.target),
            Target::Ip(_) => write!(f, "{}", self.shown),
        }
    }
}

/// One program socket's association.
#[derive(Debug)]
struct Association {
    /// The control connection (the shim's own descriptor).
    control: RawFd,
    /// Where datagrams go, in the program socket's family.
    relay: SocketAddr,
    /// The socket's family (AF_INET or AF_INET6).
    family: i32,
    /// `connect`ed destination, if any.
    peer: Option<Destination>,
    /// Destinations sent to by name: a reply from the port of one is shown as coming from
    /// its placeholder (the relay reports the address the proxy resolved the name to).
    named: Vec<Destination>,
}

/// Descriptors with an association, as a bitmap: `read`/`write` on every other descriptor
/// pass through with one atomic load and no lock. Descriptors past the bitmap are looked up.
const BITMAP_FDS: usize = 65_536;
static MARKED: [AtomicU64; BITMAP_FDS / 64] = [const { AtomicU64::new(0) }; BITMAP_FDS / 64];
static HIGH_FDS: AtomicU64 = AtomicU64::new(0);

fn table() -> MutexGuard<'static, HashMap<RawFd, Association>> {
    static TABLE: OnceLock<Mutex<HashMap<RawFd, Association>>> = OnceLock::new();
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mark(fd: RawFd, on: bool) {
    match usize::try_from(fd) {
        Ok(i) if i < BITMAP_FDS => {
            let bit = 1u64 << (i % 64);
            if let Some(word) = MARKED.get(i / 64) {
                if on {
                    word.fetch_or(bit, Ordering::AcqRel);
                } else {
                    word.fetch_and(!bit, Ordering::AcqRel);
                }
            }
        }
        _ => {
            if on {
                HIGH_FDS.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Whether `fd` has an association (cheap: no lock for descriptors below 65 536).
pub(crate) fn is_associated(fd: RawFd) -> bool {
    match usize::try_from(fd) {
        Ok(i) if i < BITMAP_FDS => MARKED
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (i % 64)) != 0),
        Ok(_) => HIGH_FDS.load(Ordering::Acquire) != 0 && table().contains_key(&fd),
        Err(_) => false,
    }
}

/// The destination the proxy is told for `to`, or `None` when `to` goes direct.
pub(crate) fn destination(to: SocketAddr) -> Result<Option<Destination>, Errno> {
    let name = placeholder::name_of(to.ip());
    if name.is_none() && placeholder::is_placeholder(to.ip()) {
        return Err(libc::EHOSTUNREACH);
    }
    if name.is_none() && settings::get().direct.contains(to.ip()) {
        return Ok(None);
    }
    let target = match name {
        Some(name) => {
            let domain = Domain::new(name.as_bytes()).map_err(|_| libc::EHOSTUNREACH)?;
            Addr::Domain(domain, to.port()).to_target()
        }
        None => Target::Ip(SocketAddr::new(to.ip().to_canonical(), to.port())),
    };
    Ok(Some(Destination { shown: to, target }))
}

/// Whether `fd` is an AF_INET/AF_INET6 datagram socket (what this module takes over).
pub(crate) fn is_inet_datagram(fd: RawFd) -> bool {
    sys::socket_type(fd) == Ok(libc::SOCK_DGRAM)
        && matches!(sys::socket_family(fd), Ok(libc::AF_INET | libc::AF_INET6))
}

/// Opens `fd`'s association unless it has one; returns the relay's address (in `fd`'s
/// family).
fn ensure(fd: RawFd, call: &str) -> Result<SocketAddr, Failure> {
    if let Some(a) = table().get(&fd) {
        return Ok(a.relay);
    }
    let settings = settings::get();
    let proxy = settings.proxy.as_ref().map_err(|_| Failure::NoProxy)?;
    let family = sys::socket_family(fd).map_err(Failure::Io)?;
    // The request names the socket's port when it has one, so the proxy accepts datagrams
    // from that port only; otherwise 0 (the proxy takes the port of the first datagram).
    let port = sys::local_address(fd).map_or(0, |a| a.port());
    let any = match proxy.address {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    };
    let control = sys::stream_socket(proxy.address).map_err(Failure::Io)?;
    let opened = tcp::open(
        control,
        proxy,
        Command::UdpAssociate,
        Addr::Ip(any),
        settings.connect_timeout,
    );
    let bound = match opened {
        Ok((Target::Ip(bound), _)) => bound,
        Ok((Target::Domain(..), _)) => {
            sys::close(control);
            return Err(Failure::Io(libc::EPROTO));
        }
        Err(failure) => {
            sys::close(control);
            log::event(format_args!(
                "{call}(fd {fd}): UDP ASSOCIATE via {}: {failure} -> {}",
                proxy.address,
                std::io::Error::from_raw_os_error(failure.errno())
            ));
            return Err(failure);
        }
    };
    // An unspecified BND.ADDR means "the address you reached me at".
    let relay_ip = if bound.ip().is_unspecified() {
        proxy.address.ip()
    } else {
        bound.ip()
    };
    let Some(relay) = in_family(SocketAddr::new(relay_ip, bound.port()), family) else {
        sys::close(control);
        return Err(Failure::Io(libc::EAFNOSUPPORT));
    };
    log::event(format_args!(
        "{call}(fd {fd}): UDP ASSOCIATE via {}: relay {relay}",
        proxy.address
    ));
    let mut table = table();
    if let Some(other) = table.get(&fd) {
        // Another thread opened one meanwhile: use it, drop ours.
        let relay = other.relay;
        drop(table);
        sys::close(control);
        return Ok(relay);
    }
    table.insert(
        fd,
        Association {
            control,
            relay,
            family,
            peer: None,
            named: Vec::new(),
        },
    );
    mark(fd, true);
    Ok(relay)
}

/// `addr` as an address of a socket of `family`: IPv4 on an AF_INET6 socket as its
/// IPv4-mapped form; `None` when an AF_INET socket cannot hold it.
pub(crate) fn in_family(addr: SocketAddr, family: i32) -> Option<SocketAddr> {
    match (family, addr.ip()) {
        (libc::AF_INET6, IpAddr::V4(v4)) => Some(SocketAddr::new(
            IpAddr::V6(v4.to_ipv6_mapped()),
            addr.port(),
        )),
        (libc::AF_INET, IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        _ => Some(addr),
    }
}

/// A datagram ready for the relay.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Header and payload.
    pub(crate) datagram: Vec<u8>,
    /// The relay.
    pub(crate) relay: SocketAddr,
}

/// What `sendto`/`sendmsg` do with a datagram for `to` (`None`: the connected peer).
#[derive(Debug)]
pub(crate) enum Send {
    /// Not ours: libc's call with the program's arguments.
    Libc,
    /// Send this to the relay, then report the payload's length.
    Relay(Outgoing),
    /// Fail with this errno.
    Fail(Errno),
}

/// Decides how a datagram of `payload` from `fd` to `to` (`None` for the connected peer)
/// leaves, opening the association when needed.
pub(crate) fn send(fd: RawFd, to: Option<SocketAddr>, payload: &[u8], call: &str) -> Send {
    let destination = match to {
        None => match table().get(&fd).and_then(|a| a.peer.clone()) {
            Some(peer) => peer,
            None => return Send::Libc,
        },
        Some(to) => {
            if !is_associated(fd) && !is_inet_datagram(fd) {
                return Send::Libc;
            }
            match destination(to) {
                Ok(Some(d)) => d,
                Ok(None) => {
                    log::event(format_args!("{call}(fd {fd}, {to}): direct"));
                    return Send::Libc;
                }
                Err(e) => return Send::Fail(e),
            }
        }
    };
    let relay = match ensure(fd, call) {
        Ok(relay) => relay,
        Err(failure) => return Send::Fail(failure.errno()),
    };
    let mut datagram = vec![0u8; MAX_HEADER + payload.len()];
    let Ok(n) = encapsulate(destination.target.as_addr(), payload, &mut datagram) else {
        return Send::Fail(libc::EMSGSIZE);
    };
    datagram.truncate(n);
    if matches!(destination.target, Target::Domain(..))
        && let Some(a) = table().get_mut(&fd)
        && !a.named.contains(&destination)
    {
        // A few recent names are enough to recognise replies; keep the list short.
        if a.named.len() >= 16 {
            a.named.remove(0);
        }
        a.named.push(destination.clone());
    }
    log::event(format_args!(
        "{call}(fd {fd}, {destination}): {} bytes via relay {relay}",
        payload.len()
    ));
    Send::Relay(Outgoing { datagram, relay })
}

/// What a received datagram is for the program.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A relayed reply: deliver `payload` (a range of the datagram) as coming from `from`.
    Relayed {
        /// The sender to show.
        from: SocketAddr,
        /// Where the payload sits in the datagram.
        payload: Range<usize>,
    },
    /// Not from the relay but from a direct address: deliver unchanged.
    Direct,
    /// Drop it and receive the next one.
    Drop,
}

/// Classifies a datagram that `fd` received from `src` (`None` when the call did not say:
/// a connected socket, which only the relay can reach).
pub(crate) fn incoming(fd: RawFd, src: Option<SocketAddr>, datagram: &[u8]) -> Incoming {
    let table = table();
    let Some(a) = table.get(&fd) else {
        return Incoming::Direct;
    };
    let from_relay = match src {
        Some(src) => same_address(src, a.relay),
        None => a.peer.is_some(),
    };
    if !from_relay {
        return match src {
            Some(src) if a.peer.is_none() && settings::get().direct.contains(src.ip()) => {
                Incoming::Direct
            }
            _ => Incoming::Drop,
        };
    }
    let Ok((header, payload)) = UdpHeader::parse(datagram) else {
        return Incoming::Drop;
    };
    if !header.is_standalone() {
        return Incoming::Drop;
    }
    let start = datagram.len() - payload.len();
    let sender = match header.dst {
        Addr::Ip(sa) => sa,
        Addr::Domain(..) => match &a.peer {
            Some(peer) => peer.shown,
            None => return Incoming::Drop,
        },
    };
    let from = match &a.peer {
        Some(peer) => match peer.target {
            // A connected socket hears from its peer only.
            Target::Ip(ip) if !same_address(ip, sender) => return Incoming::Drop,
            _ => peer.shown,
        },
        None => a
            .named
            .iter()
            .find(|d| d.target.port() == sender.port())
            .map_or(sender, |d| d.shown),
    };
    match in_family(from, a.family) {
        Some(from) => Incoming::Relayed {
            from,
            payload: start..datagram.len(),
        },
        None => Incoming::Drop,
    }
}

fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// What `connect` does with the datagram socket `fd`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    /// libc's `connect` with the program's arguments (direct, or AF_UNSPEC on a socket
    /// without association).
    Libc,
    /// libc's `connect` to this address (the relay), then report success.
    Relay(SocketAddr),
    /// Fail with this errno.
    Fail(Errno),
}

/// Connects the datagram socket `fd` to `to` (`None`: AF_UNSPEC, dissolve).
pub(crate) fn connect(fd: RawFd, to: Option<SocketAddr>) -> Connect {
    let Some(to) = to else {
        if let Some(a) = table().get_mut(&fd) {
            a.peer = None;
        }
        log::event(format_args!("connect(fd {fd}, AF_UNSPEC): disconnected"));
        return Connect::Libc;
    };
    let destination = match destination(to) {
        Ok(Some(d)) => d,
        Ok(None) => {
            if let Some(a) = table().get_mut(&fd) {
                a.peer = None;
            }
            log::event(format_args!("connect(fd {fd}, {to}): UDP, direct"));
            return Connect::Libc;
        }
        Err(e) => return Connect::Fail(e),
    };
    let relay = match ensure(fd, "connect") {
        Ok(relay) => relay,
        Err(failure) => return Connect::Fail(failure.errno()),
    };
    log::event(format_args!(
        "connect(fd {fd}, {destination}): UDP via relay {relay}"
    ));
    if let Some(a) = table().get_mut(&fd) {
        a.peer = Some(destination);
    }
    Connect::Relay(relay)
}

/// The connected peer of `fd` as the program named it, if `fd` is connected through the
/// association.
pub(crate) fn peer(fd: RawFd) -> Option<SocketAddr> {
    if !is_associated(fd) {
        return None;
    }
    let table = table();
    let a = table.get(&fd)?;
    in_family(a.peer.as_ref()?.shown, a.family)
}

/// Forgets `fd` (closed by the program) and closes its control connection.
pub(crate) fn forget(fd: RawFd) {
    if !is_associated(fd) {
        return;
    }
    let removed = table().remove(&fd);
    if let Some(a) = removed {
        mark(fd, false);
        if usize::try_from(fd).is_ok_and(|i| i >= BITMAP_FDS) {
            HIGH_FDS.fetch_sub(1, Ordering::AcqRel);
        }
        sys::close(a.control);
        log::event(format_args!("close(fd {fd}): UDP association ended"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_socket_family() {
        let v4: SocketAddr = "10.0.0.1:53".parse().unwrap();
        assert_eq!(
            in_family(v4, libc::AF_INET6),
            Some("[::ffff:10.0.0.1]:53".parse().unwrap())
        );
        assert_eq!(in_family(v4, libc::AF_INET), Some(v4));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:53".parse().unwrap();
        assert_eq!(in_family(mapped, libc::AF_INET), Some(v4));
        assert_eq!(
            in_family("[fd00::1]:53".parse().unwrap(), libc::AF_INET),
            None
        );
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Installs an association for the made-up descriptor `fd` (no control connection).
    fn associate(fd: RawFd, peer: Option<Destination>, named: Vec<Destination>) {
        table().insert(
            fd,
            Association {
                control: -1,
                relay: sa("10.66.0.1:4000"),
                family: libc::AF_INET,
                peer,
                named,
            },
        );
        mark(fd, true);
    }

    fn datagram(from: Addr<'_>, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_HEADER + payload.len()];
        let n = encapsulate(from, payload, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn relayed_datagrams_lose_their_header_and_come_from_their_destination() {
        let fd = 60_001;
        associate(fd, None, Vec::new());
        let relay = Some(sa("10.66.0.1:4000"));
        let d = datagram(Addr::Ip(sa("10.67.0.2:53")), b"answer");
        assert_eq!(
            incoming(fd, relay, &d),
            Incoming::Relayed {
                from: sa("10.67.0.2:53"),
                payload: d.len() - 6..d.len()
            }
        );
        // A stranger (not the relay, not a direct address), a malformed header, a fragment.
        assert_eq!(incoming(fd, Some(sa("10.99.0.9:53")), &d), Incoming::Drop);
        assert_eq!(incoming(fd, relay, b"\x01\x00\x00\x01"), Incoming::Drop);
        let mut fragment = d.clone();
        fragment[2] = 1;
        assert_eq!(incoming(fd, relay, &fragment), Incoming::Drop);
        // Loopback is direct by default: delivered unchanged.
        assert_eq!(incoming(fd, Some(sa("127.0.0.1:53")), &d), Incoming::Direct);
        forget(fd);
        assert!(!is_associated(fd));
    }

    #[test]
    fn a_connected_socket_hears_its_peer_only() {
        let fd = 60_002;
        let peer = Destination {
            shown: sa("10.67.0.2:53"),
            target: Target::Ip(sa("10.67.0.2:53")),
        };
        associate(fd, Some(peer), Vec::new());
        let ours = datagram(Addr::Ip(sa("10.67.0.2:53")), b"a");
        let other = datagram(Addr::Ip(sa("10.67.0.3:53")), b"a");
        assert!(matches!(
            incoming(fd, None, &ours),
            Incoming::Relayed { .. }
        ));
        assert_eq!(incoming(fd, None, &other), Incoming::Drop);
        // Not even a direct address reaches a socket connected through the relay.
        assert_eq!(
            incoming(fd, Some(sa("127.0.0.1:53")), &ours),
            Incoming::Drop
        );
        assert_eq!(super::peer(fd), Some(sa("10.67.0.2:53")));
        forget(fd);
    }

    #[test]
    fn replies_to_a_name_come_from_its_placeholder() {
        let fd = 60_003;
        let name = Domain::new(b"dns.example").unwrap();
        let named = Destination {
            shown: sa("240.0.0.7:53"),
            target: Addr::Domain(name, 53).to_target(),
        };
        associate(fd, None, vec![named]);
        let d = datagram(Addr::Ip(sa("192.0.2.53:53")), b"a");
        assert!(matches!(
            incoming(fd, Some(sa("10.66.0.1:4000")), &d),
            Incoming::Relayed { from, .. } if from == sa("240.0.0.7:53")
        ));
        forget(fd);
    }

    #[test]
    fn bitmap_marks_and_clears() {
        assert!(!is_associated(70));
        mark(70, true);
        assert!(is_associated(70));
        mark(70, false);
        assert!(!is_associated(70));
        assert!(!is_associated(-1));
    }
}
