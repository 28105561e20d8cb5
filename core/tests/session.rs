//! The session's decisions, case by case: client bytes and the driver's facts (credentials
//! checked, resolved addresses, connect results, time) in; replies and events out. Each
//! case runs once with the input whole and once fed byte by byte: the outcome must not
//! depend on the split.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use socksgate_core::policy::Authentication;
use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_core::session::{Close, Event, Session};
use socksgate_core::wire::{Command, ReplyCode};
use socksgate_core::{Failure, Instant, Policy};

const CLIENT: &str = "192.0.2.10:40000";
const BOUND: &str = "198.51.100.1:5555";

/// What the driver answers, in order of the events that ask.
#[derive(Clone, Copy, Debug)]
enum Fact {
    Password(bool),
    Resolved(&'static [&'static str]),
    Opened,
    Failed(Failure),
    Peer(&'static str),
    /// Advance time by this many seconds and tell the session.
    Wait(u64),
}

/// Drives `session` over `input` (split into `chunk`-byte reads), answering events with
/// `facts`; returns the bytes sent and the event that ended the run.
fn drive(
    policy: &Policy<'_>,
    input: &[u8],
    chunk: usize,
    facts: &[Fact],
) -> (Vec<u8>, Option<Event>) {
    let mut now = Instant::from_millis(1_000);
    let mut s = Session::<64>::new(policy, CLIENT.parse().unwrap(), now);
    let mut sent = Vec::new();
    let mut facts = facts.iter();
    let mut pending = input;
    let mut end = None;
    loop {
        while let Some(event) = s.poll_event() {
            match event {
                Event::Established | Event::Closed(_) => end = Some(event),
                Event::Connect(_)
                | Event::Bind
                | Event::Associate
                | Event::Resolve
                | Event::Authenticate => {}
                other => panic!("unexpected {other:?}"),
            }
            let fact = if matches!(event, Event::Established | Event::Closed(_)) {
                None
            } else {
                facts.next().copied()
            };
            match fact {
                None => {}
                Some(Fact::Password(ok)) => s.handle_auth(policy, ok, now).unwrap(),
                Some(Fact::Resolved(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
                    s.handle_resolved(policy, &mut ips).unwrap();
                }
                Some(Fact::Opened) => s
                    .handle_opened(policy, BOUND.parse().unwrap(), now)
                    .unwrap(),
                Some(Fact::Failed(f)) => s.handle_failure(f).unwrap(),
                Some(Fact::Wait(secs)) => {
                    now = now + Duration::from_secs(secs);
                    s.handle_timeout(now);
                }
                Some(Fact::Peer(_)) => panic!("a peer answers no event"),
            }
        }
        sent.extend_from_slice(s.pending_transmit());
        let n = s.pending_transmit().len();
        s.consume_transmit(n);
        if end.is_some() {
            return (sent, end);
        }
        // No event pending: more input, a BIND peer, or the clock.
        if !pending.is_empty() && !s.recv_buffer().is_empty() {
            let take = chunk.min(pending.len());
            let took = s.handle_input(policy, &pending[..take], now);
            pending = &pending[took..];
            continue;
        }
        match facts.next().copied() {
            Some(Fact::Peer(peer)) => {
                s.handle_bind_peer(peer.parse().unwrap()).unwrap();
            }
            Some(Fact::Wait(secs)) => {
                now = now + Duration::from_secs(secs);
                s.handle_timeout(now);
            }
            Some(other) => panic!("stalled with {other:?}; sent {sent:?}"),
            None => return (sent, None), // waiting for more of the client
        }
    }
}

fn socks5_connect(atyp_addr: &[u8], port: u16) -> Vec<u8> {
    let mut v = vec![5, 1, 0, 5, 1, 0];
    v.extend_from_slice(atyp_addr);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn name(n: &str) -> Vec<u8> {
    let mut v = vec![3, n.len() as u8];
    v.extend_from_slice(n.as_bytes());
    v
}

/// SOCKS5 reply code in a greeting-reply + request-reply exchange.
fn rep(sent: &[u8]) -> u8 {
    sent[3]
}

struct Case {
    what: &'static str,
    policy: Policy<'static>,
    input: Vec<u8>,
    facts: &'static [Fact],
    /// The bytes the client must receive.
    want: Vec<u8>,
    established: bool,
}

fn deny_ten() -> Rules<'static> {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| {
        vec![
            Rule::deny().dst(".blocked.example".parse().unwrap()),
            Rule::deny().dst("10.0.0.0/8".parse().unwrap()),
        ]
    });
    Rules::new(rules, Action::Allow)
}

fn password() -> Policy<'static> {
    Policy::new(Authentication::PASSWORD, Rules::new(&[], Action::Allow))
}

fn socks5_reply(code: u8, bound: &str) -> Vec<u8> {
    let sa: SocketAddr = bound.parse().unwrap();
    let SocketAddr::V4(v4) = sa else {
        unreachable!()
    };
    let mut v = vec![5, code, 0, 1];
    v.extend_from_slice(&v4.ip().octets());
    v.extend_from_slice(&v4.port().to_be_bytes());
    v
}

