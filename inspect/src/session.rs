//! Decoding one SOCKS control connection: the handshake as a sequence of messages read from
//! the two reassembled streams, the facts the report needs, and where every message's bytes
//! are in the capture.
//!
//! The [`Decoder`] keeps a cursor per direction and expects messages in protocol order
//! (greeting, method selection, sub-negotiation, request, reply, BIND's second reply), so a
//! handshake split over many segments or coalesced with payload decodes the same way: only the
//! byte streams matter, not the segment boundaries.

use core::net::SocketAddr;

use crate::detect::Verdict;
use crate::report::{Dir, Message};
use crate::socks::{self, Fast, Info};
use crate::tcp_reassembly::Delivered;
use crate::tunnel::{self, Tunnelled};

/// How many bytes of each direction are kept for decoding (handshake plus the first payload
/// bytes the tunnel recogniser needs).
pub const RETAIN: usize = 20 * 1024;

/// The first bytes of one direction, with their positions in the capture.
#[derive(Debug, Default)]
pub struct Retained {
    /// Stream bytes from offset 0, contiguous.
    pub data: Vec<u8>,
    /// `(stream offset, len, frame, file offset)` of every piece of `data`.
    spans: Vec<(usize, usize, u64, usize)>,
    /// A gap interrupted the stream: `data` ends at the hole.
    pub gap: bool,
    /// `data` stopped growing (gap, cap, or released).
    pub full: bool,
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
                let take = bytes.len().min(RETAIN - self.data.len());
                self.spans
                    .push((self.data.len(), take, origin.frame, origin.file_offset));
                self.data
                    .extend_from_slice(bytes.get(..take).unwrap_or_default());
                if self.data.len() >= RETAIN {
                    self.full = true;
                }
            }
            Delivered::Gap { .. } => {
                self.gap = true;
                self.full = true;
            }
        }
    }

    /// Frees the buffer; nothing more is kept.
    pub fn release(&mut self) {
        self.data = Vec::new();
        self.spans = Vec::new();
        self.full = true;
    }

    /// Frames and file ranges holding stream bytes `[start, start + len)`.
    fn locate(&self, start: usize, len: usize) -> (Vec<u64>, Vec<[usize; 2]>) {
        let end = start + len;
        let mut frames = Vec::new();
        let mut ranges: Vec<[usize; 2]> = Vec::new();
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
    frames: Vec<u64>,
    file_ranges: Vec<[usize; 2]>,
) -> Message {
    let mut kept = bytes.to_vec();
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Greeting,
    MethodReply,
    UserPass,
    UserPassReply,
    Gssapi,
    Request,
    Reply,
    SecondReply,
    Established,
    Finished,
}

impl Stage {
    /// The message expected, for anomaly texts.
    fn expecting(self) -> &'static str {
        match self {
            Self::Greeting => "greeting",
            Self::MethodReply => "method selection",
            Self::UserPass => "username/password request",
            Self::UserPassReply => "username/password reply",
            Self::Gssapi => "GSS-API message",
            Self::Request => "request",
            Self::Reply => "reply",
            Self::SecondReply => "BIND second reply",
            Self::Established | Self::Finished => "payload",
        }
    }
    fn is_client_turn(self) -> bool {
        matches!(
            self,
            Self::Greeting | Self::UserPass | Self::Request | Self::Gssapi
        )
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
}

/// The handshake decoder of one connection.
#[derive(Debug)]
pub struct Decoder {
    stage: Stage,
    socks4: bool,
    up: usize,
    down: usize,
    show_secrets: bool,
    /// Facts for the report.
    pub facts: Facts,
    /// Messages decoded so far.
    pub messages: Vec<Message>,
    /// Anomalies found.
    pub anomalies: Vec<String>,
}

enum Outcome {
    Progress,
    Wait,
}

