//! A passive observer of one recorded SOCKS conversation, for capture inspectors and IDS.
//!
//! [`Conversation`] is fed the two byte streams of a TCP connection (client → server and
//! server → client, each from its first byte, in any chunking and any interleaving of the two
//! directions) and follows the handshake in protocol order by itself: SOCKS4/4a request →
//! reply; SOCKS5 greeting → method selection → RFC 1929 or RFC 1961 sub-negotiation →
//! request → reply, BIND's second reply; then payload (or, when the client encapsulates its
//! request after the GSS-API exchange, RFC 1961 §5, protected payload from there on). It yields typed [`Event`]s: each
//! message with its [`Span`] in its direction's stream (field positions inside a message come
//! from the wire types' span accessors, e.g. [`socks5::Request::dst_spans`]), payload ranges,
//! and protocol violations as [`Anomaly`] values — nothing stops it but the end of the input.
//!
//! Fixed capacity: per direction it holds at most [`MAX_MESSAGE_LEN`] bytes (the largest
//! message the server accepts); payload is never buffered, only reported by position. An
//! RFC 1961 GSS-API message can be longer (its 2-octet LEN allows a 65 535-byte token, and
//! Kerberos tokens often exceed [`MAX_GSSAPI_TOKEN`]): once its 4-octet header is read, the
//! token is skipped as it arrives rather than buffered, and the message is reported when its
//! last byte has been fed, as [`Message::GssapiLong`] with the header and the token's
//! [`Span`].
//!
//! ```
//! use socksgate_core::observe::{Conversation, Direction, Event, Message};
//!
//! let mut conv = Conversation::new();
//! let mut seen = Vec::new();
//! for (dir, bytes) in [
//!     (Direction::ClientToServer, &b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50GET"[..]),
//!     (Direction::ServerToClient, &b"\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"[..]),
//! ] {
//!     let mut rest = bytes;
//!     loop {
//!         let n = conv.feed(dir, rest);
//!         rest = &rest[n..];
//!         while let Some(event) = conv.poll() {
//!             seen.push(match event {
//!                 Event::Message(m) => format!("{:?} {:?}", m.dir, m.span),
//!                 Event::Payload { dir, span } => format!("payload {dir:?} {span:?}"),
//!                 Event::Anomaly(a) => a.to_string(),
//!                 _ => String::new(),
//!             });
//!         }
//!         if n == 0 || rest.is_empty() {
//!             break;
//!         }
//!     }
//! }
//! assert_eq!(seen.len(), 5); // greeting, method selection, request, reply, 3 payload bytes
//! ```

use core::fmt;

#[cfg(doc)]
use crate::server::MAX_GSSAPI_TOKEN;
use crate::server::MAX_MESSAGE_LEN;
use crate::wire::gssapi::{self, GssapiMessage, GssapiMessageType};
use crate::wire::method::{MethodReply, MethodRequest};
use crate::wire::socks4::{Socks4Reply, Socks4Request};
use crate::wire::userpass::{UserPassReply, UserPassRequest};
use crate::wire::{Command, Method, ParseResult, ReplyCode, Socks4Code, Status, WireError, socks5};

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// From the client to the SOCKS server.
    ClientToServer,
    /// From the SOCKS server to the client.
    ServerToClient,
}

/// A byte range of one direction's stream: `offset` counts from that direction's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Span {
    /// Stream offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: usize,
}

/// Where the conversation stands: the message awaited next, or the end of the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Phase {
    /// No client byte yet; the first one picks SOCKS4 (4) or SOCKS5 (5).
    Start,
    /// SOCKS5 method-selection message from the client.
    Greeting,
    /// SOCKS5 method selection from the server.
    MethodReply,
    /// RFC 1929 request.
    UserPass,
    /// RFC 1929 reply.
    UserPassReply,
    /// RFC 1961: the client's token, or its request (VER 5), which ends the exchange.
    Gssapi,
    /// RFC 1961: the server's token answering the client's; a reply (VER 5) instead means the
    /// server has nothing more to send.
    GssapiReply,
    /// SOCKS4/4a or SOCKS5 request.
    Request,
    /// The server's (first) reply.
    Reply,
    /// BIND's second reply.
    SecondReply,
    /// The handshake succeeded: everything further is tunnelled payload.
    Established,
    /// RFC 1961 §5: the client's next message was encapsulated (MTYP 3) after the GSS-API
    /// exchange, so the request, the reply and all data are protected with the context and
    /// cannot be read. Everything further, in both directions, is reported as payload; it
    /// is a sequence of encapsulated messages (the caller may count them with
    /// [`gssapi::GssapiMessage::parse`]'s framing).
    Encapsulated,
    /// The handshake ended without a tunnel (refusal, failed authentication, UDP ASSOCIATE,
    /// an undecodable method or a malformed message): everything further is reported as
    /// payload, but it is not a tunnel.
    Ended,
}