fn cases() -> Vec<Case> {
    let ok = |code: u8| {
        [
            vec![5, 0],
            socks5_reply(code, if code == 0 { BOUND } else { "0.0.0.0:0" }),
        ]
        .concat()
    };
    vec![
        Case {
            what: "SOCKS4 with users configured is refused (CD 91)",
            policy: password(),
            input: vec![4, 1, 0, 80, 127, 0, 0, 1, b'u', 0],
            facts: &[],
            want: vec![0, 91, 0, 0, 0, 0, 0, 0],
            established: false,
        },
        Case {
            what: "methods with users: only username/password",
            policy: password(),
            input: vec![5, 1, 0],
            facts: &[],
            want: vec![5, 0xff],
            established: false,
        },
        Case {
            what: "methods without users: no authentication",
            policy: Policy::default(),
            input: vec![5, 2, 2, 0],
            facts: &[],
            want: vec![5, 0],
            established: false,
        },
        Case {
            what: "password accepted, then CONNECT",
            policy: password(),
            input: [
                vec![5, 1, 2, 1, 1, b'a', 1, b'b'],
                vec![5, 1, 0, 1, 192, 0, 2, 1, 0, 80],
            ]
            .concat(),
            facts: &[Fact::Password(true), Fact::Opened],
            want: [vec![5, 2, 1, 0], socks5_reply(0, BOUND)].concat(),
            established: true,
        },
        Case {
            what: "password rejected",
            policy: password(),
            input: vec![5, 1, 2, 1, 1, b'a', 1, b'b'],
            facts: &[Fact::Password(false)],
            want: vec![5, 2, 1, 1],
            established: false,
        },
        Case {
            what: "denied address: REP 2",
            policy: Policy::new(Authentication::default(), deny_ten()),
            input: socks5_connect(&[1, 10, 1, 2, 3], 80),
            facts: &[],
            want: ok(2),
            established: false,
        },
        Case {
            what: "denied name is refused before resolving",
            policy: Policy::new(Authentication::default(), deny_ten()),
            input: socks5_connect(&name("db.blocked.example"), 80),
            facts: &[],
            want: ok(2),
            established: false,
        },
        Case {
            what: "allowed name resolving to a denied address: REP 2",
            policy: Policy::new(Authentication::default(), deny_ten()),
            input: socks5_connect(&name("www.example.com"), 80),
            facts: &[Fact::Resolved(&["10.9.9.9"])],
            want: ok(2),
            established: false,
        },
        Case {
            what: "allowed name with one denied and one allowed address connects",
            policy: Policy::new(Authentication::default(), deny_ten()),
            input: socks5_connect(&name("www.example.com"), 80),
            facts: &[Fact::Resolved(&["10.9.9.9", "192.0.2.7"]), Fact::Opened],
            want: ok(0),
            established: true,
        },
        Case {
            what: "name that does not resolve: REP 4",
            policy: Policy::default(),
            input: socks5_connect(&name("nowhere.example"), 80),
            facts: &[Fact::Resolved(&[])],
            want: ok(4),
            established: false,
        },
        Case {
            what: "connection refused: REP 5",
            policy: Policy::default(),
            input: socks5_connect(&[1, 192, 0, 2, 1], 80),
            facts: &[Fact::Failed(Failure::Refused)],
            want: ok(5),
            established: false,
        },
        Case {
            what: "network unreachable: REP 3",
            policy: Policy::default(),
            input: socks5_connect(&[1, 192, 0, 2, 1], 80),
            facts: &[Fact::Failed(Failure::NetworkUnreachable)],
            want: ok(3),
            established: false,
        },
        Case {
            what: "host unreachable: REP 4",
            policy: Policy::default(),
            input: socks5_connect(&[1, 192, 0, 2, 1], 80),
            facts: &[Fact::Failed(Failure::HostUnreachable)],
            want: ok(4),
            established: false,
        },
        Case {
            what: "connect past the deadline: REP 6",
            policy: Policy::default(),
            input: socks5_connect(&[1, 192, 0, 2, 1], 80),
            facts: &[Fact::Wait(11)],
            want: ok(6),
            established: false,
        },
        Case {
            what: "unknown command: REP 7",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 9, 0, 1, 192, 0, 2, 1, 0, 80],
            facts: &[],
            want: ok(7),
            established: false,
        },
        Case {
            what: "command not served here: REP 7",
            policy: Policy {
                commands: socksgate_core::rules::CommandSet::CONNECT,
                ..Policy::default()
            },
            input: vec![5, 1, 0, 5, 2, 0, 1, 192, 0, 2, 1, 0, 80],
            facts: &[],
            want: ok(7),
            established: false,
        },
        Case {
            what: "address type not supported: REP 8",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 1, 0, 9, 0, 0],
            facts: &[],
            want: ok(8),
            established: false,
        },
        Case {
            what: "handshake past the deadline closes without a reply",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 1],
            facts: &[Fact::Wait(11)],
            want: vec![5, 0],
            established: false,
        },
        Case {
            what: "BIND answered by a stranger waits; the expected peer is accepted",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 2, 0, 1, 192, 0, 2, 1, 0, 0],
            facts: &[
                Fact::Opened,
                Fact::Peer("192.0.2.66:1234"),
                Fact::Peer("192.0.2.1:4321"),
            ],
            want: [
                vec![5, 0],
                socks5_reply(0, BOUND),
                socks5_reply(0, "192.0.2.1:4321"),
            ]
            .concat(),
            established: true,
        },
        Case {
            what: "BIND with a port accepts only that port",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 2, 0, 1, 192, 0, 2, 1, 0, 21],
            facts: &[
                Fact::Opened,
                Fact::Peer("192.0.2.1:4321"),
                Fact::Peer("192.0.2.1:21"),
            ],
            want: [
                vec![5, 0],
                socks5_reply(0, BOUND),
                socks5_reply(0, "192.0.2.1:21"),
            ]
            .concat(),
            established: true,
        },
        Case {
            what: "BIND with no peer in time: REP 6",
            policy: Policy::default(),
            input: vec![5, 1, 0, 5, 2, 0, 1, 192, 0, 2, 1, 0, 0],
            facts: &[Fact::Opened, Fact::Wait(121)],
            want: [
                vec![5, 0],
                socks5_reply(0, BOUND),
                socks5_reply(6, "0.0.0.0:0"),
            ]
            .concat(),
            established: false,
        },
        Case {
            what: "UDP ASSOCIATE over SOCKS4 does not exist: CD 91",
            policy: Policy::default(),
            input: vec![4, 3, 0, 80, 127, 0, 0, 1, 0],
            facts: &[],
            want: vec![0, 91, 0, 0, 0, 0, 0, 0],
            established: false,
        },
        Case {
            what: "SOCKS4 refused connection: CD 91",
            policy: Policy::default(),
            input: vec![4, 1, 0, 80, 192, 0, 2, 1, 0],
            facts: &[Fact::Failed(Failure::Refused)],
            want: vec![0, 91, 0, 0, 0, 0, 0, 0],
            established: false,
        },
    ]
}

#[test]
fn every_case_decides_the_same_whatever_the_split() {
    for case in cases() {
        for chunk in [usize::MAX, 1] {
            let (sent, end) = drive(&case.policy, &case.input, chunk, case.facts);
            assert_eq!(sent, case.want, "{} (chunk {chunk})", case.what);
            assert_eq!(
                matches!(end, Some(Event::Established)),
                case.established,
                "{}: ended with {end:?}",
                case.what
            );
        }
    }
}

