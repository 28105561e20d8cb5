//! UDP ASSOCIATE: one relay socket per association, from a small fixed pool of slots.
//!
//! The association lives as long as its TCP control connection (RFC 1928 §7). Every decision
//! is the core's [`Association`]: which datagrams come from the client (its control
//! connection's address; the port announced in an address-form request, else latched from
//! the first datagram), header parsing and fragment reassembly, the rules per datagram
//! (before and after resolution), which sources may answer (only destinations the client
//! contacted) and the idle limit. This module moves datagrams and resolves names.
//!
//! One socket faces both the client and the destinations, so a datagram is first offered
//! to the association as the client's; one it calls a [stranger](Dropped::Stranger) is then
//! offered as a destination's reply.

use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::TcpSocket;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{Instant, Timer};
use socksgate_core::Failure;
use socksgate_core::udp::{Association, Dropped, Outbound, PeerList};

use crate::config::Configuration;
use crate::monitor::LiveTraffic;
use crate::relay::{RelayEnd, Traffic};
use crate::resolve::resolve;
use crate::session::{ClientSession, Context, Refusal, SessionEnd, embassy_instant, now, transmit};

/// Largest datagram relayed (client side, SOCKS header included; one Ethernet MTU), and the
/// association's reassembly capacity.
pub(crate) const UDP_DATAGRAM: usize = 1500;
/// Socket buffer per direction of a UDP slot.
pub(crate) const UDP_SOCKET_BUF: usize = 4096;
/// Destinations one association remembers as contacted (each ≈ 32 B). Replies come only
/// from these; once the list is full, replies from further destinations are dropped, never
/// let through. A handful covers a device's typical associations (DNS, NTP, a game or VoIP
/// peer).
pub(crate) const CONTACTED: usize = 8;
/// Room for the largest SOCKS UDP header (a 255-octet name) in front of a datagram.
const MAX_HEADER: usize = 4 + 1 + 255 + 2;
const PACKETS: usize = 4;

type UdpAssociation = Association<PeerList<CONTACTED>, UDP_DATAGRAM>;

/// Memory of one UDP association slot.
#[derive(Debug)]
pub(crate) struct UdpBuffers {
    rx_meta: [PacketMetadata; PACKETS],
    rx: [u8; UDP_SOCKET_BUF],
    tx_meta: [PacketMetadata; PACKETS],
    tx: [u8; UDP_SOCKET_BUF],
    datagram: [u8; UDP_DATAGRAM],
    out: [u8; UDP_DATAGRAM + MAX_HEADER],
    /// The slot's association while one runs (its reassembler is the slot's only one).
    association: Option<UdpAssociation>,
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
            association: None,
        }
    }
}

impl Default for UdpBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Answers the session's UDP ASSOCIATE (a relay socket from a free slot, or "general
/// failure" when none is free) and relays until the control connection closes or the
/// association's idle limit passes.
// The claimed slot's `RefMut` is held across awaits on purpose: it is the slot's lock. All
// sessions run in one task and claim with `try_borrow_mut`, so a busy slot is skipped,
// never a panic.
#[allow(clippy::await_holding_refcell_ref)]
pub(crate) async fn associate<C: Configuration, const N: usize>(
    ctx: &Context<'_, C, N>,
    control: &mut TcpSocket<'_>,
    session: &mut ClientSession,
    slots: &[RefCell<UdpBuffers>],
    traffic: &mut Traffic,
    live: LiveTraffic<'_, N>,
) -> SessionEnd {
    let stack: Stack<'static> = ctx.stack;
    let local = control.local_endpoint();
    let slot = slots.iter().find_map(|slot| slot.try_borrow_mut().ok());
    let (Some(local), Some(mut slot)) = (local, slot) else {
        return refused(session, control).await;
    };
    let UdpBuffers {
        rx_meta,
        rx,
        tx_meta,
        tx,
        datagram,
        out,
        association,
    } = &mut *slot;
    let mut socket = UdpSocket::new(stack, rx_meta, rx, tx_meta, tx);
    if socket.bind(0).is_err() {
        return refused(session, control).await;
    }
    let bound = SocketAddr::new(IpAddr::from(local.addr), socket.endpoint().port);
    let _ = ctx.with_policy(|p| session.handle_opened(p, bound, now()));
    if transmit(session, control).await.is_err() {
        return SessionEnd::ClientGone;
    }
    let Some(requested) = session.destination() else {
        return SessionEnd::ProtocolError; // established without a request: cannot happen
    };
    let association = association.insert(Association::new(
        session.client().ip(),
        requested,
        session.user(),
        PeerList::new(),
        ctx.with_policy(|p| p.timeouts.udp_idle),
        now(),
    ));

    let mut sink = [0u8; 16];
    loop {
        let event = select3(
            control.read(&mut sink),
            socket.recv_from(datagram),
            Timer::at(embassy_instant(association.poll_timeout())),
        )
        .await;
        match event {
            Either3::First(Ok(0) | Err(_)) => return SessionEnd::Relayed(RelayEnd::Finished),
            Either3::First(Ok(_)) => {} // nothing is expected on the control connection
            Either3::Third(()) => {
                if association.handle_timeout(now()) {
                    return SessionEnd::Relayed(RelayEnd::Idle);
                }
            }
            Either3::Second(Err(_)) => {} // truncated: larger than the buffer
            Either3::Second(Ok((n, meta))) => {
                let from = SocketAddr::new(IpAddr::from(meta.endpoint.addr), meta.endpoint.port);
                let Some(bytes) = datagram.get(..n) else {
                    continue;
                };
                let outbound = ctx.with_policy(|p| {
                    association.handle_client_datagram(&p.rules, from, bytes, now())
                });
                // Each count is published before its send: nothing extra is kept across
                // the await.
                match outbound {
                    Ok(Outbound::Send { to, data }) => {
                        traffic.up += data.len() as u64;
                        live.publish(traffic, Instant::now());
                        let _ = socket.send_to(data, IpEndpoint::from(to)).await;
                    }
                    Ok(Outbound::Resolve(unresolved)) => {
                        if let Ok(ip) = resolve(stack, unresolved.name()).await
                            && let Ok((to, data)) =
                                ctx.with_policy(|p| unresolved.resolved(&p.rules, ip))
                        {
                            traffic.up += data.len() as u64;
                            live.publish(traffic, Instant::now());
                            let _ = socket.send_to(data, IpEndpoint::from(to)).await;
                        }
                    }
                    Ok(Outbound::Queued) => {}
                    Err(Dropped::Stranger) => {
                        if let Ok((client, len)) =
                            association.handle_remote_datagram(from, bytes, out, now())
                            && let Some(packet) = out.get(..len)
                        {
                            traffic.down += bytes.len() as u64;
                            live.publish(traffic, Instant::now());
                            let _ = socket.send_to(packet, IpEndpoint::from(client)).await;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Answers the request "general failure": no relay socket could be opened.
async fn refused(session: &mut ClientSession, control: &mut TcpSocket<'_>) -> SessionEnd {
    let _ = session.handle_failure(Failure::Other);
    let _ = transmit(session, control).await;
    SessionEnd::Refused(Refusal::NoUdpSlot)
}
