//! Scaffolding shared by the host tests (`gateway.rs`, `conformance.rs`): the firmware's
//! server code on std, with two embassy-net stacks joined by an in-memory wire (no
//! privileges, no sockets of the host).
//!
//! * gateway stack 10.0.0.1 (fd00::1): `socksgate_embedded::Gateway` on port 1080;
//! * peer stack 10.0.0.2 (fd00::2): the scripted SOCKS clients, a TCP and a UDP echo server
//!   on port 7 and a DNS server on port 53.
//!
//! The link is `HardwareAddress::Ip` (no ARP): a packet for an address neither stack owns
//! is dropped unanswered.

// Each test crate compiles its own copy and uses only part of it.
#![allow(dead_code)]

use core::convert::Infallible;
use core::future::Future;
use core::sync::atomic::{AtomicU32, Ordering};

use embassy_futures::join::join_array;
use embassy_futures::select::{Either, Either3, Either4, select, select3, select4};
use embassy_net::tcp::{State, TcpSocket};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{
    Config, ConfigV4, ConfigV6, IpEndpoint, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr, Runner,
    Stack, StackResources, StaticConfigV4, StaticConfigV6,
};
use embassy_net_driver_channel as ch;
use embassy_net_driver_channel::driver::{HardwareAddress, LinkState};
use embassy_time::{Duration, Timer, with_timeout};
use socksgate_embedded::monitor::Monitor;
use socksgate_embedded::pool::sockets_needed;
use socksgate_embedded::{
    Configuration, Gateway, GatewayConfig, GatewayStorage, SessionBuffers, UdpRefusalBuffers,
};

const MTU: usize = 1500;
/// Sessions of the gateway under test (small, so the pool is easy to exhaust).
pub(crate) const SESSIONS: usize = 2;
/// UDP association slots of the gateway under test.
pub(crate) const UDP_SLOTS: usize = 1;
pub(crate) const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
pub(crate) const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
pub(crate) const GATEWAY_IP6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const PEER_IP6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub(crate) const SOCKS_PORT: u16 = 1080;
pub(crate) const ECHO_PORT: u16 = 7;
/// SOCKS5 CONNECT request to the echo server on the peer, by IPv4 address.
pub(crate) const CONNECT_ECHO_V4: [u8; 10] = [5, 1, 0, 1, 10, 0, 0, 2, 0, ECHO_PORT as u8];

type Device = ch::Device<'static, MTU>;

fn node(
    ip: Ipv4Address,
    ip6: Ipv6Address,
    dns: Option<Ipv4Address>,
    seed: u64,
) -> (
    Stack<'static>,
    Runner<'static, Device>,
    ch::Runner<'static, MTU>,
) {
    let state = Box::leak(Box::new(ch::State::<MTU, 8, 8>::new()));
    let (mut wire_end, device) = ch::new(state, HardwareAddress::Ip);
    wire_end.set_link_state(LinkState::Up);
    let mut v4 = StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    };
    if let Some(dns) = dns {
        v4.dns_servers.push(dns).unwrap();
    }
    let mut config = Config::default();
    config.ipv4 = ConfigV4::Static(v4);
    config.ipv6 = ConfigV6::Static(StaticConfigV6 {
        address: Ipv6Cidr::new(ip6, 64),
        gateway: None,
        dns_servers: Default::default(),
    });
    let resources = Box::leak(Box::new(StackResources::<
        { sockets_needed(SESSIONS, UDP_SLOTS) + 8 },
    >::new()));
    let (stack, runner) = embassy_net::new(device, config, resources, seed);
    (stack, runner, wire_end)
}

/// A DNS server on the peer, port 53: `echo.test` has A 10.0.0.2, `echo6.test` has only
/// AAAA fd00::2, every other name is NXDOMAIN. Test scaffolding, not SOCKS: it answers the
/// gateway's embassy-net resolver.
async fn dns_server(stack: Stack<'static>) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx = [0u8; 1024];
    let mut tx = [0u8; 1024];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    socket.bind(53).unwrap();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let query = &buf[..n];
        // Question: labels from offset 12 up to the root label, then QTYPE and QCLASS.
        let mut at = 12;
        let mut name = Vec::new();
        while query[at] != 0 {
            let len = query[at] as usize;
            if !name.is_empty() {
                name.push(b'.');
            }
            name.extend_from_slice(&query[at + 1..at + 1 + len]);
            at += 1 + len;
        }
        let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
        let question_end = at + 5;
        let mut reply = query[..question_end].to_vec();
        reply[2] = 0x81;
        reply[3] = 0x80;
        let rdata: Option<Vec<u8>> = match (&name[..], qtype) {
            (b"echo.test", 1) => Some(PEER_IP.octets().to_vec()),
            (b"echo6.test", 28) => Some(PEER_IP6.octets().to_vec()),
            (b"echo.test" | b"echo6.test", _) => None,
            _ => {
                reply[3] = 0x83; // NXDOMAIN
                None
            }
        };
        if let Some(rdata) = rdata {
            reply[7] = 1; // ANCOUNT
            reply.extend_from_slice(&[0xc0, 12]);
            reply.extend_from_slice(&qtype.to_be_bytes());
            reply.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            reply.extend_from_slice(&rdata);
        }
        socket.send_to(&reply, from.endpoint).await.unwrap();
    }
}

