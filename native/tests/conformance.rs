//! The conformance table (`core/tests/conformance/cases.rs`) against the native server over
//! loopback: a real listener, real sockets, the resolver's hosts map for names.

#[path = "../../core/tests/conformance/cases.rs"]
mod cases;
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cases::{CASES, Case, ECHO_NAME, PASSWORD, RuleSpec, USER, World};
use common::{Proxy, start_with, tcp_echo};
use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate_tests::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The config file a case implies: its rules, 1 s handshake and connect timeouts.
fn config_text(case: &Case, world: &World) -> String {
    let mut text = String::from("[timeouts]\nhandshake = 1\nconnect = 1\n");
    for spec in case.rules {
        let to = match spec {
            RuleSpec::DenyEchoNet => world.echo_net,
            RuleSpec::DenyEchoName => ECHO_NAME,
        };
        text.push_str(&format!("[[rule]]\naction = \"deny\"\nto = [\"{to}\"]\n"));
    }
    text
}

async fn start(case: &Case, world: &World) -> Proxy {
    let config = Config::parse(&config_text(case, world), Path::new("conformance.toml")).unwrap();
    let users: &[(&str, &str)] = &[(USER, PASSWORD)];
    let hosts = HashMap::from([(ECHO_NAME.to_owned(), vec![world.echo.ip()])]);
    start_with(
        config,
        case.users.then_some(users),
        Resolver::with_hosts(hosts),
    )
    .await
}

/// A listener with a full backlog that never accepts: further SYNs on loopback go
/// unanswered (Linux's default `tcp_abort_on_overflow = 0`), so connects to it time out.
fn blackhole() -> (socket2::Socket, Vec<socket2::Socket>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..8)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    (sock, fillers, addr)
}

#[tokio::test]
async fn native_server_decides_every_case() {
    let (_hole, _fillers, blackhole) = blackhole();
    let world = World {
        echo: tcp_echo().await,
        echo_net: "127.0.0.0/8",
        closed: SocketAddr::from(([127, 0, 0, 1], free_port())),
        blackhole,
    };
    for case in CASES {
        let proxy = start(case, &world).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(&case.client_bytes(&world)).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
            .await
            .unwrap_or_else(|_| panic!("{}: the proxy did not close", case.name))
            .unwrap();
        if let Err(e) = case.check(&received) {
            panic!("{e}");
        }
    }
}