#[test]
fn pipelined_payload_is_handed_back_whole() {
    let policy = Policy::default();
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    let mut input = socks5_connect(&[1, 192, 0, 2, 1], 80);
    input.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(s.handle_input(&policy, &input, now), input.len());
    assert_eq!(
        s.poll_event(),
        Some(Event::Connect(Some("192.0.2.1:80".parse().unwrap())))
    );
    s.handle_opened(&policy, BOUND.parse().unwrap(), now)
        .unwrap();
    assert_eq!(s.poll_event(), Some(Event::Established));
    assert_eq!(s.payload(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(rep(s.pending_transmit()), 0);
}

#[test]
fn denial_names_its_rule_and_unresolved_names_are_not_looked_up() {
    let policy = Policy::new(Authentication::default(), deny_ten());
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.handle_input(
        &policy,
        &socks5_connect(&name("x.blocked.example"), 80),
        now,
    );
    match s.poll_event() {
        Some(Event::Closed(Close::Denied(d))) => assert_eq!(d.rule, Some(0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.command(), Some(Command::Connect));
    assert_eq!(s.reply(), Some(ReplyCode::NotAllowed));
}

#[test]
fn gssapi_principal_is_the_user_the_rules_match() {
    use socksgate_core::policy::{GssapiPolicy, ProtectionLevels};
    use socksgate_core::rules::UserName;
    use socksgate_core::wire::gssapi::ProtectionLevel;
    let rules = [Rule::allow().user(UserName::new(b"alice@EXAMPLE.ORG").unwrap())];
    let mut policy = Policy::new(
        Authentication::Required {
            password: false,
            gssapi: true,
        },
        Rules::new(&rules, Action::Deny),
    );
    policy.gssapi = GssapiPolicy {
        protection: ProtectionLevels::only(ProtectionLevel::None),
        accept_nec: true,
        ..GssapiPolicy::DEFAULT
    };
    for (principal, want) in [
        (
            &b"alice@EXAMPLE.ORG"[..],
            Some(Event::Connect(Some("192.0.2.1:80".parse().unwrap()))),
        ),
        (b"bob@EXAMPLE.ORG", None),
    ] {
        let now = Instant::from_millis(0);
        let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
        // Greeting offering GSS-API, then one context token.
        s.handle_input(&policy, &[5, 1, 1, 1, 1, 0, 2, 0xaa, 0xbb], now);
        assert_eq!(s.poll_event(), Some(Event::GssapiAccept));
        assert_eq!(s.gssapi_token_piece(), Some(&[0xaa, 0xbb][..]));
        s.handle_gssapi_established(principal, 1).unwrap();
        assert_eq!(s.user(), Some(principal));
        assert_eq!(s.pending_transmit(), [5, 1, 1, 1, 0, 1]);
        s.consume_transmit(6);
        // The driver sends its one-octet token, then the session goes on.
        s.handle_gssapi_sent(&policy, now).unwrap();
        // NEC form asking for confidentiality; the policy grants none.
        s.handle_input(&policy, &[1, 2, 0, 1, 2], now);
        assert_eq!(s.pending_transmit(), [1, 2, 0, 1, 0]);
        assert_eq!(s.gssapi_protection(), Some(ProtectionLevel::None));
        s.handle_input(&policy, &socks5_connect(&[1, 192, 0, 2, 1], 80)[3..], now);
        match want {
            Some(event) => assert_eq!(s.poll_event(), Some(event)),
            None => assert!(matches!(
                s.poll_event(),
                Some(Event::Closed(Close::Denied(_)))
            )),
        }
    }
}

/// Rules that allow everything, with protected destinations on (own address 203.0.113.5),
/// except that rule 0 names 127.0.0.2 and rule 2 allows `.example.com` by name.
fn protected() -> Policy<'static> {
    use socksgate_core::rules::ProtectedDestinations;
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    static OWN: [IpAddr; 1] = [IpAddr::V4(core::net::Ipv4Addr::new(203, 0, 113, 5))];
    let rules = RULES.get_or_init(|| {
        vec![
            Rule::allow().dst("127.0.0.2/32".parse().unwrap()),
            Rule::allow().dst("0.0.0.0/0".parse().unwrap()),
            Rule::allow().dst(".example.com".parse().unwrap()),
        ]
    });
    let rules = Rules::new(rules, Action::Allow).with_protected(ProtectedDestinations::on(&OWN));
    Policy::new(Authentication::default(), rules)
}

/// The first event of a session fed `input` under `policy`, with `resolved` as the name's
/// addresses if it asks.
fn first_outcome(policy: &Policy<'_>, input: &[u8], resolved: &[&str]) -> (Option<Event>, usize) {
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(policy, CLIENT.parse().unwrap(), now);
    s.handle_input(policy, input, now);
    let mut kept = 0;
    let mut event = s.poll_event();
    if event == Some(Event::Resolve) {
        let mut ips: Vec<IpAddr> = resolved.iter().map(|a| a.parse().unwrap()).collect();
        kept = s.handle_resolved(policy, &mut ips).unwrap();
        event = s.poll_event();
    }
    if matches!(event, Some(Event::Closed(Close::Protected(_)))) {
        assert_eq!(s.reply(), Some(ReplyCode::NotAllowed));
    }
    (event, kept)
}

fn v4(a: [u8; 4]) -> Vec<u8> {
    vec![1, a[0], a[1], a[2], a[3]]
}

fn v6(s: &str) -> Vec<u8> {
    let mut v = vec![4];
    v.extend_from_slice(&s.parse::<core::net::Ipv6Addr>().unwrap().octets());
    v
}

#[test]
fn protected_destinations_are_refused_unless_a_rule_names_them() {
    use socksgate_core::rules::Protection as P;
    let policy = protected();
    for (what, addr, want) in [
        ("loopback", v4([127, 0, 0, 1]), P::Loopback),
        ("loopback /8", v4([127, 9, 9, 9]), P::Loopback),
        ("metadata", v4([169, 254, 169, 254]), P::LinkLocal),
        ("unspecified", v4([0, 0, 0, 0]), P::Unspecified),
        ("multicast", v4([224, 0, 0, 251]), P::Multicast),
        ("own", v4([203, 0, 113, 5]), P::OwnAddress),
        ("v6 loopback", v6("::1"), P::Loopback),
        ("v6 link-local", v6("fe80::1"), P::LinkLocal),
        ("v6 unspecified", v6("::"), P::Unspecified),
        ("v6 multicast", v6("ff02::1"), P::Multicast),
        ("mapped loopback", v6("::ffff:127.0.0.1"), P::Loopback),
        (
            "mapped metadata",
            v6("::ffff:169.254.169.254"),
            P::LinkLocal,
        ),
        ("literal name", name("127.0.0.1"), P::Loopback),
    ] {
        let (event, _) = first_outcome(&policy, &socks5_connect(&addr, 80), &[]);
        assert_eq!(event, Some(Event::Closed(Close::Protected(want))), "{what}");
    }
    // Named by rule 0: open. Other addresses: unaffected.
    for addr in [[127, 0, 0, 2], [192, 0, 2, 1], [10, 0, 0, 1]] {
        let (event, _) = first_outcome(&policy, &socks5_connect(&v4(addr), 80), &[]);
        assert!(matches!(event, Some(Event::Connect(Some(_)))), "{addr:?}");
    }
    // SOCKS4: CD 91.
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.handle_input(&policy, &[4, 1, 0, 80, 169, 254, 169, 254, 0], now);
    assert_eq!(
        s.poll_event(),
        Some(Event::Closed(Close::Protected(P::LinkLocal)))
    );
    assert_eq!(s.pending_transmit()[..2], [0, 91]);
    // BIND: the expected peer is protected too, but 0.0.0.0 ("any peer") is not.
    let bind = |a: [u8; 4]| {
        let mut v = vec![5, 1, 0, 5, 2, 0];
        v.extend_from_slice(&v4(a));
        v.extend_from_slice(&0u16.to_be_bytes());
        v
    };
    let (event, _) = first_outcome(&policy, &bind([127, 0, 0, 1]), &[]);
    assert_eq!(event, Some(Event::Closed(Close::Protected(P::Loopback))));
    let (event, _) = first_outcome(&policy, &bind([0, 0, 0, 0]), &[]);
    assert_eq!(event, Some(Event::Bind));
}

#[test]
fn a_name_resolving_to_a_protected_address_is_refused() {
    use socksgate_core::rules::Protection as P;
    let policy = protected();
    // Decided by name at step one (rule 2), refused per address at step two.
    let input = socks5_connect(&name("www.example.com"), 443);
    let (event, kept) = first_outcome(&policy, &input, &["127.0.0.1"]);
    assert_eq!(event, Some(Event::Closed(Close::Protected(P::Loopback))));
    assert_eq!(kept, 0);
    // The safe addresses are kept, the protected ones dropped.
    let (event, kept) = first_outcome(&policy, &input, &["169.254.169.254", "192.0.2.1"]);
    assert_eq!((event, kept), (Some(Event::Connect(None)), 1));
    // Needs resolution (CIDR rules first): rule 0 names 127.0.0.2, `0.0.0.0/0` names nothing.
    let input = socks5_connect(&name("other.test"), 80);
    let (event, _) = first_outcome(&policy, &input, &["127.0.0.2"]);
    assert_eq!(event, Some(Event::Connect(None)));
    let (event, _) = first_outcome(&policy, &input, &["::ffff:127.0.0.1"]);
    assert_eq!(event, Some(Event::Closed(Close::Protected(P::Loopback))));
}

#[test]
fn protected_destinations_are_off_by_default() {
    let policy = Policy::default();
    assert!(!policy.rules.protected.is_on());
    let (event, _) = first_outcome(&policy, &socks5_connect(&v4([127, 0, 0, 1]), 80), &[]);
    assert!(matches!(event, Some(Event::Connect(Some(_)))));
}

/// A SOCKS5 CONNECT to `host:80` up to its `Resolve` event, under `policy`.
fn resolving<'p>(policy: &Policy<'p>, host: &str) -> Session<64> {
    let now = Instant::from_millis(1_000);
    let mut s = Session::<64>::new(policy, CLIENT.parse().unwrap(), now);
    let input = socks5_connect(&name(host), 80);
    assert_eq!(s.handle_input(policy, &input, now), input.len());
    assert_eq!(s.poll_event(), Some(Event::Resolve));
    s
}

#[test]
fn address_family_orders_and_filters_resolved_names() {
    use socksgate_core::family::{AddressFamilies, AddressFamily};
    let resolved = ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"];
    for (family, want) in [
        (
            AddressFamily::PreferIpv6,
            &["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"][..],
        ),
        (
            AddressFamily::PreferIpv4,
            &["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"][..],
        ),
        (AddressFamily::Ipv4Only, &["192.0.2.1", "192.0.2.2"][..]),
        (AddressFamily::Ipv6Only, &["2001:db8::1", "2001:db8::2"][..]),
    ] {
        let policy = Policy {
            address_families: AddressFamilies::new(family),
            ..Policy::default()
        };
        let mut s = resolving(&policy, "both.example");
        assert_eq!(s.address_family(&policy), family);
        let mut ips: Vec<IpAddr> = resolved.iter().map(|a| a.parse().unwrap()).collect();
        let n = s.handle_resolved(&policy, &mut ips).unwrap();
        let want: Vec<IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(ips[..n], want[..], "{family}");
        assert_eq!(s.poll_event(), Some(Event::Connect(None)));
        // Happy Eyeballs drivers check address by address.
        let s = resolving(&policy, "both.example");
        for ip in resolved {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                s.check_resolved(&policy, ip).is_ok(),
                family.allows(ip),
                "{family} {ip}"
            );
        }
    }
    // A name with only IPv4 addresses under ipv6_only: REP 4, closed as "no address in the
    // family", whichever way the driver learns it.
    let policy = Policy {
        address_families: AddressFamilies::new(AddressFamily::Ipv6Only),
        ..Policy::default()
    };
    let mut s = resolving(&policy, "v4.example");
    let mut ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
    assert_eq!(s.handle_resolved(&policy, &mut ips).unwrap(), 0);
    let closed = Event::Closed(Close::Failed(Failure::NoAddressInFamily));
    assert_eq!(s.poll_event(), Some(closed));
    assert_eq!(s.reply(), Some(ReplyCode::HostUnreachable));
    let mut s = resolving(&policy, "v4.example");
    let refusal = s
        .check_resolved(&policy, "192.0.2.1".parse().unwrap())
        .unwrap_err();
    s.handle_denied(refusal).unwrap();
    assert_eq!(s.poll_event(), Some(closed));
    assert_eq!(s.reply(), Some(ReplyCode::HostUnreachable));
}

#[test]
fn address_family_of_the_deciding_rule() {
    use socksgate_core::family::{AddressFamilies, AddressFamily};
    // Rule 0 sends .v4.example over IPv4 only; rule 1 (decided per address, as rule 2 names
    // a network) over IPv6 only; the default prefers IPv4.
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| {
        vec![
            Rule::allow().dst(".v4.example".parse().unwrap()),
            Rule::deny().dst("10.0.0.0/8".parse().unwrap()),
            Rule::allow().dst("2001:db8::/32".parse().unwrap()),
        ]
    });
    let per_rule = [
        Some(AddressFamily::Ipv4Only),
        None,
        Some(AddressFamily::Ipv6Only),
    ];
    let policy = Policy {
        address_families: AddressFamilies::new(AddressFamily::PreferIpv4).with_rules(&per_rule),
        ..Policy::new(Authentication::default(), Rules::new(rules, Action::Allow))
    };
    let s = resolving(&policy, "www.v4.example");
    assert_eq!(s.address_family(&policy), AddressFamily::Ipv4Only);
    assert!(
        s.check_resolved(&policy, "2001:db8::1".parse().unwrap())
            .is_err()
    );
    assert!(
        s.check_resolved(&policy, "192.0.2.1".parse().unwrap())
            .is_ok()
    );
    // Undecided before resolving: resolved in the default family, each address then under
    // its own rule's family (rule 2: IPv6 only, which its own network is).
    let s = resolving(&policy, "other.example");
    assert_eq!(s.address_family(&policy), AddressFamily::PreferIpv4);
    assert!(
        s.check_resolved(&policy, "2001:db8::1".parse().unwrap())
            .is_ok()
    );
    assert!(
        s.check_resolved(&policy, "192.0.2.1".parse().unwrap())
            .is_ok()
    );
    assert!(
        s.check_resolved(&policy, "10.0.0.1".parse().unwrap())
            .is_err()
    );
    // An address given as such is taken whatever the family.
    let v6_only = Policy {
        address_families: AddressFamilies::new(AddressFamily::Ipv6Only),
        ..Policy::default()
    };
    let now = Instant::from_millis(1_000);
    let mut s = Session::<64>::new(&v6_only, CLIENT.parse().unwrap(), now);
    let input = socks5_connect(&[1, 192, 0, 2, 1], 80);
    s.handle_input(&v6_only, &input, now);
    assert_eq!(
        s.poll_event(),
        Some(Event::Connect(Some("192.0.2.1:80".parse().unwrap())))
    );
}

