//! Host tests of the gateway: the firmware's server code on std, with two embassy-net stacks
//! joined by an in-memory wire (no privileges, no sockets of the host); the scaffolding is in
//! `common`, shared with `conformance.rs`.
//!
//! * gateway stack 10.0.0.1: `socksgate_embedded::Gateway` on port 1080;
//! * peer stack 10.0.0.2: the scripted SOCKS clients and a fake upstream (TCP echo on 7).
//!
//! Client bytes are written literally (RFC 1928/1929 vectors); the gateway parses nothing
//! itself, the core does.

mod common;

use common::{
    CONNECT_ECHO_V4, Client, ECHO_PORT, GATEWAY_IP, GATEWAY_IP6, PEER_IP6, SESSIONS, SOCKS_PORT,
    assert_success_v4, connect_echo, expect_connect_general_failure, run, run_from_parts,
};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Duration, Timer, with_timeout};
use socksgate_core::policy::Timeouts;
use socksgate_core::rules::{Action, Rule, Rules};
use socksgate_embedded::{GatewayConfig, User};

static USERS: [User; 2] = [
    User {
        name: "alice",
        password: "secret",
    },
    User {
        name: "bob",
        password: "hunter2",
    },
];

/// Username/password required (SOCKS4 therefore off); short handshake timeout.
static AUTH: GatewayConfig = test_config(&USERS);

/// No authentication, SOCKS4/4a allowed.
static OPEN: GatewayConfig = test_config(&[]);

/// The tests' gateway: `users`, a short handshake timeout, a 1 s close bound.
const fn test_config(users: &'static [User]) -> GatewayConfig {
    GatewayConfig::new(SOCKS_PORT, users)
        .with_timeouts(Timeouts {
            handshake: core::time::Duration::from_secs(HANDSHAKE_SECS),
            ..Timeouts::DEFAULT
        })
        .with_close_timeout(Duration::from_secs(1))
}

/// Generous: CI machines are loaded, and the bytewise test takes dozens of round trips.
const HANDSHAKE_SECS: u64 = 2;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(HANDSHAKE_SECS);

#[test]
fn userpass_connect_fed_one_byte_at_a_time() {
    run(&AUTH, |stack| async move {
        let mut client = Client::connect(stack).await;
        client.send_bytewise(&[5, 1, 2]).await;
        assert_eq!(client.recv(2).await, [5, 2]);
        client.send_bytewise(b"\x01\x05alice\x06secret").await;
        assert_eq!(client.recv(2).await, [1, 0]);
        client.send_bytewise(&CONNECT_ECHO_V4).await;
        assert_success_v4(&client.recv(10).await);
        client.echo(b"hello through socksgate").await;
        bulk_echo(&mut client).await;
        client.close().await;
    });
}

/// 64 KiB both ways at once: more than every buffer on the path.
async fn bulk_echo(client: &mut Client) {
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut reader, mut writer) = client.socket.split();
    let send = async {
        let mut rest = &big[..];
        while !rest.is_empty() {
            let n = writer.write(rest).await.expect("write");
            rest = &rest[n..];
        }
    };
    let receive = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < big.len() {
            let n = reader.read(&mut buf).await.expect("read");
            assert_ne!(n, 0, "EOF during bulk echo");
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    let ((), got) = embassy_futures::join::join(send, receive).await;
    assert!(got == big, "bulk echo differs");
}

#[test]
fn whole_handshake_and_payload_in_one_segment() {
    run(&AUTH, |stack| async move {
        let mut client = Client::connect(stack).await;
        let mut all = vec![5, 1, 2];
        all.extend_from_slice(b"\x01\x05alice\x06secret");
        all.extend_from_slice(&CONNECT_ECHO_V4);
        all.extend_from_slice(b"early payload");
        client.send(&all).await;
        assert_eq!(client.recv(4).await, [5, 2, 1, 0]);
        assert_success_v4(&client.recv(10).await);
        assert_eq!(client.recv(13).await, b"early payload");
        client.close().await;
    });
}

