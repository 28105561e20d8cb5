//! RFC 1961 GSS-API message framing: `VER=1 | MTYP | LEN(2) | TOKEN`, or the two-octet abort
//! `VER=1 | MTYP=0xFF`.
//!
//! The core frames the messages; establishing the GSS-API context (and unwrapping protected
//! messages) is the caller's job. [`GssapiMessage`] parses a whole message; the state
//! machines read only its [`GssapiHeader`] and stream the token, which may be up to 65,535
//! octets (see [`crate::gssapi`]).

use core::ops::Range;

use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u16};

use super::{BufferTooSmall, ParseResult, Writer, code_enum, run, version};

/// Framing version (X'01').
pub const VERSION: u8 = 1;

code_enum! {
    /// RFC 1961 message type (MTYP).
    pub enum GssapiMessageType {
        /// Context establishment token (§3).
        Context = 1 => "authentication",
        /// Per-message protection level negotiation (§4).
        Protection = 2 => "protection-level negotiation",
        /// Encapsulated (protected) user data (§5).
        Encapsulated = 3 => "encapsulated message",
        /// Abort: the peer gives up; no length or token follows.
        Abort = 0xff => "abort",
    }
}

impl GssapiMessageType {
    /// The name, or `"unknown"`.
    pub const fn describe(self) -> &'static str {
        match self.name() {
            Some(name) => name,
            None => "unknown",
        }
    }
}

code_enum! {
    /// The octet of the RFC 1961 §4 protection-level sub-negotiation. RFC 1961 defines 1, 2
    /// and 3; 0 ("no per-message protection", after which nothing is encapsulated) is what
    /// the NEC reference implementation, curl and Dante use besides them.
    pub enum ProtectionLevel {
        /// No per-message protection: the request, reply and relay travel as they are.
        None = 0 => "none",
        /// Every message wrapped with `conf_req_flag` FALSE: integrity, no confidentiality.
        Integrity = 1 => "integrity",
        /// Every message wrapped with `conf_req_flag` TRUE: integrity and confidentiality.
        Confidentiality = 2 => "confidentiality",
        /// Integrity or confidentiality chosen per message by local configuration (§4.3).
        Selective = 3 => "selective",
    }
}

impl ProtectionLevel {
    /// Whether messages are encapsulated (§5) after the negotiation: every level but `None`.
    pub const fn encapsulates(self) -> bool {
        !matches!(self, Self::None)
    }

    /// The ordering the server's grant follows: none < integrity < confidentiality, with
    /// selective counted as confidentiality (it allows confidentiality on every message);
    /// `None` for an unknown octet.
    pub const fn strength(self) -> Option<u8> {
        match self {
            Self::None => Some(0),
            Self::Integrity => Some(1),
            Self::Confidentiality | Self::Selective => Some(2),
            Self::Unknown(_) => None,
        }
    }
}

/// The header of an RFC 1961 message: `VER MTYP LEN` (4 octets), or `VER 0xFF` (2 octets)
/// for an abort, whose `len` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GssapiHeader {
    /// The message type.
    pub kind: GssapiMessageType,
    /// The length of the token that follows (0 for an abort).
    pub len: u16,
}

impl GssapiHeader {
    /// Parses a header; see the [module contract](super). `consumed` is 4, or 2 for an abort.
    pub fn parse(buf: &[u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, kind) = be_u8(i)?;
            let kind = GssapiMessageType::from(kind);
            if kind == GssapiMessageType::Abort {
                return Ok((i, Self { kind, len: 0 }));
            }
            let (i, len) = be_u16(i)?;
            Ok((i, Self { kind, len }))
        })
    }

    /// The header of a message of `kind` carrying `len` token octets; `None` when `len` is
    /// more than 65,535 (the framing's limit).
    pub fn new(kind: GssapiMessageType, len: usize) -> Option<Self> {
        let len = u16::try_from(len).ok()?;
        Some(Self { kind, len })
    }

    /// Encoded length: 4, or 2 for an abort.
    pub const fn buffer_len(&self) -> usize {
        match self.kind {
            GssapiMessageType::Abort => 2,
            _ => 4,
        }
    }

    /// Writes the header; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        w.u8(self.kind.into());
        if self.kind != GssapiMessageType::Abort {
            w.u16(self.len);
        }
        Ok(w.finish())
    }
}

/// One framed GSS-API message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GssapiMessage<'a> {
    /// The message type.
    pub kind: GssapiMessageType,
    /// The token (empty for an abort). At most 65535 octets.
    pub token: &'a [u8],
}