/// A policy that requires passwords and allows only user "alice".
fn alice_only() -> Policy<'static> {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    let rules = RULES.get_or_init(|| {
        vec![Rule::allow().user("alice".parse::<socksgate_core::rules::UserName>().unwrap())]
    });
    Policy::new(Authentication::PASSWORD, Rules::new(rules, Action::Deny))
}

#[test]
fn transport_authenticated_user_needs_no_password_and_counts_for_the_rules() {
    let policy = alice_only();
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.with_authenticated_user(b"alice").unwrap();
    assert_eq!(s.user(), Some(&b"alice"[..]));
    // SOCKS5 offering only "no authentication": accepted, no credentials asked for.
    s.handle_input(&policy, &socks5_connect(&[1, 192, 0, 2, 1], 80), now);
    assert_eq!(
        s.poll_event(),
        Some(Event::Connect(Some("192.0.2.1:80".parse().unwrap())))
    );
    assert_eq!(&s.pending_transmit()[..2], [5, 0]);
    assert_eq!(s.user(), Some(&b"alice"[..]));
}

#[test]
fn transport_authenticated_user_is_held_to_the_rules() {
    let policy = alice_only();
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.with_authenticated_user(b"bob").unwrap();
    s.handle_input(&policy, &socks5_connect(&[1, 192, 0, 2, 1], 80), now);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Closed(Close::Denied(_)))
    ));
    assert_eq!(s.reply(), Some(ReplyCode::NotAllowed));
}