#[test]
fn wrong_password_is_refused_and_closed() {
    run(&AUTH, |stack| async move {
        let mut client = Client::connect(stack).await;
        let status = client.login(b"alice", b"wrong").await;
        assert_ne!(status, 0, "RFC 1929 failure status");
        client.expect_eof().await;
        client.close().await;
    });
}

#[test]
fn no_acceptable_method_without_credentials() {
    run(&AUTH, |stack| async move {
        let mut client = Client::connect(stack).await;
        client.send(&[5, 1, 0]).await;
        assert_eq!(client.recv(2).await, [5, 0xff]);
        client.expect_eof().await;
        client.close().await;
    });
}

#[test]
fn socks4_is_refused_when_users_are_configured() {
    // SOCKS4 cannot authenticate: with a credential table it never gets past the request.
    run(&AUTH, |stack| async move {
        let mut client = Client::connect(stack).await;
        client
            .send(&[4, 1, 0, ECHO_PORT as u8, 10, 0, 0, 2, b'u', 0])
            .await;
        assert_eq!(client.recv(8).await[..2], [0, 91], "SOCKS4 rejected");
        client.expect_eof().await;
        client.close().await;
    });
}

#[test]
fn socks4_and_socks4a_connect() {
    run(&OPEN, |stack| async move {
        let mut client = Client::connect(stack).await;
        client
            .send(&[4, 1, 0, ECHO_PORT as u8, 10, 0, 0, 2, b'u', 0])
            .await;
        let reply = client.recv(8).await;
        assert_eq!(reply[..2], [0, 90], "SOCKS4 granted");
        client.echo(b"four").await;
        client.close().await;

        // SOCKS4a: 0.0.0.x and a host name (an IP literal: no DNS server on this wire).
        let mut client = Client::connect(stack).await;
        client
            .send(&[4, 1, 0, ECHO_PORT as u8, 0, 0, 0, 1, 0])
            .await;
        client.send(b"10.0.0.2\0").await;
        assert_eq!(client.recv(8).await[..2], [0, 90], "SOCKS4a granted");
        client.echo(b"four-a").await;
        client.close().await;
    });
}

#[test]
fn socks5_domain_name_target() {
    run(&OPEN, |stack| async move {
        let mut client = Client::socks5_no_auth(stack).await;
        assert_success_v4(
            &client
                .request(&domain_request(b"10.0.0.2", ECHO_PORT))
                .await,
        );
        client.echo(b"by name").await;
        client.close().await;
    });
}

#[test]
fn unresolvable_name_and_refused_port_get_failure_replies() {
    run(&OPEN, |stack| async move {
        // NXDOMAIN: "host unreachable" (4).
        let mut client = Client::socks5_no_auth(stack).await;
        client.send(&domain_request(b"example.com", 80)).await;
        assert_eq!(client.recv(2).await, [5, 4]);
        client.close().await;

        // Nothing listens on port 9: "connection refused" (5).
        let mut client = Client::connect(stack).await;
        client.send(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 2, 0, 9]).await;
        assert_eq!(client.recv(4).await, [5, 0, 5, 5]);
        client.close().await;
    });
}

#[test]
fn unsupported_command_is_refused() {
    run(&OPEN, |stack| async move {
        let mut client = Client::connect(stack).await;
        // BIND (2): not offered by the embedded gateway.
        client
            .send(&[5, 1, 0, 5, 2, 0, 1, 10, 0, 0, 2, 0, ECHO_PORT as u8])
            .await;
        assert_eq!(client.recv(4).await, [5, 0, 5, 7]);
        client.close().await;
    });
}