impl Phase {
    /// What is awaited, in words: `"greeting"`, `"method selection"`, …, `"payload"`.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Start => "first message",
            Self::Greeting => "greeting",
            Self::MethodReply => "method selection",
            Self::UserPass => "username/password request",
            Self::UserPassReply => "username/password reply",
            Self::Gssapi | Self::GssapiReply => "GSS-API message",
            Self::Request => "request",
            Self::Reply => "reply",
            Self::SecondReply => "BIND second reply",
            Self::Established | Self::Ended => "payload",
            Self::Encapsulated => "encapsulated message",
        }
    }

    /// Who sends the awaited message; `None` once the handshake is over.
    pub const fn sender(self) -> Option<Direction> {
        match self {
            Self::Start | Self::Greeting | Self::UserPass | Self::Gssapi | Self::Request => {
                Some(Direction::ClientToServer)
            }
            Self::MethodReply
            | Self::UserPassReply
            | Self::GssapiReply
            | Self::Reply
            | Self::SecondReply => Some(Direction::ServerToClient),
            Self::Established | Self::Ended | Self::Encapsulated => None,
        }
    }

    /// True once the handshake is over ([`Established`](Self::Established),
    /// [`Encapsulated`](Self::Encapsulated) or [`Ended`](Self::Ended)).
    pub const fn is_over(self) -> bool {
        matches!(self, Self::Established | Self::Ended | Self::Encapsulated)
    }
}

