//! One client session: the core's [`Session`] driven over embassy-net sockets.
//!
//! The core decides everything about the protocol — methods and versions, access rules,
//! reply codes, deadlines. This module is its driver: it moves bytes between the client
//! socket and the session, tells it the time, does what its events ask (check credentials,
//! resolve, connect, open a UDP relay) and reports the results as facts (an address, a
//! [`Failure`]). Then it relays and closes in order.

use core::cell::RefCell;
use core::fmt;
use core::net::{IpAddr, SocketAddr};

use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::with_deadline;
use socksgate_core::login_throttle::{Outcome as LoginOutcome, Verdict};
use socksgate_core::policy::ClientPrefixes;
use socksgate_core::rules::CommandSet;
use socksgate_core::session::{Close, Event, Session};
use socksgate_core::{Addr, Failure, Policy};

use crate::config::Configuration;
use crate::monitor::{LiveTraffic, Monitor, SessionRecord};
use crate::relay::{self, RelayEnd, Traffic};
use crate::resolve::resolve;
use crate::udp::{self, UdpBuffers};

/// What every session and the refusal slot of one gateway of `N` sessions share.
pub(crate) struct Context<'a, C, const N: usize> {
    pub(crate) stack: Stack<'static>,
    pub(crate) config: &'a C,
    pub(crate) monitor: &'a Monitor<N>,
    pub(crate) report: &'a dyn Fn(&SessionRecord<'_>),
    /// Whether the gateway has UDP slots (without, UDP ASSOCIATE is "not supported").
    pub(crate) udp: bool,
}

impl<C: Configuration, const N: usize> Context<'_, C, N> {
    /// Runs `f` with the configuration's policy as it is now.
    pub(crate) fn with_policy<R>(&self, f: impl FnOnce(&Policy<'_>) -> R) -> R {
        let udp = self.udp;
        self.config.with_policy(|policy| {
            if udp {
                f(policy)
            } else {
                let mut policy = *policy;
                policy.commands = CommandSet::CONNECT;
                f(&policy)
            }
        })
    }
}

/// The session's input buffer: the client's handshake bytes, then (through
/// `release_buffer`) the relay's chunk buffer, so a session holds one such buffer, not two.
pub(crate) type ClientSession = Session<{ relay::RELAY_CHUNK }>;

/// The core's clock: milliseconds since embassy-time's epoch.
// Not inlined: called from many places, each copy would carry the tick conversion.
#[inline(never)]
pub(crate) fn now() -> socksgate_core::Instant {
    socksgate_core::Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// A core deadline on embassy-time's clock; `None` (no deadline) is never.
#[inline(never)]
pub(crate) fn embassy_instant(at: Option<socksgate_core::Instant>) -> embassy_time::Instant {
    at.map_or(embassy_time::Instant::MAX, |t| {
        embassy_time::Instant::from_millis(t.as_millis())
    })
}

/// How a session ended (kept for logs, counters and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionEnd {
    /// The client left (or failed) before the handshake finished.
    ClientGone,
    /// The handshake did not finish within the configured time.
    HandshakeTimeout,
    /// The client broke the protocol; the core's failure reply (if any) was sent.
    ProtocolError,
    /// The request was refused; the reply was sent.
    Refused(Refusal),
    /// Relayed, then ended this way.
    Relayed(RelayEnd),
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// Wrong username or password (RFC 1929 failure status).
    Authentication,
    /// The client had too many failed logins: refused without checking.
    Throttled,
    /// The access rules (or protected destinations) deny it (REP 2).
    Denied,
    /// The command is not served (REP 7).
    Unsupported,
    /// Resolution or the outbound connection failed (REP 3–6).
    Failed,
    /// Every session was busy: the refusal slot answered "general failure".
    PoolFull,
    /// The client already holds its per-client share of sessions ("general failure").
    ClientCap,
    /// No UDP relay slot was free ("general failure").
    NoUdpSlot,
}

