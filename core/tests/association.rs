//! Which UDP datagrams an association relays.

use core::net::SocketAddr;
use core::time::Duration;

use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_core::udp::{Association, Dropped, Outbound, PeerList};
use socksgate_core::wire::udp::encapsulate;
use socksgate_core::{Addr, Domain, Instant};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn datagram(dst: Addr<'_>, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 300 + data.len()];
    let n = encapsulate(dst, data, &mut out).unwrap();
    out.truncate(n);
    out
}

type Assoc = Association<PeerList<4>, 1024>;

fn assoc(requested: &str) -> Assoc {
    Association::new(
        sa("192.0.2.10:1").ip(),
        Addr::Ip(sa(requested)),
        None,
        PeerList::new(),
        Duration::from_secs(60),
        Instant::from_millis(0),
    )
}

#[test]
fn replies_only_from_contacted_destinations() {
    let open = Rules::new(&[], Action::Allow);
    let now = Instant::from_millis(1);
    let mut a = assoc("0.0.0.0:0");
    let mut out = [0u8; 512];
    // Before the client has sent anything, nothing reaches it.
    assert_eq!(
        a.handle_remote_datagram(sa("192.0.2.7:53"), b"x", &mut out, now),
        Err(Dropped::NotContacted)
    );
    let d = datagram(Addr::Ip(sa("192.0.2.7:53")), b"query");
    match a.handle_client_datagram(&open, sa("192.0.2.10:5000"), &d, now) {
        Ok(Outbound::Send { to, data }) => {
            assert_eq!((to, data), (sa("192.0.2.7:53"), &b"query"[..]));
        }
        other => panic!("{other:?}"),
    }
    // The contacted destination's reply goes to the latched client port.
    let (to, n) = a
        .handle_remote_datagram(sa("192.0.2.7:53"), b"answer", &mut out, now)
        .unwrap();
    assert_eq!(to, sa("192.0.2.10:5000"));
    assert_eq!(
        &out[..n],
        &datagram(Addr::Ip(sa("192.0.2.7:53")), b"answer")[..]
    );
    // Another port of the same host, or another host: dropped.
    for stranger in ["192.0.2.7:54", "192.0.2.8:53"] {
        assert_eq!(
            a.handle_remote_datagram(sa(stranger), b"inject", &mut out, now),
            Err(Dropped::NotContacted),
            "{stranger}"
        );
    }
}

#[test]
fn only_the_client_may_send() {
    let open = Rules::new(&[], Action::Allow);
    let now = Instant::from_millis(1);
    let d = datagram(Addr::Ip(sa("192.0.2.7:53")), b"q");
    // Announced port: only that one.
    let mut a = assoc("192.0.2.10:6000");
    for src in ["192.0.2.11:6000", "192.0.2.10:6001"] {
        assert!(matches!(
            a.handle_client_datagram(&open, sa(src), &d, now),
            Err(Dropped::Stranger)
        ));
    }
    assert!(
        a.handle_client_datagram(&open, sa("192.0.2.10:6000"), &d, now)
            .is_ok()
    );
    // Latched port: the first datagram's, then no other.
    let mut a = assoc("0.0.0.0:0");
    assert!(
        a.handle_client_datagram(&open, sa("192.0.2.10:7000"), &d, now)
            .is_ok()
    );
    assert!(matches!(
        a.handle_client_datagram(&open, sa("192.0.2.10:7001"), &d, now),
        Err(Dropped::Stranger)
    ));
}

#[test]
fn rules_apply_per_datagram_before_and_after_resolving() {
    let rules = [
        Rule::deny().dst(".blocked.example".parse().unwrap()),
        Rule::deny().dst("10.0.0.0/8".parse().unwrap()),
    ];
    let rules = Rules::new(&rules, Action::Allow);
    let now = Instant::from_millis(1);
    let client = sa("192.0.2.10:7000");
    let mut a = assoc("0.0.0.0:0");
    let denied = datagram(Addr::Ip(sa("10.1.1.1:53")), b"q");
    assert!(matches!(
        a.handle_client_datagram(&rules, client, &denied, now),
        Err(Dropped::Denied(_))
    ));
    let blocked = datagram(
        Addr::Domain(Domain::new(b"a.blocked.example").unwrap(), 53),
        b"q",
    );
    assert!(matches!(
        a.handle_client_datagram(&rules, client, &blocked, now),
        Err(Dropped::Denied(_))
    ));
    let named = datagram(Addr::Domain(Domain::new(b"dns.example").unwrap(), 53), b"q");
    match a.handle_client_datagram(&rules, client, &named, now) {
        Ok(Outbound::Resolve(pending)) => {
            assert_eq!(pending.name().as_bytes(), b"dns.example");
            assert!(matches!(
                pending.resolved(&rules, "10.2.2.2".parse().unwrap()),
                Err(Dropped::Denied(_))
            ));
        }
        other => panic!("{other:?}"),
    }
    let Ok(Outbound::Resolve(pending)) = a.handle_client_datagram(&rules, client, &named, now)
    else {
        panic!()
    };
    assert_eq!(
        pending
            .resolved(&rules, "192.0.2.53".parse().unwrap())
            .unwrap(),
        (sa("192.0.2.53:53"), &b"q"[..])
    );
}

#[test]
fn idle_deadline() {
    let mut a = assoc("0.0.0.0:0");
    assert_eq!(a.poll_timeout(), Some(Instant::from_millis(60_000)));
    assert!(!a.handle_timeout(Instant::from_millis(59_999)));
    assert!(a.handle_timeout(Instant::from_millis(60_000)));
}

#[test]
fn protected_destinations_apply_per_datagram() {
    use socksgate_core::rules::{ProtectedDestinations, Protection};
    let named = [Rule::allow().dst("127.0.0.53/32".parse().unwrap())];
    let rules = Rules::new(&named, Action::Allow).with_protected(ProtectedDestinations::on(&[]));
    let now = Instant::from_millis(1);
    let client = sa("192.0.2.10:7000");
    let mut a = assoc("0.0.0.0:0");
    let metadata = datagram(Addr::Ip(sa("169.254.169.254:80")), b"q");
    assert_eq!(
        a.handle_client_datagram(&rules, client, &metadata, now)
            .err(),
        Some(Dropped::Protected(Protection::LinkLocal))
    );
    // Named by rule 0.
    let resolver = datagram(Addr::Ip(sa("127.0.0.53:53")), b"q");
    assert!(matches!(
        a.handle_client_datagram(&rules, client, &resolver, now),
        Ok(Outbound::Send { .. })
    ));
    // A name resolving to loopback.
    let host = datagram(Addr::Domain(Domain::new(b"local.test").unwrap(), 53), b"q");
    let Ok(Outbound::Resolve(pending)) = a.handle_client_datagram(&rules, client, &host, now)
    else {
        panic!()
    };
    assert_eq!(
        pending.resolved(&rules, "127.0.0.1".parse().unwrap()).err(),
        Some(Dropped::Protected(Protection::Loopback))
    );
    // Nothing was contacted by the refused datagrams.
    let mut out = [0u8; 64];
    assert_eq!(
        a.handle_remote_datagram(sa("169.254.169.254:80"), b"x", &mut out, now),
        Err(Dropped::NotContacted)
    );
}
