//! UDP ASSOCIATE: a relay per association, ended with its TCP control connection.
//!
//! * Sockets belong to one association and are never shared: one facing the client and,
//!   created on first use, one IPv4 and one IPv6 socket facing destinations. The
//!   client-facing socket is bound to `[udp] public_address` when that is one of this host's
//!   addresses (a fleet node with its own reachable address behind a TCP balancer), else to
//!   the address the client reached us on; the reply advertises its port with the IP
//!   replaced by `public_address` when set (behind NAT the public address is not ours).
//! * Which datagrams go where is the core's `udp::Association`: only the control
//!   connection's client (its IP, and the announced or first-seen port), reassembly, the
//!   access rules for every destination (command `udp_associate`), replies only from
//!   addresses the client has sent to, and the idle deadline (`timeouts.udp_idle`). This
//!   module resolves names (cached for the association) and moves the datagrams.
//! * The association ends when the control connection closes (EOF or error), when the
//!   core says it has been idle, or when its user's traffic quota is spent.
//! * Traffic limits (`[[traffic]]`): a datagram over the association's bandwidth limit (its
//!   bucket holds fewer tokens than the datagram's payload bytes) or over what is left of
//!   the quota is dropped and counted; UDP is never delayed.
//! * One task runs the association, on one of the UDP threads ([`crate::udp_threads`]):
//!   its sockets, timer and decisions stay on that thread; the session's task keeps the
//!   control connection and tells it to stop. When a socket is readable it handles the datagrams
//!   waiting there (up to [`BATCH`] per wake-up) before looking at the others again, the
//!   destinations' answers before the client's datagrams; the idle and reassembly timers
//!   are registered once and moved only when they fire or their deadline changes, so a
//!   datagram costs no timer work.
//! * Datagrams are received many per call into the worker thread's buffers and sent on in
//!   runs: consecutive datagrams of one batch to one destination, of one size, leave in one
//!   segmented send ([`batch`]). A datagram that needs waiting — a name not resolved yet, a
//!   fragment, or any datagram of a protected association — is copied out and relayed one
//!   at a time after the run before it, in arrival order.
//! * With `[udp] busy_poll`, every wake-up of the association keeps its thread polling
//!   without sleeping for that long ([`crate::udp_threads::busy_poll`]).
//! * Sends never wait ([`RelaySocket`]): a datagram that finds a send buffer full is dropped.
//! * Under GSS-API integrity or confidentiality (RFC 1961 §5), datagrams between the client
//!   and the relay are wrapped: the [`protected`] path opens them before the association
//!   sees them and wraps what it sends back. Unprotected associations never take it.

mod batch;
mod protected;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use socksgate_core::family::AddressFamily;
use socksgate_core::rules::{Decision, Rules};
use socksgate_core::udp::{self, Contacted, Outbound as Next};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, warn};

use crate::clock;
use crate::conn::{Conn, SessionError};
use crate::egress::Egress;
use crate::failure::io_failure;
use crate::protected::Protection;
use crate::resolve::Resolver;
use crate::shared::Shared;
use crate::traffic::{DirectionLimit, SessionLimits};
use crate::udp_recv::{DATAGRAM, PER_CALL, Received, recv_some, with_thread_bufs};
use crate::udp_socket::RelaySocket;

/// The receive buffer asked for on the sockets facing destinations. Answers arrive in bursts
/// (a batch sent up comes back together, and while the relay's thread waits for a core they
/// pile up), and every answer dropped there wastes the relaying of its request: under a
/// flood of 1,400-byte datagrams on two cores, 512 KiB lost about 40 % of what went up on
/// the way back, 4 MiB none. The kernel charges only what is queued. The client-facing
/// socket keeps the default: what overflows there has cost the relay nothing.
const OUTBOUND_RCVBUF: usize = 4 * 1024 * 1024;
/// Reassembly capacity: a whole UDP/IPv4 datagram.
const REASSEMBLY: usize = 65_507;
/// Remembered destinations (for reply filtering) and resolved names, per association.
const MAX_PEERS: usize = 4096;

/// The destinations an association contacted: a hash set that grows with use, up to
/// [`MAX_PEERS`], and the last one recorded, compared first: most associations talk to one
/// destination, and the comparison saves hashing the address for each datagram.
#[derive(Debug, Default)]
struct Peers {
    set: HashSet<SocketAddr>,
    last: Option<SocketAddr>,
}