/// UDP echo on the peer, port 7.
async fn udp_echo_server(stack: Stack<'static>) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx = [0u8; 4096];
    let mut tx = [0u8; 4096];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    socket.bind(ECHO_PORT).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        socket.send_to(&buf[..n], from.endpoint).await.unwrap();
    }
}

/// Copies every frame one side transmits into the other side's receive queue.
async fn wire(a: ch::Runner<'static, MTU>, b: ch::Runner<'static, MTU>) -> ! {
    let (_, mut a_rx, mut a_tx) = a.split();
    let (_, mut b_rx, mut b_tx) = b.split();
    loop {
        match select(a_tx.tx_buf(), b_tx.tx_buf()).await {
            Either::First(frame) => {
                let len = frame.len();
                let slot = b_rx.rx_buf().await;
                slot[..len].copy_from_slice(frame);
                b_rx.rx_done(len);
                a_tx.tx_done();
            }
            Either::Second(frame) => {
                let len = frame.len();
                let slot = a_rx.rx_buf().await;
                slot[..len].copy_from_slice(frame);
                a_rx.rx_done(len);
                b_tx.tx_done();
            }
        }
    }
}

/// TCP echo on the peer: `N` connections at a time, each echoing until EOF, then closing.
async fn echo_server<const N: usize>(stack: Stack<'static>) -> ! {
    let slots: [_; N] = core::array::from_fn(|_| async move {
        let mut rx = [0u8; 4096];
        let mut tx = [0u8; 4096];
        loop {
            let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
            if socket.accept(ECHO_PORT).await.is_err() {
                continue;
            }
            let mut buf = [0u8; 1024];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if write_all(&mut socket, &buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            socket.close();
            let _ = socket.flush().await;
            while !matches!(socket.state(), State::Closed | State::TimeWait) {
                Timer::after_millis(5).await;
            }
        }
    });
    join_array(slots).await;
    unreachable!()
}

static SEED: AtomicU32 = AtomicU32::new(1);

/// Runs `scenario` against a gateway with `config`, with a 20 s bound.
pub(crate) fn run<F, Fut>(config: &'static GatewayConfig, scenario: F)
where
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let monitor = Box::leak(Box::new(Monitor::new()));
    run_monitored(config, monitor, scenario);
}

/// Runs `scenario` against a gateway with any configuration, counting into `monitor`.
pub(crate) fn run_monitored<C, F, Fut>(
    config: &'static C,
    monitor: &'static Monitor<SESSIONS>,
    scenario: F,
) where
    C: Configuration,
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let storage = Box::leak(Box::new(GatewayStorage::<SESSIONS, UDP_SLOTS>::new()));
    run_gateway(
        |stack| serve(Gateway::new(stack, config, storage, monitor)),
        scenario,
    );
}