/// A handshake message, as the wire layer parsed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Message<'a> {
    /// SOCKS5 method-selection message (client).
    Greeting(MethodRequest<'a>),
    /// SOCKS5 method selection (server).
    MethodSelection(MethodReply),
    /// RFC 1929 request.
    UserPass(UserPassRequest<'a>),
    /// RFC 1929 reply.
    UserPassStatus(UserPassReply),
    /// RFC 1961 message (either direction) whose token is at most [`MAX_GSSAPI_TOKEN`]
    /// bytes: the message fits the buffer and is parsed whole.
    Gssapi(GssapiMessage<'a>),
    /// RFC 1961 message (either direction) whose token is longer than [`MAX_GSSAPI_TOKEN`]
    /// bytes (LEN > 516): the token is not buffered, only its position is reported. The
    /// message's span is the 4-octet header (VER, MTYP, LEN) followed by the token; it is
    /// reported once all of it has been fed, like any other message.
    GssapiLong {
        /// The message type (MTYP); never [`GssapiMessageType::Abort`], which has no token.
        kind: GssapiMessageType,
        /// Where the token is in the sender's stream (its `len` is LEN).
        token: Span,
    },
    /// SOCKS4/4a request.
    Socks4Request(Socks4Request<'a>),
    /// SOCKS4 reply (first or BIND's second).
    Socks4Reply(Socks4Reply),
    /// SOCKS5 request.
    Request(socks5::Request<'a>),
    /// SOCKS5 reply (first or BIND's second).
    Reply(socks5::Reply<'a>),
}

/// A message seen in the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Observed<'a> {
    /// Who sent it.
    pub dir: Direction,
    /// Where it is in `dir`'s stream.
    pub span: Span,
    /// The phase it was read in: tells a reply from BIND's second reply, and a GSS-API token
    /// that arrived late (during [`Phase::Reply`]).
    pub phase: Phase,
    /// The message.
    pub message: Message<'a>,
}

/// A protocol violation or a message that could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Anomaly {
    /// The bytes where `phase`'s message should start (at `offset` of `dir`) are not one;
    /// the handshake is not followed further ([`Phase::Ended`]).
    Malformed {
        /// What was awaited.
        phase: Phase,
        /// Whose stream.
        dir: Direction,
        /// Stream offset of the bad message.
        offset: u64,
        /// Why.
        error: WireError,
    },
    /// `phase`'s message does not end within [`MAX_MESSAGE_LEN`] bytes; the handshake is
    /// not followed further. Never raised for a GSS-API message, whose length its header
    /// gives (see [`Message::GssapiLong`]).
    TooLong {
        /// What was awaited.
        phase: Phase,
        /// Whose stream.
        dir: Direction,
        /// Stream offset of the message.
        offset: u64,
    },
    /// The server selected a method the client did not offer.
    MethodNotOffered(Method),
    /// The server selected a method whose sub-negotiation this crate cannot follow; the
    /// handshake is not followed further.
    UndecodableMethod(Method),
    /// A GSS-API abort message (either side); the handshake ends.
    GssapiAbort(Direction),
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Malformed { phase, error, .. } => {
                write!(f, "malformed {}: {error}", phase.describe())
            }
            Self::TooLong { phase, .. } => write!(
                f,
                "malformed {}: longer than {MAX_MESSAGE_LEN} bytes",
                phase.describe()
            ),
            Self::MethodNotOffered(m) => write!(
                f,
                "protocol violation: server selected method {}, which the client did not offer",
                u8::from(m)
            ),
            Self::UndecodableMethod(m) => write!(
                f,
                "method {:#04x} sub-negotiation cannot be decoded; rest of the connection not followed",
                u8::from(m)
            ),
            Self::GssapiAbort(_) => f.write_str("GSS-API context aborted"),
        }
    }
}

/// What [`Conversation::poll`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event<'a> {
    /// A handshake message.
    Message(Observed<'a>),
    /// Bytes after the handshake (after [`Phase::Established`], [`Phase::Encapsulated`] or
    /// [`Phase::Ended`]).
    /// Contiguous payload fed between two polls is reported as one span.
    Payload {
        /// Whose stream.
        dir: Direction,
        /// Where.
        span: Span,
    },
    /// A violation; reported right after the message that caused it, if any.
    Anomaly(Anomaly),
}

/// One direction's unreported bytes.
#[derive(Debug, Default)]
struct Half {
    /// Bytes from `offset` on: the next message's prefix (and what follows it, up to capacity).
    buf: heapless::Vec<u8, MAX_MESSAGE_LEN>,
    /// Stream offset of `buf`'s first byte.
    offset: u64,
    /// Bytes at the front of `buf` already reported as a message; dropped on the next call.
    reported: usize,
    /// Payload fed past an empty `buf` after the handshake, not yet reported.
    payload: Option<Span>,
    /// A GSS-API message too long for `buf`, being skipped.
    long: Option<LongGssapi>,
}

/// A GSS-API message whose token is skipped as it arrives instead of buffered.
#[derive(Clone, Copy, Debug)]
struct LongGssapi {
    /// Stream offset of its VER octet.
    offset: u64,
    kind: GssapiMessageType,
    /// LEN.
    token_len: u16,
    /// Bytes of it not fed yet; it is reported when this reaches 0.
    remaining: usize,
}

impl LongGssapi {
    /// Recognises the header of a message too long for the buffer at the start of `buf`.
    fn start(buf: &[u8], offset: u64) -> Option<Self> {
        let &[gssapi::VERSION, mtyp, hi, lo, ..] = buf else {
            return None;
        };
        let kind = GssapiMessageType::from(mtyp);
        let token_len = u16::from_be_bytes([hi, lo]);
        let len = 4 + usize::from(token_len);
        (kind != GssapiMessageType::Abort && len > MAX_MESSAGE_LEN).then(|| Self {
            offset,
            kind,
            token_len,
            remaining: len.saturating_sub(buf.len()),
        })
    }
}

impl Half {
    /// Drops the bytes of the message reported last.
    fn settle(&mut self) {
        let n = self.reported.min(self.buf.len());
        self.buf.rotate_left(n);
        self.buf.truncate(self.buf.len() - n);
        self.offset += n as u64;
        self.reported = 0;
    }

    /// The unreported bytes as payload, if any.
    fn take_payload(&mut self) -> Option<Span> {
        if let Some(span) = self.payload.take() {
            return Some(span);
        }
        if self.buf.is_empty() {
            return None;
        }
        let span = Span {
            offset: self.offset,
            len: self.buf.len(),
        };
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Some(span)
    }
}

/// The message awaited, as a parser choice.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Greeting,
    MethodReply,
    UserPass,
    UserPassReply,
    Gssapi,
    Socks4Request,
    Socks4Reply,
    Request,
    Reply,
}

