//! GSS-API (RFC 1961) for SOCKS5, sans-IO and without cryptography: the core frames and
//! sequences the sub-negotiation; the caller's GSS-API library (MIT Kerberos, SSPI, ...)
//! establishes the context and wraps and unwraps.
//!
//! # What RFC 1961 asks for, and who does what
//!
//! 1. **Context establishment (§3).** Tokens `VER=1 MTYP=1 LEN TOKEN` go back and forth until
//!    the context is established on both sides. A token may be up to 65,535 octets (a
//!    Kerberos ticket from an Active Directory domain is commonly 1.5–12 KB). The core never
//!    stores a token: it hands the peer's token out **in pieces** as the bytes stream in, and
//!    the caller collects them; the caller's own tokens are sent by the caller right after the
//!    4-octet header the core queues. No session pays for a 64 KiB buffer, and a front end
//!    that does not offer GSS-API (the firmware) pays nothing at all.
//! 2. **Protection-level sub-negotiation (§4).** The client sends the level it requires
//!    (`MTYP=2`), the server answers with the level it grants. RFC 1961 wraps the level octet
//!    (`gss_wrap`, `conf_req_flag` FALSE: *protected form*); the NEC reference
//!    implementation and curl's `--socks5-gssapi-nec` send it as one raw octet (*NEC form*,
//!    `LEN=1`; a wrapped token is never one octet long, which is how the server tells the
//!    forms apart and answers in the client's form). The server grants the strongest level
//!    its [`GssapiPolicy`](crate::policy::GssapiPolicy) allows that does not exceed the request
//!    ([`ProtectionLevels::grant`](crate::policy::ProtectionLevels::grant)). Levels:
//!    [`ProtectionLevel`] — 0 none (not in the RFC; curl, NEC and Dante use it), 1 integrity
//!    (`conf_req_flag` FALSE on every message), 2 confidentiality (TRUE on every message), 3
//!    selective (per message; this server never grants it and counts a request for it as a
//!    request for confidentiality).
//! 3. **Per-message protection (§5).** With any level but none, everything after the
//!    negotiation — the SOCKS request and reply, then the relayed stream — travels as
//!    `VER=1 MTYP=3 LEN TOKEN` messages, each `TOKEN` one `gss_wrap` output. The caller
//!    decodes the stream with a [`Decapsulator`], unwraps each token, and encodes its own
//!    wrapped tokens with [`encapsulation_header`]. A UDP datagram is one such message
//!    wrapping the whole RFC 1928 UDP header and data ([`decapsulate_datagram`],
//!    [`encapsulate_datagram`]). With level none nothing is encapsulated.
//!
//! # Server side ([`Session`](crate::session::Session))
//!
//! Method 1 is offered only when the policy's
//! [`Authentication::Required`](crate::policy::Authentication::Required) has `gssapi: true`; a
//! client offering both 1 and 2 gets the policy's
//! [`MethodPreference`](crate::policy::MethodPreference).
//!
//! | [`Event`](crate::session::Event) | the driver | then calls |
//! |---|---|---|
//! | `GssapiPiece` | appends [`gssapi_token_piece`](crate::session::Session::gssapi_token_piece) to the client's token | nothing (more input brings the rest) |
//! | `GssapiAccept` | appends the last piece, runs `gss_accept_sec_context` on the whole token | [`send_gssapi_token`](crate::session::Session::send_gssapi_token) (continue needed), [`handle_gssapi_established`](crate::session::Session::handle_gssapi_established) (complete: the principal becomes the session's user) or [`handle_gssapi_failed`](crate::session::Session::handle_gssapi_failed); after sending its token, [`handle_gssapi_sent`](crate::session::Session::handle_gssapi_sent) |
//! | `GssapiUnwrapProtection` | appends the last piece, `gss_unwrap`s the protected-form level message | [`handle_gssapi_protection`](crate::session::Session::handle_gssapi_protection) with the plaintext; it returns the granted level: `gss_wrap` that octet (`conf_req_flag` FALSE), then [`send_gssapi_protection`](crate::session::Session::send_gssapi_protection) and, after the token, `handle_gssapi_sent` |
//! | `GssapiProtected(level)` | sends the queued output as it is (the last unprotected bytes), then decodes [`take_encapsulated_input`](crate::session::Session::take_encapsulated_input) and everything read afterwards with a [`Decapsulator`], feeding the unwrapped plaintext to [`handle_input`](crate::session::Session::handle_input), and wraps everything the session transmits from now on | — |
//!
//! A driver's loop, sketched (`ctx` is the caller's GSS-API acceptor):
//!
//! ```text
//! Event::GssapiPiece => token.extend(s.gssapi_token_piece()),
//! Event::GssapiAccept => {
//!     token.extend(s.gssapi_token_piece());
//!     let out = match ctx.step(&take(token)) {
//!         Ok(Continue(out)) => { s.send_gssapi_token(out.len())?; out }
//!         Ok(Complete(out)) => { s.handle_gssapi_established(ctx.peer_name(), out.len())?; out }
//!         Err(e) => { log(e); s.handle_gssapi_failed()?; return }   // abort queued, Closed follows
//!     };
//!     write(s.pending_transmit()); s.consume_transmit(..); write(out);
//!     s.handle_gssapi_sent(policy, now)?;
//! }
//! Event::GssapiUnwrapProtection => {
//!     token.extend(s.gssapi_token_piece());
//!     let level = s.handle_gssapi_protection(&ctx.unwrap(&take(token))?)?;  // None: closed
//!     let out = ctx.wrap(false, &[level.into()])?;
//!     s.send_gssapi_protection(out.len())?;
//!     write(s.pending_transmit()); s.consume_transmit(..); write(out);
//!     s.handle_gssapi_sent(policy, now)?;
//! }
//! Event::GssapiProtected(level) => {
//!     write(s.pending_transmit()); s.consume_transmit(..);        // last clear bytes
//!     decoder = Decapsulator::new(); feed_decoder(s.take_encapsulated_input());
//!     // from now on: socket -> decoder -> ctx.unwrap -> s.handle_input,
//!     //              s.pending_transmit -> ctx.wrap(level) -> encapsulation_header + token
//! }
//! ```
//!
//! The NEC form needs no event: the session answers it itself. With level none there is no
//! `GssapiProtected` event and the session reads the request as usual.
//!
//! **Tokens the caller sends.** `send_gssapi_token(len)`, `handle_gssapi_established(..,
//! len)` and `send_gssapi_protection(len)` queue only the 4-octet header for a token of `len`
//! octets: send the queued output, then the token itself, then call
//! [`handle_gssapi_sent`](crate::session::Session::handle_gssapi_sent). Until then the
//! session answers nothing, so bytes the client pipelined cannot overtake the token. A
//! context that completes with no output token gets a zero-length token (RFC 1961 §3.4: it
//! tells the client the server is ready).
//!
//! **Pieces.** A piece is valid until the next call that takes input
//! ([`recv_buffer`](crate::session::Session::recv_buffer), `handle_received`, `handle_input`):
//! copy it before reading more. Pieces of one token, in order, are the token; how the token is
//! cut depends on how the input arrived, nothing else does.
//!
//! **Failures** close the session with [`Close::Gssapi`](crate::session::Close::Gssapi) and a
//! [`GssapiError`] (the abort message `VER=1 MTYP=0xFF` is queued when the server gives up):
//! the caller's failure ([`GssapiError::Failed`]), the client's abort, an unexpected message
//! type, a wrong version, a level the policy cannot grant, a NEC-form message the policy
//! refuses, a principal name longer than 255 octets.
//!
//! # Client side ([`Client`](crate::client::Client))
//!
//! [`Client::with_gssapi`](crate::client::Client::with_gssapi) offers method 1 (and 2 with
//! credentials, never 0), with the [`GssapiOptions`](crate::client::GssapiOptions) level. [`ClientEvent`](crate::client::ClientEvent)s:
//! `GssapiInit` (call `gss_init_sec_context` with no input token), `GssapiPiece { len }` and
//! `GssapiContinue { len }` (the last `len` octets `feed` consumed are a piece of the server's
//! token; with `GssapiContinue` the token is whole: call `gss_init_sec_context` with it),
//! `GssapiWrapProtection(level)` (wrap that octet, then
//! [`send_gssapi_protection`](crate::client::Client::send_gssapi_protection)),
//! `GssapiUnwrapProtection { len }` (the server's answer is whole: unwrap it and pass the
//! plaintext to [`gssapi_protection`](crate::client::Client::gssapi_protection)) and
//! `GssapiProtected(level)` (from now on: wrap everything `poll_transmit` gives, and feed only
//! unwrapped plaintext; the input `feed` did not consume is already encapsulated). Answers to
//! `GssapiInit` / `GssapiContinue`: [`send_gssapi_token`](crate::client::Client::send_gssapi_token)
//! (continue needed), [`gssapi_established`](crate::client::Client::gssapi_established)
//! (complete, with the last token's length if `gss_init_sec_context` produced one) or
//! [`gssapi_failed`](crate::client::Client::gssapi_failed).

