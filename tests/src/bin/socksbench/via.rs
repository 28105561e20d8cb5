//! The load generator's SOCKS5 client: blocking, no authentication, built on socksgate-core's
//! `emit`/`parse` wire types. It reads replies incrementally, so it never relies on a proxy
//! sending a message in one segment.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use socksgate_core::Addr;
use socksgate_core::Status;
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks5::{Reply, Request};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::wire::{Command, Method, ReplyCode};

use crate::error::{BenchError, Context, Result};

/// Socket timeouts: a stuck proxy fails the run instead of hanging it.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How the load generator reaches a server: straight, or through a SOCKS5 proxy.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Via {
    /// A plain TCP connection (the baseline).
    Direct,
    /// Through the SOCKS5 proxy listening here.
    Socks(SocketAddr),
}

/// A SOCKS5 reply that was not "succeeded".
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) ReplyCode);

fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).ctx(|| format!("connect {addr}"))?;
    s.set_nodelay(true).ctx(|| "TCP_NODELAY".into())?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .ctx(|| "SO_RCVTIMEO".into())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .ctx(|| "SO_SNDTIMEO".into())?;
    Ok(s)
}

/// Reads from `s` until `parse` accepts a whole message; returns it and the bytes read.
fn read_msg<T>(
    s: &mut TcpStream,
    buf: &mut [u8],
    what: &str,
    parse: impl Fn(&[u8]) -> core::result::Result<Status<(T, usize)>, String>,
) -> Result<(T, usize)> {
    let mut len = 0;
    loop {
        match parse(&buf[..len]).map_err(|e| BenchError::Socks(format!("{what}: {e}")))? {
            Status::Complete((m, n)) => {
                if n != len {
                    return Err(BenchError::Socks(format!(
                        "{what}: {} unexpected bytes after the message",
                        len - n
                    )));
                }
                return Ok((m, n));
            }
            Status::Partial if len == buf.len() => {
                return Err(BenchError::Socks(format!(
                    "{what}: longer than {len} bytes"
                )));
            }
            Status::Partial => {}
        }
        let n = s.read(&mut buf[len..]).ctx(|| format!("read {what}"))?;
        if n == 0 {
            return Err(BenchError::Socks(format!(
                "{what}: connection closed after {len} bytes"
            )));
        }
        len += n;
    }
}

/// Greets with "no authentication" and sends `command` for `dst`; returns the reply's bound
/// address, or [`Refused`] inside `Ok(Err(..))` when the proxy answered with a failure code.
fn handshake(
    s: &mut TcpStream,
    command: Command,
    dst: SocketAddr,
) -> Result<core::result::Result<SocketAddr, Refused>> {
    let mut out = [0u8; 32];
    let greeting = MethodRequest::new(&[0]).map_err(|e| BenchError::Socks(e.to_string()))?;
    let n = greeting
        .emit(&mut out)
        .map_err(|e| BenchError::Socks(format!("emit greeting: {e:?}")))?;
    s.write_all(&out[..n]).ctx(|| "send greeting".into())?;
    let mut buf = [0u8; 300];
    let (method, _) = read_msg(s, &mut buf, "method reply", |b| {
        MethodReply::parse(b)
            .map(|st| match st {
                Status::Complete((m, n)) => Status::Complete((m.method, n)),
                Status::Partial => Status::Partial,
            })
            .map_err(|e| e.to_string())
    })?;
    if method != Method::NoAuth {
        return Err(BenchError::Socks(format!(
            "proxy chose method {method:?}, not no-auth"
        )));
    }
    let req = Request {
        command,
        dst: Addr::Ip(dst),
    };
    let n = req
        .emit(&mut out)
        .map_err(|e| BenchError::Socks(format!("emit request: {e:?}")))?;
    s.write_all(&out[..n]).ctx(|| "send request".into())?;
    let ((code, bound), _) = read_msg(s, &mut buf, "reply", |b| {
        Reply::parse(b)
            .map(|st| match st {
                Status::Complete((r, n)) => Status::Complete(((r.code, bound_addr(&r.bound)), n)),
                Status::Partial => Status::Partial,
            })
            .map_err(|e| e.to_string())
    })?;
    if code != ReplyCode::Succeeded {
        return Ok(Err(Refused(code)));
    }
    let bound =
        bound.ok_or_else(|| BenchError::Socks("reply with a domain as bound address".into()))?;
    Ok(Ok(bound))
}

