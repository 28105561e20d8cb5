//! The connection to the last proxy of a chain, and the stream a CONNECT or BIND yields.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use socksgate_core::Target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::stream::Stream;

/// Any byte stream the chain can run over.
pub(super) trait Tunnel: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Tunnel for T {}

/// The connection to a proxy: the socket to the first proxy (perhaps in TLS), or a stream
/// through earlier proxies of the chain.
pub(super) enum Io {
    /// Straight to the proxy: what the server's splice relay needs.
    Direct(Stream),
    /// Through one or more proxies (each perhaps with its TLS layer).
    Tunneled(Box<dyn Tunnel>, SocketAddr),
}

impl Io {
    /// The TCP socket to the first proxy.
    pub(super) fn first_hop(&self) -> Option<&TcpStream> {
        match self {
            Self::Direct(s) => Some(s.socket()),
            Self::Tunneled(..) => None,
        }
    }

    /// The local address of the socket to the first proxy.
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Direct(s) => s.socket().local_addr(),
            Self::Tunneled(_, local) => Ok(*local),
        }
    }
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(s) => f.debug_tuple("Direct").field(s).finish(),
            Self::Tunneled(_, local) => f.debug_tuple("Tunneled").field(local).finish(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tunneled(t, _) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tunneled(t, _) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_flush(cx),
            Self::Tunneled(t, _) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tunneled(t, _) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }
}

/// A TCP connection to a destination through the proxies: CONNECT's result, or BIND's
/// once the peer has connected. Read and write it like a `TcpStream`; payload the
/// destination sent along with the proxy's reply is read first.
///
/// ```no_run
/// use socksgate::client::{Connector, Proxy};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let proxy: Proxy = "socks5h://127.0.0.1:1080".parse()?;
/// let mut stream = Connector::new(proxy).connect(("example.com", 80)).await?;
/// stream.write_all(b"HEAD / HTTP/1.0\r\nHost: example.com\r\n\r\n").await?;
/// let mut response = Vec::new();
/// stream.read_to_end(&mut response).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SocksStream {
    io: Io,
    early: Vec<u8>,
    early_read: usize,
    bound: Target,
}

impl SocksStream {
    pub(super) fn new(io: Io, early: Vec<u8>, bound: Target) -> Self {
        Self {
            io,
            early,
            early_read: 0,
            bound,
        }
    }

    /// The address of the proxy's last reply: for CONNECT, the proxy's outbound address
    /// (BND.ADDR, BND.PORT); for BIND, the peer that connected.
    pub fn reply_addr(&self) -> &Target {
        &self.bound
    }

    /// This end's address on the connection to the first proxy.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The TCP socket to the proxy when there is only one (not a chain), for socket options.
    pub fn tcp_socket(&self) -> Option<&TcpStream> {
        self.io.first_hop()
    }
}

impl AsyncRead for SocksStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let early = this.early.get(this.early_read..).unwrap_or_default();
        if !early.is_empty() {
            let n = early.len().min(buf.remaining());
            buf.put_slice(early.get(..n).unwrap_or_default());
            this.early_read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocksStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