impl Refusal {
    /// Number of causes (the length of [`Counters::refused`](crate::monitor::Counters)).
    pub const COUNT: usize = 8;
    /// Every cause, in [`index`](Self::index) order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Authentication,
        Self::Throttled,
        Self::Denied,
        Self::Unsupported,
        Self::Failed,
        Self::PoolFull,
        Self::ClientCap,
        Self::NoUdpSlot,
    ];

    /// Position in [`ALL`](Self::ALL).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short name for logs and the console.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Authentication => "auth",
            Self::Throttled => "throttled",
            Self::Denied => "denied",
            Self::Unsupported => "unsupported",
            Self::Failed => "failed",
            Self::PoolFull => "pool-full",
            Self::ClientCap => "client-cap",
            Self::NoUdpSlot => "no-udp-slot",
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientGone => f.write_str("client-gone"),
            Self::HandshakeTimeout => f.write_str("handshake-timeout"),
            Self::ProtocolError => f.write_str("protocol-error"),
            Self::Refused(why) => write!(f, "refused:{}", why.name()),
            Self::Relayed(RelayEnd::Finished) => f.write_str("finished"),
            Self::Relayed(RelayEnd::Idle) => f.write_str("idle"),
            Self::Relayed(RelayEnd::Reset) => f.write_str("reset"),
        }
    }
}

impl SessionEnd {
    fn from_close(reason: Close, throttled: bool) -> Self {
        match reason {
            Close::Protocol(_) => Self::ProtocolError,
            Close::HandshakeTimeout => Self::HandshakeTimeout,
            Close::AuthFailed if throttled => Self::Refused(Refusal::Throttled),
            Close::AuthFailed => Self::Refused(Refusal::Authentication),
            Close::Denied(_) | Close::Protected(_) => Self::Refused(Refusal::Denied),
            Close::Unsupported(_) => Self::Refused(Refusal::Unsupported),
            // The outbound side failed (and any close the core adds later).
            _ => Self::Refused(Refusal::Failed),
        }
    }
}

/// The outbound side's failure as the core classifies it (the core picks the reply code).
fn connect_failure(error: ConnectError) -> Failure {
    match error {
        ConnectError::ConnectionReset => Failure::Refused,
        ConnectError::NoRoute => Failure::NetworkUnreachable,
        ConnectError::TimedOut => Failure::TimedOut,
        ConnectError::InvalidState => Failure::Other,
    }
}

/// What a successful handshake ended with.
#[derive(Debug)]
enum Outcome {
    /// CONNECT: `upstream` is connected and the reply sent.
    Connected,
    /// UDP ASSOCIATE: the session waits for the relay socket (`handle_opened`).
    Associate,
}

/// Serves one accepted client: handshake, relay (TCP, or UDP for an association),
/// orderly close of both sockets; then counts and reports the session. `slot` is the pool
/// slot (for the monitor's table).
pub(crate) async fn serve<C: Configuration, const N: usize>(
    ctx: &Context<'_, C, N>,
    slot: usize,
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    udp_slots: &[RefCell<UdpBuffers>],
) {
    let started = embassy_time::Instant::now();
    let peer = client.remote_endpoint().map(SocketAddr::from);
    let mut traffic = Traffic::default();
    let mut session = None;
    let end = match peer {
        None => SessionEnd::ClientGone,
        Some(peer) => {
            let session = session.insert(ctx.with_policy(|p| ClientSession::new(p, peer, now())));
            let outcome = handshake(ctx, client, session, Some(&mut *upstream)).await;
            if let Some(dst) = session.destination() {
                ctx.monitor.requested(slot, session.command(), &dst);
            }
            match outcome {
                Err(end) => end,
                Ok(Outcome::Associate) => {
                    let live = ctx.monitor.live(slot);
                    udp::associate(ctx, client, session, udp_slots, &mut traffic, live).await
                }
                Ok(Outcome::Connected) => {
                    let live = ctx.monitor.live(slot);
                    relay_connected(ctx.config, client, upstream, session, &mut traffic, live).await
                }
            }
        }
    };
    relay::close(upstream, ctx.config.close_timeout()).await;
    relay::close(client, ctx.config.close_timeout()).await;
    let record = record(peer, session.as_ref(), traffic, started, end);
    ctx.monitor.finished(Some(slot), &record);
    (ctx.report)(&record);
}

/// The log record of a session that ended `end`.
fn record<'s>(
    peer: Option<SocketAddr>,
    session: Option<&'s ClientSession>,
    traffic: Traffic,
    started: embassy_time::Instant,
    end: SessionEnd,
) -> SessionRecord<'s> {
    SessionRecord {
        client: peer,
        user: session.and_then(|s| s.user()),
        command: session.and_then(|s| s.command()),
        destination: session.and_then(|s| s.destination()),
        reply: session.and_then(|s| s.reply()).map(|r| r.into()),
        up: traffic.up,
        down: traffic.down,
        duration: embassy_time::Instant::now().saturating_duration_since(started),
        end,
    }
}

