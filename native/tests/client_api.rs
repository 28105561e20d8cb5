//! The client library (`socksgate::client`) against real servers on loopback: socksgate's
//! own server (in-process) and Debian's Dante. CONNECT over SOCKS4, 4a, 5 and 5h, password
//! authentication, BIND with both replies, UDP ASSOCIATE with addresses and names, chains
//! of two proxies (socksgate → Dante, socksgate → socksgate with credentials), refusals
//! with their reply codes in the error, and the timeout.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksgate::client::{Auth, Connector, Error, Proxy, Stage};
use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate_core::Target;
use socksgate_core::client::ClientError;
use socksgate_core::wire::{ReplyCode, Socks4Code};
use socksgate_tests::peers::Danted;
use socksgate_tests::tools;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{Proxy as Server, start_with, tcp_echo, udp_echo};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A server whose resolver knows `echo.test` as 127.0.0.1 and nothing else.
async fn server(config: Config, users: Option<&[(&str, &str)]>) -> Server {
    let hosts = HashMap::from([("echo.test".to_owned(), vec![LOCALHOST])]);
    start_with(config, users, Resolver::with_hosts(hosts)).await
}

fn parse(text: &str) -> Config {
    Config::parse(text, std::path::Path::new("t.toml")).unwrap()
}

/// Writes `message` and reads as many bytes back.
async fn echoes(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the echo comes back in time")
        .unwrap();
    assert_eq!(back, message);
}

fn url(scheme: &str, server: SocketAddr) -> Proxy {
    format!("{scheme}://{server}").parse().unwrap()
}

fn danted() -> Option<std::path::PathBuf> {
    tools::require("client_api", &["danted"]).map(|v| v[0].clone())
}

#[tokio::test]
async fn connect_over_every_protocol_to_socksgate() {
    let proxy = server(Config::default(), None).await;
    let echo = tcp_echo().await;
    for scheme in ["socks4", "socks4a", "socks5", "socks5h"] {
        let connector = Connector::new(url(scheme, proxy.addr));
        let mut s = connector.connect(echo).await.unwrap();
        echoes(&mut s, scheme.as_bytes()).await;
        // The proxy reports its outbound address: the echo server sees it.
        assert!(
            matches!(s.reply_addr(), Target::Ip(sa) if sa.ip() == LOCALHOST),
            "{scheme}"
        );
    }
    // A name only the proxy can resolve: SOCKS4a and SOCKS5h send it.
    for scheme in ["socks4a", "socks5h"] {
        let connector = Connector::new(url(scheme, proxy.addr));
        let mut s = connector.connect(("echo.test", echo.port())).await.unwrap();
        echoes(&mut s, b"by name").await;
    }
    // socks5:// resolves here, where echo.test does not exist.
    let e = Connector::new(url("socks5", proxy.addr))
        .with_resolver(Resolver::with_hosts(HashMap::new()))
        .connect(("echo.test", echo.port()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Connect {
                stage: Stage::Resolve,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn password_authentication() {
    let proxy = server(Config::default(), Some(&[("alice", "s3cret")])).await;
    let echo = tcp_echo().await;
    let good = url("socks5", proxy.addr).with_auth(Auth::password("alice", "s3cret"));
    let mut s = Connector::new(good).connect(echo).await.unwrap();
    echoes(&mut s, b"authenticated").await;
    let bad = url("socks5", proxy.addr).with_auth(Auth::password("alice", "wrong"));
    let e = Connector::new(bad).connect(echo).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake {
                stage: Stage::Authentication,
                source: ClientError::AuthFailed,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("rejected the username/password"),
        "{e}"
    );
    // Without credentials the proxy accepts none of the offered methods.
    let e = Connector::new(url("socks5", proxy.addr))
        .connect(echo)
        .await
        .unwrap_err();
    assert_eq!(
        e.handshake_error(),
        Some(ClientError::NoAcceptableMethod),
        "{e}"
    );
    assert!(e.to_string().contains("method negotiation"), "{e}");
}

#[tokio::test]
async fn refusals_name_their_reply_code_and_stage() {
    let config = parse(
        "[udp]\nports = \"29190-29190\"\n\n[[rule]]\naction = \"deny\"\nto = [\"127.0.0.1/32\"]\nports = [\"9\"]\n",
    );
    let proxy = server(config, None).await;
    let socks5 = Connector::new(url("socks5h", proxy.addr));
    // REP 5: nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let e = socks5.connect(closed_addr).await.unwrap_err();
    assert_eq!(e.reply_code(), Some(ReplyCode::ConnectionRefused), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "proxy {}, request: proxy refused: connection refused by the destination (REP 5)",
            proxy.addr
        )),
        "{e}"
    );
    // REP 2: the rules deny port 9.
    let e = socks5.connect(("127.0.0.1", 9)).await.unwrap_err();
    assert_eq!(e.reply_code(), Some(ReplyCode::NotAllowed), "{e}");
    assert!(e.to_string().contains("(REP 2)"), "{e}");
    // REP 4: a name the proxy cannot resolve.
    let e = socks5.connect(("nowhere.test", 80)).await.unwrap_err();
    assert_eq!(e.reply_code(), Some(ReplyCode::HostUnreachable), "{e}");
    assert!(e.to_string().contains("(REP 4)"), "{e}");
    // REP 1: the one relay port is taken by the first association.
    let held = socks5.udp_associate().await.unwrap();
    let e = socks5.udp_associate().await.unwrap_err();
    assert_eq!(e.reply_code(), Some(ReplyCode::GeneralFailure), "{e}");
    assert!(e.to_string().contains("(REP 1)"), "{e}");
    drop(held);
    // SOCKS4: CD 91.
    let e = Connector::new(url("socks4", proxy.addr))
        .connect(closed_addr)
        .await
        .unwrap_err();
    assert_eq!(e.socks4_code(), Some(Socks4Code::Rejected), "{e}");
    assert!(e.to_string().contains("(SOCKS4 CD 91)"), "{e}");
    // SOCKS4 carries no IPv6 destination: refused before anything is sent.
    let e = Connector::new(url("socks4", proxy.addr))
        .connect(("::1", 80))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake {
                stage: Stage::Request,
                source: ClientError::AddressNotSupported,
                ..
            }
        ),
        "{e:?}"
    );
    // SOCKS4 cannot carry UDP ASSOCIATE: the core says so before anything is sent.
    let e = Connector::new(url("socks4", proxy.addr))
        .udp_associate()
        .await
        .unwrap_err();
    assert_eq!(
        e.handshake_error(),
        Some(ClientError::CommandNotSupported),
        "{e}"
    );
}