#[test]
fn transport_authenticated_user_may_speak_socks4() {
    let policy = alice_only();
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.with_authenticated_user(b"alice").unwrap();
    // SOCKS4 CONNECT 192.0.2.1:80, USERID "x".
    s.handle_input(&policy, &[4, 1, 0, 80, 192, 0, 2, 1, b'x', 0], now);
    assert_eq!(
        s.poll_event(),
        Some(Event::Connect(Some("192.0.2.1:80".parse().unwrap())))
    );
    assert_eq!(s.user(), Some(&b"alice"[..]));
}

#[test]
fn transport_authentication_only_before_input_and_reset_forgets_it() {
    let policy = alice_only();
    let now = Instant::from_millis(0);
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    s.handle_input(&policy, &[5, 1], now);
    assert!(s.with_authenticated_user(b"alice").is_err());
    let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
    assert!(s.with_authenticated_user(&[b'a'; 256]).is_err());
    s.with_authenticated_user(b"alice").unwrap();
    assert!(s.with_authenticated_user(b"alice").is_err(), "once only");
    s.reset(&policy, CLIENT.parse().unwrap(), now);
    assert_eq!(s.user(), None);
    // Back to the policy: a password is required again.
    s.handle_input(&policy, &[5, 1, 0], now);
    assert!(matches!(s.poll_event(), Some(Event::Closed(_))));
}

// ---- GSS-API (RFC 1961) ----------------------------------------------------------------------

/// A stand-in for a GSS-API mechanism, enough to tell wrapped from unwrapped and to fail an
/// integrity check: `wrap(data)` is `5A data sum`, `unwrap` checks both.
mod toy {
    pub(crate) fn wrap(data: &[u8]) -> Vec<u8> {
        let sum = data.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        let mut v = vec![0x5a];
        v.extend_from_slice(data);
        v.push(sum);
        v
    }

    pub(crate) fn unwrap(token: &[u8]) -> Option<Vec<u8>> {
        let (&marker, rest) = token.split_first()?;
        let (&sum, data) = rest.split_last()?;
        (marker == 0x5a && data.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == sum)
            .then(|| data.to_vec())
    }