#[test]
fn silent_client_is_dropped_after_the_handshake_timeout() {
    run(&OPEN, |stack| async move {
        let mut client = Client::connect(stack).await;
        expect_eof_no_sooner_than(&mut client, HANDSHAKE_TIMEOUT - Duration::from_millis(50)).await;
        client.close().await;
    });
}

/// Expects the gateway to end the connection with a FIN, and not before `at_least` from now.
async fn expect_eof_no_sooner_than(client: &mut Client, at_least: Duration) {
    let started = embassy_time::Instant::now();
    client.expect_eof().await;
    let waited = started.elapsed();
    assert!(waited >= at_least, "closed after {waited:?}");
}

#[test]
fn pool_exhaustion_refuses_cleanly_then_serves_when_a_slot_frees() {
    run(&OPEN, |stack| async move {
        // Fill every session.
        let mut busy = Vec::new();
        for i in 0..SESSIONS {
            let mut client = connect_echo(stack).await;
            client.echo(format!("session {i}").as_bytes()).await;
            busy.push(client);
        }
        // N+1: accepted by the refusal slot, answered "general failure", closed in order.
        expect_connect_general_failure(stack, "general failure while the pool is full").await;

        // Free one slot; the same client retries and is served.
        busy.pop().expect("a busy session").close().await;
        Timer::after_millis(50).await;
        let mut retry = connect_echo(stack).await;
        retry.echo(b"served after a slot freed").await;
        retry.close().await;
        for client in busy {
            echo_roundtrip_then_close(client).await;
        }
    });
}

/// Session buffers given one by one (as the H743 spreads them over SRAM1–3, DTCM and AXI
/// SRAM) and larger than the default: every session serves, 64 KiB cross each way, the pool
/// still refuses client N + 1.
#[test]
fn sessions_on_buffers_placed_apart_with_16_kib_windows() {
    run_from_parts::<16384, _, _>(&OPEN, |stack| async move {
        let mut busy = Vec::new();
        for _ in 0..SESSIONS {
            let mut client = connect_echo(stack).await;
            bulk_echo(&mut client).await;
            busy.push(client);
        }
        expect_connect_general_failure(stack, "general failure when full").await;
        for client in busy {
            echo_roundtrip_then_close(client).await;
        }
    });
}

async fn echo_roundtrip_then_close(mut client: Client) {
    client.echo(b"still alive").await;
    client.close().await;
}

#[test]
fn upstream_close_is_passed_on_as_fin() {
    run(&OPEN, |stack| async move {
        let mut client = connect_echo(stack).await;
        client.echo(b"x").await;
        // Half-close: the echo server sees EOF, closes, and the gateway passes its FIN on.
        client.socket.close();
        client.expect_eof().await;
        client.close().await;
    });
}

