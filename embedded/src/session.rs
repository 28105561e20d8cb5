//! One client session: the core's [`Session`] driven over embassy-net sockets.
//!
//! The core decides everything about the protocol — methods and versions, access rules,
//! reply codes, deadlines. This module is its driver: it moves bytes between the client
//! socket and the session, tells it the time, does what its events ask (check credentials,
//! resolve, connect, open a UDP relay) and reports the results as facts (an address, a
//! [`Failure`]). Then it relays and closes in order.

use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};

use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::with_deadline;
use socksgate_core::session::{Close, Event, Session};
use socksgate_core::{Addr, Failure, Policy};

use crate::config::GatewayConfig;
use crate::relay::{self, RelayEnd};
use crate::resolve::resolve;
use crate::udp::{self, UdpBuffers};

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

/// How a session ended (kept for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionEnd {
    /// The client left (or failed) before the handshake finished.
    ClientGone,
    /// The handshake did not finish within the configured time.
    HandshakeTimeout,
    /// The client broke the protocol; the core's failure reply (if any) was sent.
    ProtocolError,
    /// The request was refused (auth, rules, resolution, connect); the reply was sent.
    Refused,
    /// Every session was busy: the refusal slot answered "general failure".
    PoolFull,
    /// Relayed, then ended this way.
    Relayed(RelayEnd),
}

impl From<Close> for SessionEnd {
    fn from(reason: Close) -> Self {
        match reason {
            Close::Protocol(_) => Self::ProtocolError,
            Close::HandshakeTimeout => Self::HandshakeTimeout,
            _ => Self::Refused,
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
/// orderly close of both sockets.
pub(crate) async fn serve(
    stack: Stack<'static>,
    config: &GatewayConfig,
    policy: &Policy<'_>,
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    udp_slots: &[RefCell<UdpBuffers>],
) -> SessionEnd {
    let end = match client.remote_endpoint() {
        None => SessionEnd::ClientGone,
        Some(peer) => {
            let mut session = ClientSession::new(policy, SocketAddr::from(peer), now());
            let outcome = handshake(
                stack,
                config,
                policy,
                client,
                &mut session,
                Some(&mut *upstream),
            )
            .await;
            match outcome {
                Err(end) => end,
                Ok(Outcome::Associate) => {
                    udp::associate(stack, policy, client, &mut session, udp_slots).await
                }
                Ok(Outcome::Connected) => {
                    relay_connected(config, client, upstream, &mut session).await
                }
            }
        }
    };
    relay::close(upstream, config.close_timeout()).await;
    relay::close(client, config.close_timeout()).await;
    end
}

/// Relays an established CONNECT, starting with the payload the client pipelined after its
/// request; the session's input buffer becomes the relay's chunk buffer.
async fn relay_connected(
    config: &GatewayConfig,
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    session: &mut ClientSession,
) -> SessionEnd {
    let Some((chunk, early)) = session.release_buffer() else {
        return SessionEnd::ProtocolError; // not established: cannot happen
    };
    let forwarded = match chunk.get(..early) {
        Some(bytes) if !bytes.is_empty() => write_all(upstream, bytes).await,
        _ => Ok(()),
    };
    match forwarded {
        Ok(()) => {
            SessionEnd::Relayed(relay::relay(client, upstream, chunk, config.idle_timeout()).await)
        }
        Err(()) => SessionEnd::Relayed(RelayEnd::Reset),
    }
}

/// Answers one client while every session is busy: the handshake runs as usual (so the
/// client gets a well-formed reply in its own protocol version), then the request is
/// answered with [`Failure::Other`] ("general failure", SOCKS4 CD 91) and the connection
/// closed in order.
pub(crate) async fn refuse(
    stack: Stack<'static>,
    config: &GatewayConfig,
    policy: &Policy<'_>,
    client: &mut TcpSocket<'_>,
) -> SessionEnd {
    let end = match client.remote_endpoint() {
        None => SessionEnd::ClientGone,
        Some(peer) => {
            let mut session = ClientSession::new(policy, SocketAddr::from(peer), now());
            match handshake(stack, config, policy, client, &mut session, None).await {
                Err(SessionEnd::Refused) => SessionEnd::PoolFull,
                Err(end) => end,
                Ok(_) => SessionEnd::ProtocolError, // cannot happen: every request is refused
            }
        }
    };
    relay::close(client, config.close_timeout()).await;
    end
}

/// Runs `session` until it is established or closed: reads the client until the session's
/// deadline, answers its events and sends its output.
///
/// With `upstream`, a CONNECT is resolved and connected on it and a UDP ASSOCIATE handed
/// back to the caller; without (the refusal slot), every request is answered with
/// [`Failure::Other`].
async fn handshake(
    stack: Stack<'static>,
    config: &GatewayConfig,
    policy: &Policy<'_>,
    client: &mut TcpSocket<'_>,
    session: &mut ClientSession,
    mut upstream: Option<&mut TcpSocket<'_>>,
) -> Result<Outcome, SessionEnd> {
    // A CONNECT's resolved address, from `Event::Resolve` to `Event::Connect(None)`.
    let mut resolved = [IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED)];
    let mut closed = None;
    loop {
        while let Some(event) = session.poll_event() {
            match (event, upstream.as_deref_mut()) {
                (Event::Authenticate, _) => {
                    let ok = session
                        .credentials()
                        .is_some_and(|(name, password)| config.authenticate(name, password));
                    let _ = session.handle_auth(policy, ok, now());
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
                            let _ = session.handle_resolved(policy, &mut resolved);
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
                        Ok(bound) => session.handle_opened(policy, bound, now()),
                        Err(Some(failure)) => session.handle_failure(failure),
                        Err(None) => {
                            session.handle_timeout(now());
                            Ok(())
                        }
                    };
                }
                (Event::Associate, Some(_)) => return Ok(Outcome::Associate),
                (Event::Closed(reason), _) => closed = Some(SessionEnd::from(reason)),
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
            Ok(Ok(n)) => session.handle_received(policy, n, now()),
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
