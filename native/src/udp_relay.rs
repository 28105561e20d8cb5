//! UDP ASSOCIATE: a relay per association, ended with its TCP control connection.
//!
//! * Sockets belong to one association and are never shared: one facing the client (bound to
//!   the address the client reached us on; its port is advertised in the reply, with the IP
//!   replaced by `[udp] public_address` when set, for NAT) and, created on first use, one IPv4
//!   and one IPv6 socket facing destinations.
//! * Datagrams are accepted only from the control connection's client IP. The request's
//!   DST.PORT, when non-zero, must match too; when zero (`0.0.0.0:0`, or a domain such as
//!   `"0"` as PySocks sends) the port of the first datagram is latched.
//! * Headers are parsed and fragments (FRAG ≠ 0) reassembled by `socksgate_core::udp`; names
//!   are resolved (and cached for the association); every destination passes the access
//!   rules (command `udp_associate`).
//! * Replies are accepted only from addresses the client has sent to, and go back to the
//!   client encapsulated with their source address.
//! * The association ends when the control connection closes (EOF or error) or after
//!   `timeouts.udp_idle` without a datagram either way.
//! * One task runs the association. When a socket is readable it handles the datagrams
//!   waiting there (up to [`BATCH`] per wake-up) before looking at the others again; the
//!   idle and reassembly timers are registered once and moved only when they fire or their
//!   deadline changes, so a datagram costs no timer work.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socksgate_core::server::Request;
use socksgate_core::udp::{Instant as CoreInstant, Reassembler};
use socksgate_core::wire::Command;
use socksgate_core::wire::udp::encapsulate;
use socksgate_core::{Addr, Target};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::connect::io_reply;
use crate::session::{Conn, Ctx, SessionError};
use crate::udp_recv::{DATAGRAM, PER_CALL, RecvBufs, recv_some};

/// Reassembly capacity: a whole UDP/IPv4 datagram.
const REASSEMBLY: usize = 65_507;
/// Remembered destinations (for reply filtering) and resolved names, per association.
const MAX_PEERS: usize = 4096;

