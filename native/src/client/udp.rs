//! UDP ASSOCIATE's datagram socket: the RFC 1928 §7 header added to every datagram sent
//! and taken off every datagram received (the core's `wire::udp`), and under GSS-API
//! integrity or confidentiality each datagram wrapped as RFC 1961 §5 asks.

use std::net::SocketAddr;

use socksgate_core::Target;
use socksgate_core::wire::udp::{UdpHeader, encapsulate};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::protected::Protection;
use crate::protected_datagram::DatagramProtection;

use super::io::Io;
use super::{Error, IntoTarget, Proxy, Stage, handshake};
use crate::resolve::Resolver;

/// The largest UDP request header: RSV, FRAG, ATYP, a 255-octet name with its length, port.
const MAX_HEADER: usize = 3 + 1 + 1 + 255 + 2;

/// A datagram socket relayed by a SOCKS5 proxy (UDP ASSOCIATE), made by
/// [`Connector::udp_associate`](super::Connector::udp_associate).
///
/// [`send_to`](Self::send_to) takes any destination, names included, and
/// [`recv_from`](Self::recv_from) says where each datagram came from, as the proxy
/// reported it. The association lasts while this value lives: its TCP control connection
/// is held open and watched, and when the proxy closes it, `recv_from` fails with
/// [`Error::AssociationClosed`]. Fragmented datagrams (FRAG ≠ 0) are dropped, as RFC 1928
/// allows a client that does not reassemble.
///
/// With [`Auth::Gssapi`](super::Auth::Gssapi) at integrity or confidentiality, every
/// datagram is wrapped with the control connection's context (RFC 1961 §5: one message per
/// datagram, wrapping the UDP header and data); a received datagram that fails to unwrap
/// (altered, replayed, not from the proxy) is skipped like one whose header does not parse.
///
/// ```no_run
/// use socksgate::client::{Connector, Proxy};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let udp = Connector::new("socks5h://127.0.0.1:1080".parse::<Proxy>()?)
///     .udp_associate()
///     .await?;
/// udp.send_to(b"ping", "127.0.0.1:7".parse::<std::net::SocketAddr>()?).await?;
/// let mut buf = [0u8; 2048];
/// let (n, from) = udp.recv_from(&mut buf).await?;
/// assert_eq!(&buf[..n], b"ping");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SocksDatagram {
    socket: UdpSocket,
    relay: SocketAddr,
    proxy: Proxy,
    resolver: Resolver,
    closed: watch::Receiver<bool>,
    control: tokio::task::JoinHandle<()>,
    /// The context's calls cannot run concurrently; each is short.
    protection: Option<std::sync::Mutex<DatagramProtection>>,
}

impl SocksDatagram {
    pub(super) fn new(
        socket: UdpSocket,
        mut control: Io,
        relay: SocketAddr,
        proxy: Proxy,
        resolver: Resolver,
        protection: Option<Protection>,
    ) -> Self {
        let (closed_tx, closed) = watch::channel(false);
        // The control connection carries nothing more; its end is the association's end.
        let control = tokio::spawn(async move {
            let mut sink = [0u8; 64];
            while control.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            let _ = closed_tx.send(true);
        });
        Self {
            socket,
            relay,
            proxy,
            resolver,
            closed,
            control,
            protection: protection.map(|p| std::sync::Mutex::new(DatagramProtection::new(p))),
        }
    }

    /// Whether the datagrams are GSS-API-protected.
    pub fn is_protected(&self) -> bool {
        self.protection.is_some()
    }

    /// The proxy's relay address, where datagrams go.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay
    }

    /// The local address datagrams leave from (announced to the proxy in the request).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `payload` to `destination` through the relay; returns the payload's length.
    /// A name is sent to the proxy for a `socks5h://` proxy and resolved here for
    /// `socks5://`.
    pub async fn send_to(
        &self,
        payload: &[u8],
        destination: impl IntoTarget,
    ) -> Result<usize, Error> {
        let target = destination.into_target()?;
        let target = handshake::destination(&self.proxy, target, &self.resolver).await?;
        let mut datagram = vec![0u8; MAX_HEADER + payload.len()];
        let n = encapsulate(target.as_addr(), payload, &mut datagram)
            .map_err(|e| Error::Destination(format!("{target}: datagram too large ({e:?})")))?;
        datagram.truncate(n);
        if let Some(p) = &self.protection {
            let plain = std::mem::take(&mut datagram);
            p.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .seal(&plain, &mut datagram)
                .map_err(|e| Error::Destination(format!("{target}: {e}")))?;
        }
        self.socket
            .send(&datagram)
            .await
            .map_err(|e| Error::io(Stage::Udp, format!("sending to relay {}", self.relay), e))?;
        Ok(payload.len())
    }

    /// Receives the next datagram relayed to us: its payload into `buf` (truncated if
    /// longer, as with any UDP socket) and where it came from. Datagrams whose header does
    /// not parse, and fragments, are skipped.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, Target), Error> {
        // Room for a wrapped datagram too (its token's header and checksum, well under 1 KiB).
        let mut datagram = vec![0u8; MAX_HEADER + buf.len() + 1024];
        let mut closed = self.closed.clone();
        loop {
            let n = tokio::select! {
                received = self.socket.recv(&mut datagram) => received.map_err(|e| {
                    Error::io(Stage::Udp, format!("receiving from relay {}", self.relay), e)
                })?,
                _ = closed.wait_for(|closed| *closed) => {
                    return Err(Error::AssociationClosed { proxy: self.proxy.label() });
                }
            };
            let received = datagram.get_mut(..n).unwrap_or_default();
            let plain = match &self.protection {
                None => &*received,
                Some(p) => {
                    let mut p = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match p.open(received) {
                        Ok(plain) => plain,
                        Err(_) => continue,
                    }
                }
            };
            let Ok((header, payload)) = UdpHeader::parse(plain) else {
                continue;
            };
            if !header.is_standalone() {
                continue;
            }
            let len = payload.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..len), payload.get(..len)) {
                to.copy_from_slice(from);
            }
            return Ok((len, header.dst.to_target()));
        }
    }
}

impl Drop for SocksDatagram {
    /// Closes the control connection, which ends the association at the proxy.
    fn drop(&mut self) {
        self.control.abort();
    }
}
