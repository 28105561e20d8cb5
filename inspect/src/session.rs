//! Decoding one SOCKS control connection: the handshake as a sequence of messages read from
//! the two reassembled streams, the facts the report needs, and where every message's bytes
//! are in the capture.
//!
//! The [`Decoder`] feeds both streams to the core's observer
//! ([`socksgate_core::observe::Conversation`]), which follows the handshake order and reports
//! each message with its stream position, so a handshake split over many segments or
//! coalesced with payload decodes the same way: only the byte streams matter, not the segment
//! boundaries. A GSS-API token longer than the observer's buffer is skipped by it and reported
//! by position ([`ObservedMessage::GssapiLong`]); its message is kept from the retained
//! bytes like any other, so tokens up to [`RETAIN`] are decoded and shown in full.

use core::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use socksgate_core::observe::{
    Conversation, Direction, Event, Message as ObservedMessage, Observed, Phase,
};
use socksgate_core::wire::gssapi::GssapiMessageType;
use socksgate_core::wire::socks4::Socks4Dst;

use crate::detect::Verdict;
use crate::kerberos;
use crate::report::{
    Dir, Gssapi, GssapiToken, Message, MessageBytes, Protection, address_text, ip_text,
};
use crate::socks;
use crate::tcp_reassembly::Delivered;
use crate::tunnel::{self, Tunnelled};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How many bytes of each direction are kept for decoding (handshake plus the first payload
/// bytes the tunnel recogniser needs).
pub const RETAIN: usize = 20 * 1024;

/// How many bytes of each direction are kept once the server selects GSS-API: room for
/// three of the largest messages RFC 1961 frames (a 65 535-byte token each) on top of
/// [`RETAIN`], so Kerberos tokens of any size the framing allows are decoded whole. Released
/// like the rest when the handshake is decoded.
pub const GSSAPI_RETAIN: usize = RETAIN + 3 * (4 + u16::MAX as usize);

/// What a [`Retained`] reserves on its first bytes: a SOCKS handshake and a TLS ClientHello
/// usually fit.
const FIRST_CAPACITY: usize = 512;

/// The first bytes of one direction, with their positions in the capture.
#[derive(Debug, Default)]
pub struct Retained {
    /// Stream bytes from offset 0, contiguous.
    pub data: Vec<u8>,
    /// `(stream offset, len, frame, file offset)` of every piece of `data`.
    spans: Vec<Span>,
    /// A gap interrupted the stream: `data` ends at the hole.
    pub gap: bool,
    /// `data` stopped growing (gap, cap, or released).
    pub full: bool,
    /// Bytes allowed beyond [`RETAIN`] (see [`Retained::allow`]).
    extra: usize,
}

impl Retained {
    /// Appends delivered bytes while below [`RETAIN`].
    pub fn push(&mut self, d: &Delivered<'_>) {
        if self.full {
            return;
        }
        match *d {
            Delivered::Data {
                offset,
                bytes,
                origin,
            } => {
                if offset != self.data.len() as u64 {
                    self.full = true;
                    return;
                }
                let limit = RETAIN + self.extra;
                let take = bytes.len().min(limit - self.data.len());
                if self.data.capacity() == 0 {
                    // One allocation for a whole handshake and the first payload bytes, not
                    // a doubling from 8 bytes up.
                    self.data.reserve(take.max(FIRST_CAPACITY).min(limit));
                    self.spans.reserve(8);
                }
                self.spans
                    .push((self.data.len(), take, origin.frame, origin.file_offset));
                self.data
                    .extend_from_slice(bytes.get(..take).unwrap_or_default());
                if self.data.len() >= limit {
                    self.full = true;
                }
            }
            Delivered::Gap { .. } => {
                self.gap = true;
                self.full = true;
            }
        }
    }

    /// Keeps up to `limit` bytes instead of [`RETAIN`] (never fewer), unless the buffer has
    /// already stopped growing.
    pub fn allow(&mut self, limit: usize) {
        self.extra = self.extra.max(limit.saturating_sub(RETAIN));
    }

    /// Frees the buffer; nothing more is kept.
    pub fn release(&mut self) {
        self.data = Vec::new();
        self.spans = Vec::new();
        self.full = true;
    }

    /// As [`Retained::release`], the buffers handed to `spare` for another connection.
    pub(crate) fn release_into(&mut self, spare: &mut Spare) {
        spare.put_buffers(
            core::mem::take(&mut self.data),
            core::mem::take(&mut self.spans),
        );
        self.full = true;
    }

    /// Frames and file ranges holding stream bytes `[start, start + len)`.
    fn locate(&self, start: usize, len: usize) -> (Frames, FileRanges) {
        let end = start + len;
        let mut frames = Frames::new();
        let mut ranges = FileRanges::new();
        for &(s, l, frame, file) in &self.spans {
            let (a, b) = (s.max(start), (s + l).min(end));
            if a >= b {
                continue;
            }
            if frames.last() != Some(&frame) {
                frames.push(frame);
            }
            let off = file + (a - s);
            match ranges.last_mut() {
                Some(last) if last[0] + last[1] == off => last[1] += b - a,
                _ => ranges.push([off, b - a]),
            }
        }
        (frames, ranges)
    }
}

/// Where each piece of a [`Retained`] came from: `(stream offset, len, frame, file offset)`.
type Span = (usize, usize, u64, usize);

/// Most buffer pairs and decoders a [`Spare`] keeps.
const MAX_SPARE: usize = 64;

/// Buffers and decoders of reported connections, kept for the next ones: a capture of many
/// short connections would otherwise allocate and free a [`Decoder`] (~1.8 KiB) and the first
/// bytes of both directions for each of them, a large share of the engine's time (most of it
/// in the allocator, in wasm above all). Bounded: at most [`MAX_SPARE`] of each, and only
/// buffers of the usual size (a GSS-API session's larger ones are freed).
#[derive(Debug, Default)]
pub(crate) struct Spare {
    buffers: Vec<(Vec<u8>, Vec<Span>)>,
    // The boxes themselves are what is reused (a connection holds its decoder boxed).
    #[allow(clippy::vec_box)]
    decoders: Vec<Box<Decoder>>,
}

impl Spare {
    fn put_buffers(&mut self, mut data: Vec<u8>, mut spans: Vec<Span>) {
        if data.capacity() == 0
            || data.capacity() > 4 * FIRST_CAPACITY
            || spans.capacity() > 64
            || self.buffers.len() >= MAX_SPARE
        {
            return;
        }
        data.clear();
        spans.clear();
        self.buffers.push((data, spans));
    }

    /// An empty [`Retained`], on kept buffers when there are some.
    pub(crate) fn retained(&mut self) -> Retained {
        let (data, spans) = self.buffers.pop().unwrap_or_default();
        Retained {
            data,
            spans,
            ..Retained::default()
        }
    }

    /// A new [`Decoder`] (as [`Decoder::new`]), in a kept box when there is one.
    pub(crate) fn decoder(&mut self, verdict: Verdict, show_secrets: bool) -> Box<Decoder> {
        match self.decoders.pop() {
            Some(mut kept) => {
                *kept = Decoder::new(verdict, show_secrets);
                kept
            }
            None => Box::new(Decoder::new(verdict, show_secrets)),
        }
    }

    /// Keeps a decoder whose results were taken, for [`Spare::decoder`].
    pub(crate) fn put_decoder(&mut self, decoder: Box<Decoder>) {
        if self.decoders.len() < MAX_SPARE {
            self.decoders.push(decoder);
        }
    }
}

/// A message's frames, as [`Message::frames`] holds them.
pub(crate) type Frames = SmallVec<[u64; 1]>;
/// A message's file ranges, as [`Message::file_ranges`] holds them.
pub(crate) type FileRanges = SmallVec<[[usize; 2]; 1]>;

/// Builds a report message of `kind` whose bytes are `bytes`; the `secret` range is masked
/// with `*` in the copy kept.
#[allow(clippy::too_many_arguments)]
pub(crate) fn message(
    dir: Dir,
    kind: &'static str,
    secret: Option<(usize, usize)>,
    bytes: &[u8],
    len: usize,
    stream_offset: u64,
    frames: Frames,
    file_ranges: FileRanges,
) -> Message {
    let mut kept = MessageBytes::from_slice(bytes);
    if let Some((at, n)) = secret {
        for b in kept.iter_mut().skip(at).take(n) {
            *b = b'*';
        }
    }
    Message {
        dir,
        kind,
        stream_offset,
        len,
        bytes: kept,
        secret: secret.map(|(a, n)| [a, n]),
        frames,
        file_ranges,
    }
}

/// What the handshake established, in report terms.
#[derive(Debug, Default)]
pub struct Facts {
    /// `"socks4"`, `"socks4a"` or `"socks5"`.
    pub version: &'static str,
    /// Methods offered.
    pub methods_offered: Vec<u8>,
    /// Method selected.
    pub method: Option<u8>,
    /// Username or USERID.
    pub username: Option<String>,
    /// Password (kept; shown only with secrets).
    pub password: Option<String>,
    /// RFC 1929 status == 0.
    pub auth_ok: Option<bool>,
    /// Command code.
    pub command: Option<u8>,
    /// Destination host as sent.
    pub dst_host: Option<String>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// First reply code.
    pub reply_code: Option<u8>,
    /// First reply's bound address, as text.
    pub bound: Option<String>,
    /// First reply's bound address, when an IP address.
    pub bound_addr: Option<SocketAddr>,
    /// BIND second reply's address.
    pub bind_peer: Option<String>,
    /// Tunnelled protocol.
    pub tunnelled: Option<Tunnelled>,
    /// The GSS-API exchange (method 1 selected).
    pub gssapi: Option<Gssapi>,
}

/// The handshake decoder of one connection: feeds the retained bytes to the core's
/// [`Conversation`] and turns what it observes into report facts, messages and anomalies.
#[derive(Debug)]
pub struct Decoder {
    conv: Conversation,
    /// Bytes of each direction fed to `conv` so far.
    fed: [usize; 2],
    /// End of each direction's last handshake message: payload starts there.
    handshake: [u64; 2],
    finished: bool,
    show_secrets: bool,
    /// What the last [`Decoder::advance`] was given: `(up bytes, down bytes, up full, down
    /// full, last)`. The same again decodes nothing new, so it returns at once (most packets
    /// of a connection after its handshake are ACKs that add no byte).
    last_input: Option<(usize, usize, bool, bool, bool)>,
    /// Facts for the report.
    pub facts: Facts,
    /// Messages decoded so far.
    pub messages: Vec<Message>,
    /// Anomalies found.
    pub anomalies: Vec<String>,
}

impl Decoder {
    /// A decoder for a connection detected as `verdict` (SOCKS4 or SOCKS5).
    pub fn new(verdict: Verdict, show_secrets: bool) -> Self {
        let socks4 = verdict == Verdict::Socks4;
        Self {
            conv: Conversation::new(),
            fed: [0, 0],
            handshake: [0, 0],
            finished: false,
            show_secrets,
            last_input: None,
            facts: Facts {
                version: if socks4 { "socks4" } else { "socks5" },
                ..Facts::default()
            },
            messages: Vec::new(),
            anomalies: Vec::new(),
        }
    }

    /// True when nothing more will be decoded (buffers can be released).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True once the client encapsulates its messages (RFC 1961 §5): everything after the
    /// handshake, each way, is a sequence of encapsulated messages.
    pub fn encapsulated(&self) -> bool {
        self.conv.phase() == Phase::Encapsulated
    }

    /// Bytes of each direction taken by the decoded handshake: payload starts there.
    pub fn handshake_len(&self) -> (u64, u64) {
        (self.handshake[0], self.handshake[1])
    }

    /// Decodes as far as the retained bytes allow. `last` = the capture has ended.
    pub fn advance(&mut self, up: &Retained, down: &Retained, last: bool) {
        if self.finished {
            return;
        }
        // Everything below depends only on these (a gap also makes its buffer full).
        let input = (up.data.len(), down.data.len(), up.full, down.full, last);
        if self.last_input == Some(input) {
            return;
        }
        self.last_input = Some(input);
        // Offer each direction's new bytes, taking what the observer reports, until neither
        // moves: it accepts a direction's bytes only as far as its turn needs them.
        loop {
            let mut progress = false;
            for (i, dir, buf) in [
                (0, Direction::ClientToServer, up),
                (1, Direction::ServerToClient, down),
            ] {
                let new = buf.data.get(self.fed[i]..).unwrap_or_default();
                let n = self.conv.feed(dir, new);
                self.fed[i] += n;
                progress |= n > 0;
                let Self {
                    conv,
                    handshake,
                    show_secrets,
                    facts,
                    messages,
                    anomalies,
                    ..
                } = self;
                while let Some(event) = conv.poll() {
                    progress = true;
                    match event {
                        Event::Message(m) => {
                            let (buf, i) = match m.dir {
                                Direction::ClientToServer => (up, 0),
                                Direction::ServerToClient => (down, 1),
                            };
                            handshake[i] = m.span.offset + m.span.len as u64;
                            messages.push(on_message(facts, *show_secrets, &m, buf));
                        }
                        Event::Anomaly(a) => anomalies.push(a.to_string()),
                        // Counted from the stream offsets; recognised below.
                        _ => {}
                    }
                }
            }
            if !progress {
                break;
            }
        }
        let phase = self.conv.phase();
        match phase.sender() {
            None if phase == Phase::Established => self.tunnel_step(up, down, last),
            None => self.finished = true,
            Some(dir) => {
                let buf = match dir {
                    Direction::ClientToServer => up,
                    Direction::ServerToClient => down,
                };
                if last || buf.full {
                    self.give_up(phase, dir, buf);
                }
            }
        }
    }

    /// Records why decoding stopped short, then finishes.
    fn give_up(&mut self, phase: Phase, dir: Direction, buf: &Retained) {
        let client = dir == Direction::ClientToServer;
        let pos = usize::try_from(self.conv.position(dir)).unwrap_or(usize::MAX);
        let rest = buf.data.len().saturating_sub(pos);
        let what = phase.describe();
        let text = if buf.gap && rest == 0 {
            format!("gap: bytes missing where the {what} should be")
        } else if rest > 0 {
            format!("truncated: incomplete {what} ({rest} bytes)")
        } else if client {
            format!("missing {what}")
        } else {
            format!("missing reply: no {what}")
        };
        self.anomalies.push(text);
        self.finished = true;
    }

    /// After the handshake: the tunnelled protocol, from the first payload bytes.
    fn tunnel_step(&mut self, up: &Retained, down: &Retained, last: bool) {
        let (hs_up, hs_down) = self.handshake_len();
        fn at(buf: &Retained, hs: u64) -> &[u8] {
            usize::try_from(hs)
                .ok()
                .and_then(|hs| buf.data.get(hs..))
                .unwrap_or_default()
        }
        let last = last || (up.full && down.full);
        match tunnel::recognise(at(up, hs_up), at(down, hs_down), last) {
            Some(t) => {
                self.facts.tunnelled = t;
                self.finished = true;
            }
            // Payload bytes are not enough to recognise anything: fine.
            None if last => self.finished = true,
            None => {}
        }
    }
}

/// Applies a message's facts and returns it as kept for the report (`buf` = its direction).
fn on_message(f: &mut Facts, show_secrets: bool, m: &Observed<'_>, buf: &Retained) -> Message {
    let dir = match m.dir {
        Direction::ClientToServer => Dir::Up,
        Direction::ServerToClient => Dir::Down,
    };
    let start = usize::try_from(m.span.offset).unwrap_or(usize::MAX);
    let len = m.span.len;
    let mut secret = None;
    match &m.message {
        ObservedMessage::Greeting(g) => f.methods_offered = g.raw_methods().to_vec(),
        ObservedMessage::UserPass(u) => {
            f.username = Some(text(u.username()));
            // Not kept at all unless it will be shown.
            if show_secrets {
                f.password = Some(text(u.password()));
            } else {
                let at = u.password_span();
                secret = Some((at.start, at.len()));
            }
        }
        ObservedMessage::UserPassStatus(s) => f.auth_ok = Some(s.is_success()),
        ObservedMessage::MethodSelection(r) if r.method == socksgate_core::wire::Method::Gssapi => {
            f.method = Some(u8::from(r.method));
            f.gssapi = Some(Gssapi::default());
        }
        ObservedMessage::Gssapi(g) => {
            let token = g.token;
            on_gssapi(f, dir, g.kind, token.len(), Some(token));
        }
        ObservedMessage::GssapiLong { kind, token } => {
            // The token is in the retained bytes (up to GSSAPI_RETAIN), whole or not at all.
            let at = usize::try_from(token.offset).unwrap_or(usize::MAX);
            let bytes = buf.data.get(at..at.saturating_add(token.len));
            on_gssapi(f, dir, *kind, token.len, bytes);
        }
        ObservedMessage::MethodSelection(r) => f.method = Some(u8::from(r.method)),
        ObservedMessage::Socks4Request(r) => {
            if r.is_4a() {
                f.version = "socks4a";
            }
            f.command = Some(u8::from(r.command));
            f.dst_host = Some(match r.dst {
                Socks4Dst::Ip(ip) => ip_text(IpAddr::V4(ip)),
                Socks4Dst::Domain(name) => name.to_string(),
            });
            f.dst_port = Some(r.port);
            f.username = (!r.user_id.is_empty()).then(|| text(r.user_id));
        }
        ObservedMessage::Request(r) => {
            f.command = Some(u8::from(r.command));
            f.dst_host = Some(socks::host_of(&r.dst));
            f.dst_port = Some(r.dst.port());
        }
        ObservedMessage::Socks4Reply(r) if m.phase == Phase::SecondReply => {
            f.bind_peer = Some(address_text(SocketAddr::V4(r.addr)));
        }
        ObservedMessage::Socks4Reply(r) => {
            f.reply_code = Some(u8::from(r.code));
            f.bound = Some(address_text(SocketAddr::V4(r.addr)));
            f.bound_addr = Some(SocketAddr::V4(r.addr));
        }
        ObservedMessage::Reply(r) if m.phase == Phase::SecondReply => {
            f.bind_peer = Some(socks::addr_text(&r.bound));
        }
        ObservedMessage::Reply(r) => {
            f.reply_code = Some(u8::from(r.code));
            f.bound = Some(socks::addr_text(&r.bound));
            f.bound_addr = socks::bound_ip(&r.bound);
        }
        _ => {}
    }
    let bytes = buf
        .data
        .get(start..start.saturating_add(len))
        .unwrap_or_default();
    let (frames, ranges) = buf.locate(start, len);
    message(
        dir,
        socks::kind(&m.message),
        secret,
        bytes,
        len,
        m.span.offset,
        frames,
        ranges,
    )
}

/// Records a GSS-API message of the exchange: its length, the mechanism and Kerberos service
/// of the client's initial context token, the protection level when sent unwrapped.
fn on_gssapi(f: &mut Facts, dir: Dir, kind: GssapiMessageType, len: usize, token: Option<&[u8]>) {
    let g = f.gssapi.get_or_insert_with(Gssapi::default);
    g.tokens.push(GssapiToken {
        dir,
        kind: token_kind(kind),
        len,
    });
    match kind {
        GssapiMessageType::Context if dir == Dir::Up && g.mechanism.is_none() => {
            if let Some(t) = token.and_then(kerberos::initial_context_token) {
                g.mechanism = Some(kerberos::mech_name(&t.mech));
                if let Some(req) = t.ap_req {
                    g.service_principal = Some(req.principal());
                    g.realm = Some(req.realm);
                }
            }
        }
        GssapiMessageType::Protection => {
            // A one-octet token is the level itself (the NEC form); a wrapped one is longer.
            let level = match token {
                Some(&[level]) => Some(level_name(level)),
                _ => None,
            };
            let p = g.protection.get_or_insert(Protection {
                form: if level.is_some() { "nec" } else { "wrapped" },
                requested: None,
                granted: None,
            });
            match dir {
                Dir::Up => p.requested = level,
                _ => p.granted = level,
            }
        }
        _ => {}
    }
}

/// The report's name of an RFC 1961 message type.
pub(crate) fn token_kind(kind: GssapiMessageType) -> String {
    match kind {
        GssapiMessageType::Context => "context".to_owned(),
        GssapiMessageType::Protection => "protection".to_owned(),
        GssapiMessageType::Encapsulated => "encapsulated".to_owned(),
        GssapiMessageType::Abort => "abort".to_owned(),
        other => format!("unknown:{:#04x}", u8::from(other)),
    }
}

/// A protection level's name (RFC 1961 §4; 0 is the NEC form's "no protection").
pub(crate) fn level_name(level: u8) -> String {
    match level {
        0 => "none".to_owned(),
        1 => "integrity".to_owned(),
        2 => "confidentiality".to_owned(),
        3 => "selective".to_owned(),
        n => format!("unknown:{n}"),
    }
}