/// A gateway config with `rules` (leaked: tests build them at run time).
fn with_rules(users: &'static [User], rules: Vec<Rule>, default: Action) -> &'static GatewayConfig {
    let rules: &'static [Rule] = Vec::leak(rules);
    Box::leak(Box::new(
        test_config(users).with_rules(Rules::new(rules, default)),
    ))
}

async fn socks5_noauth_request(stack: Stack<'static>, request: &[u8]) -> (Client, Vec<u8>) {
    let mut client = Client::socks5_no_auth(stack).await;
    let reply = client.request(request).await;
    (client, reply)
}

fn domain_request(name: &[u8], port: u16) -> Vec<u8> {
    let mut request = vec![5, 1, 0, 3, name.len() as u8];
    request.extend_from_slice(name);
    request.extend_from_slice(&port.to_be_bytes());
    request
}

#[test]
fn denied_destinations_get_not_allowed() {
    let config = with_rules(
        &[],
        vec![
            Rule::deny()
                .dst("10.0.0.2/32".parse().unwrap())
                .ports("13".parse().unwrap()),
            Rule::deny().dst(".blocked.test".parse().unwrap()),
        ],
        Action::Allow,
    );
    run(config, |stack| async move {
        // By address.
        let (client, reply) = socks5_noauth_request(stack, &[5, 1, 0, 1, 10, 0, 0, 2, 0, 13]).await;
        assert_eq!(reply[..2], [5, 2], "not allowed by ruleset");
        client.close().await;
        // By a name that spells the same address: normalised, same verdict.
        let (client, reply) = socks5_noauth_request(stack, &domain_request(b"10.0.0.2", 13)).await;
        assert_eq!(reply[..2], [5, 2]);
        client.close().await;
        // By name suffix: refused before any DNS query (no DNS here would give 4, not 2).
        let (client, reply) =
            socks5_noauth_request(stack, &domain_request(b"www.blocked.test", 80)).await;
        assert_eq!(reply[..2], [5, 2]);
        client.close().await;
        // Everything else is allowed.
        let mut client = connect_echo(stack).await;
        client.echo(b"allowed").await;
        client.close().await;
    });
}

#[test]
fn rules_can_name_the_authenticated_user() {
    let config = with_rules(
        &USERS,
        vec![Rule::allow().user("alice".parse().unwrap())],
        Action::Deny,
    );
    run(config, |stack| async move {
        for (name, password, allowed) in [
            (&b"bob"[..], &b"hunter2"[..], false),
            (b"alice", b"secret", true),
        ] {
            let mut client = Client::connect(stack).await;
            assert_eq!(client.login(name, password).await, 0);
            let reply = client.request(&CONNECT_ECHO_V4).await;
            if allowed {
                assert_success_v4(&reply);
                client.echo(b"alice may").await;
            } else {
                assert_eq!(reply[..2], [5, 2], "bob is not in the rules");
            }
            client.close().await;
        }
    });
}

#[test]
fn names_resolve_through_embassy_net_dns() {
    run(&OPEN, |stack| async move {
        // A record.
        let (mut client, reply) =
            socks5_noauth_request(stack, &domain_request(b"echo.test", ECHO_PORT)).await;
        assert_success_v4(&reply);
        client.echo(b"resolved v4").await;
        client.close().await;

        // AAAA only: the upstream connection is IPv6, so is BND.ADDR.
        let mut client = Client::socks5_no_auth(stack).await;
        client.send(&domain_request(b"echo6.test", ECHO_PORT)).await;
        let reply = client.recv(22).await;
        assert_eq!(reply[..4], [5, 0, 0, 4], "IPv6 success reply");
        assert_eq!(reply[4..20], GATEWAY_IP6.octets());
        client.echo(b"resolved v6").await;
        client.close().await;

        // SOCKS4a with a name.
        let mut client = Client::connect(stack).await;
        let mut request = vec![4, 1, 0, ECHO_PORT as u8, 0, 0, 0, 1, 0];
        request.extend_from_slice(b"echo.test\0");
        client.send(&request).await;
        assert_eq!(client.recv(8).await[..2], [0, 90]);
        client.echo(b"4a by name").await;
        client.close().await;
    });
}

#[test]
fn ipv6_destination() {
    run(&OPEN, |stack| async move {
        let mut client = Client::connect(stack).await;
        let mut request = vec![5, 1, 0, 5, 1, 0, 4];
        request.extend_from_slice(&PEER_IP6.octets());
        request.extend_from_slice(&[0, ECHO_PORT as u8]);
        client.send(&request).await;
        assert_eq!(client.recv(2).await, [5, 0]);
        let reply = client.recv(22).await;
        assert_eq!(reply[..4], [5, 0, 0, 4]);
        assert_eq!(reply[4..20], GATEWAY_IP6.octets());
        client.echo(b"over IPv6").await;
        client.close().await;
    });
}

#[test]
fn udp_associate_relays_datagrams_until_the_control_connection_closes() {
    run(&OPEN, |stack| async move {
        let udp = peer_udp(stack, 40000);
        let (control, relay) = udp_associate(stack, &ASSOCIATE_FROM_40000).await;
        let mut buf = [0u8; 2048];

        // Standalone datagram to the echo server by address.
        expect_udp_echo(&udp, relay, &echo_datagram(b"ping")).await;

        // By name, through the gateway's resolver.
        let mut datagram = vec![0, 0, 0, 3, 9];
        datagram.extend_from_slice(b"echo.test");
        datagram.extend_from_slice(&[0, ECHO_PORT as u8]);
        datagram.extend_from_slice(b"named");
        udp.send_to(&datagram, relay).await.unwrap();
        let (n, _) = udp.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], echo_datagram(b"named"));

        // Two fragments, reassembled by the core before sending.
        let mut first = echo_datagram(b"frag");
        first[2] = 1;
        let mut last = echo_datagram(b"mented");
        last[2] = 0x82;
        udp.send_to(&first, relay).await.unwrap();
        udp.send_to(&last, relay).await.unwrap();
        let (n, _) = udp.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], echo_datagram(b"fragmented"));

        // Closing the control connection ends the association.
        control.close().await;
        Timer::after_millis(50).await;
        udp.send_to(&echo_datagram(b"too late"), relay)
            .await
            .unwrap();
        let late = with_timeout(Duration::from_millis(300), udp.recv_from(&mut buf)).await;
        assert!(late.is_err(), "no relay after the association ended");
    });
}