//!
//! # Contracts
//!
//! * **`consumed`.** [`Decapsulator::decode`] and [`Client::feed`](crate::client::Client::feed)
//!   return how many input octets they took; the rest is the caller's to offer again. Both
//!   stop right after a token piece, so a piece is always the *last* octets taken (the client
//!   events say how many). A partial header is held inside and counts as taken. The session
//!   takes its input through `recv_buffer`/`handle_received` or `handle_input` as before.
//! * **When to poll.** After every input call and every answer, poll events until there are
//!   none and send the queued output; the GSS-API answers that queue a header
//!   (`send_gssapi_token`, `handle_gssapi_established`, `send_gssapi_protection`, and the
//!   client's `send_gssapi_token`, `gssapi_established(Some(_))`, `send_gssapi_protection`)
//!   want the token written right after that output. The session additionally waits for
//!   [`handle_gssapi_sent`](crate::session::Session::handle_gssapi_sent).
//! * **Splits.** Events (other than how many `GssapiPiece`s a token takes), the tokens
//!   reassembled from the pieces, output and outcome are the same however the input is split.
//! * **UDP.** With a level that encapsulates, each datagram from the client is checked and
//!   decapsulated by [`udp::protected::client_token`](crate::udp::protected::client_token)
//!   and unwrapped before [`udp::Association`](crate::udp::Association) sees it (the
//!   plaintext is the RFC 1928 UDP header and data), and each datagram to the client is
//!   wrapped and [`encapsulate_datagram`]d after the association built it. A datagram that
//!   fails is dropped; the association goes on.
//! * **Nothing panics**, whatever the peer sends: oversized lengths cannot exist (LEN is
//!   16 bits and nothing is buffered), a truncated token only leaves the machine waiting
//!   (until the handshake deadline), a wrong version or message type closes with its
//!   [`GssapiError`].