impl<'a> GssapiMessage<'a> {
    /// Parses a message; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, kind) = be_u8(i)?;
            let kind = GssapiMessageType::from(kind);
            if kind == GssapiMessageType::Abort {
                return Ok((i, Self { kind, token: &[] }));
            }
            let (i, len) = be_u16(i)?;
            let (i, token) = take(len).parse(i)?;
            Ok((i, Self { kind, token }))
        })
    }

    /// Where TOKEN sits in the encoded message (after VER, MTYP and LEN); `None` for an
    /// abort, which has neither LEN nor TOKEN.
    pub const fn token_span(&self) -> Option<Range<usize>> {
        match self.kind {
            GssapiMessageType::Abort => None,
            _ => Some(4..4 + self.token.len()),
        }
    }

    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        match self.kind {
            GssapiMessageType::Abort => 2,
            _ => 4 + self.token.len(),
        }
    }

    /// Writes the message; see the [module contract](super). Tokens longer than 65535
    /// octets cannot be framed and are cut to that length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let token = self
            .token
            .get(..usize::from(u16::MAX))
            .unwrap_or(self.token);
        let framed = Self {
            kind: self.kind,
            token,
        };
        let mut w = Writer::new(out, framed.buffer_len())?;
        w.u8(VERSION);
        w.u8(self.kind.into());
        if self.kind != GssapiMessageType::Abort {
            // Bounded to u16::MAX above.
            w.u16(token.len() as u16);
            w.bytes(token);
        }
        Ok(w.finish())
    }
}

/// Why a [`MessageCounter`] stopped counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CountStop {
    /// A message header does not start with VER 1 (`at` = its position in what was fed).
    BadVersion {
        /// Position of the header's first byte.
        at: u64,
        /// The byte found.
        version: u8,
    },
    /// An abort message (either peer gave up the context).
    Abort {
        /// Position of the abort.
        at: u64,
    },
    /// A message of another type than encapsulated (MTYP 3).
    UnexpectedType {
        /// Position of the header's first byte.
        at: u64,
        /// The type found.
        kind: GssapiMessageType,
    },
}

impl core::fmt::Display for CountStop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BadVersion { at, version } => write!(
                f,
                "malformed GSS-API encapsulated message at {at}: version {version}, not 1"
            ),
            Self::Abort { at } => write!(f, "GSS-API context aborted at {at}"),
            Self::UnexpectedType { at, kind } => write!(
                f,
                "GSS-API {} message ({:#04x}) at {at} among encapsulated messages",
                kind.describe(),
                u8::from(kind)
            ),
        }
    }
}

/// Counts the encapsulated messages (RFC 1961 §5, MTYP 3) of one direction as its bytes
/// stream past, without buffering them: fixed size whatever the message lengths. Fed the
/// direction's bytes in order from the first encapsulated message's header; positions in
/// [`CountStop`] count from there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MessageCounter {
    /// Bytes fed so far.
    fed: u64,
    /// The current message's header bytes read so far.
    header: [u8; 4],
    have: u8,
    /// Token bytes of the current message not yet fed (after its header).
    remaining: u16,
    /// The current message's LEN.
    len: u16,
    messages: u64,
    token_bytes: u64,
    stop: Option<CountStop>,
}

impl MessageCounter {
    /// A counter at the start of a message.
    pub const fn new() -> Self {
        Self {
            fed: 0,
            header: [0; 4],
            have: 0,
            remaining: 0,
            len: 0,
            messages: 0,
            token_bytes: 0,
            stop: None,
        }
    }

    /// Whole messages counted.
    pub const fn messages(&self) -> u64 {
        self.messages
    }

    /// Sum of the counted messages' token lengths (LEN), headers excluded.
    pub const fn token_bytes(&self) -> u64 {
        self.token_bytes
    }

    /// Why counting stopped, if it did (nothing further is counted).
    pub const fn stopped(&self) -> Option<CountStop> {
        self.stop
    }

