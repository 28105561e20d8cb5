//! A scripted raw-socket client: half-close, pipelined data, BIND, UDP ASSOCIATE, SOCKS4/4a
//! and IPv6, with byte-exact expectations.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};

use socksgate_tests::socks::{
    self, Client, Command, Dst, Method, ReplyCode, Socks4Code, decode, encode,
};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, origin};

use crate::{MB, PASS, USER};

/// Sends `request` to an [`origin::reply_after_eof`] peer, half-closes, and expects the
/// peer's whole response.
#[track_caller]
fn expect_response_after_half_close(c: &mut Client, request: &[u8]) {
    c.send(request);
    c.shutdown_write();
    let got = c.read_to_end();
    assert_same_bytes(
        &got,
        &origin::reply_after_eof_response(request),
        "response after the client's half-close",
    );
}

/// Expects the echo server's answer to `payload` (already sent), byte for byte.
#[track_caller]
fn expect_echoed(c: &mut Client, payload: &[u8]) {
    assert_same_bytes(&c.read_exact(payload.len()), payload, "echoed payload");
}

/// Sends `payload` through the relay and expects it echoed.
#[track_caller]
fn send_and_expect_echo(c: &mut Client, payload: &[u8]) {
    c.send(payload);
    expect_echoed(c, payload);
}

#[test]
fn half_close_socks5() {
    let server = Server::start();
    let peer = origin::reply_after_eof();
    let mut c = socks::connect5(server.addr(), &Dst::Ip(peer.addr()));
    expect_response_after_half_close(&mut c, &body(256 * 1024));
}

#[test]
fn half_close_socks4() {
    let server = Server::start();
    let peer = origin::reply_after_eof();
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::Connect, &Dst::Ip(peer.addr()), "");
    assert_eq!(r.cd, Socks4Code::Granted, "{r:?}");
    expect_response_after_half_close(&mut c, &b"half-closed over SOCKS4".repeat(1000));
}

#[test]
fn pipelined_data_after_connect_request() {
    // The payload follows the CONNECT request in the same write, before the reply.
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let payload = body(64 * 1024);
    let mut bytes = encode::request(Command::Connect, &Dst::Ip(echo.addr()));
    bytes.extend_from_slice(&payload);
    c.send(&bytes);
    let r = c.read_reply5();
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    expect_echoed(&mut c, &payload);
}

#[test]
fn pipelined_greeting_request_and_data() {
    // Method selection, request and payload in one write (optimistic client).
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    let payload = b"GET / HTTP/1.0\r\n\r\n pipelined".to_vec();
    let mut bytes = encode::greeting(&[Method::NoAuth]);
    bytes.extend(encode::request(Command::Connect, &Dst::Ip(echo.addr())));
    bytes.extend_from_slice(&payload);
    c.send(&bytes);
    assert_eq!(c.read_method(), Method::NoAuth);
    let r = c.read_reply5();
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    expect_echoed(&mut c, &payload);
}

#[test]
fn pipelined_auth_request_and_data() {
    // RFC 1929 credentials, request and payload in one write after the method reply.
    let server = Server::builder().user(USER, PASS).start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    assert_eq!(c.greet(&[Method::UserPass]), Method::UserPass);
    let payload = body(10_000);
    let mut bytes = encode::userpass(USER, PASS);
    bytes.extend(encode::request(Command::Connect, &Dst::Ip(echo.addr())));
    bytes.extend_from_slice(&payload);
    c.send(&bytes);
    assert_eq!(c.read_auth_status(), 0);
    let r = c.read_reply5();
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    expect_echoed(&mut c, &payload);
}

#[test]
fn pipelined_data_after_socks4_request() {
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    let payload = body(32 * 1024);
    let mut bytes = encode::socks4(Command::Connect, &Dst::Ip(echo.addr()), "bob");
    bytes.extend_from_slice(&payload);
    c.send(&bytes);
    let r = c.read_reply4();
    assert_eq!(r.cd, Socks4Code::Granted, "{r:?}");
    expect_echoed(&mut c, &payload);
}

#[test]
fn socks4a_resolves_name() {
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    let r = c.request4(
        Command::Connect,
        &Dst::Name("localhost".into(), echo.port()),
        "",
    );
    assert_eq!(r.cd, Socks4Code::Granted, "{r:?}");
    send_and_expect_echo(&mut c, b"4a");
}