impl Contacted for Peers {
    fn contains(&self, addr: &SocketAddr) -> bool {
        self.last == Some(*addr) || self.set.contains(addr)
    }

    fn insert(&mut self, addr: SocketAddr) -> bool {
        if self.last == Some(addr) {
            return true;
        }
        let recorded =
            self.set.contains(&addr) || (self.set.len() < MAX_PEERS && self.set.insert(addr));
        if recorded {
            self.last = Some(addr);
        }
        recorded
    }
}

type Association = udp::Association<Peers, REASSEMBLY>;

struct Outbound<'a> {
    v4: Option<RelaySocket>,
    v6: Option<RelaySocket>,
    /// The session's egress: the outbound sockets' source address, interface and mark.
    egress: Option<Egress<'a>>,
}

impl Outbound<'_> {
    fn socket(&mut self, v6: bool) -> io::Result<&RelaySocket> {
        let slot = if v6 { &mut self.v6 } else { &mut self.v4 };
        if slot.is_none() {
            let any: SocketAddr = if v6 {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = match self.egress {
                Some(e) => RelaySocket::from_tokio(e.udp_socket(v6)?)?,
                None => RelaySocket::bind(any)?,
            };
            match socket.set_recv_buffer(OUTBOUND_RCVBUF) {
                Ok(granted) => warn_if_capped(granted),
                Err(e) => debug!("udp: outbound socket's receive buffer: {e}"),
            }
            *slot = Some(socket);
        }
        slot.as_ref()
            .ok_or_else(|| io::Error::other("socket missing"))
    }
}

/// Warns once per process when the kernel (`net.core.rmem_max` on Linux) granted an outbound
/// socket less receive buffer than [`OUTBOUND_RCVBUF`]; `granted` is the size it reports,
/// which Linux doubles for its bookkeeping.
fn warn_if_capped(granted: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let usable = if cfg!(any(target_os = "linux", target_os = "android")) {
        granted / 2
    } else {
        granted
    };
    if usable < OUTBOUND_RCVBUF && !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            "udp: net.core.rmem_max holds the receive buffer of the sockets facing \
             destinations at {} KiB (asked for {} KiB): under load, answers to relayed \
             datagrams may be dropped there; `sysctl -w net.core.rmem_max={}` lifts the cap",
            usable / 1024,
            OUTBOUND_RCVBUF / 1024,
            OUTBOUND_RCVBUF
        );
    }
}

