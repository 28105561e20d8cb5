//! How the load generator reaches a server: straight, or through a SOCKS5 proxy with the
//! harness's SOCKS client ([`socksgate_tests::socks::handshake`], the core's client state
//! machine: no authentication, one message per round trip, nothing allocated per session).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::net::{TcpStream, UdpSocket};

use socksgate_core::Addr;
use socksgate_core::Target;
use socksgate_core::client::{ClientConfig, ClientError};
use socksgate_core::server::Version;
use socksgate_core::wire::{Command, ReplyCode};
use socksgate_tests::socks::{self, HandshakeError};

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

/// Greets with "no authentication" and sends `command` for `dst`; returns the reply's bound
/// address, or [`Refused`] inside `Ok(Err(..))` when the proxy answered with a failure code.
fn handshake(
    s: &mut TcpStream,
    command: Command,
    dst: SocketAddr,
) -> Result<core::result::Result<SocketAddr, Refused>> {
    let config = ClientConfig::new(Version::Socks5, command, Addr::Ip(dst));
    let mut buf = [0u8; 300];
    match socks::handshake(s, config, &mut buf) {
        Ok((Target::Ip(bound), 0)) => Ok(Ok(bound)),
        Ok((Target::Ip(_), extra)) => Err(BenchError::Socks(format!(
            "reply: {extra} unexpected bytes after the message"
        ))),
        Ok((Target::Domain(..), _)) => Err(BenchError::Socks(
            "reply with a domain as bound address".into(),
        )),
        Err(HandshakeError::Socks(ClientError::Rejected(code))) => Ok(Err(Refused(code))),
        Err(HandshakeError::Io(source)) => Err(BenchError::Io {
            what: "SOCKS handshake".into(),
            source,
        }),
        Err(e) => Err(BenchError::Socks(e.to_string())),
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
    socks::udp_header(dst, out).map_err(|e| BenchError::Socks(format!("emit UDP header: {e:?}")))
}

/// Parses a relayed datagram's header: the source address and the payload offset.
pub(crate) fn parse_udp(dgram: &[u8]) -> Result<(SocketAddr, usize)> {
    socks::udp_source(dgram).map_err(|e| BenchError::Socks(format!("UDP datagram: {e}")))
}

/// A UDP socket on 127.0.0.1 with a receive timeout.
pub(crate) fn udp_socket(timeout: Duration) -> Result<UdpSocket> {
    let s = UdpSocket::bind((IpAddr::from([127, 0, 0, 1]), 0)).ctx(|| "bind UDP".into())?;
    s.set_read_timeout(Some(timeout))
        .ctx(|| "UDP SO_RCVTIMEO".into())?;
    Ok(s)
}