/// Relays an established CONNECT, starting with the payload the client pipelined after its
/// request; the session's input buffer becomes the relay's chunk buffer. The bytes moved
/// are added to `traffic` and published to `live` as they move.
async fn relay_connected<C: Configuration, const N: usize>(
    config: &C,
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    session: &mut ClientSession,
    traffic: &mut Traffic,
    live: LiveTraffic<'_, N>,
) -> SessionEnd {
    let Some((chunk, early)) = session.release_buffer() else {
        return SessionEnd::ProtocolError; // not established: cannot happen
    };
    let forwarded = match chunk.get(..early) {
        Some(bytes) if !bytes.is_empty() => {
            traffic.up += bytes.len() as u64;
            live.publish(traffic, embassy_time::Instant::now());
            write_all(upstream, bytes).await
        }
        _ => Ok(()),
    };
    match forwarded {
        Ok(()) => SessionEnd::Relayed(
            relay::relay(
                client,
                upstream,
                chunk,
                config.idle_timeout(),
                traffic,
                live,
            )
            .await,
        ),
        Err(()) => SessionEnd::Relayed(RelayEnd::Reset),
    }
}

/// Answers one client that may not have a session (`why`: every session is busy, or it
/// holds its per-client share): the handshake runs as usual (so the client gets a
/// well-formed reply in its own protocol version), then the request is answered with
/// [`Failure::Other`] ("general failure", SOCKS4 CD 91) and the connection closed in order.
/// Counts and reports it; `slot` is the pool slot when a session slot answers.
pub(crate) async fn refuse<C: Configuration, const N: usize>(
    ctx: &Context<'_, C, N>,
    slot: Option<usize>,
    client: &mut TcpSocket<'_>,
    why: Refusal,
) {
    let started = embassy_time::Instant::now();
    let peer = client.remote_endpoint().map(SocketAddr::from);
    let mut session = None;
    let end = match peer {
        None => SessionEnd::ClientGone,
        Some(peer) => {
            let session = session.insert(ctx.with_policy(|p| ClientSession::new(p, peer, now())));
            match handshake(ctx, client, session, None).await {
                Err(SessionEnd::Refused(Refusal::Failed)) => SessionEnd::Refused(why),
                Err(end) => end,
                Ok(_) => SessionEnd::ProtocolError, // cannot happen: every request is refused
            }
        }
    };
    relay::close(client, ctx.config.close_timeout()).await;
    let record = record(peer, session.as_ref(), Traffic::default(), started, end);
    ctx.monitor.finished(slot, &record);
    (ctx.report)(&record);
}

