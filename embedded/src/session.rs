//! One client session: SOCKS handshake through the core, upstream connect, relay, close.
//!
//! Every protocol byte goes through [`socksgate_core::server::Server`]: this module only
//! moves bytes between sockets and the state machine and answers its events (credentials,
//! access rules, resolution, connect).

use core::cell::RefCell;
use core::net::SocketAddr;

use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Instant, with_deadline, with_timeout};
use socksgate_core::rules::{Query, Verdict};
use socksgate_core::server::{Config, Event, Octets, Request, Server};
use socksgate_core::wire::{Command, ReplyCode};

use crate::config::GatewayConfig;
use crate::relay::{self, RelayEnd};
use crate::resolve::resolve;
use crate::udp::{self, UdpBuffers};

/// Handshake input buffer (the core buffers partial messages itself, so any size works);
/// reused as the relay's chunk buffer once the handshake is over.
pub(crate) const INPUT_BUF: usize = relay::RELAY_CHUNK;

/// Per-session scratch memory besides the four socket buffers.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Handshake input, then the relay's chunk buffer.
    pub(crate) input: [u8; INPUT_BUF],
}

impl Scratch {
    pub(crate) const fn new() -> Self {
        Self {
            input: [0; INPUT_BUF],
        }
    }
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

/// What the core is told about the methods and versions we accept.
fn core_config(config: &GatewayConfig) -> Config {
    Config {
        no_auth: config.users.is_empty(),
        user_pass: !config.users.is_empty(),
        gssapi: false,
        socks4: config.socks4,
    }
}

/// What a successful handshake ended with.
#[derive(Debug)]
enum Outcome {
    /// CONNECT succeeded; the first `n` bytes of `scratch.input` are early payload.
    Connected(usize),
    /// UDP ASSOCIATE, not answered yet (the caller owns the UDP slots), with the client's
    /// UDP port if the request announced one.
    UdpAssociate(Option<u16>),
}

/// Serves one accepted client: handshake, relay (TCP, or UDP for an association),
/// orderly close of both sockets.
pub(crate) async fn serve(
    stack: Stack<'static>,
    config: &GatewayConfig,
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    scratch: &mut Scratch,
    udp_slots: &[RefCell<UdpBuffers>],
) -> SessionEnd {
    let mut server = Server::new(core_config(config));
    let mut user = None;
    let answers = Answers {
        server: &mut server,
        user: &mut user,
        udp: !udp_slots.is_empty(),
    };
    let handshake = handshake(
        stack,
        config,
        client,
        Some(&mut *upstream),
        scratch,
        answers,
    )
    .await;
    let end = match handshake {
        Err(end) => end,
        Ok(Outcome::UdpAssociate(client_port)) => {
            udp::associate(
                stack,
                config,
                client,
                &mut server,
                client_port,
                user.as_deref(),
                udp_slots,
            )
            .await
        }
        Ok(Outcome::Connected(early)) => {
            // Payload the client sent right after its request goes first.
            let forwarded = match scratch.input.get(..early) {
                Some(bytes) if !bytes.is_empty() => write_all(upstream, bytes).await,
                _ => Ok(()),
            };
            match forwarded {
                Ok(()) => SessionEnd::Relayed(
                    relay::relay(client, upstream, &mut scratch.input, config.idle_timeout).await,
                ),
                Err(()) => SessionEnd::Relayed(RelayEnd::Reset),
            }
        }
    };
    relay::close(upstream, config.close_timeout).await;
    relay::close(client, config.close_timeout).await;
    end
}

/// Answers one client while every session is busy: the handshake runs as usual (so the
/// client gets a well-formed reply in its own protocol version), then the request is
/// refused with "general failure" and the connection closed in order.
pub(crate) async fn refuse(
    stack: Stack<'static>,
    config: &GatewayConfig,
    client: &mut TcpSocket<'_>,
    scratch: &mut Scratch,
) -> SessionEnd {
    let mut server = Server::new(core_config(config));
    let mut user = None;
    let answers = Answers {
        server: &mut server,
        user: &mut user,
        udp: false,
    };
    let end = match handshake(stack, config, client, None, scratch, answers).await {
        Err(SessionEnd::Refused) => SessionEnd::PoolFull,
        Err(end) => end,
        Ok(_) => SessionEnd::ProtocolError, // unreachable: every request is refused
    };
    relay::close(client, config.close_timeout).await;
    end
}

/// The state machine and what the handshake learns, owned by the caller.
struct Answers<'a> {
    server: &'a mut Server,
    /// The RFC 1929 user once authenticated: access rules may name it.
    user: &'a mut Option<Octets>,
    /// Hand UDP ASSOCIATE requests back to the caller (else: "command not supported").
    udp: bool,
}