#[tokio::test]
async fn bind_refusal_in_the_second_reply_names_its_stage() {
    let mut config = Config::default();
    config.timeouts.bind = 1;
    let proxy = server(config, None).await;
    let listener = Connector::new(url("socks5", proxy.addr))
        .bind(("127.0.0.2", 0))
        .await
        .unwrap();
    // Nobody (from 127.0.0.2) connects: the proxy gives up with REP 6.
    let e = listener.accept().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Handshake {
                stage: Stage::BindPeer,
                source: ClientError::Rejected(ReplyCode::TtlExpired),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("waiting for the BIND peer"), "{e}");
}

/// BIND's two replies: the listening address, then the peer's connection, data both ways.
async fn bind_both_replies(proxy: Proxy) {
    let listener = Connector::new(proxy.clone())
        .bind((LOCALHOST, 0))
        .await
        .unwrap();
    let Target::Ip(listening) = *listener.listen_addr() else {
        panic!("{:?}", listener.listen_addr())
    };
    assert!(!listening.ip().is_unspecified(), "{listening}");
    let peer = tokio::spawn(async move {
        let mut peer = TcpStream::connect(listening).await.unwrap();
        let local = peer.local_addr().unwrap();
        peer.write_all(b"from peer").await.unwrap();
        let mut got = [0u8; 11];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"from client");
        local
    });
    let (mut stream, seen) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the second reply comes")
        .unwrap();
    let mut got = [0u8; 9];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from peer");
    stream.write_all(b"from client").await.unwrap();
    let peer_addr = peer.await.unwrap();
    assert_eq!(seen, Target::Ip(peer_addr), "{proxy}");
    assert_eq!(stream.reply_addr(), &seen);
}

#[tokio::test]
async fn bind_with_both_replies_through_socksgate() {
    let proxy = server(Config::default(), None).await;
    bind_both_replies(url("socks5", proxy.addr)).await;
    bind_both_replies(url("socks4", proxy.addr)).await;
}

#[tokio::test]
async fn udp_associate_through_socksgate_by_address_and_by_name() {
    let proxy = server(Config::default(), None).await;
    let echo = udp_echo().await;
    let udp = Connector::new(url("socks5h", proxy.addr))
        .udp_associate()
        .await
        .unwrap();
    assert_ne!(udp.relay_addr().port(), 0);
    let mut buf = [0u8; 2048];
    assert_eq!(udp.send_to(b"by address", echo).await.unwrap(), 10);
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"by address"[..], Target::Ip(echo)));
    // The proxy resolves the name; the answer comes from the address it resolved to.
    udp.send_to(b"by name", ("echo.test", echo.port()))
        .await
        .unwrap();
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"by name"[..], Target::Ip(echo)));
    // A buffer shorter than the datagram gets its start, as with any UDP socket.
    udp.send_to(b"truncated", echo).await.unwrap();
    let mut short = [0u8; 4];
    let (n, _) = udp.recv_from(&mut short).await.unwrap();
    assert_eq!(&short[..n], b"trun");
}

