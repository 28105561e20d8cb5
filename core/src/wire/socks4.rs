//! SOCKS4 and SOCKS4a requests and replies.
//!
//! Request: `VN=4 | CD | DSTPORT(2) | DSTIP(4) | USERID | NUL`, and for SOCKS4a, when DSTIP
//! is 0.0.0.x with x ≠ 0, `| HOSTNAME | NUL` after it. Reply: `VN=0 | CD | DSTPORT | DSTIP`.
//! USERID and HOSTNAME are bounded to 255 octets before their NUL.

use core::ops::Range;

use core::net::{Ipv4Addr, SocketAddrV4};

use nom::number::streaming::{be_u8, be_u16};

use super::{
    BufferTooSmall, Command, ParseResult, Socks4Code, WireError, Writer, fail, ipv4, run, version,
};
use crate::addr::{Addr, Domain};

/// Request version octet.
pub const VERSION: u8 = 4;
/// Reply version octet (0, not 4 — a common implementer mistake).
pub const REPLY_VERSION: u8 = 0;
/// Longest USERID or hostname accepted before its terminating NUL.
pub const MAX_STRING_LEN: usize = 255;

/// Where a SOCKS4 request goes: an IPv4 address, or (SOCKS4a) a name for the server to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Socks4Dst<'a> {
    /// Plain SOCKS4: an IPv4 address.
    Ip(Ipv4Addr),
    /// SOCKS4a: a hostname (sent with DSTIP 0.0.0.1).
    Domain(Domain<'a>),
}

/// A SOCKS4 or SOCKS4a request.
///
/// ```
/// use socksgate_core::wire::{Command, socks4::{Socks4Dst, Socks4Request}};
///
/// let bytes = b"\x04\x01\x00\x50\x00\x00\x00\x01fred\x00example.com\x00";
/// let (req, n) = Socks4Request::parse(bytes).unwrap().complete().unwrap();
/// assert_eq!(n, bytes.len());
/// assert_eq!(req.command, Command::Connect);
/// assert!(matches!(req.dst, Socks4Dst::Domain(d) if d.as_bytes() == b"example.com"));
/// assert_eq!(req.user_id, b"fred");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Socks4Request<'a> {
    /// CD: CONNECT (1) or BIND (2); other values parse as they are.
    pub command: Command,
    /// DSTPORT.
    pub port: u16,
    /// DSTIP, or the SOCKS4a hostname.
    pub dst: Socks4Dst<'a>,
    /// USERID without its NUL (may be empty; at most 255 octets, no NUL).
    pub user_id: &'a [u8],
}

/// Finds a NUL within the first `MAX_STRING_LEN + 1` octets of `i`; the string before it and
/// the rest after it. Incomplete while no NUL is seen and the bound is not yet exceeded.
fn nul_terminated(i: &[u8], too_long: WireError) -> Result<(&[u8], &[u8]), nom::Err<WireError>> {
    let window = i.get(..=MAX_STRING_LEN).unwrap_or(i);
    match window.iter().position(|&b| b == 0) {
        Some(pos) => {
            let (s, rest) = i.split_at(pos);
            Ok((rest.get(1..).unwrap_or_default(), s))
        }
        None if window.len() > MAX_STRING_LEN => fail(too_long),
        None => Err(nom::Err::Incomplete(nom::Needed::Unknown)),
    }
}

impl<'a> Socks4Request<'a> {
    /// Parses a request; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, command) = be_u8(i)?;
            let (i, port) = be_u16(i)?;
            let (i, ip) = ipv4(i)?;
            let (i, user_id) = nul_terminated(i, WireError::UserIdTooLong)?;
            let [a, b, c, x] = ip.octets();
            if (a, b, c) == (0, 0, 0) && x != 0 {
                let (i, host) = nul_terminated(i, WireError::HostnameTooLong)?;
                return match Domain::new(host) {
                    Ok(name) => Ok((
                        i,
                        Self {
                            command: command.into(),
                            port,
                            dst: Socks4Dst::Domain(name),
                            user_id,
                        },
                    )),
                    Err(e) => fail(e),
                };
            }
            Ok((
                i,
                Self {
                    command: command.into(),
                    port,
                    dst: Socks4Dst::Ip(ip),
                    user_id,
                },
            ))
        })
    }

    /// The destination as an [`Addr`].
    pub fn dst_addr(&self) -> Addr<'a> {
        match self.dst {
            Socks4Dst::Ip(ip) => Addr::Ip(SocketAddrV4::new(ip, self.port).into()),
            Socks4Dst::Domain(name) => Addr::Domain(name, self.port),
        }
    }

    /// Whether this is a SOCKS4a request (hostname form).
    pub const fn is_4a(&self) -> bool {
        matches!(self.dst, Socks4Dst::Domain(_))
    }

    /// Where USERID (without its NUL) sits in the encoded request (after VN, CD, DSTPORT and
    /// DSTIP).
    pub const fn user_id_span(&self) -> Range<usize> {
        8..8 + self.user_id.len()
    }

    /// Where the SOCKS4a hostname (without its NUL) sits: after the USERID's NUL.
    pub const fn hostname_span(&self) -> Option<Range<usize>> {
        match self.dst {
            Socks4Dst::Ip(_) => None,
            Socks4Dst::Domain(name) => {
                let at = 8 + self.user_id.len() + 1;
                Some(at..at + name.as_bytes().len())
            }
        }
    }

    /// Encoded length. A USERID longer than 255 octets is cut to 255 on emit.
    pub fn buffer_len(&self) -> usize {
        let user = self.user_id.len().min(MAX_STRING_LEN);
        let host = match self.dst {
            Socks4Dst::Ip(_) => 0,
            Socks4Dst::Domain(name) => name.as_bytes().len() + 1,
        };
        8 + user + 1 + host
    }

    /// Writes the request; see the [module contract](super). A NUL inside `user_id` would end
    /// it early on the wire; callers take user ids from parsed messages or configuration.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        w.u8(self.command.into());
        w.u16(self.port);
        match self.dst {
            Socks4Dst::Ip(ip) => w.bytes(&ip.octets()),
            Socks4Dst::Domain(_) => w.bytes(&[0, 0, 0, 1]),
        }
        w.bytes(self.user_id.get(..MAX_STRING_LEN).unwrap_or(self.user_id));
        w.u8(0);
        if let Socks4Dst::Domain(name) = self.dst {
            w.bytes(name.as_bytes());
            w.u8(0);
        }
        Ok(w.finish())
    }
}

