//! The conformance table (`conformance/cases.rs`) against the core session, in memory: the
//! driver below plays the network (an echo server, a closed port, an address that never
//! answers, a resolver) and the clock.

#[path = "conformance/cases.rs"]
mod cases;

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use cases::{CASES, Case, ECHO_NAME, PASSWORD, RuleSpec, USER, World};
use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_core::session::{Event, Session};
use socksgate_core::{Authentication, Failure, Instant, Policy};

fn world() -> World {
    World {
        echo: "192.0.2.7:7".parse().unwrap(),
        echo_net: "192.0.2.0/24",
        closed: "192.0.2.7:9".parse().unwrap(),
        blackhole: "192.0.2.99:7".parse().unwrap(),
    }
}

fn rules(case: &Case, world: &World) -> Vec<Rule> {
    case.rules
        .iter()
        .map(|spec| match spec {
            RuleSpec::DenyEchoNet => Rule::deny().dst(world.echo_net.parse().unwrap()),
            RuleSpec::DenyEchoName => Rule::deny().dst(ECHO_NAME.parse().unwrap()),
        })
        .collect()
}

/// What connecting to `addr` does in the simulated world: `None` never answers.
fn connect(world: &World, addr: SocketAddr) -> Option<Result<SocketAddr, Failure>> {
    if addr == world.echo {
        Some(Ok("198.51.100.254:40000".parse().unwrap()))
    } else if addr == world.blackhole {
        None
    } else {
        Some(Err(Failure::Refused))
    }
}

/// Runs one case with the client's bytes fed `chunk` at a time; returns what the client
/// received before the session ended.
fn run(case: &Case, chunk: usize) -> Vec<u8> {
    let world = world();
    let rules = rules(case, &world);
    let authentication = if case.users {
        Authentication::PASSWORD
    } else {
        Authentication::None { socks4: true }
    };
    let policy = Policy::new(authentication, Rules::new(&rules, Action::Allow));
    let mut now = Instant::from_millis(0);
    let mut s = Session::<512>::new(&policy, "198.51.100.1:50000".parse().unwrap(), now);
    let input = case.client_bytes(&world);
    let mut pending = input.as_slice();
    let mut received = Vec::new();
    let mut resolved: Vec<IpAddr> = Vec::new();
    let mut kept = 0;
    loop {
        while let Some(event) = s.poll_event() {
            match event {
                Event::Authenticate => {
                    let ok = s.credentials() == Some((USER.as_bytes(), PASSWORD.as_bytes()));
                    s.handle_auth(&policy, ok, now).unwrap();
                }
                Event::Resolve => {
                    let name = s.destination().unwrap().to_string();
                    resolved = if name.starts_with(ECHO_NAME) {
                        vec![world.echo.ip()]
                    } else {
                        Vec::new()
                    };
                    kept = s.handle_resolved(&policy, &mut resolved).unwrap();
                }
                Event::Connect(addr) => {
                    let port = s.destination().unwrap().port();
                    let addr = addr.unwrap_or_else(|| SocketAddr::new(resolved[..kept][0], port));
                    match connect(&world, addr) {
                        Some(Ok(bound)) => s.handle_opened(&policy, bound, now).unwrap(),
                        Some(Err(failure)) => s.handle_failure(failure).unwrap(),
                        None => {
                            now = s.poll_timeout().unwrap();
                            s.handle_timeout(now);
                        }
                    }
                }
                Event::Established => panic!("{}: established", case.name),
                Event::Closed(_) => {
                    received.extend_from_slice(s.pending_transmit());
                    return received;
                }
                other => panic!("{}: unexpected {other:?}", case.name),
            }
        }
        received.extend_from_slice(s.pending_transmit());
        let n = s.pending_transmit().len();
        s.consume_transmit(n);
        if pending.is_empty() {
            // The client waits: only the clock moves.
            now = now + Duration::from_secs(1);
            s.handle_timeout(now);
            assert!(
                now < Instant::from_millis(60_000),
                "{}: never ended",
                case.name
            );
            continue;
        }
        let take = chunk.min(pending.len());
        let took = s.handle_input(&policy, &pending[..take], now);
        pending = &pending[took..];
    }
}

#[test]
fn core_session_decides_every_case() {
    for case in CASES {
        for chunk in [usize::MAX, 1] {
            let received = run(case, chunk);
            if let Err(e) = case.check(&received) {
                panic!("{e} (chunk {chunk})");
            }
        }
    }
}