    /// A §5 message: header and wrapped token.
    pub(crate) fn encapsulate(data: &[u8]) -> Vec<u8> {
        let token = wrap(data);
        let mut v = socksgate_core::gssapi::encapsulation_header(token.len())
            .unwrap()
            .to_vec();
        v.extend_from_slice(&token);
        v
    }

    /// An RFC 1961 message.
    pub(crate) fn message(kind: u8, token: &[u8]) -> Vec<u8> {
        let mut v = vec![1, kind];
        v.extend_from_slice(&u16::try_from(token.len()).unwrap().to_be_bytes());
        v.extend_from_slice(token);
        v
    }
}

/// How the test's driver runs its side of GSS-API.
#[derive(Clone, Copy, Debug)]
struct Mech {
    /// Context tokens answered with "continue" before the context is established.
    rounds: usize,
    /// Length of each output token.
    out_len: usize,
    principal: &'static [u8],
    /// The accept step that fails (1-based), if any.
    fail_at: Option<usize>,
}

const ALICE: Mech = Mech {
    rounds: 0,
    out_len: 96,
    principal: b"alice@EXAMPLE.ORG",
    fail_at: None,
};

#[derive(Debug, PartialEq, Eq)]
struct GssRun {
    events: Vec<Event>,
    /// The client's tokens as the driver reassembled them.
    tokens: Vec<Vec<u8>>,
    /// Everything sent, wrapped where protection applies.
    output: Vec<u8>,
    user: Option<Vec<u8>>,
    protection: Option<socksgate_core::wire::gssapi::ProtectionLevel>,
    /// After the handshake: the client's first plaintext.
    payload: Vec<u8>,
}

/// Drives a session through GSS-API over the client's `input` (read `chunk` octets at a
/// time), answering with `mech` and the toy wrap, decapsulating after the negotiation, and
/// connecting every CONNECT.
fn drive_gss(policy: &Policy<'_>, input: &[u8], chunk: usize, mech: Mech) -> GssRun {
    use socksgate_core::gssapi::Decapsulator;
    let mut now = Instant::from_millis(0);
    let mut s = Session::<64>::new(policy, CLIENT.parse().unwrap(), now);
    let mut run = GssRun {
        events: vec![],
        tokens: vec![],
        output: vec![],
        user: None,
        protection: None,
        payload: vec![],
    };
    let (mut token, mut wrapped, mut plain) = (vec![], vec![], vec![]);
    let mut decoder: Option<Decapsulator> = None;
    let mut accepts = 0;
    let mut rest = input;
    let decode =
        |d: &mut Decapsulator, mut raw: &[u8], wrapped: &mut Vec<u8>, plain: &mut Vec<u8>| {
            while !raw.is_empty() {
                let (n, piece) = d.decode(raw).expect("a well-formed §5 stream");
                raw = &raw[n..];
                if let Some(p) = piece {
                    wrapped.extend_from_slice(p.bytes);
                    if p.last {
                        plain.extend(toy::unwrap(&std::mem::take(wrapped)).expect("intact"));
                    }
                }
            }
        };
    let flush = |s: &mut Session<64>, out: &mut Vec<u8>, protected: bool| {
        let pending = s.pending_transmit().to_vec();
        s.consume_transmit(pending.len());
        if protected && !pending.is_empty() {
            out.extend(toy::encapsulate(&pending));
        } else {
            out.extend(pending);
        }
    };
    for _ in 0..100_000 {
        while let Some(event) = s.poll_event() {
            match event {
                Event::GssapiPiece => {
                    token.extend_from_slice(s.gssapi_token_piece().unwrap());
                    continue;
                }
                Event::GssapiAccept => {
                    token.extend_from_slice(s.gssapi_token_piece().unwrap());
                    run.tokens.push(std::mem::take(&mut token));
                    accepts += 1;
                    let owed = vec![0xb0; mech.out_len];
                    if mech.fail_at == Some(accepts) {
                        s.handle_gssapi_failed().unwrap();
                    } else if accepts <= mech.rounds {
                        s.send_gssapi_token(owed.len()).unwrap();
                    } else {
                        s.handle_gssapi_established(mech.principal, owed.len())
                            .unwrap();
                    }
                    flush(&mut s, &mut run.output, false);
                    if !s.is_closed() {
                        run.output.extend(owed);
                        s.handle_gssapi_sent(policy, now).unwrap();
                    }
                }
                Event::GssapiUnwrapProtection => {
                    token.extend_from_slice(s.gssapi_token_piece().unwrap());
                    let t = std::mem::take(&mut token);
                    run.tokens.push(t.clone());
                    match toy::unwrap(&t) {
                        None => s.handle_gssapi_failed().unwrap(),
                        Some(level) => {
                            if let Some(granted) = s.handle_gssapi_protection(&level).unwrap() {
                                let w = toy::wrap(&[granted.into()]);
                                s.send_gssapi_protection(w.len()).unwrap();
                                flush(&mut s, &mut run.output, false);
                                run.output.extend(w);
                                s.handle_gssapi_sent(policy, now).unwrap();
                            }
                        }
                    }
                }
                Event::GssapiProtected(level) => {
                    assert!(level.encapsulates());
                    // The last unprotected output, then §5 both ways.
                    flush(&mut s, &mut run.output, false);
                    let raw = s.take_encapsulated_input().to_vec();
                    let mut d = Decapsulator::new();
                    decode(&mut d, &raw, &mut wrapped, &mut plain);
                    decoder = Some(d);
                }
                Event::Connect(_) => s
                    .handle_opened(policy, BOUND.parse().unwrap(), now)
                    .unwrap(),
                Event::Established | Event::Closed(_) => {}
                other => panic!("unexpected {other:?}"),
            }
            run.events.push(event);
        }
        flush(&mut s, &mut run.output, decoder.is_some());
        if s.is_established() || s.is_closed() {
            break;
        }
        match decoder.as_mut() {
            Some(d) if plain.is_empty() => {
                if rest.is_empty() {
                    break;
                }
                let n = chunk.min(rest.len());
                decode(d, &rest[..n], &mut wrapped, &mut plain);
                rest = &rest[n..];
            }
            Some(_) => {
                let n = s.handle_input(policy, &plain[..chunk.min(plain.len())], now);
                plain.drain(..n);
            }
            None => {
                if rest.is_empty() {
                    // The client stopped: let the handshake deadline pass.
                    now = now + Duration::from_secs(60);
                    s.handle_timeout(now);
                    continue;
                }
                let n = s.handle_input(policy, &rest[..chunk.min(rest.len())], now);
                rest = &rest[n..];
            }
        }
    }
    run.user = s.user().map(<[u8]>::to_vec);
    run.protection = s.gssapi_protection();
    run.payload = s.payload().to_vec();
    if let Some(d) = decoder.as_mut() {
        decode(d, rest, &mut wrapped, &mut plain);
    }
    run.payload.extend(plain);
    run
}