/// A SOCKS4 reply: `VN=0 | CD | DSTPORT | DSTIP` (8 octets).
///
/// For CONNECT the address is usually ignored by clients; for BIND it is the listening
/// address (first reply) and the connecting peer (second reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Socks4Reply {
    /// CD.
    pub code: Socks4Code,
    /// DSTIP and DSTPORT.
    pub addr: SocketAddrV4,
}

impl Socks4Reply {
    /// Encoded length: always 8.
    pub const LEN: usize = 8;

    /// Parses a reply; see the [module contract](super). VN must be 0; VN = 4, which some
    /// servers send, is accepted too because clients cannot do anything better with it.
    pub fn parse(buf: &[u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, vn) = be_u8(i)?;
            if vn != REPLY_VERSION && vn != VERSION {
                return fail(WireError::BadVersion(vn));
            }
            let (i, code) = be_u8(i)?;
            let (i, port) = be_u16(i)?;
            let (i, ip) = ipv4(i)?;
            Ok((
                i,
                Self {
                    code: code.into(),
                    addr: SocketAddrV4::new(ip, port),
                },
            ))
        })
    }

    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    /// Writes the reply (with VN = 0); see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, Self::LEN)?;
        w.u8(REPLY_VERSION);
        w.u8(self.code.into());
        w.u16(self.addr.port());
        w.bytes(&self.addr.ip().octets());
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    #[test]
    fn socks4_connect_vector() {
        // From the SOCKS4 protocol description: CONNECT 66.102.7.99:80 as user "fred".
        let bytes = [4, 1, 0, 80, 66, 102, 7, 99, b'f', b'r', b'e', b'd', 0];
        let (req, n) = Socks4Request::parse(&bytes).unwrap().complete().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.dst, Socks4Dst::Ip(Ipv4Addr::new(66, 102, 7, 99)));
        assert_eq!(req.port, 80);
        assert!(!req.is_4a());
        let mut out = [0u8; 32];
        assert_eq!(req.emit(&mut out), Ok(bytes.len()));
        assert_eq!(&out[..bytes.len()], &bytes);
    }

    #[test]
    fn socks4a_needs_hostname_and_x_nonzero() {
        // 0.0.0.0 is not 4a: no hostname is read after USERID.
        let plain = [4, 1, 0, 80, 0, 0, 0, 0, 0, b'x'];
        let (req, n) = Socks4Request::parse(&plain).unwrap().complete().unwrap();
        assert_eq!((n, req.dst), (9, Socks4Dst::Ip(Ipv4Addr::UNSPECIFIED)));
        // 0.0.0.7 is 4a; hostname still missing → partial.
        assert_eq!(
            Socks4Request::parse(&[4, 1, 0, 80, 0, 0, 0, 7, 0, b'a']),
            Ok(Status::Partial)
        );
        // Empty hostname is malformed.
        assert_eq!(
            Socks4Request::parse(&[4, 1, 0, 80, 0, 0, 0, 7, 0, 0]),
            Err(WireError::EmptyDomain)
        );
    }

    #[test]
    fn userid_and_hostname_are_bounded() {
        let mut long = [b'u'; 8 + 300];
        long[..8].copy_from_slice(&[4, 1, 0, 80, 1, 2, 3, 4]);
        assert_eq!(Socks4Request::parse(&long), Err(WireError::UserIdTooLong));
        // Exactly 255 octets and a NUL is fine.
        let mut ok = [b'u'; 8 + 256];
        ok[..8].copy_from_slice(&[4, 1, 0, 80, 1, 2, 3, 4]);
        ok[8 + 255] = 0;
        assert!(matches!(
            Socks4Request::parse(&ok),
            Ok(Status::Complete((_, 264)))
        ));
        // 255 octets and no NUL yet: still partial.
        assert_eq!(Socks4Request::parse(&ok[..8 + 255]), Ok(Status::Partial));

        let mut host = [b'h'; 10 + 300];
        host[..10].copy_from_slice(&[4, 1, 0, 80, 0, 0, 0, 1, b'u', 0]);
        assert_eq!(Socks4Request::parse(&host), Err(WireError::HostnameTooLong));
    }

    #[test]
    fn reply_vectors() {
        let granted = Socks4Reply {
            code: Socks4Code::Granted,
            addr: "10.1.2.3:4660".parse().unwrap(),
        };
        let bytes = [0, 90, 0x12, 0x34, 10, 1, 2, 3];
        assert_eq!(
            Socks4Reply::parse(&bytes),
            Ok(Status::Complete((granted, 8)))
        );
        let mut out = [0u8; 8];
        assert_eq!(granted.emit(&mut out), Ok(8));
        assert_eq!(out, bytes);
        assert!(Socks4Reply::parse(&[4, 91, 0, 0, 0, 0, 0, 0]).is_ok());
        assert_eq!(Socks4Reply::parse(&[5, 0]), Err(WireError::BadVersion(5)));
        assert_eq!(Socks4Reply::parse(&[0, 91, 0]), Ok(Status::Partial));
    }
}
