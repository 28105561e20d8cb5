//! `udp-floor`, socksbench's lower bound for UDP round trips, relays what a SOCKS5 client
//! sends through it both ways, refuses other commands (also when they arrive with the
//! greeting) and ends an association with its control connection.
#![forbid(unsafe_code)]

use core::net::Ipv4Addr;
use core::time::Duration;
use std::net::UdpSocket;

use socksgate_tests::origin::UdpEcho;
use socksgate_tests::peers::Process;
use socksgate_tests::socks::{Client, Command, Dst, Method, ReplyCode, decode, encode};
use socksgate_tests::tmp::TempDir;

/// Starts `udp-floor` on a free loopback port.
fn start_floor() -> Process {
    Process::spawn("udp-floor", TempDir::new(), |port, _| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_udp-floor"));
        cmd.arg(port.to_string());
        cmd
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn datagrams_go_both_ways_until_the_control_connection_closes() {
    let floor = start_floor();
    let echo = UdpEcho::start();
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut control = Client::connect(floor.addr());
    control.greet_no_auth();
    let r = control.request5(Command::UdpAssociate, &Dst::Ip(udp.local_addr().unwrap()));
    assert_eq!(r.rep, ReplyCode::Succeeded);
    let relay = r.bound_addr();

    let mut buf = [0u8; 2048];
    for i in 0..100u32 {
        let payload = i.to_be_bytes();
        let datagram = encode::udp_datagram(&Dst::Ip(echo.addr()), &payload);
        udp.send_to(&datagram, relay).unwrap();
        let (n, from) = udp.recv_from(&mut buf).expect("an echo through the relay");
        assert_eq!(from, relay);
        let (frag, src, at) = decode::udp_datagram(&buf[..n]).unwrap();
        assert_eq!((frag, src), (0, Dst::Ip(echo.addr())));
        assert_eq!(&buf[at..n], &payload, "round trip {i}");
    }

    drop(control);
    // The relay's socket closes with the association: a datagram sent after that is
    // answered by ICMP port unreachable or by nothing.
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let datagram = encode::udp_datagram(&Dst::Ip(echo.addr()), b"late");
    let mut echoed = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let _ = udp.send_to(&datagram, relay);
        echoed = udp.recv_from(&mut buf).is_ok();
        if !echoed {
            break;
        }
    }
    assert!(
        !echoed,
        "the relay still answers after its control connection closed"
    );
}

#[test]
fn connect_is_refused_even_sent_with_the_greeting() {
    let floor = start_floor();
    let mut control = Client::connect(floor.addr());
    let mut pipelined = encode::greeting(&[Method::NoAuth]);
    pipelined.extend(encode::request(Command::Connect, &Dst::Ip(floor.addr())));
    control.send(&pipelined);
    assert_eq!(control.read_method(), Method::NoAuth);
    assert_eq!(control.read_reply5().rep, ReplyCode::CommandNotSupported);
}
