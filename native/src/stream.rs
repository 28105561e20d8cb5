//! A connection a session relays: a plain TCP socket, TLS over one, or either under GSS-API
//! protection.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::protected::ProtectedStream;

/// A client or upstream connection. Plain sockets are relayed with splice; TLS ones, and
/// GSS-API-protected ones, with the buffered copy (see [`crate::relay`]).
#[derive(Debug)]
pub enum Stream {
    /// A TCP socket.
    Plain(TcpStream),
    /// TLS over a TCP socket (boxed: rustls's state is large, and plain sessions should not
    /// carry its size).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A GSS-API protection level that encapsulates (RFC 1961 §5: integrity or
    /// confidentiality) in force over a plain or TLS connection: its reads and writes are
    /// the plaintext (boxed for the same reason as TLS).
    Protected(Box<ProtectedStream<Self>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => t.get_ref().0,
            Self::Protected(p) => p.get_ref().socket(),
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Self::Plain(s)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
            Self::Protected(p) => Pin::new(&mut **p).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
            Self::Protected(p) => Pin::new(&mut **p).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
            Self::Protected(p) => Pin::new(&mut **p).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
            Self::Protected(p) => Pin::new(&mut **p).poll_shutdown(cx),
        }
    }
}