#[test]
fn socks5_connect_reply_and_1mb_echo() {
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(Command::Connect, &Dst::Ip(echo.addr()));
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    // BND is the server's outbound local address: loopback here, or 0.0.0.0 (unspecified).
    let bound = r.bound_addr();
    assert!(
        bound.ip().is_loopback() || bound.ip().is_unspecified(),
        "BND {bound}"
    );
    let payload = body(MB);
    let mut writer = c.stream().try_clone().expect("clone");
    let sent = payload.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent));
    let got = c.read_exact(MB);
    t.join().expect("writer").expect("write");
    assert_same_bytes(&got, &payload, "1 MiB echo");
}

#[test]
fn ipv6_loopback_listener_and_destination() {
    let server = Server::builder().ipv6().start();
    let echo = origin::echo();
    let v6 = echo.addr_v6().expect("echo on ::1");
    let mut c = socks::connect5(server.addr(), &Dst::Ip(v6));
    send_and_expect_echo(&mut c, b"over ::1");
}

/// Where a client should connect for a BND address: the proxy's IP when BND is unspecified.
fn reachable(bound: SocketAddr, proxy: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::new(proxy.ip(), bound.port())
    } else {
        bound
    }
}

/// The BIND's peer: a connection to the address the proxy listens on, with the tests' read
/// timeout.
fn connect_bind_peer(listen: SocketAddr) -> TcpStream {
    let peer = TcpStream::connect_timeout(&listen, TIMEOUT).expect("connect to BND");
    peer.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    peer
}

/// Expects the BIND's peer to receive exactly `expected`.
#[track_caller]
fn peer_receives(peer: &mut TcpStream, expected: &[u8]) {
    let mut buf = vec![0u8; expected.len()];
    peer.read_exact(&mut buf).expect("peer reads");
    assert_eq!(buf, expected);
}

#[test]
fn bind_socks5_scripted() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    // DST is the address the inbound connection is expected from.
    let first = c.request5(Command::Bind, &socks::v4(0));
    assert_eq!(
        first.rep,
        ReplyCode::Succeeded,
        "first BIND reply {first:?}"
    );
    let listen = reachable(first.bound_addr(), server.addr());
    assert_ne!(listen.port(), 0, "BIND reply must carry the listening port");
    let mut peer = connect_bind_peer(listen);
    let second = c.read_reply5();
    assert_eq!(
        second.rep,
        ReplyCode::Succeeded,
        "second BIND reply {second:?}"
    );
    assert_eq!(
        second.bound_addr(),
        peer.local_addr().expect("local_addr"),
        "second reply names the connecting peer"
    );
    c.send(b"client->peer");
    peer_receives(&mut peer, b"client->peer");
    peer.write_all(b"peer->client").expect("peer writes");
    peer.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(c.read_to_end(), b"peer->client");
}

#[test]
fn bind_socks4_scripted() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    let first = c.request4(Command::Bind, &socks::v4(0), "");
    assert_eq!(first.cd, Socks4Code::Granted, "{first:?}");
    let listen = reachable(first.addr, server.addr());
    let mut peer = connect_bind_peer(listen);
    let second = c.read_reply4();
    assert_eq!(second.cd, Socks4Code::Granted, "{second:?}");
    peer.write_all(b"v4 bind").expect("peer writes");
    assert_eq!(c.read_exact(7), b"v4 bind");
    c.send(b"back");
    peer_receives(&mut peer, b"back");
}

/// A client UDP socket on `ip`, with the tests' read timeout.
fn udp_client(ip: IpAddr) -> UdpSocket {
    let udp = UdpSocket::bind((ip, 0)).expect("bind udp");
    udp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    udp
}

/// Sends `payload` for `dst` (the UDP echo, by any name) through `relay`; expects the
/// echoed datagram from the relay address, unfragmented, its header naming the echo at
/// `echo`.
#[track_caller]
fn expect_udp_echo(
    udp: &UdpSocket,
    relay: SocketAddr,
    dst: &Dst,
    echo: SocketAddr,
    payload: &[u8],
) {
    udp.send_to(&encode::udp_datagram(dst, payload), relay)
        .expect("send");
    let mut buf = [0u8; 2048];
    let (n, from) = udp.recv_from(&mut buf).expect("reply datagram");
    assert_eq!(from, relay, "replies come from the relay address");
    let (frag, src, off) = decode::udp_datagram(&buf[..n]).expect("header");
    assert_eq!(frag, 0);
    assert_eq!(src, Dst::Ip(echo), "reply header names the echo");
    assert_eq!(&buf[off..n], payload);
}

