//! `udp-floor PORT`: the least a SOCKS5 UDP relay that sleeps between datagrams can cost on
//! this machine, to run beside socksgate as a socksbench peer (`--peer 'floor=exec
//! target/release/udp-floor {port}'`, with `--only socksgate,udp`).
//!
//! It is not a server to use: no authentication, no rules, no checks on where datagrams go,
//! CONNECT and BIND refused, one thread per association. What it keeps is the least work a
//! relay that parks between datagrams does: one blocking `recvfrom` and one `sendto` per
//! datagram, on one socket per association that faces the client and the destinations
//! alike (no `epoll`, no second socket, no task or timer), the SOCKS header parsed and
//! written with the core's wire types. Whatever a round trip through it costs beyond the
//! direct one is the kernel's and the machine's: the context switches and wake-ups of the
//! threads on each hop.
//!
//! Listens on 127.0.0.1:PORT. An association ends when its control connection closes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use socksgate_core::Addr;
use socksgate_core::WireError;
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks5::{Reply, Request};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::wire::{Command, Method, ReplyCode};

/// Room before a received datagram for the header the way back puts in front of it (an
/// IPv6 source: RSV, FRAG, ATYP, 16 + 2 bytes).
const HEADROOM: usize = 22;

fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .context("usage: udp-floor PORT")?
        .parse()
        .context("PORT: a number 0-65535")?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            if let Err(e) = associate(conn) {
                eprintln!("udp-floor: {e:#}");
            }
        });
    }
    Ok(())
}

/// Reads from `conn` after the `*len` bytes already in `buf` until `whole` finds a whole
/// message at its start; returns `false` when the connection closed before sending
/// anything (a readiness probe).
fn read_message(
    conn: &mut TcpStream,
    buf: &mut [u8],
    len: &mut usize,
    whole: impl Fn(&[u8]) -> Result<bool, WireError>,
    what: &str,
) -> anyhow::Result<bool> {
    loop {
        match whole(&buf[..*len]) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => bail!("{what}: {e}"),
        }
        let Some(room) = buf.get_mut(*len..).filter(|r| !r.is_empty()) else {
            bail!("{what}: too long");
        };
        match conn.read(room)? {
            0 if *len == 0 => return Ok(false),
            0 => bail!("{what}: connection closed"),
            n => *len += n,
        }
    }
}

/// Serves one control connection: the greeting (no authentication), UDP ASSOCIATE, then
/// the relay until the connection closes.
fn associate(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 512];
    let mut len = 0;
    let mut out = [0u8; 32];
    let greeting = |b: &[u8]| Ok(MethodRequest::parse(b)?.complete().is_some());
    if !read_message(&mut conn, &mut buf, &mut len, greeting, "greeting")? {
        return Ok(());
    }
    let (greeting, consumed) = MethodRequest::parse(&buf[..len])?
        .complete()
        .context("greeting")?;
    let method = if greeting.offers(Method::NoAuth) {
        Method::NoAuth
    } else {
        Method::NoAcceptable
    };
    let n = MethodReply { method }.emit(&mut out)?;
    conn.write_all(&out[..n])?;
    if method != Method::NoAuth {
        return Ok(());
    }
    // A client may send its request with the greeting.
    buf.copy_within(consumed..len, 0);
    len -= consumed;
    let request = |b: &[u8]| Ok(Request::parse(b)?.complete().is_some());
    if !read_message(&mut conn, &mut buf, &mut len, request, "request")? {
        return Ok(());
    }
    let (request, _) = Request::parse(&buf[..len])?.complete().context("request")?;
    if request.command != Command::UdpAssociate {
        let n = Reply {
            code: ReplyCode::CommandNotSupported,
            bound: Addr::Ip((Ipv4Addr::UNSPECIFIED, 0).into()),
        }
        .emit(&mut out)?;
        conn.write_all(&out[..n])?;
        return Ok(());
    }
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let relay_addr = socket.local_addr()?;
    let n = Reply {
        code: ReplyCode::Succeeded,
        bound: Addr::Ip(relay_addr),
    }
    .emit(&mut out)?;
    conn.write_all(&out[..n])?;

    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let (socket, stop) = (socket.try_clone()?, Arc::clone(&stop));
        let client_ip = conn.peer_addr()?.ip();
        std::thread::spawn(move || relay(&socket, client_ip, &stop))
    };
    while conn.read(&mut buf)? > 0 {}
    // The relay sleeps in `recvfrom` with no timeout: a datagram of our own wakes it to see
    // the flag.
    stop.store(true, Ordering::Relaxed);
    socket.send_to(&[], relay_addr)?;
    relay
        .join()
        .map_err(|_| anyhow::anyhow!("relay thread panicked"))?;
    Ok(())
}

/// Relays until `stop` is set: datagrams from the client (the first sender from
/// `client_ip`) go to the destination in their header; any other sender's go to the client
/// with a header naming their source.
fn relay(socket: &UdpSocket, client_ip: std::net::IpAddr, stop: &AtomicBool) {
    let mut buf = vec![0u8; HEADROOM + 65_536];
    let mut client: Option<SocketAddr> = None;
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf[HEADROOM..]) else {
            return;
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let datagram = &buf[HEADROOM..HEADROOM + n];
        if client.is_none_or(|c| c == src) && src.ip() == client_ip {
            client = Some(src);
            if let Ok((
                UdpHeader {
                    frag: 0,
                    dst: Addr::Ip(to),
                },
                payload,
            )) = UdpHeader::parse(datagram)
            {
                let _ = socket.send_to(payload, to);
            }
        } else if let Some(client) = client {
            let header = UdpHeader {
                frag: 0,
                dst: Addr::Ip(src),
            };
            let start = HEADROOM - header.buffer_len();
            if header.emit(&mut buf[start..HEADROOM]).is_ok() {
                let _ = socket.send_to(&buf[start..HEADROOM + n], client);
            }
        }
    }
}