fn parse(kind: Kind, b: &[u8]) -> ParseResult<Message<'_>> {
    fn map<'a, T>(r: ParseResult<T>, f: impl FnOnce(T) -> Message<'a>) -> ParseResult<Message<'a>> {
        r.map(|s| match s {
            Status::Complete((m, n)) => Status::Complete((f(m), n)),
            Status::Partial => Status::Partial,
        })
    }
    match kind {
        Kind::Greeting => map(MethodRequest::parse(b), Message::Greeting),
        Kind::MethodReply => map(MethodReply::parse(b), Message::MethodSelection),
        Kind::UserPass => map(UserPassRequest::parse(b), Message::UserPass),
        Kind::UserPassReply => map(UserPassReply::parse(b), Message::UserPassStatus),
        Kind::Gssapi => map(GssapiMessage::parse(b), Message::Gssapi),
        Kind::Socks4Request => map(Socks4Request::parse(b), Message::Socks4Request),
        Kind::Socks4Reply => map(Socks4Reply::parse(b), Message::Socks4Reply),
        Kind::Request => map(socks5::Request::parse(b), Message::Request),
        Kind::Reply => map(socks5::Reply::parse(b), Message::Reply),
    }
}

/// Handshake state: what was negotiated so far.
#[derive(Debug)]
struct Track {
    phase: Phase,
    socks4: bool,
    /// Methods the greeting offered, as a bit set.
    offered: [u8; 32],
    method: Option<Method>,
    command: Option<Command>,
}

impl Track {
    fn offered(&self, m: u8) -> bool {
        self.offered
            .get(usize::from(m / 8))
            .is_some_and(|b| b & (1 << (m % 8)) != 0)
    }

    /// Applies a message read in `self.phase`; returns the anomalies it causes.
    fn apply(&mut self, dir: Direction, msg: &Message<'_>) -> [Option<Anomaly>; 2] {
        let mut out = [None, None];
        let phase = self.phase;
        match msg {
            Message::Greeting(g) => {
                for &m in g.raw_methods() {
                    if let Some(b) = self.offered.get_mut(usize::from(m / 8)) {
                        *b |= 1 << (m % 8);
                    }
                }
                self.phase = Phase::MethodReply;
            }
            Message::MethodSelection(r) => {
                self.method = Some(r.method);
                if r.method != Method::NoAcceptable && !self.offered(u8::from(r.method)) {
                    out[0] = Some(Anomaly::MethodNotOffered(r.method));
                }
                self.phase = match r.method {
                    Method::NoAuth => Phase::Request,
                    Method::Gssapi => Phase::Gssapi,
                    Method::UserPass => Phase::UserPass,
                    Method::NoAcceptable => Phase::Ended,
                    Method::Unknown(_) => {
                        out[1] = Some(Anomaly::UndecodableMethod(r.method));
                        Phase::Ended
                    }
                };
            }
            Message::UserPass(_) => self.phase = Phase::UserPassReply,
            Message::UserPassStatus(s) => {
                self.phase = if s.is_success() {
                    Phase::Request
                } else {
                    Phase::Ended
                };
            }
            Message::Gssapi(GssapiMessage { kind, .. }) | Message::GssapiLong { kind, .. } => {
                match kind {
                    GssapiMessageType::Abort => {
                        out[0] = Some(Anomaly::GssapiAbort(dir));
                        self.phase = Phase::Ended;
                    }
                    _ if dir == Direction::ClientToServer => self.phase = Phase::GssapiReply,
                    // A late server token (read during the reply) changes nothing.
                    _ if phase == Phase::GssapiReply => self.phase = Phase::Gssapi,
                    _ => {}
                }
            }
            Message::Socks4Request(r) => {
                self.command = Some(r.command);
                self.phase = Phase::Reply;
            }
            Message::Request(r) => {
                self.command = Some(r.command);
                self.phase = Phase::Reply;
            }
            Message::Socks4Reply(r) => {
                let ok = r.code == Socks4Code::Granted;
                self.phase = match (ok, phase, self.command) {
                    (true, Phase::Reply, Some(Command::Bind)) => Phase::SecondReply,
                    (true, _, _) => Phase::Established,
                    (false, _, _) => Phase::Ended,
                };
            }
            Message::Reply(r) => {
                let ok = r.code == ReplyCode::Succeeded;
                self.phase = match (ok, phase, self.command) {
                    (true, Phase::Reply, Some(Command::Bind)) => Phase::SecondReply,
                    // The control connection of UDP ASSOCIATE carries no payload.
                    (true, Phase::Reply, Some(Command::UdpAssociate)) => Phase::Ended,
                    (true, _, _) => Phase::Established,
                    (false, _, _) => Phase::Ended,
                };
            }
        }
        out
    }
}

