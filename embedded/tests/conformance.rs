//! The conformance table (`core/tests/conformance/cases.rs`) against the embedded gateway on
//! its host test stacks (`common`): a gateway per case, configured with the case's users and
//! rules, and one scripted client on the peer stack.
//!
//! The world: the peer's TCP echo server (10.0.0.2:7, `echo.test` in the peer's DNS server);
//! a port of the peer where nothing listens (smoltcp answers the SYN with a reset); an
//! address on the link that no stack owns (10.0.0.3: with `HardwareAddress::Ip` there is no
//! ARP, the SYN is simply never answered, so the core's connect deadline decides).

#[path = "../../core/tests/conformance/cases.rs"]
mod cases;
mod common;

use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};

use cases::{CASES, Case, ECHO_NAME, PASSWORD, RuleSpec, USER, World};
use common::{Client, ECHO_PORT, PEER_IP, SOCKS_PORT, run};
use embassy_time::{Duration, with_timeout};
use socksgate_core::policy::Timeouts;
use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_embedded::{GatewayConfig, User};

/// The one user a case with users configures.
static USERS: [User; 1] = [User {
    name: USER,
    password: PASSWORD,
}];

/// A port of the peer where nothing listens.
const CLOSED_PORT: u16 = 9;

/// Short, so the stalled and the blackholed cases end quickly; the other cases need a few
/// in-memory round trips (2 s like `gateway.rs`'s, for loaded CI machines).
const HANDSHAKE: core::time::Duration = core::time::Duration::from_secs(2);
/// From the request to the upstream connection: one DNS exchange and a SYN at most.
const CONNECT: core::time::Duration = core::time::Duration::from_secs(1);

/// How long the client waits for the gateway to close (well inside `run`'s 20 s bound).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

fn world() -> World {
    let peer = IpAddr::V4(PEER_IP);
    World {
        echo: SocketAddr::new(peer, ECHO_PORT),
        // The client is 10.0.0.2 too; the cases' rules are on destinations only.
        echo_net: "10.0.0.2/32",
        closed: SocketAddr::new(peer, CLOSED_PORT),
        blackhole: "10.0.0.3:7".parse().unwrap(),
    }
}

/// The gateway configuration `case` implies (leaked: built at run time, needed `'static`).
fn config(case: &Case, world: &World) -> &'static GatewayConfig {
    let rules: Vec<Rule> = case
        .rules
        .iter()
        .map(|spec| match spec {
            RuleSpec::DenyEchoNet => Rule::deny().dst(world.echo_net.parse().unwrap()),
            RuleSpec::DenyEchoName => Rule::deny().dst(ECHO_NAME.parse().unwrap()),
        })
        .collect();
    let users: &'static [User] = if case.users { &USERS } else { &[] };
    Box::leak(Box::new(
        GatewayConfig::new(SOCKS_PORT, users)
            .with_rules(Rules::new(Vec::leak(rules), Action::Allow))
            .with_timeouts(Timeouts {
                handshake: HANDSHAKE,
                connect: CONNECT,
                ..Timeouts::DEFAULT
            })
            .with_close_timeout(Duration::from_secs(1)),
    ))
}

/// Everything the client receives until the gateway closes in order (FIN); a reset or no
/// close within [`CLOSE_WAIT`] is an error.
async fn receive_until_closed(client: &mut Client) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    let read_all = async {
        loop {
            match client.socket.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("{e:?} instead of an orderly close")),
            }
        }
    };
    match with_timeout(CLOSE_WAIT, read_all).await {
        Ok(Ok(())) => Ok(received),
        Ok(Err(e)) => Err(format!("{e} after {received:?}")),
        Err(_) => Err(format!(
            "the gateway did not close within {CLOSE_WAIT:?}; got {received:?}"
        )),
    }
}

/// Runs `case` against a fresh gateway; `Err` says how the gateway decided otherwise.
fn run_case(case: &Case, world: &World) -> Result<(), String> {
    let outcome = RefCell::new(Err(format!("{}: the scenario did not finish", case.name)));
    let slot = &outcome;
    run(config(case, world), |stack| async move {
        let mut client = Client::connect(stack).await;
        client.send(&case.client_bytes(world)).await;
        let result = match receive_until_closed(&mut client).await {
            Ok(received) => case.check(&received),
            Err(e) => Err(format!("{}: {e}", case.name)),
        };
        if result.is_ok() {
            client.close().await;
        }
        *slot.borrow_mut() = result;
    });
    outcome.into_inner()
}

#[test]
fn embedded_gateway_decides_every_case() {
    let world = world();
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| run_case(case, &world).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases decided otherwise:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
