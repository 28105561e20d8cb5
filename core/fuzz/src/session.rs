//! Input and driver for the `session_chunks` and `udp_association` targets.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use arbitrary::Arbitrary;
use socksgate_core::rules::{Action, Rule, Rules};
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
}

/// Everything one session run depends on.
#[derive(Arbitrary, Debug)]
pub struct SessionInput {
    auth: u8,
    rules: u8,
    chunks: Vec<u8>,
    facts: Vec<Fact>,
    bytes: Vec<u8>,
}

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionTrace {
    events: Vec<Event>,
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
    Policy::new(authentication, rules(input.rules))
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
    (0..4).filter(|b| i & (1 << b) != 0).map(|b| all[b]).collect()
}

/// Runs a session over the input, in one piece or in the input's chunks, answering each
/// event with the next fact. Checks the contract on the way: an answer that applies is
/// accepted, and a session ends at most once.
pub fn drive_session(input: &SessionInput, chunked: bool) -> SessionTrace {
    let policy = policy(input);
    let mut now = Instant::from_millis(0);
    let client: SocketAddr = ([192, 0, 2, 200], 40000).into();
    let mut s = Session::<96>::new(&policy, client, now);
    let mut trace = SessionTrace {
        events: Vec::new(),
        output: Vec::new(),
        payload: Vec::new(),
        established: false,
        closed: false,
    };
    let mut facts = input.facts.iter().copied();
    let mut pending: &[u8] = &input.bytes;
    let mut chunk = 0;
    for _ in 0..10_000 {
        while let Some(event) = s.poll_event() {
            trace.events.push(event);
            if matches!(event, Event::Established | Event::Closed(_)) {
                assert!(!trace.established && !trace.closed, "ended twice");
                continue;
            }
            let Some(fact) = facts.next() else { break };
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
            };
            let _ = r;
        }
        trace.established = s.is_established();
        trace.closed = s.is_closed();
        trace.output.extend_from_slice(s.pending_transmit());
        let n = s.pending_transmit().len();
        s.consume_transmit(n);
        if trace.established || trace.closed {
            break;
        }
        if pending.is_empty() || s.recv_buffer().is_empty() {
            break;
        }
        let size = if chunked && !input.chunks.is_empty() {
            usize::from(input.chunks[chunk % input.chunks.len()]) + 1
        } else {
            pending.len()
        };
        chunk += 1;
        let take = size.min(pending.len());
        let took = s.handle_input(&policy, &pending[..take], now);
        assert!(took <= take, "took more than offered");
        pending = &pending[took..];
    }
    // What follows the handshake, in order: what the session kept, then what the driver had
    // not offered it yet (a driver relays that straight from the socket).
    trace.payload = s.payload().to_vec();
    if trace.established {
        trace.payload.extend_from_slice(pending);
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
                    assert!(sent_to.contains(&canonical), "relayed from {src}, never contacted");
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
