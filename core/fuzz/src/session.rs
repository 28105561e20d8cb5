//! Input and driver for the `session_chunks`, `session_gssapi` and `udp_association`
//! targets.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use arbitrary::Arbitrary;
use socksgate_core::gssapi::{Decapsulator, GssapiError};
use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_core::server::UnexpectedCall;
use socksgate_core::session::{Event, Session};
use socksgate_core::udp::{Association, Outbound, PeerList};
use socksgate_core::{Authentication, Failure, Instant, Policy};

use crate::FuzzSocketAddr;

/// A few rule sets: none, a CIDR deny, a name deny before a CIDR deny, a default deny.
fn rules(i: u8) -> Rules<'static> {
    static CIDR: std::sync::OnceLock<[Rule; 1]> = std::sync::OnceLock::new();
    static BOTH: std::sync::OnceLock<[Rule; 2]> = std::sync::OnceLock::new();
    match i % 4 {
        0 => Rules::new(&[], Action::Allow),
        1 => Rules::new(
            CIDR.get_or_init(|| [Rule::deny().dst("10.0.0.0/8".parse().expect("valid"))]),
            Action::Allow,
        ),
        2 => Rules::new(
            BOTH.get_or_init(|| {
                [
                    Rule::deny().dst(".example".parse().expect("valid")),
                    Rule::deny().dst("192.0.2.0/24".parse().expect("valid")),
                ]
            }),
            Action::Allow,
        ),
        _ => Rules::new(&[], Action::Deny),
    }
}

/// The driver's answer to one event.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Fact {
    /// Credentials accepted or not.
    Password(bool),
    /// These addresses (from a small set) for a name.
    Resolved(u8),
    /// The outbound side opened, bound here.
    Opened(FuzzSocketAddr),
    /// The outbound side failed (index into the causes).
    Failed(u8),
    /// A BIND peer connects from here.
    Peer(FuzzSocketAddr),
    /// Time passes (seconds) and the session is told.
    Wait(u8),
    /// GSS-API: another round (`send_gssapi_token`), the driver's token this long.
    GssContinue(u16),
    /// GSS-API: established for a principal of this length (modulo 300), with a last token
    /// this long.
    GssEstablished(u16, u16),
    /// GSS-API: the driver's step failed.
    GssFailed,
    /// GSS-API: the unwrapped protection message (then a 3-octet wrapped answer).
    GssUnwrapped(u8, bool),
}

/// Everything one session run depends on.
#[derive(Arbitrary, Debug)]
pub struct SessionInput {
    /// Authentication (modulo 4; 3: password and GSS-API).
    pub auth: u8,
    /// The GSS-API policy ([`crate::gssapi_policy`]).
    pub gssapi: u8,
    /// Rule set (modulo 4).
    pub rules: u8,
    /// Chunk sizes minus one.
    pub chunks: Vec<u8>,
    /// The driver's answers, in order.
    pub facts: Vec<Fact>,
    /// The client's bytes (after a GSS-API protection level that encapsulates: §5 messages
    /// whose tokens are taken as already unwrapped).
    pub bytes: Vec<u8>,
}

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionTrace {
    /// Events, except `GssapiPiece` (how a token is cut depends on the reads).
    events: Vec<Event>,
    /// The client's GSS-API tokens, reassembled from their pieces.
    tokens: Vec<Vec<u8>>,
    /// The user once authenticated.
    user: Option<Vec<u8>>,
    /// The §5 stream's error, if it broke.
    encapsulation: Option<GssapiError>,
    output: Vec<u8>,
    /// Once established: the bytes after the handshake, kept or not yet offered.
    payload: Vec<u8>,
    established: bool,
    closed: bool,
}

fn policy(input: &SessionInput) -> Policy<'static> {
    let authentication = match input.auth % 4 {
        0 => Authentication::None { socks4: true },
        1 => Authentication::None { socks4: false },
        2 => Authentication::PASSWORD,
        _ => Authentication::Required {
            password: true,
            gssapi: true,
        },
    };
    Policy {
        gssapi: crate::gssapi_policy(input.gssapi),
        ..Policy::new(authentication, rules(input.rules))
    }
}