use core::fmt;

use crate::wire::gssapi::{GssapiHeader, GssapiMessage, GssapiMessageType};
use crate::wire::{BufferTooSmall, Status, WireError};

pub use crate::wire::gssapi::ProtectionLevel;

/// Why a GSS-API sub-negotiation or an encapsulated stream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum GssapiError {
    /// The caller's GSS-API step failed (context not established, unwrap failed): the caller
    /// knows the GSS-API status and logs it.
    Failed,
    /// The peer sent the abort message (`MTYP=0xFF`).
    Aborted,
    /// A message that cannot be framed (wrong version octet).
    Malformed(WireError),
    /// A message type that does not belong at this point (e.g. `MTYP=3` during context
    /// establishment).
    UnexpectedMessage(GssapiMessageType),
    /// The protection-level message does not hold exactly one octet (after unwrapping).
    BadProtectionMessage,
    /// A protection level octet that is not 0–3.
    UnknownProtectionLevel(u8),
    /// Server: no level the policy allows is at or below the client's request. Client: the
    /// server granted more than requested, or less than the client's minimum.
    ProtectionRefused(ProtectionLevel),
    /// The client used the unprotected (NEC) form and the policy does not accept it.
    NecRefused,
    /// The authenticated principal's name is longer than 255 octets.
    PrincipalTooLong,
}

impl fmt::Display for GssapiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed => f.write_str("GSS-API context or message failed"),
            Self::Aborted => f.write_str("peer aborted the GSS-API negotiation"),
            Self::Malformed(e) => write!(f, "malformed GSS-API message: {e}"),
            Self::UnexpectedMessage(t) => write!(f, "unexpected GSS-API message type ({t})"),
            Self::BadProtectionMessage => f.write_str("protection-level message is not one octet"),
            Self::UnknownProtectionLevel(l) => write!(f, "unknown protection level {l}"),
            Self::ProtectionRefused(l) => write!(f, "protection level {l} not acceptable"),
            Self::NecRefused => f.write_str("unprotected (NEC) protection negotiation refused"),
            Self::PrincipalTooLong => f.write_str("principal name longer than 255 octets"),
        }
    }
}

