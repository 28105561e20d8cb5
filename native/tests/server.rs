//! The server end to end on loopback, driven by the core's client state machine (and raw
//! bytes where a test needs a specific malformed or pipelined message).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate::shared::Shared;
use socksgate::{client, server};
use socksgate_core::client::{Client, ClientConfig, ClientError, Credentials};
use socksgate_core::server::Version;
use socksgate_core::wire::{Command, Method, ReplyCode, Socks4Code};
use socksgate_core::{Addr, Domain, Target};
use socksgate_tests::{free_port, peers, socks, tools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{Proxy, start_with, tcp_echo, udp_echo};

async fn start(config: Config, users: Option<&[(&str, &str)]>) -> Proxy {
    start_with(config, users, Resolver::from_system()).await
}

/// An echo server that reads to EOF and then echoes everything back, reporting the peer.
async fn echo_after_eof() -> (SocketAddr, tokio::sync::oneshot::Receiver<SocketAddr>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, peer) = l.accept().await.unwrap();
        let _ = tx.send(peer);
        let mut data = Vec::new();
        s.read_to_end(&mut data).await.unwrap();
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
    });
    (addr, rx)
}

/// What a client's handshake ends with: the reply's address and the bytes after it, or the
/// failure.
type Outcome = Result<(Target, Vec<u8>), client::Error>;

/// Runs the handshake `config` describes on `stream`.
async fn handshake_on(stream: &mut TcpStream, config: ClientConfig<'_>) -> Outcome {
    let mut c = Client::new(config).unwrap();
    client::handshake(&mut c, stream).await
}

/// The handshake `config` describes on a new connection to `proxy`.
async fn request(proxy: SocketAddr, config: ClientConfig<'_>) -> (TcpStream, Outcome) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let r = handshake_on(&mut stream, config).await;
    (stream, r)
}

/// A CONNECT to `target` through `proxy`, offering `creds` (username, password) if any.
async fn handshake(
    proxy: SocketAddr,
    version: Version,
    target: Addr<'_>,
    creds: Option<(&[u8], &[u8])>,
) -> (TcpStream, Outcome) {
    let config = ClientConfig {
        credentials: creds.map(|(username, password)| Credentials { username, password }),
        ..ClientConfig::new(version, Command::Connect, target)
    };
    request(proxy, config).await
}

/// A SOCKS5 CONNECT to `dst` through `proxy`, logged in as `user`.
async fn connect_as(
    proxy: SocketAddr,
    dst: SocketAddr,
    user: &[u8],
    password: &[u8],
) -> (TcpStream, Outcome) {
    handshake(
        proxy,
        Version::Socks5,
        Addr::Ip(dst),
        Some((user, password)),
    )
    .await
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await
}

/// Sends `payload` on a relayed stream to an [`echo_after_eof`] server, half-closes, and
/// expects exactly `payload` back before the EOF.
async fn echo_to_eof(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

/// Sends `payload` on a relayed stream to an [`tcp_echo`] and expects it back.
async fn expect_echo(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

/// A config file's text, parsed (as `t.toml`).
fn parse(text: &str) -> Config {
    Config::parse(text, std::path::Path::new("t.toml")).unwrap()
}

fn rejected(r: Result<(Target, Vec<u8>), client::Error>) -> ClientError {
    match r {
        Err(client::Error::Handshake { source: e, .. }) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_reports_the_real_bound_address_and_relays_with_half_close() {
    let proxy = start(Config::default(), None).await;
    for version in [Version::Socks5, Version::Socks4] {
        let (echo, peer) = echo_after_eof().await;
        let (mut s, r) = handshake(proxy.addr, version, Addr::Ip(echo), None).await;
        let (bound, early) = r.unwrap();
        assert!(early.is_empty());
        // BND is the proxy's outbound socket: exactly the address the destination saw.
        assert_eq!(bound, Target::Ip(peer.await.unwrap()), "{version:?}");
        echo_to_eof(&mut s, b"ping").await;
    }
}

#[tokio::test]
async fn connect_by_name_socks5h_and_socks4a() {
    let proxy = start(Config::default(), None).await;
    for version in [Version::Socks5, Version::Socks4a] {
        let (echo, _) = echo_after_eof().await;
        let name = Domain::new(b"localhost").unwrap();
        let (mut s, r) =
            handshake(proxy.addr, version, Addr::Domain(name, echo.port()), None).await;
        r.unwrap();
        echo_to_eof(&mut s, b"by name").await;
    }
}

#[tokio::test]
async fn refused_maps_to_5_and_91() {
    let proxy = start(Config::default(), None).await;
    let dst = Addr::Ip(SocketAddr::from(([127, 0, 0, 1], free_port())));
    let (_, r) = handshake(proxy.addr, Version::Socks5, dst, None).await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::ConnectionRefused)
    );
    let (_, r) = handshake(proxy.addr, Version::Socks4, dst, None).await;
    assert_eq!(
        rejected(r),
        ClientError::Socks4Rejected(Socks4Code::Rejected)
    );
}

#[tokio::test]
async fn unknown_name_maps_to_4() {
    // A resolver that knows only its hosts table answers "not found" at once, whatever the
    // network of the machine running the tests.
    let proxy = start_with(
        Config::default(),
        None,
        Resolver::with_hosts(Default::default()),
    )
    .await;
    let name = Domain::new(b"no-such-host.invalid").unwrap();
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Domain(name, 80), None).await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::HostUnreachable)
    );
}