const FAILURES: [Failure; 11] = [
    Failure::Refused,
    Failure::NetworkUnreachable,
    Failure::HostUnreachable,
    Failure::NameNotFound,
    Failure::AddressUnusable,
    Failure::TimedOut,
    Failure::PermissionDenied,
    Failure::ResolverFailed,
    Failure::Other,
    Failure::NoAddressInFamily,
    Failure::RateLimited,
];

fn addresses(i: u8) -> Vec<IpAddr> {
    let all: [IpAddr; 4] = [
        [10, 1, 2, 3].into(),
        [192, 0, 2, 9].into(),
        [198, 51, 100, 7].into(),
        IpAddr::V6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1].into()),
    ];
    (0..4)
        .filter(|b| i & (1 << b) != 0)
        .map(|b| all[b])
        .collect()
}

/// Runs a session over the input, in one piece or in the input's chunks, answering each
/// event with the next fact. Checks the contract on the way: an answer that applies is
/// accepted, and a session ends at most once. After a GSS-API level that encapsulates, the
/// rest of the bytes go through a [`Decapsulator`] and each token is fed as plaintext (the
/// identity stands in for `gss_unwrap`).
pub fn drive_session(input: &SessionInput, chunked: bool) -> SessionTrace {
    let policy = policy(input);
    let mut now = Instant::from_millis(0);
    let client: SocketAddr = ([192, 0, 2, 200], 40000).into();
    let mut s = Session::<96>::new(&policy, client, now);
    let mut trace = SessionTrace {
        events: Vec::new(),
        tokens: Vec::new(),
        user: None,
        encapsulation: None,
        output: Vec::new(),
        payload: Vec::new(),
        established: false,
        closed: false,
    };
    let mut facts = input.facts.iter().copied();
    let mut pending: &[u8] = &input.bytes;
    let mut chunk = 0;
    let mut token: Vec<u8> = Vec::new();
    // After protection: the decoder, the token being decoded, and plaintext not yet taken.
    let mut decoder: Option<Decapsulator> = None;
    let mut wrapped: Vec<u8> = Vec::new();
    let mut plain: Vec<u8> = Vec::new();
    let mut decode = |decoder: &mut Decapsulator,
                      mut raw: &[u8],
                      plain: &mut Vec<u8>,
                      trace: &mut SessionTrace| {
        while !raw.is_empty() && trace.encapsulation.is_none() {
            match decoder.decode(raw) {
                Ok((n, piece)) => {
                    assert!(n > 0 && n <= raw.len(), "decode took {n} of {}", raw.len());
                    raw = &raw[n..];
                    if let Some(p) = piece {
                        wrapped.extend_from_slice(p.bytes);
                        if p.last {
                            plain.append(&mut wrapped);
                        }
                    }
                }
                Err(e) => trace.encapsulation = Some(e),
            }
        }
    };
    for _ in 0..1_000_000 {
        while let Some(event) = s.poll_event() {
            match event {
                Event::GssapiPiece | Event::GssapiAccept | Event::GssapiUnwrapProtection => {
                    let piece = s.gssapi_token_piece().expect("a piece with the event");
                    token.extend_from_slice(piece);
                    if event == Event::GssapiPiece {
                        continue;
                    }
                    trace.tokens.push(core::mem::take(&mut token));
                }
                Event::GssapiProtected(level) => {
                    assert!(level.encapsulates());
                    assert_eq!(s.gssapi_protection(), Some(level));
                    trace.output.extend_from_slice(s.pending_transmit());
                    let n = s.pending_transmit().len();
                    s.consume_transmit(n);
                    let raw = s.take_encapsulated_input().to_vec();
                    let mut d = Decapsulator::new();
                    decode(&mut d, &raw, &mut plain, &mut trace);
                    decoder = Some(d);
                }
                _ => {}
            }
            trace.events.push(event);
            if matches!(event, Event::Established | Event::Closed(_)) {
                assert!(!trace.established && !trace.closed, "ended twice");
                continue;
            }
            if matches!(event, Event::GssapiProtected(_)) {
                continue;
            }
            let Some(fact) = facts.next() else { break };
            let mut owed = Vec::new();
            let r = match fact {
                Fact::Password(ok) => s.handle_auth(&policy, ok, now),
                Fact::Resolved(i) => {
                    let mut ips = addresses(i);
                    s.handle_resolved(&policy, &mut ips).map(|n| {
                        assert!(n <= ips.len());
                    })
                }
                Fact::Opened(bound) => s.handle_opened(&policy, bound.into(), now),
                Fact::Failed(i) => s.handle_failure(FAILURES[usize::from(i) % FAILURES.len()]),
                Fact::Peer(peer) => s.handle_bind_peer(peer.into()).map(|_| ()),
                Fact::Wait(secs) => {
                    now = now + Duration::from_secs(secs.into());
                    s.handle_timeout(now);
                    Ok(())
                }
                Fact::GssContinue(len) => {
                    owed = vec![0xc0; len.into()];
                    s.send_gssapi_token(len.into())
                }
                Fact::GssEstablished(name, len) => {
                    let principal = vec![b'p'; usize::from(name % 300)];
                    let r = s.handle_gssapi_established(&principal, len.into());
                    if r.is_ok() && !s.is_closed() {
                        assert!(principal.len() <= 255);
                        assert_eq!(s.user(), Some(&principal[..]));
                        owed = vec![0xe5; len.into()];
                    }
                    r
                }
                Fact::GssFailed => s.handle_gssapi_failed(),
                Fact::GssUnwrapped(octet, twice) => {
                    let unwrapped = if twice { vec![octet; 2] } else { vec![octet] };
                    match s.handle_gssapi_protection(&unwrapped) {
                        Ok(Some(level)) => {
                            assert!(!twice);
                            owed = vec![0x77, u8::from(level), 0x77];
                            s.send_gssapi_protection(owed.len())
                                .expect("send_gssapi_protection after a grant");
                            Ok(())
                        }
                        Ok(None) => {
                            assert!(s.is_closed(), "refused but not closed");
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if r == Err(UnexpectedCall) {
                assert!(owed.is_empty() || matches!(fact, Fact::GssContinue(_)));
                owed.clear();
            }
            // The driver's token goes after the header the answer queued; then the session
            // goes on.
            trace.output.extend_from_slice(s.pending_transmit());
            let n = s.pending_transmit().len();
            s.consume_transmit(n);
            trace.output.extend_from_slice(&owed);
            if r.is_ok()
                && matches!(
                    fact,
                    Fact::GssContinue(_) | Fact::GssEstablished(..) | Fact::GssUnwrapped(..)
                )
                && !s.is_closed()
            {
                let sent = s.handle_gssapi_sent(&policy, now);
                assert!(
                    sent.is_ok() || owed.is_empty(),
                    "token sent but not expected"
                );
            }
            assert_eq!(s.handle_gssapi_sent(&policy, now), Err(UnexpectedCall));
        }
        trace.established = s.is_established();
        trace.closed = s.is_closed();
        trace.output.extend_from_slice(s.pending_transmit());
        let n = s.pending_transmit().len();
        s.consume_transmit(n);
        if trace.established || trace.closed {
            break;
        }
        let size = if chunked && !input.chunks.is_empty() {
            usize::from(input.chunks[chunk % input.chunks.len()]) + 1
        } else {
            pending.len()
        };
        chunk += 1;
        match decoder.as_mut() {
            None => {
                if pending.is_empty() || s.recv_buffer().is_empty() {
                    break;
                }
                let take = size.min(pending.len());
                let took = s.handle_input(&policy, &pending[..take], now);
                assert!(took <= take, "took more than offered");
                pending = &pending[took..];
            }
            Some(d) => {
                if plain.is_empty() {
                    if pending.is_empty() || trace.encapsulation.is_some() {
                        break;
                    }
                    let take = size.min(pending.len());
                    decode(d, &pending[..take], &mut plain, &mut trace);
                    pending = &pending[take..];
                    continue;
                }
                if s.recv_buffer().is_empty() {
                    break;
                }
                let take = size.min(plain.len());
                let took = s.handle_input(&policy, &plain[..take], now);
                assert!(took <= take, "took more than offered");
                plain.drain(..took);
            }
        }
    }
    trace.user = s.user().map(<[u8]>::to_vec);
    // What follows the handshake, in order: what the session kept, then what the driver had
    // not offered it yet (a driver relays that straight from the socket).
    trace.payload = s.payload().to_vec();
    if trace.established {
        match decoder.as_mut() {
            Some(d) => {
                // The relay decodes the rest as it comes: all of it, however it was split.
                decode(d, pending, &mut plain, &mut trace);
                trace.payload.extend_from_slice(&plain);
            }
            None => trace.payload.extend_from_slice(pending),
        }
    }
    trace
}

/// One operation on an association.
#[derive(Arbitrary, Clone, Debug)]
pub enum UdpOp {
    /// A datagram from `src` on the client-facing socket.
    FromClient {
        /// Source (index into a small set).
        src: u8,
        /// The datagram, SOCKS header included.
        datagram: Vec<u8>,
        /// The address the name resolves to, if it is one.
        resolved: u8,
    },
    /// A datagram from `src` on a destination-facing socket.
    FromRemote {
        /// Source.
        src: FuzzSocketAddr,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Time passes (milliseconds).
    Wait(u16),
}

/// An association's run.
#[derive(Arbitrary, Debug)]
pub struct UdpInput {
    rules: u8,
    requested_port: u16,
    ops: Vec<UdpOp>,
}

/// Runs the operations, checking the association's promises against a model: only the
/// client's address sends, and only destinations the client was sent to reach it.
pub fn drive_association(input: &UdpInput) {
    let rules = rules(input.rules);
    let client_ip: IpAddr = [192, 0, 2, 200].into();
    let sources: [SocketAddr; 3] = [
        (client_ip, 5000).into(),
        (client_ip, 5001).into(),
        ([192, 0, 2, 201], 5000).into(),
    ];
    let requested = SocketAddr::new(client_ip, input.requested_port % 5002);
    let mut now = Instant::from_millis(0);
    let mut a = Association::<PeerList<8>, 256>::new(
        client_ip,
        socksgate_core::Addr::Ip(requested),
        None,
        PeerList::new(),
        Duration::from_secs(30),
        now,
    );
    let mut sent_to: Vec<SocketAddr> = Vec::new();
    let mut out = [0u8; 512];
    for op in &input.ops {
        match op {
            UdpOp::FromClient {
                src,
                datagram,
                resolved,
            } => {
                let src = sources[usize::from(*src) % sources.len()];
                let to = match a.handle_client_datagram(&rules, src, datagram, now) {
                    Ok(Outbound::Send { to, .. }) => Some(to),
                    Ok(Outbound::Resolve(pending)) => {
                        let ip = addresses(1 << (resolved % 4))[0];
                        pending.resolved(&rules, ip).ok().map(|(to, _)| to)
                    }
                    Ok(Outbound::Queued) | Err(_) => None,
                };
                if let Some(to) = to {
                    assert_eq!(src.ip(), client_ip, "a stranger's datagram was sent");
                    if sent_to.len() < 8 && !sent_to.contains(&to) {
                        sent_to.push(to);
                    }
                }
            }
            UdpOp::FromRemote { src, payload } => {
                let src: SocketAddr = (*src).into();
                if let Ok((to, n)) = a.handle_remote_datagram(src, payload, &mut out, now) {
                    let canonical = SocketAddr::new(src.ip().to_canonical(), src.port());
                    assert!(
                        sent_to.contains(&canonical),
                        "relayed from {src}, never contacted"
                    );
                    assert_eq!(to.ip(), client_ip);
                    assert!(n >= payload.len());
                }
            }
            UdpOp::Wait(ms) => {
                now = now + Duration::from_millis((*ms).into());
                let idle = a.handle_timeout(now);
                assert_eq!(idle, a.poll_timeout().is_some_and(|t| t <= now) && idle);
            }
        }
    }
}