impl core::error::Error for GssapiError {}

impl From<WireError> for GssapiError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

/// The 4-octet header that goes before a wrapped token of `len` octets (§5); send the token
/// right after it. `None` when `len` exceeds 65,535: wrap less per message.
pub fn encapsulation_header(len: usize) -> Option<[u8; 4]> {
    let header = GssapiHeader::new(GssapiMessageType::Encapsulated, len)?;
    let mut out = [0u8; 4];
    header.emit(&mut out).ok()?;
    Some(out)
}

/// Writes a UDP datagram carrying one wrapped `token` (§5: the token wraps the whole RFC 1928
/// UDP request header and data); returns its length, `token.len() + 4`.
pub fn encapsulate_datagram(token: &[u8], out: &mut [u8]) -> Result<usize, EncapsulateError> {
    if token.len() > usize::from(u16::MAX) {
        return Err(EncapsulateError::TokenTooLong);
    }
    GssapiMessage {
        kind: GssapiMessageType::Encapsulated,
        token,
    }
    .emit(out)
    .map_err(EncapsulateError::BufferTooSmall)
}

/// Why [`encapsulate_datagram`] could not write a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncapsulateError {
    /// More than 65,535 octets cannot be framed.
    TokenTooLong,
    /// `out` is too small.
    BufferTooSmall(BufferTooSmall),
}

/// The wrapped token of a UDP datagram: the datagram must be exactly one `MTYP=3` message.
pub fn decapsulate_datagram(datagram: &[u8]) -> Result<&[u8], GssapiError> {
    match GssapiMessage::parse(datagram)? {
        Status::Complete((m, n)) if m.kind == GssapiMessageType::Encapsulated => {
            if n == datagram.len() {
                Ok(m.token)
            } else {
                // Trailing octets: not one message.
                Err(GssapiError::Malformed(WireError::Truncated))
            }
        }
        Status::Complete((m, _)) if m.kind == GssapiMessageType::Abort => Err(GssapiError::Aborted),
        Status::Complete((m, _)) => Err(GssapiError::UnexpectedMessage(m.kind)),
        Status::Partial => Err(GssapiError::Malformed(WireError::Truncated)),
    }
}

/// [`decapsulate_datagram`] for a caller that unwraps the token in place (MIT's `gss_unwrap`
/// writes into its input).
pub fn decapsulate_datagram_mut(datagram: &mut [u8]) -> Result<&mut [u8], GssapiError> {
    let len = decapsulate_datagram(datagram)?.len();
    // The token follows the 4-octet header and ends the datagram.
    Ok(datagram.get_mut(4..4 + len).unwrap_or_default())
}

/// A piece of a wrapped token found by [`Decapsulator::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The token octets in this piece (may be empty for a zero-length token).
    pub bytes: &'a [u8],
    /// Whether this piece ends the token: unwrap the collected token now.
    pub last: bool,
}

/// Decodes a §5 byte stream of `VER=1 MTYP=3 LEN TOKEN` messages into wrapped tokens, in
/// pieces, from input chunks of any size; holds 4 octets of state, never a token.
///
/// ```
/// use socksgate_core::gssapi::Decapsulator;
///
/// let stream = [1, 3, 0, 3, b'a', b'b', b'c', 1, 3, 0, 0];
/// let mut d = Decapsulator::new();
/// let (mut tokens, mut token) = (Vec::new(), Vec::new());
/// for chunk in stream.chunks(2) {
///     let mut input = chunk;
///     while !input.is_empty() {
///         let (consumed, piece) = d.decode(input).unwrap();
///         input = &input[consumed..];
///         if let Some(p) = piece {
///             token.extend_from_slice(p.bytes);
///             if p.last { tokens.push(std::mem::take(&mut token)); }
///         }
///     }
/// }
/// assert_eq!(tokens, [b"abc".to_vec(), vec![]]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decapsulator {
    header: [u8; 4],
    /// Header octets held (0–3) while no token is being read.
    held: u8,
    /// Token octets still to come; `None` between messages.
    remaining: Option<u16>,
    failed: Option<GssapiError>,
}