async fn raw(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Parses what a SOCKS5 server sent after a greeting and a request: the method reply, the
/// reply, and where the bytes after them start.
fn socks5_replies(out: &[u8]) -> (Method, socks::Reply5, usize) {
    let (method, n) = socks::decode::method(out)
        .unwrap()
        .unwrap_or_else(|| panic!("no method reply in {out:?}"));
    let (reply, m) = socks::decode::reply5(&out[n..])
        .unwrap()
        .unwrap_or_else(|| panic!("no SOCKS5 reply in {out:?}"));
    (method, reply, n + m)
}

/// A no-authentication greeting followed by `request`.
fn greeting_and(request: &[u8]) -> Vec<u8> {
    let mut msg = socks::encode::greeting(&[Method::NoAuth]);
    msg.extend_from_slice(request);
    msg
}

#[tokio::test]
async fn unsupported_command_and_address_type() {
    let proxy = start(Config::default(), None).await;
    let dst = socks::v4(80);
    // CMD 9: reply 7, then the server closes.
    let request = socks::encode::request(Command::from(9), &dst);
    let out = raw(proxy.addr, &greeting_and(&request)).await;
    let (method, reply, _) = socks5_replies(&out);
    assert_eq!(method, Method::NoAuth);
    assert_eq!(reply.rep, ReplyCode::CommandNotSupported, "{reply:?}");
    // ATYP 2 (no such type; raw bytes, as no well-formed request carries it): reply 8.
    let out = raw(
        proxy.addr,
        &greeting_and(&[5, 1, 0, 2, 127, 0, 0, 1, 0, 80]),
    )
    .await;
    let (method, reply, _) = socks5_replies(&out);
    assert_eq!(method, Method::NoAuth);
    assert_eq!(reply.rep, ReplyCode::AddressTypeNotSupported, "{reply:?}");
    // SOCKS4 has no UDP ASSOCIATE: CD 91.
    let out = raw(
        proxy.addr,
        &socks::encode::socks4(Command::UdpAssociate, &dst, ""),
    )
    .await;
    let (reply, _) = socks::decode::reply4(&out)
        .unwrap()
        .unwrap_or_else(|| panic!("no SOCKS4 reply in {out:?}"));
    assert_eq!(reply.cd, Socks4Code::Rejected, "{reply:?}");
}

#[tokio::test]
async fn pipelined_greeting_request_and_payload() {
    let proxy = start(Config::default(), None).await;
    let (echo, _) = echo_after_eof().await;
    let mut msg = greeting_and(&socks::encode::request(
        Command::Connect,
        &socks::Dst::Ip(echo),
    ));
    msg.extend_from_slice(b"early payload");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let (method, reply, n) = socks5_replies(&out);
    assert_eq!(method, Method::NoAuth);
    assert_eq!(reply.rep, ReplyCode::Succeeded, "{reply:?}");
    assert_eq!(&out[n..], b"early payload");
}

#[tokio::test]
async fn username_password() {
    let proxy = start(Config::default(), Some(&[("alice", "wonderland")])).await;
    let (echo, _) = echo_after_eof().await;
    let (_, r) = connect_as(proxy.addr, echo, b"alice", b"wonderland").await;
    r.unwrap();
    let (_, r) = connect_as(proxy.addr, echo, b"alice", b"wrong").await;
    assert_eq!(rejected(r), ClientError::AuthFailed);
    let (_, r) = connect_as(proxy.addr, echo, b"mallory", b"wonderland").await;
    assert_eq!(rejected(r), ClientError::AuthFailed);
    // No credentials offered: no acceptable method.
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None).await;
    assert_eq!(rejected(r), ClientError::NoAcceptableMethod);
    // SOCKS4 carries no password, so it is refused when users are configured.
    let (_, r) = handshake(proxy.addr, Version::Socks4, Addr::Ip(echo), None).await;
    assert_eq!(
        rejected(r),
        ClientError::Socks4Rejected(Socks4Code::Rejected)
    );
}

/// Logs in as alice from `src` (a loopback address) to a closed port: whether the login was
/// accepted, and how long the handshake took.
async fn login_from(proxy: SocketAddr, src: [u8; 4], password: &'static [u8]) -> (bool, Duration) {
    let mut stream = connect_from(src, proxy).await.unwrap();
    let closed = Addr::Ip(SocketAddr::from(([127, 0, 0, 1], free_port())));
    let config = ClientConfig {
        credentials: Some(Credentials {
            username: b"alice",
            password,
        }),
        ..ClientConfig::new(Version::Socks5, Command::Connect, closed)
    };
    let start = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), handshake_on(&mut stream, config))
        .await
        .expect("the handshake ends");
    let ok = match r {
        Err(client::Error::Handshake {
            source: ClientError::AuthFailed,
            ..
        }) => false,
        Err(client::Error::Handshake {
            source: ClientError::Rejected(ReplyCode::ConnectionRefused),
            ..
        }) => true,
        other => panic!("unexpected outcome {other:?}"),
    };
    (ok, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_client_ip() {
    let proxy = start(Config::default(), Some(&[("alice", "wonderland")])).await;
    // Counters land just after the client has its answer: poll briefly.
    let has = async |line: &str| {
        let start = std::time::Instant::now();
        loop {
            let text = proxy.shared.metrics.render();
            if text.contains(line) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{line:?} not in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (attacker, other) = ([127, 0, 0, 2], [127, 0, 0, 3]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let (ok, t) = login_from(proxy.addr, attacker, b"guess").await;
        assert!(!ok);
        times.push(t);
    }
    // Failures 1 and 2 cost nothing extra; then 100, 200, 400 ms before each check.
    assert!(times[3] >= Duration::from_millis(200), "{times:?}");
    assert!(times[4] >= Duration::from_millis(400), "{times:?}");
    has("socksgate_auth_failures_total 5\n").await;
    has("socksgate_auth_throttled_total{action=\"delayed\"} 3\n").await;
    // Another client is not delayed.
    let (ok, t) = login_from(proxy.addr, other, b"wonderland").await;
    assert!(ok);
    assert!(t < Duration::from_secs(5), "{t:?}");
    has("socksgate_auth_throttled_total{action=\"delayed\"} 3\n").await;
    // A burst of parallel guesses: spaced out (800 ms, then 2.4 s), the rest refused at once
    // without a check; meanwhile the other client still logs in.
    let guesses: Vec<_> = (0..12)
        .map(|_| tokio::spawn(login_from(proxy.addr, attacker, b"guess")))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ok, t) = login_from(proxy.addr, other, b"wonderland").await;
    assert!(ok);
    assert!(t < Duration::from_secs(5), "{t:?}");
    for g in guesses {
        assert!(!g.await.unwrap().0);
    }
    let text = proxy.shared.metrics.render();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("socksgate_auth_throttled_total{action=\"refused\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&refused), "{text}");
    has("socksgate_auth_failures_total 17\n").await;
}

/// The back-off keys clients as the other per-client limits do: with `client_prefix_ipv4 =
/// 24`, failures from one address slow down the whole /24, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_client_network() {
    let config = parse("[limits]\nclient_prefix_ipv4 = 24\n");
    let proxy = start(config, Some(&[("alice", "wonderland")])).await;
    for _ in 0..3 {
        assert!(!login_from(proxy.addr, [127, 0, 0, 2], b"guess").await.0);
    }
    // Three failures in 127.0.0.0/24: the next check from another address in it waits
    // 200 ms; one from 127.0.1.0/24 does not.
    let (ok, t) = login_from(proxy.addr, [127, 0, 0, 3], b"wonderland").await;
    assert!(ok);
    assert!(t >= Duration::from_millis(200), "{t:?}");
    let (ok, t) = login_from(proxy.addr, [127, 0, 1, 3], b"wonderland").await;
    assert!(ok);
    assert!(t < Duration::from_millis(150), "{t:?}");
}

#[tokio::test]
async fn handshake_timeout_closes_the_connection() {
    let mut config = Config::default();
    config.timeouts.handshake = 1;
    let proxy = start(config, None).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[5, 1]).await.unwrap(); // half a greeting, then silence
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "the server should close after the handshake timeout"
    );
}