/// Runs `session` until it is established or closed: reads the client until the session's
/// deadline, answers its events and sends its output.
///
/// With `upstream`, a CONNECT is resolved and connected on it and a UDP ASSOCIATE handed
/// back to the caller; without (the refusal slot), every request is answered with
/// [`Failure::Other`].
async fn handshake<C: Configuration, const N: usize>(
    ctx: &Context<'_, C, N>,
    client: &mut TcpSocket<'_>,
    session: &mut ClientSession,
    mut upstream: Option<&mut TcpSocket<'_>>,
) -> Result<Outcome, SessionEnd> {
    let stack = ctx.stack;
    // A CONNECT's resolved address, from `Event::Resolve` to `Event::Connect(None)`.
    let mut resolved = [IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED)];
    let mut closed = None;
    let mut throttled = false;
    loop {
        while let Some(event) = session.poll_event() {
            match (event, upstream.as_deref_mut()) {
                (Event::Authenticate, _) => {
                    let client = ClientPrefixes::DEFAULT.key(session.client().ip());
                    // Without a throttle, failures are still recorded (a 60 s window that
                    // never locks), so one turned on at run time sees the recent ones.
                    let (failures, window) = ctx
                        .config
                        .login_throttle()
                        .unwrap_or((0, embassy_time::Duration::from_secs(60)));
                    throttled =
                        ctx.monitor.login_admit(client, failures, window) == Verdict::Refuse;
                    // A locked-out client's password is not even checked.
                    let ok = !throttled
                        && session.credentials().is_some_and(|(name, password)| {
                            ctx.config.authenticate(name, password)
                        });
                    if !throttled {
                        let outcome = if ok {
                            LoginOutcome::Accepted
                        } else {
                            LoginOutcome::Rejected
                        };
                        ctx.monitor
                            .login_finished(client, failures, window, outcome);
                    }
                    if !ok {
                        ctx.monitor.login_failed();
                    }
                    let _ = ctx.with_policy(|p| session.handle_auth(p, ok, now()));
                }
                (Event::Resolve | Event::Connect(_) | Event::Associate, None)
                | (Event::Bind, _) => {
                    // The refusal slot; BIND is not served (the policy lets the core refuse
                    // it first).
                    let _ = session.handle_failure(Failure::Other);
                }
                (Event::Resolve, Some(_)) => {
                    let until = embassy_instant(session.poll_timeout());
                    let found = match session.destination() {
                        Some(Addr::Domain(name, _)) => {
                            with_deadline(until, resolve(stack, name)).await
                        }
                        _ => Ok(Err(Failure::Other)),
                    };
                    match found {
                        Err(_) => session.handle_timeout(now()),
                        Ok(Err(failure)) => {
                            let _ = session.handle_failure(failure);
                        }
                        Ok(Ok(ip)) => {
                            resolved = [ip];
                            // Allowed or not, the session queues what follows.
                            let _ = ctx.with_policy(|p| session.handle_resolved(p, &mut resolved));
                        }
                    }
                }
                (Event::Connect(to), Some(upstream)) => {
                    let until = embassy_instant(session.poll_timeout());
                    let to = to.unwrap_or_else(|| {
                        let port = session.destination().map_or(0, |dst| dst.port());
                        SocketAddr::new(resolved[0], port)
                    });
                    let result = connect(upstream, to, until).await;
                    let _ = match result {
                        Ok(bound) => ctx.with_policy(|p| session.handle_opened(p, bound, now())),
                        Err(Some(failure)) => session.handle_failure(failure),
                        Err(None) => {
                            session.handle_timeout(now());
                            Ok(())
                        }
                    };
                }
                (Event::Associate, Some(_)) => return Ok(Outcome::Associate),
                (Event::Closed(reason), _) => {
                    closed = Some(SessionEnd::from_close(reason, throttled));
                }
                // Established is read from the session below; GSS-API is never offered.
                _ => {}
            }
        }
        transmit(session, client)
            .await
            .map_err(|()| SessionEnd::ClientGone)?;
        if session.is_established() {
            return Ok(Outcome::Connected);
        }
        if let Some(end) = closed {
            return Err(end);
        }
        let until = embassy_instant(session.poll_timeout());
        let free = session.recv_buffer();
        if free.is_empty() {
            // Every event is answered before reading, so the session always takes input.
            return Err(SessionEnd::ProtocolError);
        }
        match with_deadline(until, client.read(free)).await {
            Err(_) => session.handle_timeout(now()),
            Ok(Ok(0) | Err(_)) => return Err(SessionEnd::ClientGone),
            Ok(Ok(n)) => ctx.with_policy(|p| session.handle_received(p, n, now())),
        }
    }
}

/// Connects `upstream` to `to` before `until`. Returns the local address for the reply or
/// why not; `Err(None)`: `until` passed (the session's deadline decides the reply).
async fn connect(
    upstream: &mut TcpSocket<'_>,
    to: SocketAddr,
    until: embassy_time::Instant,
) -> Result<SocketAddr, Option<Failure>> {
    match with_deadline(until, upstream.connect(IpEndpoint::from(to))).await {
        Err(_) => {
            upstream.abort();
            Err(None)
        }
        Ok(Err(error)) => Err(Some(connect_failure(error))),
        Ok(Ok(())) => upstream
            .local_endpoint()
            .map(SocketAddr::from)
            .ok_or(Some(Failure::Other)),
    }
}

/// Sends everything the session has queued, straight from its output buffer.
pub(crate) async fn transmit(
    session: &mut ClientSession,
    client: &mut TcpSocket<'_>,
) -> Result<(), ()> {
    while !session.pending_transmit().is_empty() {
        match client.write(session.pending_transmit()).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => session.consume_transmit(n),
        }
    }
    Ok(())
}

async fn write_all(socket: &mut TcpSocket<'_>, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        match socket.write(bytes).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}