/// What `poll` does next.
enum Next {
    /// Nothing to report until more bytes arrive.
    Wait,
    /// The phase changed without a message: decide again.
    Again,
    /// Report this.
    Emit(Event<'static>),
    /// Read this message from this direction.
    Parse(Direction, Kind),
}

/// The observer of one conversation. See the [module documentation](self).
///
/// Contract:
/// * [`feed`](Self::feed) takes bytes of one direction, in stream order, and returns how many
///   it accepted. Before the handshake is over it accepts only what fits its buffer — plus,
///   while a GSS-API message longer than the buffer is being read, the rest of its token,
///   which it counts and drops (see [`Message::GssapiLong`]). The caller MUST keep the rest,
///   call [`poll`](Self::poll) until it returns `None` (reported messages free their bytes),
///   and feed the rest again. A return of 0 after polling means the observer waits for the
///   other direction. After the handshake everything is accepted (and reported as payload).
/// * [`poll`](Self::poll) returns the next event, or `None` when nothing more can be decided
///   from the bytes fed so far. Call it after every `feed`.
/// * Every decision depends only on the bytes of the direction whose turn it is, so the
///   events do not depend on how either stream was chunked nor on how the two were
///   interleaved — except that payload may be reported in differently split spans.
/// * Nothing panics on any input; a violation is an [`Anomaly`], after which the rest of the
///   conversation is reported as payload.
#[derive(Debug)]
pub struct Conversation {
    track: Track,
    up: Half,
    down: Half,
    /// Anomalies waiting to be reported.
    pending: [Option<Anomaly>; 2],
}

impl Default for Conversation {
    fn default() -> Self {
        Self::new()
    }
}

impl Conversation {
    /// An observer at the start of a connection.
    pub const fn new() -> Self {
        const fn half() -> Half {
            Half {
                buf: heapless::Vec::new(),
                offset: 0,
                reported: 0,
                payload: None,
                long: None,
            }
        }
        Self {
            track: Track {
                phase: Phase::Start,
                socks4: false,
                offered: [0; 32],
                method: None,
                command: None,
            },
            up: half(),
            down: half(),
            pending: [None, None],
        }
    }

    /// The current phase.
    pub const fn phase(&self) -> Phase {
        self.track.phase
    }

    /// The method the server selected (SOCKS5), once known.
    pub const fn method(&self) -> Option<Method> {
        self.track.method
    }

    /// The command requested, once known.
    pub const fn command(&self) -> Option<Command> {
        self.track.command
    }

    /// Stream offset in `dir` of the first byte not yet reported (as a message or payload).
    pub const fn position(&self, dir: Direction) -> u64 {
        let h = self.half(dir);
        match h.long {
            Some(long) => long.offset,
            None => h.offset + h.reported as u64,
        }
    }