/// A BIND through `proxy` for a peer from `expected` (a loopback address), up to the first
/// reply: the control stream, the client mid-handshake, the bytes after the reply, and the
/// address the proxy listens on.
async fn bind(
    proxy: SocketAddr,
    version: Version,
    expected: [u8; 4],
) -> (TcpStream, Client, Vec<u8>, SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let expected = Addr::Ip(SocketAddr::from((expected, 0)));
    let mut c = Client::new(ClientConfig::new(version, Command::Bind, expected)).unwrap();
    let (listening, rest) = client::handshake_until_reply(&mut c, &mut s).await.unwrap();
    let Target::Ip(listening) = listening else {
        panic!("bound is a name")
    };
    (s, c, rest, listening)
}

/// Connects the BIND's peer to `listening`; expects the proxy to report it in the second
/// reply and to relay what it sends to the client, up to its EOF.
async fn bind_peer_is_accepted(
    (mut s, mut c, rest, listening): (TcpStream, Client, Vec<u8>, SocketAddr),
    context: &str,
) {
    let mut peer = TcpStream::connect(listening).await.unwrap();
    let (peer_seen, _) = tokio::time::timeout(
        Duration::from_secs(5),
        client::drive(&mut c, &mut s, rest, false),
    )
    .await
    .expect("the second reply")
    .unwrap();
    assert_eq!(
        peer_seen,
        Target::Ip(peer.local_addr().unwrap()),
        "{context}"
    );
    peer.write_all(b"from peer").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"from peer", "{context}");
}

#[tokio::test]
async fn bind_accepts_the_named_peer_and_relays() {
    let proxy = start(Config::default(), None).await;
    for version in [Version::Socks5, Version::Socks4] {
        let bound = bind(proxy.addr, version, [127, 0, 0, 1]).await;
        assert_eq!(bound.3.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        bind_peer_is_accepted(bound, &format!("{version:?}")).await;
    }
}

#[tokio::test]
async fn bind_refuses_other_peers_and_times_out() {
    let mut config = Config::default();
    config.timeouts.bind = 1;
    let proxy = start(config, None).await;
    // Expect 127.0.0.2; connect from 127.0.0.1.
    let (mut s, mut c, rest, listening) = bind(proxy.addr, Version::Socks5, [127, 0, 0, 2]).await;
    if let Ok(mut intruder) = connect_from([127, 0, 0, 1], listening).await {
        let mut buf = [0u8; 1];
        // Closed by the proxy without data.
        assert_eq!(intruder.read(&mut buf).await.unwrap_or(0), 0);
    }
    let r = client::drive(&mut c, &mut s, rest, false).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::TtlExpired));
}

#[tokio::test]
async fn bind_ignores_a_stranger_and_still_accepts_the_named_peer() {
    let proxy = start(Config::default(), None).await;
    // The client names 127.0.0.1; a connection from 127.0.0.3 comes first.
    let bound = bind(proxy.addr, Version::Socks5, [127, 0, 0, 1]).await;
    let mut intruder = connect_from([127, 0, 0, 3], bound.3).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), intruder.read(&mut buf))
        .await
        .expect("the proxy closes the stranger's connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "the stranger gets nothing");
    // The wait goes on: the named peer is accepted and reported.
    bind_peer_is_accepted(bound, "after a stranger").await;
}

mod udp {
    use socksgate_core::wire::udp::{UdpHeader, encapsulate};
    use tokio::net::UdpSocket;

    use super::*;