struct Outbound {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Outbound {
    async fn socket(&mut self, v6: bool) -> io::Result<&UdpSocket> {
        let slot = if v6 { &mut self.v6 } else { &mut self.v4 };
        if slot.is_none() {
            let any: SocketAddr = if v6 {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            *slot = Some(UdpSocket::bind(any).await?);
        }
        slot.as_ref()
            .ok_or_else(|| io::Error::other("socket missing"))
    }
}

/// Binds the client-facing socket: any port, or the first free one in `range` starting at a
/// random offset (so concurrent associations do not all probe the same ports).
async fn bind_relay(ip: IpAddr, range: Option<(u16, u16)>) -> io::Result<UdpSocket> {
    let Some((start, end)) = range else {
        return UdpSocket::bind((ip, 0)).await;
    };
    let span = u32::from(end - start) + 1;
    let offset = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(span);
        u32::try_from(h.finish() % u64::from(span)).unwrap_or(0)
    };
    for i in 0..span {
        let port = u16::try_from(u32::from(start) + (offset + i) % span).unwrap_or(start);
        match UdpSocket::bind((ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every UDP relay port in {start}-{end} is in use"),
    ))
}

pub(crate) async fn run(
    conn: &mut Conn<'_>,
    request: &Request,
    ctx: &Ctx<'_>,
) -> Result<(), SessionError> {
    // DST is the client's expected source; only its port is used (the IP must be the
    // control connection's). Names (PySocks sends "0") and zeros mean "unknown".
    let client_port: Option<u16> = match &request.target {
        Target::Ip(sa) if sa.port() != 0 => Some(sa.port()),
        _ => None,
    };
    let relay = match bind_relay(ctx.local.ip(), ctx.shared.config.udp.port_range()).await {
        Ok(s) => s,
        Err(e) => {
            conn.respond(Err(io_reply(&e))).await?;
            return Err(SessionError::Refused(format!(
                "udp associate: cannot bind: {e}"
            )));
        }
    };
    let mut advertised = relay.local_addr()?;
    if let Some(ip) = ctx.shared.config.udp.public_address {
        advertised.set_ip(ip);
    }
    conn.respond(Ok(advertised)).await?;
    info!(relay = %advertised, "udp associate: relay open");

    let idle = ctx.shared.config.timeouts.udp_idle();
    let mut assoc = Association::new(ctx, relay, client_port);
    let mut bufs = RecvBufs::new();
    let mut control = [0u8; 512];
    // Both timers are registered once and moved only when they fire or their deadline
    // changes; a fresh timer per datagram cost a timer-wheel insertion and removal each.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let reasm_timer = tokio::time::sleep_until(assoc.start);
    tokio::pin!(reasm_timer);
    let mut reasm_armed: Option<Instant> = None;

    let reason = loop {
        let due = assoc.reassembly_deadline();
        if due != reasm_armed {
            if let Some(t) = due {
                reasm_timer.as_mut().reset(t);
            }
            reasm_armed = due;
        }
        tokio::select! {
            r = conn.stream.read(&mut control) => match r {
                Ok(0) => break "control connection closed",
                Err(_) => break "control connection failed",
                Ok(_) => {} // nothing is expected on it; ignore
            },
            () = &mut idle_timer => {
                // Datagrams only record when they came; the timer catches up here.
                let due = assoc.last_active + idle;
                if due <= Instant::now() {
                    break "idle timeout";
                }
                idle_timer.as_mut().reset(due);
            }
            () = &mut reasm_timer, if reasm_armed.is_some() => {
                reasm_armed = None; // re-armed above if a queue is still pending
                if assoc.reasm.handle_timeout(assoc.core_time(Instant::now())) {
                    debug!("udp: fragment reassembly timed out");
                }
            }
            _ = readable(Some(&assoc.relay)) => assoc.drain_client(&mut bufs).await,
            _ = readable(assoc.out.v4.as_ref()) => assoc.drain_outbound(false, &mut bufs).await,
            _ = readable(assoc.out.v6.as_ref()) => assoc.drain_outbound(true, &mut bufs).await,
        }
    };
    let Counters {
        up,
        down,
        datagrams_up,
        datagrams_down,
    } = assoc.counters;
    ctx.shared
        .metrics
        .udp(ctx.user, datagrams_up, datagrams_down, up, down);
    conn.bytes = (up, down);
    info!(
        up,
        down, datagrams_up, datagrams_down, "udp associate ended: {reason}"
    );
    Ok(())
}

/// Datagrams handled per socket and wake-up: enough to amortise the wake-up under load, few
/// enough that one busy socket cannot hold off the control connection, timers and others.
const BATCH: usize = 64;

/// Payload bytes and datagrams relayed: up (client to destinations) and down.
#[derive(Clone, Copy, Default)]
struct Counters {
    up: u64,
    down: u64,
    datagrams_up: u64,
    datagrams_down: u64,
}

/// One association's sockets and state, kept across wake-ups of [`run`]'s loop.
struct Association<'a> {
    ctx: &'a Ctx<'a>,
    /// Faces the client.
    relay: UdpSocket,
    out: Outbound,
    /// The control connection's client IP: the only source accepted on `relay`.
    client_ip: IpAddr,
    /// The only source port accepted on `relay`: the request's, or latched from the first
    /// datagram.
    client_port: Option<u16>,
    /// Time zero of the reassembler's clock.
    start: Instant,
    /// When the last datagram either way arrived, for the idle timeout.
    last_active: Instant,
    reasm: Box<Reassembler<REASSEMBLY>>,
    /// Destinations the client has sent to: the only sources relayed back.
    contacted: HashSet<SocketAddr>,
    /// Names resolved for this association.
    names: HashMap<String, IpAddr>,
    /// Holds a datagram to the client while it is encapsulated.
    to_client: Vec<u8>,
    counters: Counters,
}

impl<'a> Association<'a> {
    fn new(ctx: &'a Ctx<'a>, relay: UdpSocket, client_port: Option<u16>) -> Self {
        let start = Instant::now();
        Self {
            ctx,
            relay,
            out: Outbound { v4: None, v6: None },
            client_ip: ctx.peer.ip().to_canonical(),
            client_port,
            start,
            last_active: start,
            reasm: Box::default(),
            contacted: HashSet::new(),
            names: HashMap::new(),
            to_client: vec![0u8; DATAGRAM],
            counters: Counters::default(),
        }
    }

    /// `now` on the reassembler's clock (milliseconds since `start`).
    fn core_time(&self, now: Instant) -> CoreInstant {
        let ms = now.saturating_duration_since(self.start).as_millis();
        CoreInstant::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// When the pending fragment queue expires, if there is one.
    fn reassembly_deadline(&self) -> Option<Instant> {
        self.reasm
            .poll_timeout()
            .map(|t| self.start + Duration::from_millis(t.as_millis()))
    }

    /// Handles the datagrams waiting on the client-facing socket, at most [`BATCH`], using
    /// `bufs` to receive them. Returns when none is left or none was waiting.
    async fn drain_client(&mut self, bufs: &mut RecvBufs) {
        for _ in 0..BATCH / PER_CALL {
            let got = match recv_some(&self.relay, bufs) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("udp: client socket: {e}");
                    return;
                }
            };
            for (i, &(n, src)) in got.datagrams.iter().enumerate() {
                self.forward_up(src, bufs.datagram(i, n)).await;
            }
            if got.drained {
                return;
            }
        }
    }