impl Decapsulator {
    /// A decoder at the start of a stream.
    pub const fn new() -> Self {
        Self {
            header: [0; 4],
            held: 0,
            remaining: None,
            failed: None,
        }
    }

    /// Takes octets from `input`: returns how many it consumed and, when they include token
    /// octets, the piece (borrowed from `input`). It stops after at most one piece, so call
    /// it again with `input[consumed..]` until that is empty; `consumed` is 0 only for empty
    /// input. A partial header is held inside and counts as consumed.
    ///
    /// A piece is always the last octets consumed (`input[consumed - piece.bytes.len()..
    /// consumed]`), so a caller that keeps its input buffer can unwrap a token where it lies
    /// instead of copying it out.
    ///
    /// Errors (wrong version, a message type other than 3, the peer's abort) are final: the
    /// same error comes back on every later call. Each is reported as soon as its octet
    /// arrives (VER the first, MTYP the second), without waiting for the rest of the header. Pieces and errors are the same however the
    /// stream is split.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Piece<'a>>), GssapiError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            if let Some(remaining) = self.remaining {
                let take = rest.len().min(usize::from(remaining));
                // `take` ≤ `remaining`, a u16.
                let left = remaining - take as u16;
                let bytes = rest.get(..take).unwrap_or_default();
                let last = left == 0;
                self.remaining = (!last).then_some(left);
                if take == 0 && !last {
                    return Ok((consumed, None));
                }
                return Ok((consumed + take, Some(Piece { bytes, last })));
            }
            if rest.is_empty() {
                return Ok((consumed, None));
            }
            // Collect the header: at most 4 octets, copied so a header split over calls
            // parses exactly like a whole one.
            let held = usize::from(self.held);
            let want = 4 - held;
            let take = rest.len().min(want);
            if let (Some(dst), Some(src)) =
                (self.header.get_mut(held..held + take), rest.get(..take))
            {
                dst.copy_from_slice(src);
            }
            let have = held + take;
            match GssapiHeader::parse(self.header.get(..have).unwrap_or_default()) {
                Err(e) => return Err(self.fail(e.into())),
                Ok(Status::Partial) => {
                    // Decide on the type as soon as its octet is here rather than after LEN:
                    // a stream cut right after a wrong MTYP still says why it stopped.
                    if let Some(&kind) = self.header.get(1).filter(|_| have >= 2) {
                        let kind = GssapiMessageType::from(kind);
                        if kind != GssapiMessageType::Encapsulated {
                            return Err(self.fail(GssapiError::UnexpectedMessage(kind)));
                        }
                    }
                    // `have` < 4 here: a 4-octet header always parses.
                    self.held = have as u8;
                    return Ok((consumed + take, None));
                }
                Ok(Status::Complete((h, n))) => {
                    self.held = 0;
                    consumed += n - held;
                    match h.kind {
                        GssapiMessageType::Encapsulated => self.remaining = Some(h.len),
                        GssapiMessageType::Abort => return Err(self.fail(GssapiError::Aborted)),
                        other => return Err(self.fail(GssapiError::UnexpectedMessage(other))),
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: GssapiError) -> GssapiError {
        self.failed = Some(e);
        e
    }

    /// Whether the stream is between messages (a clean place for it to end).
    pub const fn at_boundary(&self) -> bool {
        self.held == 0 && self.remaining.is_none() && self.failed.is_none()
    }

    /// The octets of the current token still to come, once its header was read; `None`
    /// between messages and inside a header. A reader can ask the socket for exactly these
    /// (and the next header) so that each token arrives in one piece of its buffer.
    pub const fn token_remaining(&self) -> Option<u16> {
        self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        d: &mut Decapsulator,
        stream: &[u8],
        chunk: usize,
    ) -> (Vec<Vec<u8>>, Option<GssapiError>) {
        let (mut tokens, mut token) = (Vec::new(), Vec::new());
        for c in stream.chunks(chunk.max(1)) {
            let mut input = c;
            while !input.is_empty() {
                match d.decode(input) {
                    Ok((n, piece)) => {
                        assert!(n > 0 && n <= input.len());
                        input = &input[n..];
                        if let Some(p) = piece {
                            token.extend_from_slice(p.bytes);
                            if p.last {
                                tokens.push(core::mem::take(&mut token));
                            }
                        }
                    }
                    Err(e) => return (tokens, Some(e)),
                }
            }
        }
        (tokens, None)
    }

    #[test]
    fn tokens_of_any_length_in_any_chunks() {
        let mut stream = Vec::new();
        let long: Vec<u8> = (0..65_535u32).map(|i| i as u8).collect();
        for t in [&b"hello"[..], &[], &long[..]] {
            stream.extend_from_slice(&encapsulation_header(t.len()).unwrap());
            stream.extend_from_slice(t);
        }
        for chunk in [1, 2, 3, 5, 4096, stream.len()] {
            let mut d = Decapsulator::new();
            let (tokens, err) = decode_all(&mut d, &stream, chunk);
            assert_eq!(err, None);
            assert_eq!(
                tokens,
                [b"hello".to_vec(), vec![], long.clone()],
                "chunk {chunk}"
            );
            assert!(d.at_boundary());
        }
        assert_eq!(encapsulation_header(65_536), None);
    }

    #[test]
    fn a_piece_ends_what_was_consumed_and_remaining_counts_down() {
        let mut stream = encapsulation_header(5).unwrap().to_vec();
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&encapsulation_header(2).unwrap());
        let mut d = Decapsulator::new();
        assert_eq!(d.token_remaining(), None);
        // The first header and three token octets.
        let (n, piece) = d.decode(&stream[..7]).unwrap();
        assert_eq!(n, 7);
        let piece = piece.unwrap();
        assert_eq!(piece.bytes, &stream[n - piece.bytes.len()..n]);
        assert_eq!(d.token_remaining(), Some(2));
        let (n, piece) = d.decode(&stream[7..]).unwrap();
        assert_eq!((n, piece.unwrap().bytes), (2, &b"lo"[..]));
        assert_eq!(d.token_remaining(), None);
        // Half a header: still no token.
        assert_eq!(d.decode(&stream[9..11]).unwrap(), (2, None));
        assert_eq!(d.token_remaining(), None);
        assert_eq!(d.decode(&stream[11..]).unwrap(), (2, None));
        assert_eq!(d.token_remaining(), Some(2));
    }

    #[test]
    fn errors_are_final() {
        for (stream, want) in [
            (
                &[2u8, 3, 0, 0][..],
                GssapiError::Malformed(WireError::BadVersion(2)),
            ),
            (
                &[1, 1, 0, 0],
                GssapiError::UnexpectedMessage(GssapiMessageType::Context),
            ),
            (&[1, 0xff], GssapiError::Aborted),
            // The type decides before LEN arrives.
            (
                &[1, 2],
                GssapiError::UnexpectedMessage(GssapiMessageType::Protection),
            ),
        ] {
            for chunk in [1, 4] {
                let mut d = Decapsulator::new();
                assert_eq!(decode_all(&mut d, stream, chunk).1, Some(want));
                assert_eq!(d.decode(&[1, 3, 0, 0]), Err(want));
            }
        }
    }

    #[test]
    fn datagrams() {
        let mut out = [0u8; 16];
        assert_eq!(encapsulate_datagram(b"wrapped", &mut out), Ok(11));
        assert_eq!(decapsulate_datagram(&out[..11]), Ok(&b"wrapped"[..]));
        assert_eq!(
            decapsulate_datagram_mut(&mut { out }[..11]).map(|t| t.to_vec()),
            Ok(b"wrapped".to_vec())
        );
        assert_eq!(
            decapsulate_datagram(&out[..10]),
            Err(GssapiError::Malformed(WireError::Truncated))
        );
        assert_eq!(
            decapsulate_datagram(&out[..12]),
            Err(GssapiError::Malformed(WireError::Truncated))
        );
        assert_eq!(
            decapsulate_datagram(&[1, 2, 0, 0]),
            Err(GssapiError::UnexpectedMessage(
                GssapiMessageType::Protection
            ))
        );
        assert_eq!(decapsulate_datagram(&[1, 0xff]), Err(GssapiError::Aborted));
        assert_eq!(
            encapsulate_datagram(b"x", &mut out[..4]),
            Err(EncapsulateError::BufferTooSmall(BufferTooSmall {
                required: 5
            }))
        );
    }
}