    /// The UDP ASSOCIATE address of a client that does not say where it will send from.
    pub(super) const ANY_CLIENT: Addr<'static> = Addr::Ip(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        0,
    ));

    /// A SOCKS5 UDP ASSOCIATE announcing `expected` as the client's address.
    pub(super) fn associate_config(expected: Addr<'_>) -> ClientConfig<'_> {
        ClientConfig::new(Version::Socks5, Command::UdpAssociate, expected)
    }

    /// A UDP association through `proxy`: the control connection and the relay's address.
    pub(super) async fn associate(
        proxy: SocketAddr,
        expected: Addr<'_>,
    ) -> (TcpStream, SocketAddr) {
        let (s, r) = request(proxy, associate_config(expected)).await;
        let Target::Ip(relay) = r.unwrap().0 else {
            panic!("relay is a name")
        };
        (s, relay)
    }

    /// A client socket on 127.0.0.1, connected to `relay`.
    async fn socket_to(relay: SocketAddr) -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(relay).await.unwrap();
        socket
    }

    /// A UDP association through `proxy` (any client address), and the client's socket,
    /// connected to the relay.
    async fn open(proxy: SocketAddr) -> (TcpStream, UdpSocket) {
        let (ctl, relay) = associate(proxy, ANY_CLIENT).await;
        (ctl, socket_to(relay).await)
    }

    async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// The next datagram on `sock` and its source: the relay's outbound address, seen by a
    /// destination.
    async fn recv_from(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        (buf[..n].to_vec(), from)
    }

    fn datagram(dst: Addr<'_>, frag: u8, payload: &[u8]) -> Vec<u8> {
        let header = UdpHeader { frag, dst };
        let mut out = vec![0u8; header.buffer_len() + payload.len()];
        let n = header.emit(&mut out).unwrap();
        out[n..].copy_from_slice(payload);
        out
    }

    /// Sends `payload` for `dst` through the relay `socket` is connected to (unfragmented).
    async fn send_for(socket: &UdpSocket, dst: Addr<'_>, payload: &[u8]) {
        socket.send(&datagram(dst, 0, payload)).await.unwrap();
    }

    #[tokio::test]
    async fn relays_both_ways_latches_the_port_and_drops_strangers() {
        relays_both_ways(Config::default()).await;
    }

    /// The same with the UDP threads polling without sleeping after each datagram.
    #[tokio::test]
    async fn relays_both_ways_with_busy_polling() {
        relays_both_ways(parse("[udp]\nbusy_poll = \"200us\"\n")).await;
    }

    async fn relays_both_ways(config: Config) {
        let proxy = start(config, None).await;
        let echo = udp_echo().await;
        let (_ctl, relay) = associate(proxy.addr, ANY_CLIENT).await;
        assert_eq!(relay.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        let client = socket_to(relay).await;
        let mut buf = vec![0u8; 600];
        let n = encapsulate(Addr::Ip(echo), b"hello udp", &mut buf).unwrap();
        client.send(&buf[..n]).await.unwrap();
        let reply = recv(&client).await.expect("echo through the relay");
        let (header, payload) = UdpHeader::parse(&reply).unwrap();
        assert_eq!(header.dst, Addr::Ip(echo), "the reply carries its source");
        assert_eq!(payload, b"hello udp");

        // Another port on the client's IP is not the latched one: dropped (relayed, its echo
        // would come back to the latched client).
        let stranger = socket_to(relay).await;
        stranger.send(&buf[..n]).await.unwrap();
        assert_eq!(
            recv(&client).await,
            None,
            "a stranger's datagram was relayed"
        );
        assert_eq!(recv(&stranger).await, None);

        // Domain destinations are resolved ("localhost").
        let name = Addr::Domain(Domain::new(b"localhost").unwrap(), echo.port());
        send_for(&client, name, b"by name").await;
        let reply = recv(&client).await.expect("echo by name");
        assert_eq!(UdpHeader::parse(&reply).unwrap().1, b"by name");
    }

    /// Another host (here another loopback address) cannot inject datagrams into an
    /// association, even with the client's port number, nor latch the port first; once the
    /// client's address is fixed (announced, or latched from its first datagram), neither
    /// another port of its IP nor its port on another IP gets a datagram relayed, and the
    /// client is still served both ways.
    #[tokio::test]
    async fn only_the_clients_address_is_relayed() {
        let proxy = start(Config::default(), None).await;
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = sink.local_addr().unwrap();
        for declared in [false, true] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = client.local_addr().unwrap().port();
            let expected = if declared {
                SocketAddr::from(([127, 0, 0, 1], port))
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            let (_ctl, relay) = associate(proxy.addr, Addr::Ip(expected)).await;
            // Same port number as the client, other IP; it sends first.
            let other_ip = UdpSocket::bind(("127.0.0.2", port)).await.unwrap();
            other_ip.connect(relay).await.unwrap();
            send_for(&other_ip, Addr::Ip(sink_addr), b"injected").await;
            assert_eq!(recv(&sink).await, None, "declared port: {declared}");
            client.connect(relay).await.unwrap();
            send_for(&client, Addr::Ip(sink_addr), b"legit").await;
            let (got, outbound) = recv_from(&sink).await;
            assert_eq!(got, b"legit", "declared port: {declared}");
            // The client is fixed now: neither stranger gets through.
            let other_port = socket_to(relay).await;
            for stranger in [&other_port, &other_ip] {
                send_for(stranger, Addr::Ip(sink_addr), b"injected").await;
                assert_eq!(recv(&sink).await, None, "declared port: {declared}");
            }
            send_for(&client, Addr::Ip(sink_addr), b"again").await;
            assert_eq!(recv(&sink).await.as_deref(), Some(&b"again"[..]));
            sink.send_to(b"answer", outbound).await.unwrap();
            let reply = recv(&client).await.expect("the answer");
            assert_eq!(UdpHeader::parse(&reply).unwrap().1, b"answer");
        }
    }

    /// A client whose port was closed for a moment (an answer sent there bounced as an ICMP
    /// port unreachable) and is open again is still served both ways: the bounce does not end
    /// the association nor cost the next answer.
    #[tokio::test]
    async fn a_bounced_answer_does_not_end_the_association() {
        let proxy = start(Config::default(), None).await;
        let dest = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest_addr = dest.local_addr().unwrap();
        let (_ctl, client) = open(proxy.addr).await;
        let (client_addr, relay) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        send_for(&client, Addr::Ip(dest_addr), b"hello").await;
        let (_, outbound) = recv_from(&dest).await;
        drop(client);
        dest.send_to(b"bounces", outbound).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = UdpSocket::bind(client_addr).await.unwrap();
        client.connect(relay).await.unwrap();
        dest.send_to(b"arrives", outbound).await.unwrap();
        let reply = recv(&client).await.expect("the answer after the bounce");
        assert_eq!(UdpHeader::parse(&reply).unwrap().1, b"arrives");
        send_for(&client, Addr::Ip(dest_addr), b"still up").await;
        assert_eq!(recv(&dest).await.as_deref(), Some(&b"still up"[..]));
    }

    /// The relay serves a destination's answers before the client's datagrams, but a
    /// destination that never stops sending does not hold the client's datagrams back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flooding_destination_does_not_starve_the_client() {
        let proxy = start(Config::default(), None).await;
        let (_ctl, client) = open(proxy.addr).await;
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let flooder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to_flooder = Addr::Ip(flooder.local_addr().unwrap());
        send_for(&client, to_flooder, b"go").await;
        let mut buf = [0u8; 64];
        flooder
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (_, outbound) = flooder.recv_from(&mut buf).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Several senders, so that the relay's outbound queue stays full.
        let flooding: Vec<_> = (0..4)
            .map(|_| {
                let (stop, flooder) = (Arc::clone(&stop), flooder.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if flooder.send_to(&[0u8; 1000], outbound).is_ok() {
                            sent += 1;
                        }
                    }
                    sent
                })
            })
            .collect();
        // The flood reaches the client; given time, it fills the relay's outbound queue.
        let first = recv(&client).await.expect("the flood through the relay");
        assert_eq!(UdpHeader::parse(&first).unwrap().0.dst, to_flooder);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let to_sink = Addr::Ip(sink.local_addr().unwrap());
        for i in 0..20u8 {
            send_for(&client, to_sink, &[i]).await;
            let got = recv(&sink).await;
            assert_eq!(
                got.as_deref(),
                Some(&[i][..]),
                "datagram {i} under the flood"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent: u64 = flooding.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(sent > 1000, "the destination flooded");
    }

    #[tokio::test]
    async fn reassembles_fragments() {
        let proxy = start(Config::default(), None).await;
        let echo = udp_echo().await;
        let (_ctl, client) = open(proxy.addr).await;
        client
            .send(&datagram(Addr::Ip(echo), 1, b"frag-one,"))
            .await
            .unwrap();
        client
            .send(&datagram(Addr::Ip(echo), 2 | 0x80, b"frag-two"))
            .await
            .unwrap();
        let reply = recv(&client).await.expect("the reassembled datagram");
        assert_eq!(UdpHeader::parse(&reply).unwrap().1, b"frag-one,frag-two");
    }

    #[tokio::test]
    async fn pysocks_domain_zero_and_association_ends_with_the_control_connection() {
        let proxy = start(Config::default(), None).await;
        let echo = udp_echo().await;
        // PySocks sends the domain "0" with port 0.
        let (ctl, relay) = associate(proxy.addr, Addr::Domain(Domain::new(b"0").unwrap(), 0)).await;
        let client = socket_to(relay).await;
        send_for(&client, Addr::Ip(echo), b"one").await;
        assert!(recv(&client).await.is_some());
        drop(ctl);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = client.send(&datagram(Addr::Ip(echo), 0, b"two")).await;
        assert_eq!(recv(&client).await, None, "the relay must be gone");
    }

    /// Traffic keeps an association alive past `udp_idle` counted from its start; silence
    /// for `udp_idle` ends it (and its control connection).
    #[tokio::test]
    async fn idle_timeout_counts_from_the_last_datagram() {
        let mut config = Config::default();
        config.timeouts.udp_idle = 3;
        let proxy = start(config, None).await;
        let echo = udp_echo().await;
        let (mut ctl, client) = open(proxy.addr).await;
        // 4.2 s of a datagram every 0.3 s: the idle timer fires at least once meanwhile. The
        // gaps leave 2.7 s of slack, as the whole suite shares a small machine.
        for i in 0..15u8 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            send_for(&client, Addr::Ip(echo), &[i]).await;
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("the association is alive")
                .unwrap();
            assert_eq!(UdpHeader::parse(&buf[..n]).unwrap().1, [i]);
        }
        let quiet = std::time::Instant::now();
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), ctl.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "the proxy should end the idle association");
        assert!(quiet.elapsed() >= Duration::from_millis(2900));
    }

    #[tokio::test]
    async fn public_address_is_advertised() {
        let mut config = Config::default();
        config.udp.public_address = Some("203.0.113.7".parse().unwrap());
        let proxy = start(config, None).await;
        let (_ctl, relay) = associate(proxy.addr, Addr::Ip("127.0.0.1:9".parse().unwrap())).await;
        assert_eq!(relay.ip(), std::net::IpAddr::from([203, 0, 113, 7]));
        assert_ne!(relay.port(), 0);
    }

    /// A public address that is one of the host's (a fleet node's own address) is where the
    /// relay listens: datagrams sent to the advertised address come back.
    #[tokio::test]
    async fn a_local_public_address_is_where_the_relay_listens() {
        let mut config = Config::default();
        config.udp.public_address = Some("127.0.0.9".parse().unwrap());
        let proxy = start(config, None).await;
        let echo = udp_echo().await;
        let (_ctl, client) = open(proxy.addr).await;
        assert_eq!(
            client.peer_addr().unwrap().ip(),
            std::net::IpAddr::from([127, 0, 0, 9])
        );
        send_for(&client, Addr::Ip(echo), b"via .9").await;
        let back = recv(&client).await.expect("an echo through 127.0.0.9");
        assert_eq!(UdpHeader::parse(&back).unwrap().1, b"via .9");
    }

    #[tokio::test]
    async fn rules_apply_to_each_datagram() {
        let config = parse(
            "[[rule]]\naction = \"deny\"\ncommands = [\"udp_associate\"]\nto = [\"127.0.0.0/8\"]\n",
        );
        let proxy = start(config, None).await;
        let echo = udp_echo().await;
        let (_ctl, client) = open(proxy.addr).await;
        send_for(&client, Addr::Ip(echo), b"nope").await;
        assert_eq!(recv(&client).await, None);
    }

    /// `protect_local_destinations = true` forces protection on this loopback listener:
    /// datagrams to loopback are dropped unless a rule names the address.
    #[tokio::test]
    async fn protected_destinations_apply_to_each_datagram() {
        let echo = udp_echo().await;
        let config = parse("[access]\nprotect_local_destinations = true\n");
        let proxy = start(config, None).await;
        let (_ctl, client) = open(proxy.addr).await;
        send_for(&client, Addr::Ip(echo), b"nope").await;
        assert_eq!(recv(&client).await, None);

        let config = parse(
            "[access]\nprotect_local_destinations = true\n\n[[rule]]\naction = \"allow\"\nto = [\"127.0.0.1/32\"]\n",
        );
        let proxy = start(config, None).await;
        let (_ctl, client) = open(proxy.addr).await;
        send_for(&client, Addr::Ip(echo), b"named").await;
        assert!(
            recv(&client).await.is_some(),
            "a rule naming 127.0.0.1 re-opens it"
        );
    }
}