/// Like [`run`], but the gateway is built with `Gateway::from_parts` from `B`-byte session
/// buffers each in an allocation of its own, as a board spreads them over RAM banks.
pub(crate) fn run_from_parts<const B: usize, F, Fut>(config: &'static GatewayConfig, scenario: F)
where
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let sessions: [&'static mut SessionBuffers<B>; SESSIONS] =
        core::array::from_fn(|_| Box::leak(Box::new(SessionBuffers::new())));
    let rest = Box::leak(Box::new(UdpRefusalBuffers::<UDP_SLOTS>::new()));
    let monitor = Box::leak(Box::new(Monitor::new()));
    run_gateway(
        |stack| serve(Gateway::from_parts(stack, config, sessions, rest, monitor)),
        scenario,
    );
}

/// The gateway's endless future with a nameable output.
async fn serve<C: Configuration, const N: usize, const U: usize, const B: usize>(
    gateway: Gateway<'static, C, N, U, B>,
) -> Infallible {
    gateway.run().await
}

fn run_gateway<G, GFut, F, Fut>(gateway: G, scenario: F)
where
    G: FnOnce(Stack<'static>) -> GFut,
    GFut: Future<Output = Infallible>,
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let seed = u64::from(SEED.fetch_add(2, Ordering::Relaxed));
    let (gw_stack, mut gw_runner, gw_wire) = node(GATEWAY_IP, GATEWAY_IP6, Some(PEER_IP), seed);
    let (peer_stack, mut peer_runner, peer_wire) = node(PEER_IP, PEER_IP6, None, seed + 1);
    let gateway = gateway(gw_stack);
    let test = async {
        match select(
            select3(
                gateway,
                echo_server::<{ SESSIONS + 2 }>(peer_stack),
                select(dns_server(peer_stack), udp_echo_server(peer_stack)),
            ),
            with_timeout(Duration::from_secs(20), scenario(peer_stack)),
        )
        .await
        {
            Either::First(Either3::First(never)) => match never {},
            Either::First(Either3::Second(never)) => never,
            Either::First(Either3::Third(never)) => match never {
                Either::First(never) | Either::Second(never) => never,
            },
            Either::Second(result) => result.expect("scenario timed out"),
        }
    };
    match futures_executor::block_on(select4(
        gw_runner.run(),
        peer_runner.run(),
        wire(gw_wire, peer_wire),
        test,
    )) {
        Either4::Fourth(()) => {}
    }
}

pub(crate) async fn write_all(
    socket: &mut TcpSocket<'_>,
    mut bytes: &[u8],
) -> Result<(), embassy_net::tcp::Error> {
    while !bytes.is_empty() {
        let n = socket.write(bytes).await?;
        bytes = &bytes[n..];
    }
    socket.flush().await
}

/// A scripted client on the peer stack.
pub(crate) struct Client {
    pub(crate) socket: TcpSocket<'static>,
}

impl Client {
    pub(crate) async fn connect(stack: Stack<'static>) -> Self {
        let rx = Box::leak(Box::new([0u8; 4096]));
        let tx = Box::leak(Box::new([0u8; 4096]));
        let mut socket = TcpSocket::new(stack, rx, tx);
        socket
            .connect(IpEndpoint::new(GATEWAY_IP.into(), SOCKS_PORT))
            .await
            .expect("TCP connect to the gateway");
        Self { socket }
    }

    /// Connects and completes a SOCKS5 greeting that offers only "no authentication", which
    /// the gateway must choose.
    pub(crate) async fn socks5_no_auth(stack: Stack<'static>) -> Self {
        let mut client = Self::connect(stack).await;
        client.send(&[5, 1, 0]).await;
        assert_eq!(client.recv(2).await, [5, 0]);
        client
    }

    /// Offers only username/password (RFC 1929), which the gateway must choose, and logs in;
    /// returns the status octet of the answer (0: success).
    pub(crate) async fn login(&mut self, user: &[u8], password: &[u8]) -> u8 {
        self.send(&[5, 1, 2]).await;
        assert_eq!(self.recv(2).await, [5, 2]);
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user);
        auth.push(password.len() as u8);
        auth.extend_from_slice(password);
        self.send(&auth).await;
        let status = self.recv(2).await;
        assert_eq!(status[0], 1, "RFC 1929 version");
        status[1]
    }

    /// Sends a SOCKS5 request and reads a reply of the length an IPv4 BND.ADDR gives (10).
    pub(crate) async fn request(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request).await;
        self.recv(10).await
    }

    /// Sends `payload` and expects it back unchanged (the peer's echo server).
    pub(crate) async fn echo(&mut self, payload: &[u8]) {
        self.send(payload).await;
        assert_eq!(self.recv(payload.len()).await, payload);
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        write_all(&mut self.socket, bytes).await.expect("send");
    }

    /// Sends `bytes` one octet per TCP segment.
    pub(crate) async fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(core::slice::from_ref(b)).await;
            Timer::after_millis(2).await;
        }
    }

    /// Reads exactly `n` bytes.
    pub(crate) async fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.socket.read(&mut out[got..]).await {
                Ok(0) => panic!("EOF after {got} of {n} bytes: {:?}", &out[..got]),
                Ok(k) => got += k,
                Err(e) => panic!("read failed after {got} of {n} bytes: {e:?}"),
            }
        }
        out
    }

    /// Expects the gateway to end the connection with a FIN (not a reset).
    pub(crate) async fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        match self.socket.read(&mut buf).await {
            Ok(0) => {}
            other => panic!("expected an orderly EOF, got {other:?}"),
        }
    }

    /// Closes our side in order and waits for the FIN exchange to finish.
    pub(crate) async fn close(mut self) {
        self.socket.close();
        self.socket.flush().await.expect("flush FIN");
        let mut buf = [0u8; 64];
        loop {
            match self.socket.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("reset while closing: {e:?}"),
            }
        }
        while !matches!(self.socket.state(), State::Closed | State::TimeWait) {
            Timer::after_millis(5).await;
        }
    }
}

/// Checks a SOCKS5 success reply carrying an IPv4 BND.ADDR of the gateway.
pub(crate) fn assert_success_v4(reply: &[u8]) {
    assert_eq!(&reply[..4], &[5, 0, 0, 1], "reply {reply:?}");
    assert_eq!(
        &reply[4..8],
        &GATEWAY_IP.octets(),
        "BND.ADDR is the gateway's upstream address"
    );
}

/// A SOCKS5 session without authentication, relaying to the peer's echo server.
pub(crate) async fn connect_echo(stack: Stack<'static>) -> Client {
    let mut client = Client::socks5_no_auth(stack).await;
    assert_success_v4(&client.request(&CONNECT_ECHO_V4).await);
    client
}

/// A SOCKS5 CONNECT to the echo server that the gateway must refuse with "general failure"
/// (REP 1, as when no session is free) and then close in order.
pub(crate) async fn expect_connect_general_failure(stack: Stack<'static>, why: &str) {
    let mut client = Client::socks5_no_auth(stack).await;
    assert_eq!(client.request(&CONNECT_ECHO_V4).await[..2], [5, 1], "{why}");
    client.expect_eof().await;
    client.close().await;
}