#[tokio::test]
async fn udp_associate_ends_when_the_proxy_closes_the_control_connection() {
    let mut config = Config::default();
    config.timeouts.udp_idle = 1;
    let proxy = server(config, None).await;
    let udp = Connector::new(url("socks5", proxy.addr))
        .udp_associate()
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let e = tokio::time::timeout(Duration::from_secs(10), udp.recv_from(&mut buf))
        .await
        .expect("the idle association is ended by the proxy")
        .unwrap_err();
    assert!(matches!(e, Error::AssociationClosed { .. }), "{e:?}");
}

#[tokio::test]
async fn chains_of_two_proxies() {
    let echo = tcp_echo().await;
    let first = server(Config::default(), None).await;
    let second = server(Config::default(), Some(&[("bob", "hunter2")])).await;
    // socksgate → socksgate (with credentials at the second), by name at the end.
    let connector = Connector::chain([
        url("socks5", first.addr),
        url("socks5h", second.addr).with_auth(Auth::password("bob", "hunter2")),
    ])
    .unwrap();
    let mut s = connector.connect(("echo.test", echo.port())).await.unwrap();
    echoes(&mut s, b"two hops").await;
    // BIND at the end of a chain.
    let listener = connector.bind((LOCALHOST, 0)).await.unwrap();
    assert!(matches!(listener.listen_addr(), Target::Ip(sa) if sa.port() != 0));
    // A refusal names the proxy that refused.
    let e = Connector::chain([
        url("socks5", first.addr),
        url("socks5h", second.addr).with_auth(Auth::password("bob", "wrong")),
    ])
    .unwrap()
    .connect(echo)
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("proxy {}, authentication", second.addr)),
        "{e}"
    );
    // UDP cannot go through a chain.
    assert!(matches!(
        connector.udp_associate().await.unwrap_err(),
        Error::Unsupported(_)
    ));
}

#[tokio::test]
async fn timeout_bounds_a_silent_proxy() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let e = Connector::new(url("socks5", addr))
        .with_timeout(Duration::from_millis(300))
        .connect(("127.0.0.1", 80))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A proxy that is not there at all: the connect stage, with the cause.
    holder.abort();
    let _ = holder.await;
    let e = Connector::new(url("socks5", addr))
        .connect(("127.0.0.1", 80))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Connect {
                stage: Stage::ConnectToProxy,
                ..
            }
        ),
        "{e:?}"
    );
}

// ---- Dante --------------------------------------------------------------------------

#[tokio::test]
async fn connect_bind_and_refusal_through_dante() {
    let Some(exe) = danted() else { return };
    let dante = Danted::new(&exe).block_port(9).start();
    let echo = tcp_echo().await;
    for scheme in ["socks4", "socks5"] {
        let mut s = Connector::new(url(scheme, dante.addr()))
            .connect(echo)
            .await
            .unwrap();
        echoes(&mut s, scheme.as_bytes()).await;
    }
    bind_both_replies(url("socks5", dante.addr())).await;
    let e = Connector::new(url("socks5", dante.addr()))
        .connect(("127.0.0.1", 9))
        .await
        .unwrap_err();
    assert_eq!(e.reply_code(), Some(ReplyCode::NotAllowed), "{e}");
}

#[tokio::test]
async fn udp_associate_through_dante() {
    let Some(exe) = danted() else { return };
    let dante = Danted::new(&exe)
        .commands("connect udpassociate udpreply")
        .start();
    let echo = udp_echo().await;
    let udp = Connector::new(url("socks5", dante.addr()))
        .udp_associate()
        .await
        .unwrap();
    udp.send_to(b"via dante", echo).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("Dante relays the answer")
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"via dante"[..], Target::Ip(echo)));
}

#[tokio::test]
async fn chain_through_socksgate_then_dante() {
    let Some(exe) = danted() else { return };
    let dante = Danted::new(&exe).start();
    let first = server(Config::default(), None).await;
    let echo = tcp_echo().await;
    let connector = Connector::new(url("socks5", first.addr)).through(url("socks4", dante.addr()));
    let mut s = connector.connect(echo).await.unwrap();
    echoes(&mut s, b"socksgate then dante").await;
    assert_eq!(connector.proxies().len(), 2);
}