/// `protect_local_destinations = true` forces protection on this loopback listener (unset,
/// only non-loopback listeners have it): the proxy host's loopback is refused with REP 2,
/// by address or by a name that resolves to it, unless a rule names the address.
#[tokio::test]
async fn protected_destinations_are_reply_2_unless_a_rule_names_them() {
    let echo = tcp_echo().await;
    let hosts = std::collections::HashMap::from([(
        "inside.test".to_owned(),
        vec!["127.0.0.1".parse().unwrap()],
    )]);
    let protect = "[access]\nprotect_local_destinations = true\n";
    let config = parse(protect);
    let proxy = start_with(config, None, Resolver::with_hosts(hosts.clone())).await;
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
    let name = Addr::Domain(Domain::new(b"inside.test").unwrap(), echo.port());
    let (_, r) = handshake(proxy.addr, Version::Socks5, name, None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
    let metadata = Addr::Ip("169.254.169.254:80".parse().unwrap());
    let (_, r) = handshake(proxy.addr, Version::Socks4, metadata, None).await;
    assert_eq!(
        rejected(r),
        ClientError::Socks4Rejected(Socks4Code::Rejected)
    );

    // A rule naming 127.0.0.1 re-opens it, by address and by name.
    let text = format!("{protect}\n[[rule]]\naction = \"allow\"\nto = [\"127.0.0.1/32\"]\n");
    let config = parse(&text);
    let proxy = start_with(config, None, Resolver::with_hosts(hosts)).await;
    assert!(
        handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None)
            .await
            .1
            .is_ok()
    );
    let name = Addr::Domain(Domain::new(b"inside.test").unwrap(), echo.port());
    assert!(
        handshake(proxy.addr, Version::Socks5, name, None)
            .await
            .1
            .is_ok()
    );

    // Unset on a loopback listener: off, as before.
    let proxy = start(Config::default(), None).await;
    assert!(
        handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None)
            .await
            .1
            .is_ok()
    );
}

