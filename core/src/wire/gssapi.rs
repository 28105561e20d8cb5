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
}