impl Decoder {
    /// A decoder for a connection detected as `verdict` (SOCKS4 or SOCKS5).
    pub fn new(verdict: Verdict, show_secrets: bool) -> Self {
        let socks4 = verdict == Verdict::Socks4;
        Self {
            stage: if socks4 {
                Stage::Request
            } else {
                Stage::Greeting
            },
            socks4,
            up: 0,
            down: 0,
            show_secrets,
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
        self.stage == Stage::Finished
    }

    /// Bytes of each direction taken by the decoded handshake: payload starts there.
    pub fn handshake_len(&self) -> (u64, u64) {
        (self.up as u64, self.down as u64)
    }

    /// Decodes as far as the retained bytes allow. `last` = the capture has ended.
    pub fn advance(&mut self, up: &Retained, down: &Retained, last: bool) {
        loop {
            if self.stage == Stage::Finished {
                return;
            }
            match self.step(up, down, last) {
                Outcome::Progress => {}
                Outcome::Wait => {
                    let stuck = match self.stage {
                        Stage::Established => up.full && down.full,
                        s if s.is_client_turn() => up.full,
                        _ => down.full,
                    };
                    if last || stuck {
                        self.give_up(up, down);
                    }
                    return;
                }
            }
        }
    }

    /// Records why decoding stopped short, then finishes.
    fn give_up(&mut self, up: &Retained, down: &Retained) {
        if self.stage == Stage::Established {
            // Payload bytes are not enough to recognise anything: fine.
            self.stage = Stage::Finished;
            return;
        }
        let (buf, pos) = if self.stage.is_client_turn() {
            (up, self.up)
        } else {
            (down, self.down)
        };
        let rest = buf.data.len().saturating_sub(pos);
        let what = self.stage.expecting();
        let text = if buf.gap && rest == 0 {
            format!("gap: bytes missing where the {what} should be")
        } else if rest > 0 {
            format!("truncated: incomplete {what} ({rest} bytes)")
        } else if self.stage.is_client_turn() {
            format!("missing {what}")
        } else {
            format!("missing reply: no {what}")
        };
        self.anomalies.push(text);
        self.stage = Stage::Finished;
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        dir: Dir,
        kind: &'static str,
        secret: Option<(usize, usize)>,
        buf: &Retained,
        start: usize,
        len: usize,
    ) {
        let bytes = buf.data.get(start..start + len).unwrap_or_default();
        let (frames, ranges) = buf.locate(start, len);
        self.messages.push(message(
            dir,
            kind,
            secret,
            bytes,
            len,
            start as u64,
            frames,
            ranges,
        ));
    }

    fn malformed(&mut self, what: &str, e: socksgate_core::WireError) {
        self.anomalies.push(format!("malformed {what}: {e}"));
        self.stage = Stage::Finished;
    }

    /// Tries one message of `kind` (from the client stream if `up_side`).
    fn try_msg(&mut self, up_side: bool, buf: &Retained, kind: &'static str) -> Option<Info> {
        let pos = if up_side { self.up } else { self.down };
        let rest = buf.data.get(pos..).unwrap_or_default();
        match socks::facts(kind, rest, self.show_secrets) {
            Fast::Done { info, len, secret } => {
                let dir = if up_side { Dir::Up } else { Dir::Down };
                self.record(dir, kind, secret, buf, pos, len);
                if up_side {
                    self.up += len;
                } else {
                    self.down += len;
                }
                Some(info)
            }
            Fast::Partial => None,
            Fast::Bad(e) => {
                let what = self.stage.expecting();
                self.malformed(what, e);
                None
            }
        }
    }

    fn step(&mut self, up: &Retained, down: &Retained, last: bool) -> Outcome {
        let before = self.stage;
        let got = match self.stage {
            Stage::Greeting => self.try_msg(true, up, "method_request"),
            Stage::MethodReply => self.try_msg(false, down, "method_reply"),
            Stage::UserPass => self.try_msg(true, up, "userpass_request"),
            Stage::UserPassReply => self.try_msg(false, down, "userpass_reply"),
            Stage::Gssapi => return self.gssapi_step(up, down),
            Stage::Request if self.socks4 => self.try_msg(true, up, "socks4_request"),
            Stage::Request => self.try_msg(true, up, "request"),
            Stage::Reply | Stage::SecondReply if self.socks4 => {
                self.try_msg(false, down, "socks4_reply")
            }
            Stage::Reply | Stage::SecondReply => {
                if self.facts.method == Some(1) && down.data.get(self.down) == Some(&1) {
                    // A late GSS-API token from the server.
                    return self.gss_one(false, down);
                }
                self.try_msg(false, down, "reply")
            }
            Stage::Established => return self.tunnel_step(up, down, last),
            Stage::Finished => return Outcome::Wait,
        };
        if self.stage != before {
            // An error finished the decoder.
            return Outcome::Progress;
        }
        let Some(info) = got else {
            return Outcome::Wait;
        };
        self.apply(info);
        Outcome::Progress
    }

    fn apply(&mut self, info: Info) {
        let f = &mut self.facts;
        match info {
            Info::Greeting { methods } => {
                f.methods_offered = methods;
                self.stage = Stage::MethodReply;
            }
            Info::MethodChoice { method } => {
                f.method = Some(method);
                if method != 0xff && !f.methods_offered.contains(&method) {
                    self.anomalies.push(format!(
                        "protocol violation: server selected method {method}, which the client did not offer"
                    ));
                }
                self.stage = match method {
                    0 => Stage::Request,
                    1 => Stage::Gssapi,
                    2 => Stage::UserPass,
                    0xff => Stage::Finished,
                    other => {
                        self.anomalies.push(format!(
                            "method {other:#04x} sub-negotiation cannot be decoded; rest of the connection not followed"
                        ));
                        Stage::Finished
                    }
                };
            }
            Info::UserPass { username, password } => {
                f.username = Some(username);
                // Not kept at all unless it will be shown.
                f.password = self.show_secrets.then_some(password);
                self.stage = Stage::UserPassReply;
            }
            Info::AuthStatus { status } => {
                f.auth_ok = Some(status == 0);
                self.stage = if status == 0 {
                    Stage::Request
                } else {
                    Stage::Finished
                };
            }
            Info::Gssapi { .. } => {}
            Info::Socks4Request {
                command,
                host,
                port,
                socks4a,
                user_id,
            } => {
                if socks4a {
                    f.version = "socks4a";
                }
                f.command = Some(command);
                f.dst_host = Some(host);
                f.dst_port = Some(port);
                f.username = (!user_id.is_empty()).then_some(user_id);
                self.stage = Stage::Reply;
            }
            Info::Request {
                command,
                host,
                port,
            } => {
                f.command = Some(command);
                f.dst_host = Some(host);
                f.dst_port = Some(port);
                self.stage = Stage::Reply;
            }
            Info::Socks4Reply { code, addr } => {
                if self.stage == Stage::SecondReply {
                    f.bind_peer = Some(addr.to_string());
                    self.stage = if code == 90 {
                        Stage::Established
                    } else {
                        Stage::Finished
                    };
                } else {
                    f.reply_code = Some(code);
                    f.bound = Some(addr.to_string());
                    f.bound_addr = Some(SocketAddr::V4(addr));
                    self.stage = match (code, f.command) {
                        (90, Some(2)) => Stage::SecondReply,
                        (90, _) => Stage::Established,
                        _ => Stage::Finished,
                    };
                }
            }
            Info::Reply {
                code,
                bound,
                bound_addr,
            } => {
                if self.stage == Stage::SecondReply {
                    f.bind_peer = Some(bound);
                    self.stage = if code == 0 {
                        Stage::Established
                    } else {
                        Stage::Finished
                    };
                } else {
                    f.reply_code = Some(code);
                    f.bound = Some(bound);
                    f.bound_addr = bound_addr;
                    self.stage = match (code, f.command) {
                        (0, Some(2)) => Stage::SecondReply,
                        // UDP ASSOCIATE: the control connection carries no payload.
                        (0, Some(3)) => Stage::Finished,
                        (0, _) => Stage::Established,
                        _ => Stage::Finished,
                    };
                }
            }
        }
    }

    /// One GSS-API message from one side.
    fn gss_one(&mut self, up_side: bool, buf: &Retained) -> Outcome {
        let before = self.stage;
        match self.try_msg(up_side, buf, "gssapi") {
            Some(Info::Gssapi { mtyp }) => {
                if mtyp == 0xff {
                    self.anomalies.push("GSS-API context aborted".into());
                    self.stage = Stage::Finished;
                } else if mtyp == 3 && up_side {
                    self.anomalies
                        .push("GSS-API protected (encapsulated) request: not decoded".into());
                    self.stage = Stage::Finished;
                }
                Outcome::Progress
            }
            Some(_) => Outcome::Progress,
            None if self.stage != before => Outcome::Progress,
            None => Outcome::Wait,
        }
    }

    /// RFC 1961 exchange: tokens in both directions until the client sends its request.
    fn gssapi_step(&mut self, up: &Retained, down: &Retained) -> Outcome {
        if down.data.get(self.down) == Some(&1)
            && let Outcome::Progress = self.gss_one(false, down)
        {
            return Outcome::Progress;
        }
        match up.data.get(self.up) {
            Some(5) => {
                self.stage = Stage::Request;
                Outcome::Progress
            }
            Some(_) => self.gss_one(true, up),
            None => Outcome::Wait,
        }
    }

    fn tunnel_step(&mut self, up: &Retained, down: &Retained, last: bool) -> Outcome {
        let (u, d) = (
            up.data.get(self.up..).unwrap_or_default(),
            down.data.get(self.down..).unwrap_or_default(),
        );
        match tunnel::recognise(u, d, last || (up.full && down.full)) {
            Some(t) => {
                self.facts.tunnelled = t;
                self.stage = Stage::Finished;
                Outcome::Progress
            }
            None => Outcome::Wait,
        }
    }
}
