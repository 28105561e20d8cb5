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
        s.handle_gssapi_established(&policy, principal, 1, now)
            .unwrap();
        assert_eq!(s.user(), Some(principal));
        assert_eq!(s.pending_transmit(), [5, 1, 1, 1, 0, 1]);
        s.consume_transmit(6);
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