/// A UDP socket on the peer stack bound to `port`, with leaked buffers.
fn peer_udp(stack: Stack<'static>, port: u16) -> UdpSocket<'static> {
    let mut socket = UdpSocket::new(
        stack,
        Box::leak(Box::new([PacketMetadata::EMPTY; 4])),
        Box::leak(Box::new([0u8; 4096])),
        Box::leak(Box::new([PacketMetadata::EMPTY; 4])),
        Box::leak(Box::new([0u8; 4096])),
    );
    socket.bind(port).unwrap();
    socket
}

/// UDP ASSOCIATE announcing the client's UDP source 10.0.0.2:40000.
const ASSOCIATE_FROM_40000: [u8; 10] = [5, 3, 0, 1, 10, 0, 0, 2, 0x9c, 0x40];

/// Opens a UDP association with the UDP ASSOCIATE `request`; returns the control connection
/// and the relay's endpoint, which must be on the gateway's address.
async fn udp_associate(stack: Stack<'static>, request: &[u8]) -> (Client, IpEndpoint) {
    let (control, reply) = socks5_noauth_request(stack, request).await;
    assert_eq!(reply[..4], [5, 0, 0, 1], "UDP ASSOCIATE granted");
    assert_eq!(
        reply[4..8],
        GATEWAY_IP.octets(),
        "relay on the gateway's address"
    );
    let relay = IpEndpoint::new(GATEWAY_IP.into(), u16::from_be_bytes([reply[8], reply[9]]));
    (control, relay)
}

/// A SOCKS5 UDP datagram for the peer's echo server, by IPv4 address.
fn echo_datagram(payload: &[u8]) -> Vec<u8> {
    [&[0, 0, 0, 1, 10, 0, 0, 2, 0, ECHO_PORT as u8], payload].concat()
}

/// Sends `datagram` from `socket` through `relay` and expects it back from the relay
/// unchanged: the echo server's answer, with the echo server as its source.
async fn expect_udp_echo(socket: &UdpSocket<'_>, relay: IpEndpoint, datagram: &[u8]) {
    socket.send_to(datagram, relay).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).await.unwrap();
    assert_eq!(from.endpoint, relay);
    assert_eq!(
        &buf[..n],
        datagram,
        "reply carries the echo server as source"
    );
}

/// Expects no datagram on `socket` for 300 ms.
async fn expect_silence(socket: &UdpSocket<'_>, why: &str) {
    let mut buf = [0u8; 2048];
    if let Ok(Ok((n, from))) =
        with_timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await
    {
        panic!("{why}: got {:?} from {from:?}", &buf[..n]);
    }
}