/// A UDP socket bound to `addr`, non-blocking, not yet registered with a runtime: it is
/// registered on the relay's thread ([`crate::udp_threads`]).
fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds the client-facing socket: any port, or the first free one in `range` starting at a
/// random offset (so concurrent associations do not all probe the same ports).
fn bind_relay(ip: IpAddr, range: Option<(u16, u16)>) -> io::Result<std::net::UdpSocket> {
    let Some((start, end)) = range else {
        return bind_std((ip, 0).into());
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
        match bind_std((ip, port).into()) {
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

/// Binds the client-facing socket on `public` when it is an address of this host in the
/// control connection's family, else on `local` (the control connection's address).
fn bind_client_facing(
    local: IpAddr,
    public: Option<IpAddr>,
    range: Option<(u16, u16)>,
) -> io::Result<std::net::UdpSocket> {
    if let Some(ip) = public.filter(|ip| ip.is_ipv6() == local.is_ipv6()) {
        match bind_relay(ip, range) {
            // Not ours: NAT in front, so the relay listens where the client reached us.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {}
            bound => return bound,
        }
    }
    bind_relay(local, range)
}

pub(crate) async fn run(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let shared = conn.shared;
    let (public, range) = (
        shared.config.udp.public_address,
        shared.config.udp.port_range(),
    );
    let relay = match bind_client_facing(conn.local.ip(), public, range) {
        Ok(s) => s,
        Err(e) => {
            debug!("udp associate: cannot bind: {e}");
            let _ = conn.session.handle_failure(io_failure(&e));
            return Ok(());
        }
    };
    let mut advertised = relay.local_addr()?;
    if let Some(ip) = shared.config.udp.public_address {
        advertised.set_ip(ip);
    }
    let now = clock::now();
    let _ = conn.session.handle_opened(&conn.policy, advertised, now);
    // Sealed when protected; nothing travels protected on the control connection after it,
    // so its context moves to the datagrams.
    conn.flush().await?;
    let protection = conn.gss.as_mut().and_then(|g| g.protection.take());
    info!(relay = %advertised, "udp associate: relay open");

    let requested = conn.session.destination();
    let association = Box::new(Association::new(
        conn.peer.ip(),
        requested.unwrap_or(socksgate_core::Addr::Ip(conn.peer)),
        conn.session.user(),
        Peers::default(),
        conn.policy.timeouts.udp_idle,
        now,
    ));
    let job = Job {
        shared: Arc::clone(shared),
        peer: conn.peer,
        local: conn.local,
        decision: conn.session.decision(),
        user: conn.session.user().map(<[u8]>::to_vec),
        socket: relay,
        association,
        protection,
        limits: shared.traffic_limits(conn.session.user(), conn.peer.ip()),
    };
    // The association runs on a UDP thread; this task watches the control connection and
    // tells it to stop when that closes (dropping `stop`, as when this task is dropped,
    // stops it too).
    let (stop, stopped) = oneshot::channel();
    // Its log lines carry the session's span when debug logging is on; at the default level
    // the span is disabled and costs no enter and exit per wake-up.
    let span = tracing::debug_span!("udp relay");
    let mut task = crate::udp_threads::spawn(job.serve(stopped).instrument(span));
    let mut stop = Some(stop);
    let mut control = [0u8; 512];
    let served = loop {
        tokio::select! {
            biased;
            served = &mut task => break served,
            r = conn.stream.read(&mut control), if stop.is_some() => {
                let reason = match r {
                    Ok(0) => "control connection closed",
                    Err(_) => "control connection failed",
                    Ok(_) => continue, // nothing is expected on it; ignore
                };
                if let Some(stop) = stop.take() {
                    let _ = stop.send(reason);
                }
            }
        }
    };
    let Served { counters, reason } =
        served.map_err(|e| io::Error::other(format!("udp relay: {e}")))?;
    let Counters {
        up,
        down,
        datagrams_up,
        datagrams_down,
    } = counters;
    shared
        .metrics
        .udp(conn.session.user(), datagrams_up, datagrams_down, up, down);
    conn.bytes = (up, down);
    info!(
        up,
        down, datagrams_up, datagrams_down, "udp associate ended: {reason}"
    );
    Ok(())
}

/// What an association's relay needs on its thread: owned, so that it can move there.
struct Job {
    shared: Arc<Shared>,
    /// The control connection's client and our end of it.
    peer: SocketAddr,
    local: SocketAddr,
    /// The access decision and user, for the egress.
    decision: Option<Decision>,
    user: Option<Vec<u8>>,
    /// The client-facing socket, bound.
    socket: std::net::UdpSocket,
    association: Box<Association>,
    /// GSS-API protection of the datagrams, when the control connection agreed it.
    protection: Option<Protection>,
    limits: Option<Box<SessionLimits>>,
}

/// How an association's relay ended.
struct Served {
    counters: Counters,
    reason: &'static str,
}

impl Job {
    /// Relays the association's datagrams until `stopped` says why to stop (or its sender is
    /// dropped), the association is idle, or the quota is spent.
    async fn serve(self, mut stopped: oneshot::Receiver<&'static str>) -> Served {
        let Self {
            shared,
            peer,
            local,
            decision,
            user,
            socket,
            association,
            protection,
            limits,
        } = self;
        // The session's policy, as the session computed it (the same configuration, client
        // and listener).
        let policy = shared.policy(peer, local);
        let socket = match RelaySocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                debug!("udp associate: cannot register the relay socket: {e}");
                return Served {
                    counters: Counters::default(),
                    reason: "relay socket failed",
                };
            }
        };
        let mut relay = Relay {
            rules: policy.rules,
            resolver: &shared.resolver,
            prefer_v6: local.is_ipv6(),
            client_v6: local.is_ipv6(),
            family: policy.address_families.default,
            socket,
            out: Outbound {
                v4: None,
                v6: None,
                egress: crate::egress::of_parts(&shared, decision, user.as_deref(), local),
            },
            association,
            names: HashMap::new(),
            // Only the protected path encapsulates here; the others write into the thread's
            // buffers.
            to_client: if protection.is_some() {
                vec![0u8; DATAGRAM]
            } else {
                Vec::new()
            },
            backlog: batch::Backlog::default(),
            counters: Counters::default(),
            limits,
            quota_spent: false,
            protected: protection.map(|p| Box::new(protected::Protected::new(p, &shared.metrics))),
        };
        // The timer is registered once and moved only when the association's deadline
        // changes; a fresh timer per datagram cost a timer-wheel insertion and removal each.
        let mut armed = relay.association.poll_timeout();
        let timer = tokio::time::sleep_until(clock::deadline(armed.unwrap_or(clock::now())));
        tokio::pin!(timer);
        let busy_poll = shared.config.udp.busy_poll();

        let reason = loop {
            crate::udp_threads::busy_poll(busy_poll);
            if relay.quota_spent {
                if let Some(l) = &relay.limits
                    && let Some(d) = l.up.as_ref().or(l.down.as_ref())
                {
                    d.quota_ended();
                }
                break "traffic quota spent";
            }
            let due = relay.association.poll_timeout();
            if due != armed {
                if let Some(at) = due {
                    timer.as_mut().reset(clock::deadline(at));
                }
                armed = due;
            }
            // In order: the way back before the way up. A datagram that went up has cost its
            // relaying already; its answer is served before more datagrams are taken from the
            // client, so a client sending faster than the relay can forward fills the
            // client-facing socket's queue (dropped there, at no cost), not the outbound one.
            // `serve_back` keeps a saturated way back from starving the other sockets.
            tokio::select! {
                biased;
                r = &mut stopped => break r.unwrap_or("session ended"),
                () = &mut timer, if armed.is_some() => {
                    armed = None; // re-armed above
                    if relay.association.handle_timeout(clock::now()) {
                        break "idle timeout";
                    }
                }
                _ = readable(relay.out.v4.as_ref()) => relay.serve_back(false).await,
                _ = readable(relay.out.v6.as_ref()) => relay.serve_back(true).await,
                _ = readable(Some(&relay.socket)) => relay.drain_client().await,
            }
        };
        if let Some(p) = relay.protected.as_mut() {
            p.finish();
        }
        Served {
            counters: relay.counters,
            reason,
        }
    }
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

/// One association's sockets, its core decisions and its name cache, kept across wake-ups
/// of [`run`]'s loop.
struct Relay<'a> {
    rules: Rules<'a>,
    resolver: &'a Resolver,
    /// Prefer IPv6 answers (the control connection's family) under the default family.
    prefer_v6: bool,
    /// The top-level address family for names (per-rule families apply to TCP only).
    family: AddressFamily,
    /// Faces the client.
    socket: RelaySocket,
    /// The client-facing socket's family.
    client_v6: bool,
    out: Outbound<'a>,
    association: Box<Association>,
    /// Names resolved for this association.
    names: HashMap<String, IpAddr>,
    /// Holds a datagram to the client while it is encapsulated and wrapped (protected
    /// associations only; empty otherwise).
    to_client: Vec<u8>,
    /// The client's datagrams that wait to be relayed one at a time.
    backlog: batch::Backlog,
    counters: Counters,
    /// The association's traffic limits, if any.
    limits: Option<Box<SessionLimits>>,
    /// Set when the user's quota ran out: the association ends.
    quota_spent: bool,
    /// GSS-API protection of the datagrams, when the control connection agreed it.
    protected: Option<Box<protected::Protected<'a>>>,
}

/// Whether a datagram of `len` payload bytes may pass `limit` (none: always); sets
/// `quota_spent` when the quota ran out.
fn within(limit: Option<&DirectionLimit>, len: usize, quota_spent: &mut bool) -> bool {
    match limit.map(|l| l.datagram(len)) {
        None | Some(Ok(true)) => true,
        Some(Ok(false)) => false,
        Some(Err(_)) => {
            *quota_spent = true;
            false
        }
    }
}

impl Relay<'_> {
    /// Handles the datagrams waiting on the client-facing socket, at most [`BATCH`]. Returns
    /// when none is left or none was waiting.
    async fn drain_client(&mut self) {
        for _ in 0..BATCH / PER_CALL {
            let more = with_thread_bufs(|bufs| self.client_batch(bufs));
            if !self.backlog.is_empty() {
                self.forward_backlog().await;
            }
            if !more {
                return;
            }
        }
    }

    /// Handles the datagrams waiting on the outbound socket of one family, as
    /// [`Self::drain_outbound`]; when a whole batch was waiting there, the other sockets get
    /// a turn before it is served again, as [`run`] serves the way back first.
    async fn serve_back(&mut self, v6: bool) {
        if self.drain_outbound(v6) {
            // Both are no-ops without a system call when their socket has no readiness.
            self.drain_outbound(!v6);
            self.drain_client().await;
        }
    }

    /// Handles the datagrams waiting on the outbound socket of one family, at most
    /// [`BATCH`]. Returns `true` when it stopped at the batch with more perhaps waiting;
    /// `false` when none is left, none was waiting or the socket does not exist.
    fn drain_outbound(&mut self, v6: bool) -> bool {
        with_thread_bufs(|bufs| {
            let mut got = Received::default();
            for _ in 0..BATCH / PER_CALL {
                let sock = if v6 { &self.out.v6 } else { &self.out.v4 };
                let Some(Ok(())) = sock.as_ref().map(|s| recv_some(s, v6, bufs, &mut got)) else {
                    return false;
                };
                self.back_batch(bufs, &got);
                if got.drained {
                    return false;
                }
            }
            true
        })
    }

    /// Relays one datagram received from `src` on the client-facing socket, as the
    /// association decides.
    async fn forward_up(&mut self, src: SocketAddr, datagram: &[u8]) {
        let Self {
            rules,
            resolver,
            prefer_v6,
            family,
            out,
            association,
            names,
            counters,
            limits,
            quota_spent,
            ..
        } = self;
        let next = association.handle_client_datagram(rules, src, datagram, clock::now());
        let (target, data) = match next {
            Ok(Next::Send { to, data }) => (to, data),
            Ok(Next::Resolve(pending)) => {
                let name = pending.name().to_string();
                let Some(ip) = resolve(resolver, *family, *prefer_v6, names, &name).await else {
                    return;
                };
                match pending.resolved(rules, ip) {
                    Ok(sent) => sent,
                    Err(dropped) => {
                        debug!(%src, "udp: {dropped}");
                        return;
                    }
                }
            }
            Ok(Next::Queued) => return,
            Err(dropped) => {
                debug!(%src, "udp: {dropped}");
                return;
            }
        };
        let up = limits.as_ref().and_then(|l| l.up.as_ref());
        if !within(up, data.len(), quota_spent) {
            return;
        }
        let sock = match out.socket(target.is_ipv6()) {
            Ok(s) => s,
            Err(e) => {
                debug!("udp: outbound socket: {e}");
                return;
            }
        };
        match sock.send_to(data, target) {
            Ok(_) => {
                counters.up += data.len() as u64;
                counters.datagrams_up += 1;
            }
            Err(e) => debug!(%target, "udp: send failed: {e}"),
        }
    }

    /// Sends a destination's datagram to the client, encapsulated with its source (and
    /// wrapped), when the association allows it: one at a time, for protected associations.
    fn forward_back(&mut self, src: SocketAddr, payload: &[u8], now: socksgate_core::Instant) {
        let decided =
            self.association
                .handle_remote_datagram(src, payload, &mut self.to_client, now);
        let (client, n) = match decided {
            Ok(to) => to,
            Err(dropped) => {
                debug!(%src, "udp: {dropped}");
                return;
            }
        };
        let down = self.limits.as_ref().and_then(|l| l.down.as_ref());
        if !within(down, payload.len(), &mut self.quota_spent) {
            return;
        }
        let plain = self.to_client.get(..n).unwrap_or_default();
        let Some(datagram) = Self::to_client_datagram(self.protected.as_deref_mut(), plain) else {
            return;
        };
        // A v4 client address on a v6 relay socket would need mapping; the relay socket has
        // the control connection's family, like the client.
        match self.socket.send_to(datagram, client) {
            Ok(_) => {
                self.counters.down += payload.len() as u64;
                self.counters.datagrams_down += 1;
            }
            Err(e) => debug!("udp: to client: {e}"),
        }
    }
}

/// `name`'s address from the association's cache, else from the resolver in `family`
/// (under the default family, preferring the control connection's family, `prefer_v6`;
/// then cached while the cache has room); `None` when it does not resolve.
async fn resolve(
    resolver: &Resolver,
    family: AddressFamily,
    prefer_v6: bool,
    names: &mut HashMap<String, IpAddr>,
    name: &str,
) -> Option<IpAddr> {
    if let Some(ip) = names.get(name) {
        return Some(*ip);
    }
    match resolver.lookup_in(name, family).await {
        Ok(ips) => {
            let ip = if family == AddressFamily::default() {
                ips.iter().copied().find(|ip| ip.is_ipv6() == prefer_v6)
            } else {
                None
            }
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
async fn readable(sock: Option<&RelaySocket>) -> io::Result<()> {
    match sock {
        Some(s) => std::future::poll_fn(|cx| s.poll_recv_ready(cx)).await,
        None => std::future::pending().await,
    }
}
