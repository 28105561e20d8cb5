//! UDP ASSOCIATE: a relay per association, ended with its TCP control connection.
//!
//! * Sockets belong to one association and are never shared: one facing the client (bound to
//!   the address the client reached us on; its port is advertised in the reply, with the IP
//!   replaced by `[udp] public_address` when set, for NAT) and, created on first use, one IPv4
//!   and one IPv6 socket facing destinations.
//! * Datagrams are accepted only from the control connection's client IP. The request's
//!   DST.PORT, when non-zero, must match too; when zero (`0.0.0.0:0`, or a domain such as
//!   `"0"` as PySocks sends) the port of the first datagram is latched.
//! * Headers are parsed and fragments (FRAG ≠ 0) reassembled by `socksgate_core::udp`; names
//!   are resolved (and cached for the association); every destination passes the access
//!   rules (command `udp_associate`).
//! * Replies are accepted only from addresses the client has sent to, and go back to the
//!   client encapsulated with their source address.
//! * The association ends when the control connection closes (EOF or error) or after
//!   `timeouts.udp_idle` without a datagram either way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socksgate_core::server::Request;
use socksgate_core::udp::{Instant as CoreInstant, Reassembler};
use socksgate_core::wire::Command;
use socksgate_core::wire::udp::encapsulate;
use socksgate_core::{Addr, Target};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::connect::io_reply;
use crate::session::{Conn, Ctx, SessionError};

/// Largest UDP payload plus the largest SOCKS UDP header (4 + 1 + 255 + 2).
const DATAGRAM: usize = 65_535 + 262;
/// Reassembly capacity: a whole UDP/IPv4 datagram.
const REASSEMBLY: usize = 65_507;
/// Remembered destinations (for reply filtering) and resolved names, per association.
const MAX_PEERS: usize = 4096;