#[test]
fn udp_replies_only_from_contacted_destinations() {
    run(&OPEN, |stack| async move {
        let client = peer_udp(stack, 40000);
        // On the client's own host, but not its announced port and never contacted.
        let stranger = peer_udp(stack, 9999);
        let (control, relay) = udp_associate(stack, &ASSOCIATE_FROM_40000).await;
        // The contacted echo server answers.
        let ping = echo_datagram(b"ping");
        expect_udp_echo(&client, relay, &ping).await;

        stranger.send_to(b"injected", relay).await.unwrap();
        expect_silence(
            &client,
            "a datagram from an uncontacted source reached the client",
        )
        .await;

        // The association goes on: the contacted destination still gets through.
        expect_udp_echo(&client, relay, &ping).await;
        control.close().await;
    });
}

#[test]
fn udp_datagrams_from_another_client_address_are_dropped() {
    run(&OPEN, |stack| async move {
        let client = peer_udp(stack, 40000);
        let other_port = peer_udp(stack, 40001);
        let (control, relay) = udp_associate(stack, &ASSOCIATE_FROM_40000).await;
        let relay6 = IpEndpoint::new(GATEWAY_IP6.into(), relay.port);
        let forged = echo_datagram(b"forged");

        // Same IP, another port than the one announced: not the client. Had it been relayed,
        // the echo server's answer (a contacted source) would reach the client.
        other_port.send_to(&forged, relay).await.unwrap();
        expect_silence(&other_port, "the other port got an answer").await;
        expect_silence(&client, "a datagram from another port was relayed").await;
        // Another IP: the peer's IPv6 address.
        let other_ip = peer_udp(stack, 40002);
        other_ip.send_to(&forged, relay6).await.unwrap();
        expect_silence(&other_ip, "the other address got an answer").await;
        expect_silence(&client, "a datagram from another address was relayed").await;

        // The client itself is served.
        expect_udp_echo(&client, relay, &echo_datagram(b"mine")).await;
        control.close().await;
    });
}

#[test]
fn udp_client_port_is_not_taken_from_a_domain_form_request() {
    run(&OPEN, |stack| async move {
        // DST as a name with port 40000: only an address form announces the client's port,
        // so the first datagram's port (40001) is the client's.
        let mut request = vec![5, 3, 0, 3, 11];
        request.extend_from_slice(b"client.test");
        request.extend_from_slice(&40000u16.to_be_bytes());
        let (control, relay) = udp_associate(stack, &request).await;
        let client = peer_udp(stack, 40001);
        expect_udp_echo(&client, relay, &echo_datagram(b"latched")).await;
        control.close().await;
    });
}

#[test]
fn idle_relay_is_closed_in_order() {
    let config: &'static GatewayConfig = Box::leak(Box::new(
        test_config(&[]).with_idle_timeout(Duration::from_millis(300)),
    ));
    run(config, |stack| async move {
        let mut client = connect_echo(stack).await;
        client.echo(b"then silence").await;
        expect_eof_no_sooner_than(&mut client, Duration::from_millis(250)).await;
        client.close().await;
    });
}

#[test]
fn socks4_client_is_refused_in_its_own_version_when_the_pool_is_full() {
    run(&OPEN, |stack| async move {
        let mut busy = Vec::new();
        for _ in 0..SESSIONS {
            busy.push(connect_echo(stack).await);
        }
        let mut extra = Client::connect(stack).await;
        extra
            .send(&[4, 1, 0, ECHO_PORT as u8, 10, 0, 0, 2, 0])
            .await;
        assert_eq!(extra.recv(8).await[..2], [0, 91], "SOCKS4 rejected");
        extra.expect_eof().await;
        extra.close().await;
        for client in busy {
            client.close().await;
        }
    });
}
