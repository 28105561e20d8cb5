//! UDP ASSOCIATE: one relay socket per association, from a small fixed pool of slots.
//!
//! The association lives as long as its TCP control connection (RFC 1928 §7). Datagrams
//! from the client's address are decapsulated (RFC 1928 §7 header and fragment reassembly in
//! the core), checked against the rules (command UDP ASSOCIATE, the datagram's destination,
//! before and after resolution) and sent on; datagrams from anywhere else are encapsulated
//! with their source and sent to the client. The first client datagram fixes the client's
//! UDP port unless the request named it.

use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};

use embassy_futures::select::{Either3, select3};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Instant, Timer};
use socksgate_core::Addr;
use socksgate_core::rules::{Query, Verdict};
use socksgate_core::server::Server;
use socksgate_core::udp::{self as core_udp, Reassembled, Reassembler};
use socksgate_core::wire::udp::encapsulate;
use socksgate_core::wire::{Command, ReplyCode};

use crate::config::GatewayConfig;
use crate::relay::RelayEnd;
use crate::resolve::resolve;
use crate::session::{SessionEnd, transmit};

/// Largest datagram relayed (client side, SOCKS header included; one Ethernet MTU).
pub(crate) const UDP_DATAGRAM: usize = 1500;
/// Socket buffer per direction of a UDP slot.
pub(crate) const UDP_SOCKET_BUF: usize = 4096;
/// Room for the largest SOCKS UDP header (a 255-octet name) in front of a datagram.
const MAX_HEADER: usize = 4 + 1 + 255 + 2;
const PACKETS: usize = 4;

/// Memory of one UDP association slot.
#[derive(Debug)]
pub(crate) struct UdpBuffers {
    rx_meta: [PacketMetadata; PACKETS],
    rx: [u8; UDP_SOCKET_BUF],
    tx_meta: [PacketMetadata; PACKETS],
    tx: [u8; UDP_SOCKET_BUF],
    datagram: [u8; UDP_DATAGRAM],
    out: [u8; UDP_DATAGRAM + MAX_HEADER],
    reassembler: Reassembler<UDP_DATAGRAM>,
}

impl UdpBuffers {
    /// Zeroed buffers (`const`, so they can live in a `static`).
    pub(crate) const fn new() -> Self {
        Self {
            rx_meta: [PacketMetadata::EMPTY; PACKETS],
            rx: [0; UDP_SOCKET_BUF],
            tx_meta: [PacketMetadata::EMPTY; PACKETS],
            tx: [0; UDP_SOCKET_BUF],
            datagram: [0; UDP_DATAGRAM],
            out: [0; UDP_DATAGRAM + MAX_HEADER],
            reassembler: Reassembler::new(),
        }
    }
}

impl Default for UdpBuffers {
    fn default() -> Self {
        Self::new()
    }
}

fn core_now() -> core_udp::Instant {
    core_udp::Instant::from_millis(Instant::now().as_millis())
}

/// Answers a UDP ASSOCIATE request and relays until the control connection closes or the
/// association is idle for `config.idle_timeout`. `client_port` is the client's UDP source
/// port if the request announced it.
// The claimed slot's `RefMut` is held across awaits on purpose: it is the slot's lock. All
// sessions run in one task and claim with `try_borrow_mut`, so a busy slot is skipped,
// never a panic.
#[allow(clippy::await_holding_refcell_ref)]
pub(crate) async fn associate(
    stack: Stack<'static>,
    config: &GatewayConfig,
    control: &mut embassy_net::tcp::TcpSocket<'_>,
    server: &mut Server,
    client_port: Option<u16>,
    user: Option<&[u8]>,
    slots: &[RefCell<UdpBuffers>],
) -> SessionEnd {
    let endpoints = control.remote_endpoint().zip(control.local_endpoint());
    let slot = slots.iter().find_map(|slot| slot.try_borrow_mut().ok());
    let (Some((peer, local)), Some(mut slot)) = (endpoints, slot) else {
        let _ = server.respond(Err(ReplyCode::GeneralFailure));
        let _ = transmit(server, control).await;
        return SessionEnd::Refused;
    };
    let client_ip = IpAddr::from(peer.addr);
    let UdpBuffers {
        rx_meta,
        rx,
        tx_meta,
        tx,
        datagram,
        out,
        reassembler,
    } = &mut *slot;
    reassembler.reset();
    let mut socket = UdpSocket::new(stack, rx_meta, rx, tx_meta, tx);
    if socket.bind(0).is_err() {
        let _ = server.respond(Err(ReplyCode::GeneralFailure));
        let _ = transmit(server, control).await;
        return SessionEnd::Refused;
    }
    let bound = SocketAddr::new(IpAddr::from(local.addr), socket.endpoint().port);
    let _ = server.respond(Ok(bound));
    if transmit(server, control).await.is_err() {
        return SessionEnd::ClientGone;
    }

    // The client's UDP source: named in the request (port ≠ 0), else learnt.
    let mut client_udp = client_port.map(|port| IpEndpoint::new(peer.addr, port));
    let mut last = Instant::now();
    let mut sink = [0u8; 16];
    loop {
        let event = select3(
            control.read(&mut sink),
            socket.recv_from(datagram),
            Timer::at(last + config.idle_timeout),
        )
        .await;
        match event {
            Either3::First(Ok(0) | Err(_)) => return SessionEnd::Relayed(RelayEnd::Finished),
            Either3::First(Ok(_)) => {} // nothing is expected on the control connection
            Either3::Third(()) => return SessionEnd::Relayed(RelayEnd::Idle),
            Either3::Second(Err(_)) => {} // truncated: larger than the buffer
            Either3::Second(Ok((n, meta))) => {
                last = Instant::now();
                let from = meta.endpoint;
                let Some(bytes) = datagram.get(..n) else {
                    continue;
                };
                let from_client = IpAddr::from(from.addr) == client_ip
                    && client_udp.is_none_or(|expected| expected == from);
                if from_client {
                    client_udp = Some(from);
                    if let Ok(Some(whole)) = reassembler.push_datagram(core_now(), bytes) {
                        let query = Query {
                            client: client_ip,
                            user,
                            command: Command::UdpAssociate,
                            dst: whole.dst,
                        };
                        send_out(stack, config, &socket, &query, whole).await;
                    }
                } else if let Some(to) = client_udp {
                    let src = Addr::Ip(SocketAddr::new(IpAddr::from(from.addr), from.port));
                    if let Ok(len) = encapsulate(src, bytes, out)
                        && let Some(packet) = out.get(..len)
                    {
                        let _ = socket.send_to(packet, to).await;
                    }
                }
            }
        }
    }
}

/// Sends one client datagram to its destination if the rules allow it.
async fn send_out(
    stack: Stack<'static>,
    config: &GatewayConfig,
    socket: &UdpSocket<'_>,
    query: &Query<'_>,
    whole: Reassembled<'_>,
) {
    if let Verdict::Decided(decision) = config.rules.evaluate(query)
        && !decision.is_allowed()
    {
        return;
    }
    let Ok(to) = resolve(stack, whole.dst).await else {
        return;
    };
    if !config.rules.evaluate_resolved(query, to.ip()).is_allowed() {
        return;
    }
    let _ = socket.send_to(whole.data, IpEndpoint::from(to)).await;
}