    /// True between messages (nothing of a message fed but not finished).
    pub const fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Feeds the next bytes of the direction.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while self.stop.is_none() && !bytes.is_empty() {
            if self.remaining > 0 {
                let take = bytes.len().min(usize::from(self.remaining));
                bytes = bytes.get(take..).unwrap_or_default();
                self.fed += take as u64;
                // `take` is at most `remaining`, a u16.
                self.remaining -= take as u16;
                if self.remaining == 0 {
                    self.messages += 1;
                    self.token_bytes += u64::from(self.len);
                }
                continue;
            }
            let Some((&b, rest)) = bytes.split_first() else {
                break;
            };
            bytes = rest;
            if let Some(slot) = self.header.get_mut(usize::from(self.have)) {
                *slot = b;
            }
            self.have += 1;
            self.fed += 1;
            let at = self.fed - u64::from(self.have);
            match (self.have, self.header) {
                (1, [v, ..]) if v != VERSION => {
                    self.stop = Some(CountStop::BadVersion { at, version: v });
                }
                (2, [_, t, ..]) => match GssapiMessageType::from(t) {
                    GssapiMessageType::Encapsulated => {}
                    GssapiMessageType::Abort => self.stop = Some(CountStop::Abort { at }),
                    kind => self.stop = Some(CountStop::UnexpectedType { at, kind }),
                },
                (4, [_, _, hi, lo]) => {
                    let len = u16::from_be_bytes([hi, lo]);
                    self.have = 0;
                    self.len = len;
                    self.remaining = len;
                    if len == 0 {
                        self.messages += 1;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Status, WireError};

    #[test]
    fn context_token_vector() {
        let bytes = [1, 1, 0, 3, 0xaa, 0xbb, 0xcc];
        let msg = GssapiMessage {
            kind: GssapiMessageType::Context,
            token: &[0xaa, 0xbb, 0xcc],
        };
        assert_eq!(GssapiMessage::parse(&bytes), Ok(Status::Complete((msg, 7))));
        let mut out = [0u8; 7];
        assert_eq!(msg.emit(&mut out), Ok(7));
        assert_eq!(out, bytes);
    }

    #[test]
    fn abort_is_two_octets() {
        let msg = GssapiMessage {
            kind: GssapiMessageType::Abort,
            token: &[],
        };
        assert_eq!(
            GssapiMessage::parse(&[1, 0xff, 9]),
            Ok(Status::Complete((msg, 2)))
        );
        assert_eq!(msg.buffer_len(), 2);
    }

    #[test]
    fn header_vectors() {
        let h = GssapiHeader::new(GssapiMessageType::Encapsulated, 65_535).unwrap();
        let mut out = [0u8; 4];
        assert_eq!(h.emit(&mut out), Ok(4));
        assert_eq!(out, [1, 3, 0xff, 0xff]);
        assert_eq!(GssapiHeader::parse(&out), Ok(Status::Complete((h, 4))));
        assert_eq!(GssapiHeader::new(GssapiMessageType::Context, 65_536), None);
        assert_eq!(GssapiHeader::parse(&[1, 1, 0]), Ok(Status::Partial));
        assert_eq!(
            GssapiHeader::parse(&[1, 0xff, 7]),
            Ok(Status::Complete((
                GssapiHeader {
                    kind: GssapiMessageType::Abort,
                    len: 0
                },
                2
            )))
        );
        assert_eq!(GssapiHeader::parse(&[2]), Err(WireError::BadVersion(2)));
    }

    #[test]
    fn protection_levels() {
        assert_eq!(ProtectionLevel::from(0), ProtectionLevel::None);
        assert_eq!(ProtectionLevel::from(3).to_string(), "selective");
        assert!(!ProtectionLevel::None.encapsulates());
        assert!(ProtectionLevel::Integrity.encapsulates());
        assert_eq!(ProtectionLevel::Unknown(9).strength(), None);
    }

    #[test]
    fn partial_and_bad_version() {
        assert_eq!(GssapiMessage::parse(&[1, 2, 0, 1]), Ok(Status::Partial));
        assert_eq!(GssapiMessage::parse(&[5, 1]), Err(WireError::BadVersion(5)));
    }

    #[test]
    fn counter_counts_across_any_chunking() {
        let mut stream = [0u8; 64];
        let mut n = 0;
        for len in [3usize, 0, 20] {
            let token = [0xab; 20];
            let msg = GssapiMessage {
                kind: GssapiMessageType::Encapsulated,
                token: &token[..len],
            };
            n += msg.emit(&mut stream[n..]).unwrap();
        }
        for chunk in 1..=n {
            let mut c = MessageCounter::new();
            for part in stream[..n].chunks(chunk) {
                c.feed(part);
            }
            assert_eq!((c.messages(), c.token_bytes()), (3, 23), "chunk {chunk}");
            assert!(c.at_boundary() && c.stopped().is_none());
        }
        let mut c = MessageCounter::new();
        c.feed(&stream[..n - 1]);
        assert_eq!((c.messages(), c.token_bytes()), (2, 3));
        assert!(!c.at_boundary());
    }

    #[test]
    fn counter_stops_at_other_messages() {
        let mut c = MessageCounter::new();
        c.feed(&[1, 3, 0, 1, 9, 1, 0xff, 1, 3]);
        assert_eq!(c.messages(), 1);
        assert_eq!(c.stopped(), Some(CountStop::Abort { at: 5 }));
        let mut c = MessageCounter::new();
        c.feed(&[5, 1]);
        assert_eq!(
            c.stopped(),
            Some(CountStop::BadVersion { at: 0, version: 5 })
        );
        let mut c = MessageCounter::new();
        c.feed(&[1, 3, 0, 0, 1, 1]);
        assert_eq!(c.messages(), 1);
        assert_eq!(
            c.stopped(),
            Some(CountStop::UnexpectedType {
                at: 4,
                kind: GssapiMessageType::Context
            })
        );
    }
}
