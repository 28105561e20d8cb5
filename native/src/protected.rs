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
//!
//! The cost is the library's cryptography; around it this module copies as little as it can.
//! A message carries up to [`MAX_PLAIN_PER_MESSAGE`] (what one read returned, never waiting for
//! more), sealed where it lies in a buffer kept for the stream ([`Context::wrap_in_place`]);
//! received tokens are collected in one piece of a buffer kept for the stream — read from the
//! socket up to the end of the token, so in a steady flow each arrives at the buffer's start
//! and nothing is moved — and unwrapped where they lie, and their plaintext is read from there.

use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use socksgate_core::gssapi::{Decapsulator, GssapiError, ProtectionLevel, encapsulation_header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gssapi::{Cause, Context, GssError};

/// The most plaintext wrapped into one message: what a 65,535-octet token (the most the §5
/// framing's 16-bit length allows) holds with room to spare for any Kerberos enctype's
/// header, padding and checksum (60 octets for AES with confidentiality, 28 with integrity
/// alone; under 100 for the older ones). Less goes into a message when a read returned less.
pub const MAX_PLAIN_PER_MESSAGE: usize = 63 * 1024;

/// A §5 message: the 4-octet header and the longest token.
const MAX_MESSAGE: usize = 4 + u16::MAX as usize;

/// Room left before and after the plaintext of a message being sealed, for the token's header
/// and its padding and trailer (generous: AES needs 32 and 28).
const WRAP_ROOM: usize = 256;

/// The least a receive asks the socket for between messages.
const MIN_RECEIVE: usize = 4 * 1024;

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

/// One session's protection: the established context, the level, and the receiving side's
/// state between reads — the decoder's (header octets), and the received octets with the
/// token being collected, which always lies in one piece of that buffer so that it is
/// unwrapped where it lies.
#[derive(Debug)]
pub struct Protection {
    context: Context,
    level: ProtectionLevel,
    decoder: Decapsulator,
    /// Received octets; `received[..filled]` holds data, of which the decoder took
    /// `received[..parsed]`.
    received: Vec<u8>,
    filled: usize,
    parsed: usize,
    /// Where the current token's first octet lies in `received`, once its first piece came.
    token_at: Option<usize>,
}

impl Protection {
    /// Protection at `level` (integrity or confidentiality) with `context`.
    pub fn new(context: Context, level: ProtectionLevel) -> Self {
        Self {
            context,
            level,
            decoder: Decapsulator::new(),
            received: Vec::new(),
            filled: 0,
            parsed: 0,
            token_at: None,
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
        loop {
            while let Some(plain) = self.next_plain()? {
                out.extend_from_slice(self.plain(plain));
            }
            if input.is_empty() {
                return Ok(());
            }
            let room = self.receive_room();
            let n = room.len().min(input.len());
            if let (Some(dst), Some(src)) = (room.get_mut(..n), input.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.received_octets(n);
            input = input.get(n..).unwrap_or_default();
        }
    }

    /// Whether the stream is between messages (so an end of stream here is clean).
    pub fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
    }

    /// The plaintext of the next message the received octets complete, unwrapped where its
    /// token lies; `None` once they complete no more (everything received is then decoded).
    /// Read it with [`plain`](Self::plain) before receiving more.
    fn next_plain(&mut self) -> Result<Option<Range<usize>>, ProtectionError> {
        loop {
            let input = self
                .received
                .get(self.parsed..self.filled)
                .unwrap_or_default();
            if input.is_empty() {
                return Ok(None);
            }
            let (consumed, piece) = self
                .decoder
                .decode(input)
                .map_err(ProtectionError::Framing)?;
            let piece = piece.map(|p| (p.bytes.len(), p.last));
            self.parsed += consumed;
            let Some((len, last)) = piece else {
                continue;
            };
            // A piece is the last octets consumed, and the pieces of one token follow each
            // other (no header between them), so the token lies in one piece from `token_at`.
            let token_at = *self.token_at.get_or_insert(self.parsed - len);
            if last {
                self.token_at = None;
                let token = self
                    .received
                    .get_mut(token_at..self.parsed)
                    .unwrap_or_default();
                let range = self.context.unwrap(token)?;
                return Ok(Some(token_at + range.start..token_at + range.end));
            }
        }
    }

    /// Plaintext that [`next_plain`](Self::next_plain) returned.
    fn plain(&self, range: Range<usize>) -> &[u8] {
        self.received.get(range).unwrap_or_default()
    }

    /// Where to put the next received octets, once [`next_plain`](Self::next_plain) returned
    /// `None` (and its plaintext was taken): inside a token, room for the rest of it and the
    /// next message's header — so that in a steady flow every token starts at the front of
    /// the buffer and nothing is ever moved — otherwise room for at least [`MIN_RECEIVE`]
    /// octets. Octets already decoded are dropped first (the decoder holds a partial
    /// header); the start of a token is moved to the front only when the rest would not fit.
    fn receive_room(&mut self) -> &mut [u8] {
        let keep = self.token_at.unwrap_or(self.parsed);
        let want = match self.decoder.token_remaining() {
            Some(rest) => usize::from(rest) + 4,
            None => self.received.len().clamp(MIN_RECEIVE, MAX_MESSAGE),
        };
        if keep >= self.filled {
            // Everything received was decoded and is spent.
            self.filled = 0;
            self.parsed = 0;
        } else if self.filled + want > self.received.len().max(MAX_MESSAGE) {
            // A token's start, near the end of the buffer: move it to the front (a token
            // and a header always fit the buffer from there).
            self.received.copy_within(keep..self.filled, 0);
            self.filled -= keep;
            self.parsed -= keep;
            self.token_at = self.token_at.map(|at| at - keep);
        }
        let end = self.filled + want;
        if self.received.len() < end {
            self.received.resize(end, 0);
        }
        self.received.get_mut(self.filled..end).unwrap_or_default()
    }

    /// `n` octets were received into the room [`receive_room`](Self::receive_room) gave.
    fn received_octets(&mut self, n: usize) {
        self.filled += n;
    }

    /// Seals `plain` (at most [`MAX_PLAIN_PER_MESSAGE`] octets) into one message written into
    /// `buf` (whose contents are replaced, its allocation reused); returns where the message
    /// lies in `buf`. The plaintext is copied into `buf` once and wrapped there.
    pub fn seal_message(
        &mut self,
        plain: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>, GssError> {
        let encrypt = self.encrypt();
        let data = 4 + WRAP_ROOM..4 + WRAP_ROOM + plain.len();
        if buf.len() < data.end + WRAP_ROOM {
            buf.resize(data.end + WRAP_ROOM, 0);
        }
        if let Some(dst) = buf.get_mut(data.clone()) {
            dst.copy_from_slice(plain);
        }
        let token = match self.context.wrap_in_place(encrypt, buf, data)? {
            Some(token) => token,
            None => {
                // A mechanism whose header or trailer exceeds the room: the library's buffer.
                let token = self.context.wrap(encrypt, plain)?;
                buf.clear();
                buf.resize(4, 0);
                buf.extend_from_slice(&token);
                4..buf.len()
            }
        };
        let header = encapsulation_header(token.len()).ok_or_else(|| GssError {
            cause: Cause::Other,
            detail: format!("wrap token of {} octets cannot be framed", token.len()),
        })?;
        let message = token.start - 4..token.end;
        if let Some(dst) = buf.get_mut(message.start..token.start) {
            dst.copy_from_slice(&header);
        }
        Ok(message)
    }

    /// Wraps `plain` into messages (at most [`MAX_PLAIN_PER_MESSAGE`] each) appended to
    /// `out`. Nothing for empty input.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), GssError> {
        let mut buf = Vec::new();
        for chunk in plain.chunks(MAX_PLAIN_PER_MESSAGE) {
            let message = self.seal_message(chunk, &mut buf)?;
            out.extend_from_slice(buf.get(message).unwrap_or_default());
        }
        Ok(())
    }
}

/// A stream whose bytes are carried as §5 messages over `inner`: what the client library's
/// `SocksStream` becomes once a protection level that encapsulates was agreed. Reads give
/// the plaintext of whole messages; writes are sealed into messages and written out (a
/// write returns once its plaintext is sealed, `flush` and `shutdown` send what is still
/// held). Errors of the protection are I/O errors of kind `InvalidData`.
///
/// A write of up to [`MAX_PLAIN_PER_MESSAGE`] octets is one message: write what you have as
/// soon as you have it (nothing is held back to fill a message), in pieces that large for
/// bulk data.
#[derive(Debug)]
pub struct ProtectedStream<S> {
    inner: S,
    protection: Protection,
    /// Plaintext opened and not read yet, in the protection's receive buffer.
    ready: Range<usize>,
    /// The last message sealed; `sealed[unsent]` is still to be written.
    sealed: Vec<u8>,
    unsent: Range<usize>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ProtectedStream<S> {
    /// Protects `inner` with `protection`; `pending` holds bytes already read from `inner`
    /// (the start of the first messages).
    pub fn new(inner: S, protection: Protection, pending: &[u8]) -> Result<Self, ProtectionError> {
        let mut stream = Self {
            inner,
            protection,
            ready: 0..0,
            sealed: Vec::new(),
            unsent: 0..0,
        };
        if !pending.is_empty() {
            // Decoded now, so that a broken first message fails here; the plaintext of the
            // messages is held until read (what `open` cannot hold is pending plaintext).
            let mut plain = Vec::new();
            stream.protection.open(pending, &mut plain)?;
            stream.hold(&plain);
        }
        Ok(stream)
    }

    /// Keeps `plain` (opened before the stream existed) to be read first. The receive buffer
    /// holds it: it is empty of received octets then, or holds only a partial token.
    fn hold(&mut self, plain: &[u8]) {
        if plain.is_empty() {
            return;
        }
        let p = &mut self.protection;
        // Move what is held of a partial token behind the plaintext.
        let keep = p.token_at.unwrap_or(p.parsed);
        let rest = p.received.get(keep..p.filled).unwrap_or_default().to_vec();
        p.received.clear();
        p.received.extend_from_slice(plain);
        p.received.extend_from_slice(&rest);
        p.token_at = p.token_at.map(|_| plain.len());
        p.parsed = plain.len() + (p.parsed - keep);
        p.filled = plain.len() + rest.len();
        self.ready = 0..plain.len();
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

    /// Writes out the sealed message held.
    fn poll_drain(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.unsent.is_empty() {
            let rest = self.sealed.get(self.unsent.clone()).unwrap_or_default();
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.unsent.start += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
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
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                let from = this.ready.start..this.ready.start + n;
                buf.put_slice(this.protection.plain(from));
                this.ready.start += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(plain) = this.protection.next_plain().map_err(invalid_data)? {
                this.ready = plain;
                continue;
            }
            let mut raw = ReadBuf::new(this.protection.receive_room());
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let n = raw.filled().len();
            if n == 0 {
                if !this.protection.at_boundary() {
                    return Poll::Ready(Err(invalid_data(ProtectionError::Truncated)));
                }
                return Poll::Ready(Ok(()));
            }
            this.protection.received_octets(n);
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
        // Holding at most one sealed message bounds the memory a writer can use.
        if this.poll_drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = buf
            .get(..buf.len().min(MAX_PLAIN_PER_MESSAGE))
            .unwrap_or_default();
        this.unsent = this
            .protection
            .seal_message(take, &mut this.sealed)
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