#[tokio::test]
async fn denied_by_rule_is_reply_2() {
    let config = parse(
        "[[rule]]\naction = \"deny\"\nto = [\"127.0.0.0/8\", \"localhost\"]\nports = [\"1-1023\"]\n",
    );
    let proxy = start(config, None).await;
    let dst = Addr::Ip("127.0.0.1:80".parse().unwrap());
    let (_, r) = handshake(proxy.addr, Version::Socks5, dst, None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
    let name = Addr::Domain(Domain::new(b"LOCALHOST").unwrap(), 22);
    let (_, r) = handshake(proxy.addr, Version::Socks5, name, None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
    // A name that resolves into the denied network: refused after resolution.
    let mut hosts_name_port = Addr::Domain(Domain::new(b"vm").unwrap(), 80);
    if std::fs::read_to_string("/etc/hosts")
        .map(|h| !h.contains(" vm"))
        .unwrap_or(true)
    {
        hosts_name_port = Addr::Domain(Domain::new(b"localhost.").unwrap(), 80);
    }
    let (_, r) = handshake(proxy.addr, Version::Socks5, hosts_name_port, None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
}

#[tokio::test]
async fn ipv6_listener_and_destination() {
    let listener = server::listen("[::1]:0".parse().unwrap())
        .expect("this test needs the IPv6 loopback address ::1");
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared::new(Config::default(), None, Resolver::from_system()).unwrap());
    tokio::spawn(server::serve(
        vec![listener],
        shared,
        std::future::pending(),
    ));

    let echo = TcpListener::bind("[::1]:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut d = Vec::new();
        s.read_to_end(&mut d).await.unwrap();
        s.write_all(&d).await.unwrap();
    });
    let (mut s, r) = handshake(addr, Version::Socks5, Addr::Ip(echo_addr), None).await;
    let (bound, _) = r.unwrap();
    let Target::Ip(bound) = bound else { panic!() };
    assert!(bound.is_ipv6());
    echo_to_eof(&mut s, b"six").await;
}

#[tokio::test]
async fn connect_timeout_is_reply_6() {
    // A listener with a full backlog that never accepts: further SYNs go unanswered.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let dst = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&dst.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Does a plain connect hang here? If the stack answers anyway, the test cannot work.
    let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(dst)).await;
    assert!(
        probe.is_err(),
        "loopback answered a SYN on a full backlog: this test needs Linux's default \
         net.ipv4.tcp_abort_on_overflow = 0"
    );
    let mut config = Config::default();
    config.timeouts.connect = 1;
    let proxy = start(config, None).await;
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(dst), None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::TtlExpired));
}