    /// Bytes of `dir` fed but not yet reported (the prefix of an awaited message, or bytes
    /// waiting for their turn). The part of a long GSS-API message fed so far counts,
    /// although its token bytes are skipped, not held.
    pub fn buffered(&self, dir: Direction) -> usize {
        let h = self.half(dir);
        let end = h.offset + h.buf.len() as u64;
        usize::try_from(end.saturating_sub(self.position(dir))).unwrap_or(usize::MAX)
    }

    const fn half(&self, dir: Direction) -> &Half {
        match dir {
            Direction::ClientToServer => &self.up,
            Direction::ServerToClient => &self.down,
        }
    }

    /// Offers the next bytes of `dir`'s stream; returns how many were accepted (see the
    /// [type contract](Self)).
    pub fn feed(&mut self, dir: Direction, input: &[u8]) -> usize {
        let over = self.track.phase.is_over();
        let h = match dir {
            Direction::ClientToServer => &mut self.up,
            Direction::ServerToClient => &mut self.down,
        };
        h.settle();
        if over {
            // Unreported bytes (if any) and the input become one payload span.
            let n = h.buf.len() + input.len();
            if n > 0 {
                let span = h.payload.get_or_insert(Span {
                    offset: h.offset,
                    len: 0,
                });
                span.len += n;
                h.offset += n as u64;
                h.buf.clear();
            }
            return input.len();
        }
        // The token of a long GSS-API message is skipped, not kept.
        let mut skip = 0;
        if let Some(long) = &mut h.long {
            skip = long.remaining.min(input.len());
            long.remaining -= skip;
            h.offset += skip as u64;
        }
        let input = input.get(skip..).unwrap_or_default();
        let take = input.len().min(MAX_MESSAGE_LEN - h.buf.len());
        let _ = h
            .buf
            .extend_from_slice(input.get(..take).unwrap_or_default());
        skip + take
    }

    /// The next event, or `None` until more bytes are fed (see the [type contract](Self)).
    #[must_use]
    pub fn poll(&mut self) -> Option<Event<'_>> {
        self.up.settle();
        self.down.settle();
        loop {
            if let Some(a) = self.pending.iter_mut().find_map(Option::take) {
                return Some(Event::Anomaly(a));
            }
            match self.next() {
                Next::Wait => return None,
                Next::Again => {}
                Next::Emit(e) => return Some(e),
                Next::Parse(dir, kind) => return self.read(dir, kind),
            }
        }
    }