fn bound_addr(a: &Addr<'_>) -> Option<SocketAddr> {
    match a {
        Addr::Ip(sa) => Some(*sa),
        _ => None,
    }
}

/// A TCP connection to `dst`, through the proxy when `via` says so.
pub(crate) fn connect(via: Via, dst: SocketAddr) -> Result<TcpStream> {
    match via {
        Via::Direct => tcp(dst),
        Via::Socks(proxy) => {
            let mut s = tcp(proxy)?;
            match handshake(&mut s, Command::Connect, dst)? {
                Ok(_) => Ok(s),
                Err(Refused(code)) => Err(BenchError::Socks(format!(
                    "CONNECT {dst} via {proxy}: reply {code:?}"
                ))),
            }
        }
    }
}

/// A UDP ASSOCIATE session: the control connection (the association lives as long as it
/// does) and the relay address to send datagrams to.
#[derive(Debug)]
pub(crate) struct Association {
    /// Keeps the association open.
    pub(crate) _control: TcpStream,
    /// Where datagrams go.
    pub(crate) relay: SocketAddr,
}

/// Opens a UDP association for datagrams from `local`; `Ok(Err(..))` if the proxy refuses.
pub(crate) fn udp_associate(
    proxy: SocketAddr,
    local: SocketAddr,
) -> Result<core::result::Result<Association, Refused>> {
    let mut s = tcp(proxy)?;
    Ok(
        handshake(&mut s, Command::UdpAssociate, local)?.map(|mut relay| {
            if relay.ip().is_unspecified() {
                relay.set_ip(proxy.ip());
            }
            Association { _control: s, relay }
        }),
    )
}

/// Writes the UDP request header (RSV, FRAG 0, DST) for `dst` into `out`; returns its length.
pub(crate) fn udp_header(dst: SocketAddr, out: &mut [u8]) -> Result<usize> {
    UdpHeader {
        frag: 0,
        dst: Addr::Ip(dst),
    }
    .emit(out)
    .map_err(|e| BenchError::Socks(format!("emit UDP header: {e:?}")))
}

/// Parses a relayed datagram's header: the source address and the payload offset.
pub(crate) fn parse_udp(dgram: &[u8]) -> Result<(SocketAddr, usize)> {
    let (h, payload) =
        UdpHeader::parse(dgram).map_err(|e| BenchError::Socks(format!("UDP datagram: {e}")))?;
    if !h.is_standalone() {
        return Err(BenchError::Socks(format!(
            "UDP datagram with FRAG {}",
            h.frag
        )));
    }
    let src =
        bound_addr(&h.dst).ok_or_else(|| BenchError::Socks("UDP datagram from a domain".into()))?;
    Ok((src, dgram.len() - payload.len()))
}

/// A UDP socket on 127.0.0.1 with a receive timeout.
pub(crate) fn udp_socket(timeout: Duration) -> Result<UdpSocket> {
    let s = UdpSocket::bind((IpAddr::from([127, 0, 0, 1]), 0)).ctx(|| "bind UDP".into())?;
    s.set_read_timeout(Some(timeout))
        .ctx(|| "UDP SO_RCVTIMEO".into())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_header_round_trips() {
        let dst: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut buf = [0u8; 64];
        let n = udp_header(dst, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xe9]);
        buf[n..n + 3].copy_from_slice(b"abc");
        assert_eq!(parse_udp(&buf[..n + 3]).unwrap(), (dst, n));
    }
}