#[tokio::test]
async fn failure_reply_survives_a_pipelined_payload() {
    // CONNECT to a closed port with a large payload pipelined behind it: the client must
    // still read the failure reply (no RST from closing with unread data).
    let proxy = start(Config::default(), None).await;
    let mut msg = greeting_and(&socks::encode::request(
        Command::Connect,
        &socks::v4(free_port()),
    ));
    msg.extend_from_slice(&vec![b'x'; 200_000]);
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&msg).await;
        wr
    });
    // Method reply and reply, read until both parse (or 5 s pass).
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (method, reply) = loop {
        if let Ok(Some((m, n))) = socks::decode::method(&out)
            && let Ok(Some((r, _))) = socks::decode::reply5(&out[n..])
        {
            break (m, r);
        }
        let mut chunk = [0u8; 64];
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed after {out:?}");
        out.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(method, Method::NoAuth);
    assert_eq!(reply.rep, ReplyCode::ConnectionRefused, "{reply:?}");
    drop(writer.await);
}

#[tokio::test]
async fn socks4_can_be_disabled() {
    let config = Config {
        socks4: false,
        ..Config::default()
    };
    let proxy = start(config, None).await;
    let (echo, _) = echo_after_eof().await;
    let (_, r) = handshake(proxy.addr, Version::Socks4, Addr::Ip(echo), None).await;
    assert_eq!(
        rejected(r),
        ClientError::Socks4Rejected(Socks4Code::Rejected)
    );
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None).await;
    assert!(r.is_ok());
}

#[tokio::test]
async fn bind_listener_closes_with_the_client() {
    let proxy = start(Config::default(), None).await;
    let (s, _, _, listening) = bind(proxy.addr, Version::Socks5, [127, 0, 0, 1]).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = TcpStream::connect(listening).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn udp_relay_ports_come_from_the_configured_range() {
    let config = parse("[udp]\nports = \"29170-29171\"\n");
    let proxy = start(config, None).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (s, relay) = udp::associate(proxy.addr, udp::ANY_CLIENT).await;
        assert!((29170..=29171).contains(&relay.port()), "{relay}");
        held.push(s);
    }
    // The range is exhausted: the third association fails with a general failure.
    let (_, r) = request(proxy.addr, udp::associate_config(udp::ANY_CLIENT)).await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::GeneralFailure)
    );
}

/// Connects from `from` (a loopback address) and waits for the proxy to close at once.
async fn closed_before_handshake(proxy: SocketAddr, from: [u8; 4]) -> bool {
    let mut s = connect_from(from, proxy).await.unwrap();
    let _ = s
        .write_all(&socks::encode::greeting(&[Method::NoAuth]))
        .await;
    // Refused: EOF (or a reset) with no method selection; admitted: the selection `05 00`.
    let mut out = [0u8; 2];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await;
    match r {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither refused nor answered"),
    }
}

/// A relayed session from `from`, proven alive by one echo.
async fn open_session(proxy: SocketAddr, from: [u8; 4], echo: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, proxy).await.unwrap();
    let config = ClientConfig::new(Version::Socks5, Command::Connect, Addr::Ip(echo));
    handshake_on(&mut stream, config).await.unwrap();
    expect_echo(&mut stream, b"x").await;
    stream
}

#[tokio::test]
async fn session_limits_global_and_per_ip_close_before_the_handshake() {
    let mut config = Config::default();
    config.limits.max_sessions = 2;
    config.limits.max_sessions_per_ip = 1;
    let proxy = start(config, None).await;
    let echo = tcp_echo().await;
    let a = open_session(proxy.addr, [127, 0, 0, 1], echo).await;
    assert!(
        closed_before_handshake(proxy.addr, [127, 0, 0, 1]).await,
        "per-IP limit"
    );
    let _b = open_session(proxy.addr, [127, 0, 0, 2], echo).await;
    assert!(
        closed_before_handshake(proxy.addr, [127, 0, 0, 3]).await,
        "global limit"
    );
    // Closing a session frees its place (the server notices asynchronously).
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if !closed_before_handshake(proxy.addr, [127, 0, 0, 3]).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "place never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn session_limit_per_user_is_reply_1() {
    let mut config = Config::default();
    config.limits.max_sessions_per_user = 1;
    let proxy = start(config, Some(&[("alice", "pw"), ("bob", "pw")])).await;
    let echo = tcp_echo().await;
    let (first, r) = connect_as(proxy.addr, echo, b"alice", b"pw").await;
    r.unwrap();
    let (_, r) = connect_as(proxy.addr, echo, b"alice", b"pw").await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::GeneralFailure)
    );
    // Another user is not affected.
    let (_bob, r) = connect_as(proxy.addr, echo, b"bob", b"pw").await;
    r.unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_s, r) = connect_as(proxy.addr, echo, b"alice", b"pw").await;
        if r.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's place never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tcp_idle_timeout_closes_a_silent_session() {
    let mut config = Config::default();
    config.timeouts.tcp_idle = 1;
    let proxy = start(config, None).await;
    let echo = tcp_echo().await;
    let mut s = open_session(proxy.addr, [127, 0, 0, 1], echo).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the proxy should close the idle session");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// A CONNECT through `proxy` to a name; returns the stream or the failure.
async fn connect_name(
    proxy: SocketAddr,
    name: &str,
    port: u16,
) -> (TcpStream, Result<(Target, Vec<u8>), client::Error>) {
    let domain = Domain::new(name.as_bytes()).unwrap();
    handshake(proxy, Version::Socks5, Addr::Domain(domain, port), None).await
}