#[test]
fn udp_associate_scripted() {
    let server = Server::start();
    let echo = origin::UdpEcho::start();
    let udp = udp_client(Ipv4Addr::LOCALHOST.into());
    let (c, relay) = associate(&server, &udp);
    for (i, dst) in [
        Dst::Ip(echo.addr()),
        Dst::Name("localhost".into(), echo.addr().port()),
    ]
    .iter()
    .enumerate()
    {
        let payload = format!("datagram {i}").into_bytes();
        expect_udp_echo(&udp, relay, dst, echo.addr(), &payload);
    }
    drop(c);
}

#[test]
fn udp_associate_ipv6() {
    let server = Server::builder().ipv6().start();
    let echo = origin::UdpEcho::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let udp = udp_client(Ipv6Addr::LOCALHOST.into());
    let (_c, relay) = associate(&server, &udp);
    expect_udp_echo(&udp, relay, &Dst::Ip(echo.addr()), echo.addr(), b"v6 udp");
}

/// A UDP association for `udp` (its address announced as DST); returns the control
/// connection and the relay address.
fn associate(server: &Server, udp: &UdpSocket) -> (Client, SocketAddr) {
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(
        Command::UdpAssociate,
        &Dst::Ip(udp.local_addr().expect("local_addr")),
    );
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    (c, reachable(r.bound_addr(), server.addr()))
}

/// Sends `payload` to the UDP echo through `relay`; the echoed payload, if any arrives
/// within the socket's read timeout.
fn udp_round_trip(
    udp: &UdpSocket,
    relay: SocketAddr,
    echo: SocketAddr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    udp.send_to(&encode::udp_datagram(&Dst::Ip(echo), payload), relay)
        .expect("send");
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = udp.recv_from(&mut buf).ok()?;
        let (_, _, off) = decode::udp_datagram(&buf[..n]).expect("header");
        if &buf[off..n] == payload {
            return Some(buf[off..n].to_vec());
        }
    }
}

#[test]
fn udp_relay_drops_datagrams_from_other_addresses() {
    // RFC 1928 §7: the relay accepts datagrams only from the client's address. 127.0.0.2
    // is another loopback address, standing in for another host.
    let server = Server::start();
    let echo = origin::UdpEcho::start();
    let udp = udp_client(Ipv4Addr::LOCALHOST.into());
    let (_control, relay) = associate(&server, &udp);
    let Ok(intruder) = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0)) else {
        println!("SKIPPED: cannot bind 127.0.0.2 here");
        return;
    };
    intruder
        .send_to(
            &encode::udp_datagram(&Dst::Ip(echo.addr()), b"from elsewhere"),
            relay,
        )
        .expect("send");
    // The relay handles datagrams in order: once the client's own datagram has made the
    // round trip, the intruder's would have reached the echo if it were forwarded.
    assert_eq!(
        udp_round_trip(&udp, relay, echo.addr(), b"from the client").as_deref(),
        Some(&b"from the client"[..])
    );
    assert_eq!(
        echo.received(),
        1,
        "a datagram from another address was relayed"
    );
}

#[test]
fn udp_association_ends_with_control_connection() {
    let server = Server::start();
    let echo = origin::UdpEcho::start();
    let udp = udp_client(Ipv4Addr::LOCALHOST.into());
    let (control, relay) = associate(&server, &udp);
    assert!(udp_round_trip(&udp, relay, echo.addr(), b"while open").is_some());
    drop(control);
    // Give the server time to notice the close, then expect silence.
    udp.set_read_timeout(Some(core::time::Duration::from_millis(500)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + TIMEOUT / 3;
    loop {
        if udp_round_trip(&udp, relay, echo.addr(), b"after close").is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay still forwards {:?} after the control connection closed",
            TIMEOUT / 3
        );
    }
}
