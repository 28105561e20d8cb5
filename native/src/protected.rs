//! A GSS-API-protected byte stream (RFC 1961 §5): what a SOCKS session carries after a
//! protection level of integrity or confidentiality was agreed — the request, the reply and
//! the whole relay, as `VER=1 MTYP=3 LEN TOKEN` messages, each token one `gss_wrap` output.
//!
//! The framing is the core's ([`Decapsulator`], [`encapsulation_header`]); this module joins
//! it to the context ([`crate::gssapi::Context`]) and to sockets: [`Protection::open`] turns
//! received bytes into plaintext, [`Protection::seal`] turns plaintext into messages, and
//! [`ProtectedStream`] is a connection under protection, read and written as plaintext: the
//! server's client side once a level is in force, and an `[[upstream]]` connection that asked
//! for one. A session with either is relayed by the buffered copy of [`crate::relay`] (splice
//! cannot: every byte passes through the library), with its idle timeout and traffic limits.

use std::pin::Pin;
use std::task::Poll;

use socksgate_core::gssapi::{Decapsulator, GssapiError, ProtectionLevel, encapsulation_header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gssapi::{Context, GssError};

/// The most plaintext wrapped into one message: well under the 65,535-octet token limit
/// whatever the mechanism's overhead, and large enough that the per-message cost (a header,
/// a MIC and padding, about 60 octets for AES) stays under 0.5 %.
pub const MAX_PLAIN_PER_MESSAGE: usize = 16 * 1024;

/// Why a protected stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    /// A message could not be unwrapped or wrapped (integrity, sequence, …).
    #[error("{0}")]
    Gss(#[from] GssError),
    /// The peer broke the §5 framing (wrong version or type, its abort).
    #[error("GSS-API framing: {0}")]
    Framing(GssapiError),
    /// The peer ended the stream inside a message.
    #[error("GSS-API framing: stream ended inside a message")]
    Truncated,
    /// Socket I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtectionError {
    /// The metric label of the failure (`socksgate_gssapi_failures_total`), `None` for I/O.
    pub fn cause(&self) -> Option<&'static str> {
        match self {
            Self::Gss(e) => Some(e.cause.as_str()),
            Self::Framing(_) | Self::Truncated => Some("protocol"),
            Self::Io(_) => None,
        }
    }

    /// The protection failure inside an I/O error of a [`ProtectedStream`] (kind
    /// `InvalidData`), if that is what `e` is.
    pub fn in_io(e: &std::io::Error) -> Option<&Self> {
        e.get_ref()?.downcast_ref::<Self>()
    }
}

/// One session's protection: the established context, the level, and the decoder's state
/// between reads (the header octets and the token collected so far).
#[derive(Debug)]
pub struct Protection {
    context: Context,
    level: ProtectionLevel,
    decoder: Decapsulator,
    token: Vec<u8>,
}

impl Protection {
    /// Protection at `level` (integrity or confidentiality) with `context`.
    pub fn new(context: Context, level: ProtectionLevel) -> Self {
        Self {
            context,
            level,
            decoder: Decapsulator::new(),
            token: Vec::new(),
        }
    }

    /// The agreed level.
    pub fn level(&self) -> ProtectionLevel {
        self.level
    }

    /// The context (its peer's principal).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The context and the level, for the datagrams of a UDP association (nothing else
    /// travels on the stream after its reply).
    pub fn into_context(self) -> (Context, ProtectionLevel) {
        (self.context, self.level)
    }

    fn encrypt(&self) -> bool {
        // Selective is never granted by this server; were it agreed, encrypt everything.
        !matches!(
            self.level,
            ProtectionLevel::None | ProtectionLevel::Integrity
        )
    }