    /// Handles the datagrams waiting on the outbound socket of one family, at most
    /// [`BATCH`], using `bufs` to receive them. Returns when none is left, none was waiting
    /// or the socket does not exist.
    async fn drain_outbound(&mut self, v6: bool, bufs: &mut RecvBufs) {
        for _ in 0..BATCH / PER_CALL {
            let sock = if v6 { &self.out.v6 } else { &self.out.v4 };
            let Some(Ok(got)) = sock.as_ref().map(|s| recv_some(s, bufs)) else {
                return;
            };
            self.last_active = Instant::now();
            for (i, &(n, src)) in got.datagrams.iter().enumerate() {
                self.forward_back(src, bufs.datagram(i, n)).await;
            }
            if got.drained {
                return;
            }
        }
    }

    /// Relays one datagram received from `src` on the client-facing socket: dropped unless
    /// it comes from the client, then reassembled, resolved, checked against the rules and
    /// sent to its destination, which is then remembered as contacted.
    async fn forward_up(&mut self, src: SocketAddr, datagram: &[u8]) {
        if src.ip().to_canonical() != self.client_ip
            || self.client_port.is_some_and(|p| p != src.port())
        {
            debug!(%src, "udp: dropped a datagram from a stranger");
            return;
        }
        if self.client_port.is_none() {
            self.client_port = Some(src.port());
            debug!(%src, "udp: client port latched");
        }
        let now = Instant::now();
        self.last_active = now;
        let now = self.core_time(now);
        let whole = match self.reasm.push_datagram(now, datagram) {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                debug!("udp: {e}");
                return;
            }
        };
        let dst = whole.dst.normalized();
        // Resolve (cached), then the rules on name and address.
        let ip = match dst {
            Addr::Ip(sa) => sa.ip(),
            Addr::Domain(name, _) => {
                // Only a name that is not UTF-8 needs the (escaped) owned form.
                let name = name
                    .as_str()
                    .map_or_else(|| Cow::Owned(name.to_string()), Cow::Borrowed);
                match resolve(self.ctx, &mut self.names, &name).await {
                    Some(ip) => ip,
                    None => return,
                }
            }
        };
        if self
            .ctx
            .check_addr(Command::UdpAssociate, dst, Some(ip))
            .is_err()
        {
            return;
        }
        let target = SocketAddr::new(ip.to_canonical(), dst.port());
        let sock = match self.out.socket(target.is_ipv6()).await {
            Ok(s) => s,
            Err(e) => {
                debug!("udp: outbound socket: {e}");
                return;
            }
        };
        match sock.send_to(whole.data, target).await {
            Ok(_) => {
                self.counters.up += whole.data.len() as u64;
                self.counters.datagrams_up += 1;
                if self.contacted.len() < MAX_PEERS {
                    self.contacted.insert(target);
                }
            }
            Err(e) => debug!(%target, "udp: send failed: {e}"),
        }
    }

    /// Sends a destination's datagram to the client, with its source as the header's
    /// address; dropped unless the client's port is known and it has sent to `src`.
    async fn forward_back(&mut self, src: SocketAddr, payload: &[u8]) {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let Some(port) = self.client_port else { return };
        if !self.contacted.contains(&src) {
            debug!(%src, "udp: dropped a datagram from an address the client did not contact");
            return;
        }
        let Ok(n) = encapsulate(Addr::Ip(src), payload, &mut self.to_client) else {
            return;
        };
        let client = SocketAddr::new(self.client_ip, port);
        // A v4 client address on a v6 relay socket would need mapping; the relay socket has
        // the control connection's family, like the client.
        match self
            .relay
            .send_to(self.to_client.get(..n).unwrap_or_default(), client)
            .await
        {
            Ok(_) => {
                self.counters.down += payload.len() as u64;
                self.counters.datagrams_down += 1;
            }
            Err(e) => debug!("udp: to client: {e}"),
        }
    }
}

/// `name`'s address from the association's cache, else from the resolver (preferring the
/// control connection's family, and then cached while the cache has room); `None` when
/// it does not resolve.
async fn resolve(ctx: &Ctx<'_>, names: &mut HashMap<String, IpAddr>, name: &str) -> Option<IpAddr> {
    if let Some(ip) = names.get(name) {
        return Some(*ip);
    }
    let prefer_v6 = ctx.local.is_ipv6();
    match ctx.shared.resolver.lookup(name).await {
        Ok(ips) => {
            let ip = ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv6() == prefer_v6)
                .or(ips.first().copied())?;
            if names.len() < MAX_PEERS {
                names.insert(name.to_owned(), ip);
            }
            Some(ip)
        }
        Err(e) => {
            debug!("udp: {name}: {e}");
            None
        }
    }
}

/// Waits until `sock` may have a datagram waiting (forever when there is no socket).
///
/// Polled readiness, unlike `UdpSocket::readable`, counts against the task's cooperative
/// budget, so a socket that never runs dry still lets the runtime's other tasks run.
async fn readable(sock: Option<&UdpSocket>) -> io::Result<()> {
    match sock {
        Some(s) => std::future::poll_fn(|cx| s.poll_recv_ready(cx)).await,
        None => std::future::pending().await,
    }
}