/// Runs `input` whole and in chunks of 1, 3 and 100 octets: every run must be the same.
fn gss_runs(policy: &Policy<'_>, input: &[u8], mech: Mech) -> GssRun {
    let whole = drive_gss(policy, input, usize::MAX, mech);
    for chunk in [1, 3, 100] {
        assert_eq!(
            drive_gss(policy, input, chunk, mech),
            whole,
            "chunks of {chunk}"
        );
    }
    whole
}

fn gss_policy(
    levels: socksgate_core::policy::ProtectionLevels,
    accept_nec: bool,
) -> Policy<'static> {
    Policy {
        gssapi: socksgate_core::policy::GssapiPolicy {
            protection: levels,
            accept_nec,
            ..socksgate_core::policy::GssapiPolicy::DEFAULT
        },
        ..Policy::new(
            Authentication::Required {
                password: false,
                gssapi: true,
            },
            Rules::new(&[], Action::Allow),
        )
    }
}

const CONNECT_REQ: [u8; 10] = [5, 1, 0, 1, 192, 0, 2, 1, 0, 80];

/// The reply a CONNECT gets (BND = [`BOUND`]).
fn connect_reply() -> Vec<u8> {
    vec![5, 0, 0, 1, 198, 51, 100, 1, 0x15, 0xb3]
}

#[test]
fn gssapi_protected_form_with_long_tokens_encapsulates_request_reply_and_payload() {
    use socksgate_core::policy::ProtectionLevels;
    use socksgate_core::wire::gssapi::ProtectionLevel;
    let policy = gss_policy(ProtectionLevels::ALL, false);
    let first: Vec<u8> = (0..12_000u32).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..65_535u32).map(|i| (i % 241) as u8).collect();
    for (asked, granted) in [
        (ProtectionLevel::Integrity, ProtectionLevel::Integrity),
        (
            ProtectionLevel::Confidentiality,
            ProtectionLevel::Confidentiality,
        ),
        (ProtectionLevel::Selective, ProtectionLevel::Confidentiality),
    ] {
        let mut input = vec![5, 1, 1];
        input.extend(toy::message(1, &first));
        input.extend(toy::message(1, &second));
        input.extend(toy::message(2, &toy::wrap(&[asked.into()])));
        // The request and the first payload in one wrapped token, more payload in another.
        let mut req = CONNECT_REQ.to_vec();
        req.extend_from_slice(b"GET /");
        input.extend(toy::encapsulate(&req));
        input.extend(toy::encapsulate(b" HTTP/1.0"));
        let mech = Mech { rounds: 1, ..ALICE };
        let run = gss_runs(&policy, &input, mech);
        assert_eq!(
            run.tokens,
            [first.clone(), second.clone(), toy::wrap(&[asked.into()])]
        );
        assert_eq!(run.user.as_deref(), Some(&b"alice@EXAMPLE.ORG"[..]));
        assert_eq!(run.protection, Some(granted));
        assert_eq!(
            run.events,
            [
                Event::GssapiAccept,
                Event::GssapiAccept,
                Event::GssapiUnwrapProtection,
                Event::GssapiProtected(granted),
                Event::Connect(Some("192.0.2.1:80".parse().unwrap())),
                Event::Established,
            ]
        );
        let mut want = vec![5, 1];
        for _ in 0..2 {
            want.extend_from_slice(&[1, 1, 0, 96]);
            want.extend([0xb0; 96]);
        }
        let w = toy::wrap(&[granted.into()]);
        want.extend(toy::message(2, &w));
        want.extend(toy::encapsulate(&connect_reply()));
        assert_eq!(run.output, want, "{asked}");
        assert_eq!(run.payload, b"GET / HTTP/1.0");
    }
}

#[test]
fn gssapi_levels_granted_in_both_forms() {
    use socksgate_core::policy::ProtectionLevels;
    use socksgate_core::wire::gssapi::ProtectionLevel::{self, Confidentiality, Integrity};
    let none = ProtectionLevel::None;
    let integrity_only = ProtectionLevels::only(Integrity);
    let strong = ProtectionLevels {
        none: false,
        ..ProtectionLevels::ALL
    };
    for (levels, asked, granted) in [
        (ProtectionLevels::ALL, none, Some(none)),
        (ProtectionLevels::ALL, Integrity, Some(Integrity)),
        (ProtectionLevels::only(none), Confidentiality, Some(none)),
        (integrity_only, Confidentiality, Some(Integrity)),
        (integrity_only, none, None),
        (strong, none, None),
    ] {
        for nec in [false, true] {
            let policy = gss_policy(levels, true);
            let mut input = vec![5, 1, 1];
            input.extend(toy::message(1, b"ticket"));
            let protection = if nec {
                vec![u8::from(asked)]
            } else {
                toy::wrap(&[asked.into()])
            };
            input.extend(toy::message(2, &protection));
            let request = match granted {
                Some(level) if level.encapsulates() => toy::encapsulate(&CONNECT_REQ),
                _ => CONNECT_REQ.to_vec(),
            };
            input.extend(&request);
            let run = gss_runs(&policy, &input, ALICE);
            let what = format!("{levels:?} asked {asked} nec {nec}");
            assert_eq!(run.protection, granted, "{what}");
            let mut want = vec![5, 1, 1, 1, 0, 96];
            want.extend([0xb0; 96]);
            match granted {
                None => {
                    let refused = Event::Closed(Close::Gssapi(
                        socksgate_core::gssapi::GssapiError::ProtectionRefused(asked),
                    ));
                    assert_eq!(run.events.last(), Some(&refused), "{what}");
                    want.extend([1, 0xff]);
                }
                Some(level) => {
                    assert_eq!(run.events.last(), Some(&Event::Established), "{what}");
                    let answer = if nec {
                        vec![u8::from(level)]
                    } else {
                        toy::wrap(&[level.into()])
                    };
                    want.extend(toy::message(2, &answer));
                    if level.encapsulates() {
                        want.extend(toy::encapsulate(&connect_reply()));
                    } else {
                        want.extend(connect_reply());
                    }
                }
            }
            assert_eq!(run.output, want, "{what}");
        }
    }
}