    /// Decodes `input` (bytes as received, cut anywhere) and appends the plaintext of every
    /// message it completes to `out`. A message split across calls is kept until whole.
    pub fn open(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ProtectionError> {
        while !input.is_empty() {
            let (consumed, piece) = self
                .decoder
                .decode(input)
                .map_err(ProtectionError::Framing)?;
            input = input.get(consumed..).unwrap_or_default();
            if let Some(piece) = piece {
                self.token.extend_from_slice(piece.bytes);
                if piece.last {
                    let range = self.context.unwrap(&mut self.token)?;
                    out.extend_from_slice(self.token.get(range).unwrap_or_default());
                    self.token.clear();
                }
            }
        }
        Ok(())
    }

    /// Whether the stream is between messages (so an end of stream here is clean).
    pub fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
    }

    /// Wraps `plain` into messages (at most [`MAX_PLAIN_PER_MESSAGE`] each) appended to
    /// `out`. Nothing for empty input.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), GssError> {
        let encrypt = self.encrypt();
        for chunk in plain.chunks(MAX_PLAIN_PER_MESSAGE) {
            let token = self.context.wrap(encrypt, chunk)?;
            let header = encapsulation_header(token.len()).ok_or_else(|| GssError {
                cause: crate::gssapi::Cause::Other,
                detail: format!("wrap token of {} octets cannot be framed", token.len()),
            })?;
            out.extend_from_slice(&header);
            out.extend_from_slice(&token);
        }
        Ok(())
    }
}

/// A stream whose bytes are carried as §5 messages over `inner`: what the client library's
/// `SocksStream` becomes once a protection level that encapsulates was agreed. Reads give
/// the plaintext of whole messages; writes are sealed into messages and written out (a
/// write returns once its plaintext is sealed, `flush` and `shutdown` send what is still
/// held). Errors of the protection are I/O errors of kind `InvalidData`.
#[derive(Debug)]
pub struct ProtectedStream<S> {
    inner: S,
    protection: Protection,
    plain: Vec<u8>,
    plain_read: usize,
    sealed: Vec<u8>,
    sealed_written: usize,
    received: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ProtectedStream<S> {
    /// Protects `inner` with `protection`; `pending` holds bytes already read from `inner`
    /// (the start of the first messages).
    pub fn new(inner: S, protection: Protection, pending: &[u8]) -> Result<Self, ProtectionError> {
        let mut stream = Self {
            inner,
            protection,
            plain: Vec::new(),
            plain_read: 0,
            sealed: Vec::new(),
            sealed_written: 0,
            received: vec![0u8; 32 * 1024],
        };
        stream.protection.open(pending, &mut stream.plain)?;
        Ok(stream)
    }

    /// The agreed level.
    pub fn level(&self) -> ProtectionLevel {
        self.protection.level()
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream and its protection, for a UDP association's datagrams once its reply was
    /// read (plaintext read and not taken yet, if any, is dropped: nothing follows that
    /// reply).
    pub fn into_parts(self) -> (S, Protection) {
        (self.inner, self.protection)
    }

    /// Writes out the sealed messages held.
    fn poll_drain(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sealed_written < self.sealed.len() {
            let rest = self.sealed.get(self.sealed_written..).unwrap_or_default();
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.sealed_written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.sealed.clear();
        self.sealed_written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Keeps the failure itself inside the I/O error, for [`ProtectionError::in_io`].
fn invalid_data(e: impl Into<ProtectionError>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.into())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ProtectedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.plain.get(this.plain_read..).unwrap_or_default();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(ready.get(..n).unwrap_or_default());
                this.plain_read += n;
                if this.plain_read == this.plain.len() {
                    this.plain.clear();
                    this.plain_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.received);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let got = raw.filled();
            if got.is_empty() {
                if !this.protection.at_boundary() {
                    return Poll::Ready(Err(invalid_data(ProtectionError::Truncated)));
                }
                return Poll::Ready(Ok(()));
            }
            this.protection
                .open(got, &mut this.plain)
                .map_err(invalid_data)?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ProtectedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        // Holding at most one batch of sealed messages bounds the memory a writer can use.
        if this.poll_drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        let take = buf
            .get(..buf.len().min(MAX_PLAIN_PER_MESSAGE))
            .unwrap_or_default();
        this.protection
            .seal(take, &mut this.sealed)
            .map_err(invalid_data)?;
        // Start sending now; what the socket does not take yet goes on the next call.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(take.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.poll_drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.poll_drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