/// Runs the handshake; reading the client's messages is bounded by
/// `config.handshake_timeout`. On success either the upstream is connected and the first `n` bytes
/// of `scratch.input` are client payload that arrived with the request, or a UDP ASSOCIATE
/// request awaits its answer. Without an upstream socket every request is refused with
/// "general failure".
async fn handshake(
    stack: Stack<'static>,
    config: &GatewayConfig,
    client: &mut TcpSocket<'_>,
    mut upstream: Option<&mut TcpSocket<'_>>,
    scratch: &mut Scratch,
    answers: Answers<'_>,
) -> Result<Outcome, SessionEnd> {
    let Answers { server, user, udp } = answers;
    // The client must complete its messages in time; resolution and the upstream connect
    // have their own bounds, so a request being worked on always gets its reply.
    let deadline = Instant::now() + config.handshake_timeout;
    let mut len = 0;
    loop {
        // Let the core take all it can before reading more.
        loop {
            let input = scratch.input.get(..len).unwrap_or_default();
            let consumed = match server.feed(input) {
                Ok(n) => n.min(len),
                Err(_) => {
                    let _ = transmit(server, client).await;
                    return Err(SessionEnd::ProtocolError);
                }
            };
            scratch.input.copy_within(consumed..len, 0);
            len -= consumed;

            let mut evented = false;
            while let Some(event) = server.poll_event() {
                evented = true;
                match event {
                    Event::Authenticate { username, password } => {
                        let ok = config.authenticate(&username, &password);
                        if ok {
                            *user = Some(username);
                        }
                        let _ = server.authenticate(ok);
                    }
                    Event::Request(request)
                        if udp
                            && upstream.is_some()
                            && request.command == Command::UdpAssociate =>
                    {
                        let port = request.target.port();
                        return Ok(Outcome::UdpAssociate((port != 0).then_some(port)));
                    }
                    Event::Request(request) => {
                        let result = match upstream.as_deref_mut() {
                            Some(upstream) => {
                                let client_ip =
                                    client.remote_endpoint().map(|ep| SocketAddr::from(ep).ip());
                                let Some(client_ip) = client_ip else {
                                    return Err(SessionEnd::ClientGone);
                                };
                                let query = Query {
                                    client: client_ip,
                                    user: user.as_deref(),
                                    command: request.command,
                                    dst: request.target.as_addr(),
                                };
                                connect(stack, config, upstream, &request, &query).await
                            }
                            None => Err(ReplyCode::GeneralFailure),
                        };
                        let _ = server.respond(result);
                    }
                    #[allow(unreachable_patterns)] // the core may add events
                    _ => {}
                }
            }
            transmit(server, client)
                .await
                .map_err(|()| SessionEnd::ClientGone)?;
            if server.is_established() {
                return Ok(Outcome::Connected(len));
            }
            if server.is_closed() {
                return Err(SessionEnd::Refused);
            }
            if consumed == 0 && !evented {
                break;
            }
        }
        let Some(free) = scratch.input.get_mut(len..).filter(|free| !free.is_empty()) else {
            return Err(SessionEnd::ProtocolError); // the core never needs this much
        };
        match with_deadline(deadline, client.read(free)).await {
            Err(_) => return Err(SessionEnd::HandshakeTimeout),
            Ok(Ok(0) | Err(_)) => return Err(SessionEnd::ClientGone),
            Ok(Ok(n)) => len += n,
        }
    }
}

/// Sends everything the core has queued, straight from its output buffer.
pub(crate) async fn transmit(server: &mut Server, client: &mut TcpSocket<'_>) -> Result<(), ()> {
    while !server.pending_transmit().is_empty() {
        match client.write(server.pending_transmit()).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => server.consume_transmit(n),
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

/// Answers a request: checks it against the rules (before resolution, so a denied name is
/// never looked up, and again with the address), resolves the destination and connects
/// `upstream`. Returns the address to report (the upstream socket's local address) or the
/// reply code.
async fn connect(
    stack: Stack<'static>,
    config: &GatewayConfig,
    upstream: &mut TcpSocket<'_>,
    request: &Request,
    query: &Query<'_>,
) -> Result<SocketAddr, ReplyCode> {
    if request.command != Command::Connect {
        return Err(ReplyCode::CommandNotSupported);
    }
    if let Verdict::Decided(decision) = config.rules.evaluate(query)
        && !decision.is_allowed()
    {
        return Err(ReplyCode::NotAllowed);
    }
    let addr = resolve(stack, request.target.as_addr())
        .await
        .map_err(|_| ReplyCode::HostUnreachable)?;
    if !config
        .rules
        .evaluate_resolved(query, addr.ip())
        .is_allowed()
    {
        return Err(ReplyCode::NotAllowed);
    }
    let endpoint = IpEndpoint::from(addr);
    match with_timeout(config.connect_timeout, upstream.connect(endpoint)).await {
        Ok(Ok(())) => {}
        Ok(Err(ConnectError::ConnectionReset)) => return Err(ReplyCode::ConnectionRefused),
        Ok(Err(ConnectError::NoRoute)) => return Err(ReplyCode::NetworkUnreachable),
        Ok(Err(ConnectError::TimedOut)) => return Err(ReplyCode::TtlExpired),
        Ok(Err(ConnectError::InvalidState)) => return Err(ReplyCode::GeneralFailure),
        Err(_) => {
            upstream.abort();
            return Err(ReplyCode::TtlExpired);
        }
    }
    upstream
        .local_endpoint()
        .map(SocketAddr::from)
        .ok_or(ReplyCode::GeneralFailure)
}