#[test]
fn gssapi_failures_abort_and_close_with_the_cause() {
    use socksgate_core::gssapi::GssapiError;
    use socksgate_core::policy::ProtectionLevels;
    use socksgate_core::wire::WireError;
    use socksgate_core::wire::gssapi::GssapiMessageType;
    let policy = gss_policy(ProtectionLevels::ALL, false);
    let greeting_and_token = |token: &[u8]| {
        let mut v = vec![5, 1, 1];
        v.extend(toy::message(1, token));
        v
    };
    let established = |tail: &[u8]| {
        let mut v = greeting_and_token(b"ticket");
        v.extend_from_slice(tail);
        v
    };
    let sent_token = {
        let mut v = vec![5, 1, 1, 1, 0, 96];
        v.extend([0xb0; 96]);
        v
    };
    let with_abort = |v: &[u8]| {
        let mut v = v.to_vec();
        v.extend([1, 0xff]);
        v
    };
    /// What, the client's bytes, the driver, the close, the bytes sent.
    type Case = (&'static str, Vec<u8>, Mech, Close, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "the driver's accept fails",
            greeting_and_token(b"forged"),
            Mech {
                fail_at: Some(1),
                ..ALICE
            },
            Close::Gssapi(GssapiError::Failed),
            vec![5, 1, 1, 0xff],
        ),
        (
            "the client aborts",
            vec![5, 1, 1, 1, 0xff],
            ALICE,
            Close::Gssapi(GssapiError::Aborted),
            vec![5, 1],
        ),
        (
            "wrong version",
            vec![5, 1, 1, 2, 1, 0, 0],
            ALICE,
            Close::Gssapi(GssapiError::Malformed(WireError::BadVersion(2))),
            vec![5, 1, 1, 0xff],
        ),
        (
            "an encapsulated message during context establishment",
            vec![5, 1, 1, 1, 3, 0, 1, 9],
            ALICE,
            Close::Gssapi(GssapiError::UnexpectedMessage(
                GssapiMessageType::Encapsulated,
            )),
            vec![5, 1, 1, 0xff],
        ),
        (
            "a principal longer than 255 octets",
            greeting_and_token(b"ticket"),
            Mech {
                principal: &[b'p'; 256],
                ..ALICE
            },
            Close::Gssapi(GssapiError::PrincipalTooLong),
            vec![5, 1, 1, 0xff],
        ),
        (
            "a context token where the level belongs",
            established(&toy::message(1, b"again")),
            ALICE,
            Close::Gssapi(GssapiError::UnexpectedMessage(GssapiMessageType::Context)),
            with_abort(&sent_token),
        ),
        (
            "the NEC form, not accepted",
            established(&[1, 2, 0, 1, 2]),
            ALICE,
            Close::Gssapi(GssapiError::NecRefused),
            with_abort(&sent_token),
        ),
        (
            "a level message that fails its integrity check",
            established(&toy::message(2, &[0x5a, 2, 9])),
            ALICE,
            Close::Gssapi(GssapiError::Failed),
            with_abort(&sent_token),
        ),
        (
            "a level message of two octets",
            established(&toy::message(2, &toy::wrap(&[2, 2]))),
            ALICE,
            Close::Gssapi(GssapiError::BadProtectionMessage),
            with_abort(&sent_token),
        ),
        (
            "an unknown level",
            established(&toy::message(2, &toy::wrap(&[7]))),
            ALICE,
            Close::Gssapi(GssapiError::UnknownProtectionLevel(7)),
            with_abort(&sent_token),
        ),
        (
            "a token cut short (the client stops sending)",
            greeting_and_token(&[0xaa; 12_000])[..5_000].to_vec(),
            ALICE,
            Close::HandshakeTimeout,
            vec![5, 1],
        ),
        (
            "the largest length, with nothing after the header",
            vec![5, 1, 1, 1, 1, 0xff, 0xff],
            ALICE,
            Close::HandshakeTimeout,
            vec![5, 1],
        ),
    ];
    for (what, input, mech, close, output) in cases {
        let run = gss_runs(&policy, &input, mech);
        assert_eq!(run.events.last(), Some(&Event::Closed(close)), "{what}");
        assert_eq!(run.output, output, "{what}");
        // The principal stays the user once the context is established, for the records.
        assert_eq!(
            run.user.is_some(),
            output.starts_with(&sent_token),
            "{what}"
        );
        assert!(!close.to_string().is_empty());
    }
}

#[test]
fn gssapi_method_choice_follows_the_policy() {
    use socksgate_core::policy::{GssapiPolicy, MethodPreference};
    let both = Authentication::Required {
        password: true,
        gssapi: true,
    };
    let now = Instant::from_millis(0);
    for (authentication, prefer, offer, chosen) in [
        (both, MethodPreference::Gssapi, &[2u8, 1][..], 1u8),
        (both, MethodPreference::Password, &[1, 2][..], 2),
        (both, MethodPreference::Password, &[1][..], 1),
        (
            Authentication::PASSWORD,
            MethodPreference::Gssapi,
            &[1, 2][..],
            2,
        ),
        (
            Authentication::PASSWORD,
            MethodPreference::Gssapi,
            &[1][..],
            0xff,
        ),
    ] {
        let policy = Policy {
            gssapi: GssapiPolicy {
                prefer,
                ..GssapiPolicy::DEFAULT
            },
            ..Policy::new(authentication, Rules::new(&[], Action::Allow))
        };
        let mut s = Session::<64>::new(&policy, CLIENT.parse().unwrap(), now);
        let mut greeting = vec![5, offer.len() as u8];
        greeting.extend_from_slice(offer);
        s.handle_input(&policy, &greeting, now);
        assert_eq!(s.pending_transmit(), [5, chosen], "{prefer:?} {offer:?}");
    }
}
