//! `[udp] busy_poll`: the UDP threads poll without sleeping only while datagrams flow; once
//! they stop, the server sleeps again though its association stays open.
#![forbid(unsafe_code)]

use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::net::UdpSocket;

use socksgate_tests::origin::UdpEcho;
use socksgate_tests::socks::{Client, Command, Dst, ReplyCode, decode, encode};
use socksgate_tests::socksgate::Server;

/// The CPU time (user + system) `pid` has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

#[test]
fn an_idle_server_sleeps_after_the_datagrams_stop() {
    let server = Server::builder()
        .config("[udp]\nbusy_poll = \"20ms\"\n")
        .start();
    let echo = UdpEcho::start();
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut control = Client::connect(server.addr());
    control.greet_no_auth();
    let r = control.request5(Command::UdpAssociate, &Dst::Ip(udp.local_addr().unwrap()));
    assert_eq!(r.rep, ReplyCode::Succeeded);
    let relay: SocketAddr = r.bound_addr();

    let mut buf = [0u8; 2048];
    for i in 0..2000u32 {
        let payload = i.to_be_bytes();
        udp.send_to(
            &encode::udp_datagram(&Dst::Ip(echo.addr()), &payload),
            relay,
        )
        .unwrap();
        let (n, from) = udp.recv_from(&mut buf).expect("an echo through the relay");
        assert_eq!(from, relay);
        let (frag, src, at) = decode::udp_datagram(&buf[..n]).unwrap();
        assert_eq!((frag, src), (0, Dst::Ip(echo.addr())));
        assert_eq!(&buf[at..n], &payload, "round trip {i}");
    }

    // The association stays open (its control connection is held) but nothing flows.
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_time(server.pid());
    let idle = Duration::from_secs(3);
    std::thread::sleep(idle);
    let used = cpu_time(server.pid()) - before;
    // A thread that kept polling would use most of a core over these seconds, even on a
    // loaded machine; a sleeping server uses next to nothing.
    assert!(
        used < idle / 10,
        "{used:?} of CPU over {idle:?} without datagrams"
    );
    drop(control);
}
