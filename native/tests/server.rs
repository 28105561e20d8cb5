//! The server end to end on loopback, driven by the core's client state machine (and raw
//! bytes where a test needs a specific malformed or pipelined message).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate::session::Shared;
use socksgate::users::{self, Users};
use socksgate::{access, client, server};
use socksgate_core::client::{Client, ClientConfig, ClientError, Credentials};
use socksgate_core::server::Version;
use socksgate_core::wire::{Command, ReplyCode, Socks4Code};
use socksgate_core::{Addr, Domain, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Proxy {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(config: Config, users: Option<&[(&str, &str)]>) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let users = users.map(|list| {
        let path = dir.path().join("users");
        for (u, p) in list {
            users::set_password(&path, u, p.as_bytes()).unwrap();
        }
        Arc::new(Users::load(&path).unwrap())
    });
    let rules = access::compile(&config.rules, config.default_action).unwrap();
    let listener = server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let resolver = Resolver::from_system();
    let shared = Arc::new(Shared {
        config,
        users,
        rules,
        resolver,
    });
    tokio::spawn(server::serve(
        vec![listener],
        shared,
        std::future::pending(),
    ));
    Proxy { addr, _dir: dir }
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

async fn handshake(
    proxy: SocketAddr,
    version: Version,
    target: Addr<'_>,
    creds: Option<(&[u8], &[u8])>,
) -> (TcpStream, Result<(Target, Vec<u8>), client::ClientFailure>) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let config = ClientConfig {
        version,
        credentials: creds.map(|(username, password)| Credentials { username, password }),
        command: Command::Connect,
        target,
        user_id: b"",
    };
    let mut c = Client::new(config).unwrap();
    let r = client::handshake(&mut c, &mut stream).await;
    (stream, r)
}

fn rejected(r: Result<(Target, Vec<u8>), client::ClientFailure>) -> ClientError {
    match r {
        Err(client::ClientFailure::Handshake(e)) => e,
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
        s.write_all(b"ping").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ping");
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
        s.write_all(b"by name").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"by name");
    }
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn refused_maps_to_5_and_91() {
    let proxy = start(Config::default(), None).await;
    let dst = Addr::Ip(SocketAddr::from(([127, 0, 0, 1], closed_port())));
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
    let proxy = start(Config::default(), None).await;
    let name = Domain::new(b"no-such-host.invalid").unwrap();
    let (_, r) = handshake(proxy.addr, Version::Socks5, Addr::Domain(name, 80), None).await;
    // NXDOMAIN from the resolver is 4; a resolver that cannot be reached at all would be 1.
    let e = rejected(r);
    assert!(
        matches!(
            e,
            ClientError::Rejected(ReplyCode::HostUnreachable | ReplyCode::GeneralFailure)
        ),
        "{e:?}"
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

#[tokio::test]
async fn unsupported_command_and_address_type() {
    let proxy = start(Config::default(), None).await;
    // CMD 9: reply 7, then the server closes.
    let out = raw(proxy.addr, &[5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(out.get(..4), Some(&[5, 0, 5, 7][..]));
    // ATYP 2: reply 8.
    let out = raw(proxy.addr, &[5, 1, 0, 5, 1, 0, 2, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(out.get(..4), Some(&[5, 0, 5, 8][..]));
    // SOCKS4 has no UDP ASSOCIATE: CD 91.
    let out = raw(proxy.addr, &[4, 3, 0, 80, 127, 0, 0, 1, 0]).await;
    assert_eq!(out.get(..2), Some(&[0, 91][..]));
}

#[tokio::test]
async fn pipelined_greeting_request_and_payload() {
    let proxy = start(Config::default(), None).await;
    let (echo, _) = echo_after_eof().await;
    let mut msg = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    msg.extend_from_slice(&echo.port().to_be_bytes());
    msg.extend_from_slice(b"early payload");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.get(..4), Some(&[5, 0, 5, 0][..]));
    assert_eq!(out.get(12..), Some(&b"early payload"[..]));
}

#[tokio::test]
async fn username_password() {
    let proxy = start(Config::default(), Some(&[("alice", "wonderland")])).await;
    let (echo, _) = echo_after_eof().await;
    let (_, r) = handshake(
        proxy.addr,
        Version::Socks5,
        Addr::Ip(echo),
        Some((b"alice", b"wonderland")),
    )
    .await;
    r.unwrap();
    let (_, r) = handshake(
        proxy.addr,
        Version::Socks5,
        Addr::Ip(echo),
        Some((b"alice", b"wrong")),
    )
    .await;
    assert_eq!(rejected(r), ClientError::AuthFailed);
    let (_, r) = handshake(
        proxy.addr,
        Version::Socks5,
        Addr::Ip(echo),
        Some((b"mallory", b"wonderland")),
    )
    .await;
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

#[tokio::test]
async fn bind_accepts_the_named_peer_and_relays() {
    let proxy = start(Config::default(), None).await;
    for version in [Version::Socks5, Version::Socks4] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let expected = Addr::Ip(SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut c = Client::new(ClientConfig::new(version, Command::Bind, expected)).unwrap();
        let (listening, rest) = client::handshake_until_reply(&mut c, &mut s).await.unwrap();
        let Target::Ip(listening) = listening else {
            panic!("bound is a name")
        };
        assert_eq!(listening.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        let mut peer = TcpStream::connect(listening).await.unwrap();
        let (peer_seen, _) = client::drive(&mut c, &mut s, rest, false).await.unwrap();
        assert_eq!(
            peer_seen,
            Target::Ip(peer.local_addr().unwrap()),
            "{version:?}"
        );
        peer.write_all(b"from peer").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"from peer");
    }
}

#[tokio::test]
async fn bind_refuses_other_peers_and_times_out() {
    let mut config = Config::default();
    config.timeouts.bind = 1;
    let proxy = start(config, None).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Expect 127.0.0.2; connect from 127.0.0.1.
    let expected = Addr::Ip(SocketAddr::from(([127, 0, 0, 2], 0)));
    let mut c = Client::new(ClientConfig::new(Version::Socks5, Command::Bind, expected)).unwrap();
    let (listening, rest) = client::handshake_until_reply(&mut c, &mut s).await.unwrap();
    let Target::Ip(listening) = listening else {
        panic!()
    };
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    if let Ok(mut intruder) = sock.connect(listening).await {
        let mut buf = [0u8; 1];
        // Closed by the proxy without data.
        assert_eq!(intruder.read(&mut buf).await.unwrap_or(0), 0);
    }
    let r = client::drive(&mut c, &mut s, rest, false).await;
    assert_eq!(rejected(r), ClientError::Rejected(ReplyCode::TtlExpired));
}