    /// Reads the awaited message from `dir`, applying it to the handshake state.
    fn read(&mut self, dir: Direction, kind: Kind) -> Option<Event<'_>> {
        let Self {
            track,
            up,
            down,
            pending,
        } = self;
        let h = match dir {
            Direction::ClientToServer => up,
            Direction::ServerToClient => down,
        };
        let phase = track.phase;
        let offset = h.offset;
        if let Kind::Gssapi = kind {
            if h.long.is_none() {
                h.long = LongGssapi::start(&h.buf, offset);
                if h.long.is_some() {
                    // Every buffered byte is part of the message: its token is skipped from
                    // here on.
                    h.offset += h.buf.len() as u64;
                    h.buf.clear();
                }
            }
            if let Some(long) = h.long {
                if long.remaining > 0 {
                    return None;
                }
                h.long = None;
                let message = Message::GssapiLong {
                    kind: long.kind,
                    token: Span {
                        offset: long.offset + 4,
                        len: usize::from(long.token_len),
                    },
                };
                *pending = track.apply(dir, &message);
                return Some(Event::Message(Observed {
                    dir,
                    span: Span {
                        offset: long.offset,
                        len: 4 + usize::from(long.token_len),
                    },
                    phase,
                    message,
                }));
            }
        }
        match parse(kind, &h.buf) {
            Ok(Status::Complete((message, len))) => {
                h.reported = len;
                *pending = track.apply(dir, &message);
                Some(Event::Message(Observed {
                    dir,
                    span: Span { offset, len },
                    phase,
                    message,
                }))
            }
            Ok(Status::Partial) if h.buf.len() < MAX_MESSAGE_LEN => None,
            Ok(Status::Partial) => {
                track.phase = Phase::Ended;
                Some(Event::Anomaly(Anomaly::TooLong { phase, dir, offset }))
            }
            Err(error) => {
                track.phase = Phase::Ended;
                Some(Event::Anomaly(Anomaly::Malformed {
                    phase,
                    dir,
                    offset,
                    error,
                }))
            }
        }
    }

    /// Decides what to read next, handling the steps that need no parse.
    fn next(&mut self) -> Next {
        let t = &mut self.track;
        let gss = !t.socks4 && t.method == Some(Method::Gssapi);
        match t.phase {
            Phase::Established | Phase::Ended | Phase::Encapsulated => {
                if let Some(span) = self.up.take_payload() {
                    return Next::Emit(Event::Payload {
                        dir: Direction::ClientToServer,
                        span,
                    });
                }
                match self.down.take_payload() {
                    Some(span) => Next::Emit(Event::Payload {
                        dir: Direction::ServerToClient,
                        span,
                    }),
                    None => Next::Wait,
                }
            }
            Phase::Start => match self.up.buf.first() {
                None => Next::Wait,
                Some(4) => {
                    t.socks4 = true;
                    t.phase = Phase::Request;
                    Next::Again
                }
                Some(5) => {
                    t.phase = Phase::Greeting;
                    Next::Again
                }
                Some(&v) => {
                    self.pending[0] = Some(Anomaly::Malformed {
                        phase: Phase::Start,
                        dir: Direction::ClientToServer,
                        offset: self.up.offset,
                        error: WireError::BadVersion(v),
                    });
                    t.phase = Phase::Ended;
                    Next::Again
                }
            },
            // A long message being skipped is finished first.
            Phase::Gssapi if self.up.long.is_some() => {
                Next::Parse(Direction::ClientToServer, Kind::Gssapi)
            }
            Phase::GssapiReply | Phase::Reply | Phase::SecondReply if self.down.long.is_some() => {
                Next::Parse(Direction::ServerToClient, Kind::Gssapi)
            }
            Phase::Gssapi => match (self.up.buf.first(), self.up.buf.get(1)) {
                (None, _) => Next::Wait,
                (Some(5), _) => {
                    t.phase = Phase::Request;
                    Next::Again
                }
                // The MTYP decides whether the exchange goes on or the protected part starts.
                (Some(&gssapi::VERSION), None) => Next::Wait,
                (Some(&gssapi::VERSION), Some(&mtyp))
                    if GssapiMessageType::from(mtyp) == GssapiMessageType::Encapsulated =>
                {
                    t.phase = Phase::Encapsulated;
                    Next::Again
                }
                (Some(_), _) => Next::Parse(Direction::ClientToServer, Kind::Gssapi),
            },
            Phase::GssapiReply => match self.down.buf.first() {
                None => Next::Wait,
                Some(&gssapi::VERSION) => Next::Parse(Direction::ServerToClient, Kind::Gssapi),
                Some(_) => {
                    t.phase = Phase::Gssapi;
                    Next::Again
                }
            },
            Phase::Greeting => Next::Parse(Direction::ClientToServer, Kind::Greeting),
            Phase::MethodReply => Next::Parse(Direction::ServerToClient, Kind::MethodReply),
            Phase::UserPass => Next::Parse(Direction::ClientToServer, Kind::UserPass),
            Phase::UserPassReply => Next::Parse(Direction::ServerToClient, Kind::UserPassReply),
            Phase::Request if t.socks4 => {
                Next::Parse(Direction::ClientToServer, Kind::Socks4Request)
            }
            Phase::Request => Next::Parse(Direction::ClientToServer, Kind::Request),
            Phase::Reply | Phase::SecondReply if t.socks4 => {
                Next::Parse(Direction::ServerToClient, Kind::Socks4Reply)
            }
            Phase::Reply | Phase::SecondReply => {
                if gss && self.down.buf.first() == Some(&gssapi::VERSION) {
                    // A late GSS-API token from the server.
                    Next::Parse(Direction::ServerToClient, Kind::Gssapi)
                } else {
                    Next::Parse(Direction::ServerToClient, Kind::Reply)
                }
            }
        }
    }
}