struct Outbound {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Outbound {
    async fn socket(&mut self, v6: bool) -> io::Result<&UdpSocket> {
        let slot = if v6 { &mut self.v6 } else { &mut self.v4 };
        if slot.is_none() {
            let any: SocketAddr = if v6 {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            *slot = Some(UdpSocket::bind(any).await?);
        }
        slot.as_ref()
            .ok_or_else(|| io::Error::other("socket missing"))
    }
}

/// Binds the client-facing socket: any port, or the first free one in `range` starting at a
/// random offset (so concurrent associations do not all probe the same ports).
async fn bind_relay(ip: IpAddr, range: Option<(u16, u16)>) -> io::Result<UdpSocket> {
    let Some((start, end)) = range else {
        return UdpSocket::bind((ip, 0)).await;
    };
    let span = u32::from(end - start) + 1;
    let offset = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(span);
        u32::try_from(h.finish() % u64::from(span)).unwrap_or(0)
    };
    for i in 0..span {
        let port = u16::try_from(u32::from(start) + (offset + i) % span).unwrap_or(start);
        match UdpSocket::bind((ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every UDP relay port in {start}-{end} is in use"),
    ))
}

async fn recv_opt(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run(
    conn: &mut Conn<'_>,
    request: &Request,
    ctx: &Ctx<'_>,
) -> Result<(), SessionError> {
    let client_ip = ctx.peer.ip().to_canonical();
    // DST is the client's expected source; only its port is used (the IP must be the
    // control connection's). Names (PySocks sends "0") and zeros mean "unknown".
    let mut client_port: Option<u16> = match &request.target {
        Target::Ip(sa) if sa.port() != 0 => Some(sa.port()),
        _ => None,
    };
    let relay = match bind_relay(ctx.local.ip(), ctx.shared.config.udp.port_range()).await {
        Ok(s) => s,
        Err(e) => {
            conn.respond(Err(io_reply(&e))).await?;
            return Err(SessionError::Refused(format!(
                "udp associate: cannot bind: {e}"
            )));
        }
    };
    let mut advertised = relay.local_addr()?;
    if let Some(ip) = ctx.shared.config.udp.public_address {
        advertised.set_ip(ip);
    }
    conn.respond(Ok(advertised)).await?;
    info!(relay = %advertised, "udp associate: relay open");

    let idle = ctx.shared.config.timeouts.udp_idle();
    let start = Instant::now();
    let now_core =
        || CoreInstant::from_millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut reasm: Box<Reassembler<REASSEMBLY>> = Box::default();
    let mut out = Outbound { v4: None, v6: None };
    let mut from_client = vec![0u8; DATAGRAM];
    let mut from_v4 = vec![0u8; DATAGRAM];
    let mut from_v6 = vec![0u8; DATAGRAM];
    let mut to_client = vec![0u8; DATAGRAM];
    let mut control = [0u8; 512];
    let mut contacted: HashSet<SocketAddr> = HashSet::new();
    let mut names: HashMap<String, IpAddr> = HashMap::new();
    let (mut up, mut down) = (0u64, 0u64);
    let (mut datagrams_up, mut datagrams_down) = (0u64, 0u64);
    let mut deadline = Instant::now() + idle;

    let reason = loop {
        let reasm_deadline = reasm
            .poll_timeout()
            .map(|t| start + std::time::Duration::from_millis(t.as_millis()));
        tokio::select! {
            r = conn.stream.read(&mut control) => {
                match r {
                    Ok(0) => break "control connection closed",
                    Err(_) => break "control connection failed",
                    Ok(_) => {} // nothing is expected on it; ignore
                }
            }
            () = tokio::time::sleep_until(deadline) => break "idle timeout",
            () = sleep_opt(reasm_deadline) => {
                if reasm.handle_timeout(now_core()) {
                    debug!("udp: fragment reassembly timed out");
                }
            }
            r = relay.recv_from(&mut from_client) => {
                let (n, src) = match r {
                    Ok(x) => x,
                    Err(e) => { debug!("udp: client socket: {e}"); continue; }
                };
                if src.ip().to_canonical() != client_ip || client_port.is_some_and(|p| p != src.port()) {
                    debug!(%src, "udp: dropped a datagram from a stranger");
                    continue;
                }
                if client_port.is_none() {
                    client_port = Some(src.port());
                    debug!(%src, "udp: client port latched");
                }
                deadline = Instant::now() + idle;
                let datagram = from_client.get(..n).unwrap_or_default();
                let whole = match reasm.push_datagram(now_core(), datagram) {
                    Ok(Some(w)) => w,
                    Ok(None) => continue,
                    Err(e) => { debug!("udp: {e}"); continue; }
                };
                let dst = whole.dst.normalized();
                let (name, port) = match dst {
                    Addr::Ip(sa) => (None, sa.port()),
                    Addr::Domain(name, port) => (Some(name.to_string()), port),
                };
                // Resolve (cached), then the rules on name and address.
                let ip = match (&name, dst) {
                    (None, Addr::Ip(sa)) => sa.ip(),
                    (Some(n), _) => match names.get(n) {
                        Some(ip) => *ip,
                        None => {
                            let prefer_v6 = ctx.local.is_ipv6();
                            match ctx.shared.resolver.lookup(n).await {
                                Ok(ips) => {
                                    let ip = ips.iter().copied().find(|ip| ip.is_ipv6() == prefer_v6).or(ips.first().copied());
                                    let Some(ip) = ip else { continue };
                                    if names.len() < MAX_PEERS { names.insert(n.clone(), ip); }
                                    ip
                                }
                                Err(e) => { debug!("udp: {n}: {e}"); continue; }
                            }
                        }
                    },
                    (None, Addr::Domain(..)) => continue,
                };
                if ctx.check_addr(Command::UdpAssociate, dst, Some(ip)).is_err() {
                    continue;
                }
                let target = SocketAddr::new(ip.to_canonical(), port);
                let data = whole.data;
                let sock = match out.socket(target.is_ipv6()).await {
                    Ok(s) => s,
                    Err(e) => { debug!("udp: outbound socket: {e}"); continue; }
                };
                match sock.send_to(data, target).await {
                    Ok(_) => {
                        up += data.len() as u64;
                        datagrams_up += 1;
                        if contacted.len() < MAX_PEERS || contacted.contains(&target) {
                            contacted.insert(target);
                        }
                    }
                    Err(e) => debug!(%target, "udp: send failed: {e}"),
                }
            }
            r = recv_opt(out.v4.as_ref(), &mut from_v4) => {
                if let Ok((n, src)) = r {
                    let sent = forward_back(&relay, &contacted, client_ip, client_port, src, from_v4.get(..n).unwrap_or_default(), &mut to_client).await;
                    down += sent.unwrap_or(0);
                    datagrams_down += u64::from(sent.is_some());
                    deadline = Instant::now() + idle;
                }
            }
            r = recv_opt(out.v6.as_ref(), &mut from_v6) => {
                if let Ok((n, src)) = r {
                    let sent = forward_back(&relay, &contacted, client_ip, client_port, src, from_v6.get(..n).unwrap_or_default(), &mut to_client).await;
                    down += sent.unwrap_or(0);
                    datagrams_down += u64::from(sent.is_some());
                    deadline = Instant::now() + idle;
                }
            }
        }
    };
    ctx.shared
        .metrics
        .udp(ctx.user, datagrams_up, datagrams_down, up, down);
    conn.bytes = (up, down);
    info!(
        up,
        down, datagrams_up, datagrams_down, "udp associate ended: {reason}"
    );
    Ok(())
}

/// Sends a destination's datagram to the client, with its source as the header's address.
/// Returns the payload bytes forwarded, `None` if the datagram was dropped.
async fn forward_back(
    relay: &UdpSocket,
    contacted: &HashSet<SocketAddr>,
    client_ip: IpAddr,
    client_port: Option<u16>,
    src: SocketAddr,
    payload: &[u8],
    buf: &mut [u8],
) -> Option<u64> {
    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
    let port = client_port?;
    if !contacted.contains(&src) {
        debug!(%src, "udp: dropped a datagram from an address the client did not contact");
        return None;
    }
    let Ok(n) = encapsulate(Addr::Ip(src), payload, buf) else {
        return None;
    };
    let client = SocketAddr::new(client_ip, port);
    // A v4 client address on a v6 relay socket would need mapping; the relay socket has the
    // control connection's family, like the client.
    match relay
        .send_to(buf.get(..n).unwrap_or_default(), client)
        .await
    {
        Ok(_) => Some(payload.len() as u64),
        Err(e) => {
            debug!("udp: to client: {e}");
            None
        }
    }
}

async fn sleep_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