#[tokio::test]
async fn upstream_chaining_through_a_second_socksgate_with_credentials() {
    // B knows the name "behind-b.test"; A knows no names at all, so a success proves that A
    // sent the request through B (which also requires a login).
    let hosts = std::collections::HashMap::from([(
        "behind-b.test".to_owned(),
        vec!["127.0.0.1".parse().unwrap()],
    )]);
    let b = start_with(
        Config::default(),
        Some(&[("bob", "pw")]),
        Resolver::with_hosts(hosts),
    )
    .await;
    let a_config = |password: &str| {
        let text = format!(
            "[[upstream]]\nname = \"b\"\nurl = \"socks5h://bob:{password}@{}\"\n\n\
             [[rule]]\naction = \"allow\"\nto = [\".test\"]\nupstream = \"b\"\n",
            b.addr
        );
        Config::parse(&text, std::path::Path::new("a.toml")).unwrap()
    };
    let a = start_with(
        a_config("pw"),
        None,
        Resolver::with_hosts(Default::default()),
    )
    .await;
    let echo = tcp_echo().await;

    let (mut s, r) = connect_name(a.addr, "behind-b.test", echo.port()).await;
    r.unwrap();
    expect_echo(&mut s, b"ping").await;

    // B's failure reply comes back through A unchanged (B cannot resolve this name: 4).
    let (_, r) = connect_name(a.addr, "nowhere.test", 80).await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::HostUnreachable)
    );

    // Requests no upstream rule matches go direct.
    let (_, r) = handshake(a.addr, Version::Socks5, Addr::Ip(echo), None).await;
    r.unwrap();

    // Wrong upstream credentials: general failure.
    let a_bad = start_with(
        a_config("wrong"),
        None,
        Resolver::with_hosts(Default::default()),
    )
    .await;
    let (_, r) = connect_name(a_bad.addr, "behind-b.test", echo.port()).await;
    assert_eq!(
        rejected(r),
        ClientError::Rejected(ReplyCode::GeneralFailure)
    );
}

#[test]
fn upstream_config_errors_name_the_line() {
    let e = Config::parse(
        "[[rule]]\naction = \"allow\"\nupstream = \"nope\"\n",
        std::path::Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c.toml:3:") && e.contains("not defined"), "{e}");
    let e = Config::parse(
        "[[upstream]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\n",
        std::path::Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c.toml:3:"), "{e}");
}

#[tokio::test]
async fn upstream_chaining_through_dante() {
    let blocked = free_port();
    let Some(danted) = tools::require("upstream_chaining_through_dante", &["danted"]) else {
        return;
    };
    // Started from a blocking thread: it polls until danted accepts.
    let dante = tokio::task::spawn_blocking(move || {
        peers::Danted::new(&danted[0]).block_port(blocked).start()
    })
    .await
    .unwrap();
    let dante_addr = dante.addr();
    let text = format!(
        "[[upstream]]\nname = \"dante\"\nurl = \"socks5://{dante_addr}\"\n\n\
         [[rule]]\naction = \"allow\"\nto = [\"127.0.0.1\"]\nupstream = \"dante\"\n"
    );
    let config = Config::parse(&text, std::path::Path::new("a.toml")).unwrap();
    let proxy = start(config, None).await;
    let echo = tcp_echo().await;
    let (mut s, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(echo), None).await;
    r.unwrap();
    expect_echo(&mut s, b"via dante").await;
    // dante's own refusal (its ruleset: reply 2) reaches the client; a direct attempt would
    // have been "connection refused" (5).
    let dst: SocketAddr = format!("127.0.0.1:{blocked}").parse().unwrap();
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Ip(dst), None).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::NotAllowed));
}

#[tokio::test]
async fn upstream_with_proxy_protocol_gets_a_v2_header_before_the_greeting() {
    use socksgate_core::Status;
    use socksgate_core::wire::proxy::{ProxiedAddresses, ProxyHeader};
    // The "upstream" records the first bytes of A's connection, then hangs up.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = vec![0u8; 28 + 3];
        s.read_exact(&mut buf).await.unwrap();
        buf
    });
    let text = format!(
        "[[upstream]]\nname = \"u\"\nurl = \"socks5://{upstream_addr}\"\nproxy_protocol = true\n\n\
         [[rule]]\naction = \"allow\"\nupstream = \"u\"\n"
    );
    let a = start(
        Config::parse(&text, std::path::Path::new("a.toml")).unwrap(),
        None,
    )
    .await;
    let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (client, r) = handshake(a.addr, Version::Socks5, Addr::Ip(dst), None).await;
    assert!(r.is_err(), "the upstream hung up, so the CONNECT fails");
    let bytes = seen.await.unwrap();
    let Ok(Status::Complete((header, used))) = ProxyHeader::parse(&bytes) else {
        panic!("no PROXY header first: {bytes:?}");
    };
    assert_eq!(used, 28, "a v2 header with IPv4 addresses");
    assert_eq!(header.version, 2);
    assert_eq!(
        header.addresses,
        Some(ProxiedAddresses {
            source: client.local_addr().unwrap(),
            destination: a.addr,
        })
    );
    assert_eq!(&bytes[28..], &[5, 1, 0], "then the SOCKS5 greeting");
}

/// Connections the kernel has established but the server not yet accepted when a drain
/// starts (what a balancer just sent, maybe with a client's bytes) are served, not reset.
#[tokio::test]
async fn connections_queued_when_the_drain_starts_are_served() {
    let listener = server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        queued.push(s);
    }
    let shared = Arc::new(Shared::new(Config::default(), None, Resolver::from_system()).unwrap());
    // The drain starts at once.
    let draining = tokio::spawn(server::serve(vec![listener], shared, async {}));
    for s in &mut queued {
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply)
            .await
            .expect("a queued connection is served, not reset");
        assert_eq!(reply, [5, 0]);
    }
    drop(queued);
    tokio::time::timeout(Duration::from_secs(5), draining)
        .await
        .expect("the drain ends with the sessions")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
