//! The wire layer: every SOCKS message as a typed value with `parse` and `emit`, and the
//! [PROXY protocol header](proxy) a load balancer may put in front of one.
//!
//! Contracts shared by every message type:
//!
//! * `parse(buf)` never panics. It returns [`Status::Partial`] when `buf` holds only a prefix
//!   of a valid message (read more and call again with the longer buffer), `Ok(Complete((msg,
//!   consumed)))` when a whole message was found — `consumed` is its length; bytes after it
//!   belong to whatever follows (the next message, or relayed payload) — or a [`WireError`] when
//!   the bytes cannot begin a valid message.
//! * `buffer_len()` is the exact encoded length; `emit(out)` writes exactly that many bytes
//!   and returns the count, or [`BufferTooSmall`] (with the required size) leaving `out`
//!   untouched.
//! * Unknown code points parse as `Unknown(u8)` and emit back unchanged.
//!
//! ```
//! use socksgate_core::wire::{Command, socks5::Request};
//! use socksgate_core::{Addr, Status};
//!
//! let req = Request { command: Command::Connect, dst: Addr::Ip("192.0.2.7:443".parse().unwrap()) };
//! let mut buf = [0u8; 32];
//! let n = req.emit(&mut buf).unwrap();
//! assert_eq!(&buf[..n], &[5, 1, 0, 1, 192, 0, 2, 7, 0x01, 0xbb]);
//! assert_eq!(Request::parse(&buf[..n]), Ok(Status::Complete((req, n))));
//! assert_eq!(Request::parse(&buf[..4]), Ok(Status::Partial));
//! ```

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::ops::Range;

use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u16};

use crate::addr::{Addr, Domain};

pub mod gssapi;
pub mod method;
pub mod proxy;
pub mod socks4;
pub mod socks5;
pub mod udp;
pub mod userpass;

/// Outcome of an incremental parse that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status<T> {
    /// A whole message: the value and the number of input bytes it occupied.
    Complete(T),
    /// The input is a valid prefix; more bytes are needed.
    Partial,
}

impl<T> Status<T> {
    /// The value, if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Self::Complete(v) => Some(v),
            Self::Partial => None,
        }
    }
}

/// The result of `parse`: a message and the bytes it consumed, a partial input, or an error.
pub type ParseResult<T> = Result<Status<(T, usize)>, WireError>;

/// Why bytes are not a valid SOCKS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The version octet is not the one this message requires (4 or 5; 1 for RFC 1929 and
    /// RFC 1961 sub-negotiation).
    BadVersion(u8),
    /// A method-selection message with NMETHODS = 0.
    NoMethods,
    /// RFC 1929 ULEN = 0.
    EmptyUsername,
    /// RFC 1929 PLEN = 0.
    EmptyPassword,
    /// A domain name of length 0.
    EmptyDomain,
    /// A domain name longer than 255 octets.
    DomainTooLong,
    /// A domain name containing a NUL octet.
    NulInDomain,
    /// An ATYP other than 1 (IPv4), 3 (domain) or 4 (IPv6): the message cannot be framed.
    UnknownAddrType(u8),
    /// A reserved octet that is not zero.
    NonZeroReserved(u8),
    /// A SOCKS4 USERID with no NUL within 255 octets.
    UserIdTooLong,
    /// A SOCKS4a hostname with no NUL within 255 octets.
    HostnameTooLong,
    /// A datagram shorter than its header says.
    Truncated,
}

impl WireError {
    /// The SOCKS5 reply code a server should send for this error (when a reply is possible).
    pub const fn reply(self) -> ReplyCode {
        match self {
            Self::UnknownAddrType(_) => ReplyCode::AddressTypeNotSupported,
            _ => ReplyCode::GeneralFailure,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadVersion(v) => write!(f, "unexpected version octet {v:#04x}"),
            Self::NoMethods => f.write_str("method selection offers no methods (NMETHODS = 0)"),
            Self::EmptyUsername => f.write_str("empty username (ULEN = 0)"),
            Self::EmptyPassword => f.write_str("empty password (PLEN = 0)"),
            Self::EmptyDomain => f.write_str("empty domain name"),
            Self::DomainTooLong => f.write_str("domain name longer than 255 octets"),
            Self::NulInDomain => f.write_str("NUL octet in domain name"),
            Self::UnknownAddrType(t) => write!(f, "unknown address type {t:#04x}"),
            Self::NonZeroReserved(r) => write!(f, "reserved octet is {r:#04x}, not 0"),
            Self::UserIdTooLong => {
                f.write_str("SOCKS4 USERID not NUL-terminated within 255 octets")
            }
            Self::HostnameTooLong => {
                f.write_str("SOCKS4a hostname not NUL-terminated within 255 octets")
            }
            Self::Truncated => f.write_str("datagram shorter than its header"),
        }
    }
}

impl core::error::Error for WireError {}

/// A message that can be written to the wire: implemented by every message type, so generic
/// code (output queues, tests) can emit any of them.
pub trait Emit {
    /// The exact encoded length.
    fn buffer_len(&self) -> usize;
    /// Writes the message into the front of `out`; see the [module contract](self).
    fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall>;
}

macro_rules! impl_emit {
    ($($ty:ty),+ $(,)?) => {$(
        impl Emit for $ty {
            fn buffer_len(&self) -> usize {
                <$ty>::buffer_len(self)
            }
            fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
                <$ty>::emit(self, out)
            }
        }
    )+};
}

impl_emit!(
    method::MethodRequest<'_>,
    method::MethodReply,
    userpass::UserPassRequest<'_>,
    userpass::UserPassReply,
    gssapi::GssapiMessage<'_>,
    gssapi::GssapiHeader,
    socks4::Socks4Request<'_>,
    socks4::Socks4Reply,
    socks5::Request<'_>,
    socks5::Reply<'_>,
);

/// `emit` was given a buffer shorter than the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall {
    /// The number of bytes the message needs.
    pub required: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output buffer too small: {} bytes required",
            self.required
        )
    }
}

impl core::error::Error for BufferTooSmall {}

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        ///
        /// Unknown values parse as `Unknown(n)` and emit back as `n`; build values with
        /// `From<u8>` so a known number never ends up in `Unknown`. `Display` writes the
        /// [`name`](Self::name) of a known value and `unknown:0xNN` otherwise; logs, metrics
        /// and the inspector's output all use these spellings.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code point this crate does not name.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// The name of a known value; `None` for `Unknown`.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($text), )+
                    Self::Unknown(_) => None,
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match *self {
                    Self::Unknown(n) => write!(f, "unknown:{n:#04x}"),
                    known => f.write_str(known.name().unwrap_or_default()),
                }
            }
        }
    };
}
pub(crate) use code_enum;

code_enum! {
    /// A request's command (SOCKS4 CD and SOCKS5 CMD share the numbering).
    pub enum Command {
        /// Open a TCP connection to the destination.
        Connect = 1 => "connect",
        /// Listen for one inbound TCP connection from the destination.
        Bind = 2 => "bind",
        /// Relay UDP datagrams (SOCKS5 only).
        UdpAssociate = 3 => "udp_associate",
    }
}

code_enum! {
    /// A SOCKS5 authentication method.
    pub enum Method {
        /// No authentication required.
        NoAuth = 0x00 => "no authentication",
        /// GSS-API (RFC 1961).
        Gssapi = 0x01 => "GSS-API",
        /// Username/password (RFC 1929).
        UserPass = 0x02 => "username/password",
        /// No acceptable method: the server closes after sending it.
        NoAcceptable = 0xff => "no acceptable method",
    }
}

code_enum! {
    /// A SOCKS5 reply code (REP).
    pub enum ReplyCode {
        /// Succeeded.
        Succeeded = 0 => "succeeded",
        /// General SOCKS server failure.
        GeneralFailure = 1 => "general failure",
        /// Connection not allowed by ruleset.
        NotAllowed = 2 => "not allowed by ruleset",
        /// Network unreachable.
        NetworkUnreachable = 3 => "network unreachable",
        /// Host unreachable (also used for names that do not resolve).
        HostUnreachable = 4 => "host unreachable",
        /// Connection refused.
        ConnectionRefused = 5 => "connection refused",
        /// TTL expired (also used for connect timeouts).
        TtlExpired = 6 => "TTL expired",
        /// Command not supported.
        CommandNotSupported = 7 => "command not supported",
        /// Address type not supported.
        AddressTypeNotSupported = 8 => "address type not supported",
    }
}

code_enum! {
    /// A SOCKS4 reply code (CD).
    pub enum Socks4Code {
        /// Request granted.
        Granted = 90 => "granted",
        /// Request rejected or failed.
        Rejected = 91 => "rejected or failed",
        /// Rejected: the server cannot reach the client's identd.
        NoIdentd = 92 => "rejected: no identd",
        /// Rejected: identd reported a different user-id.
        IdentMismatch = 93 => "rejected: identd mismatch",
    }
}

code_enum! {
    /// A SOCKS5 address type (ATYP, RFC 1928 §5).
    pub enum AddrType {
        /// An IPv4 address, 4 octets.
        Ipv4 = 1 => "IPv4",
        /// A domain name: a length octet, then the name.
        Domain = 3 => "domain name",
        /// An IPv6 address, 16 octets.
        Ipv6 = 4 => "IPv6",
    }
}

impl AddrType {
    /// The type SOCKS5 encodes `addr` with.
    pub const fn of(addr: &Addr<'_>) -> Self {
        match addr {
            Addr::Ip(SocketAddr::V4(_)) => Self::Ipv4,
            Addr::Ip(SocketAddr::V6(_)) => Self::Ipv6,
            Addr::Domain(..) => Self::Domain,
        }
    }
}

impl Method {
    /// The name, or for a value this crate does not name, its IANA range: `"CHAP"` (3),
    /// `"private"` (0x80–0xFE) or `"IANA assigned"`.
    pub const fn describe(self) -> &'static str {
        match (self.name(), self) {
            (Some(name), _) => name,
            (None, Self::Unknown(3)) => "CHAP",
            (None, Self::Unknown(0x80..=0xfe)) => "private",
            (None, _) => "IANA assigned",
        }
    }
}

impl ReplyCode {
    /// The name, or `"unassigned"` (RFC 1928 leaves X'09'–X'FF' unassigned).
    pub const fn describe(self) -> &'static str {
        match self.name() {
            Some(name) => name,
            None => "unassigned",
        }
    }
}

impl Socks4Code {
    /// The name, or `"unknown"`.
    pub const fn describe(self) -> &'static str {
        match self.name() {
            Some(name) => name,
            None => "unknown",
        }
    }
}

impl From<ReplyCode> for Socks4Code {
    /// SOCKS4 has one failure code for every cause.
    fn from(code: ReplyCode) -> Self {
        match code {
            ReplyCode::Succeeded => Self::Granted,
            _ => Self::Rejected,
        }
    }
}

// ---- shared nom plumbing (private) -------------------------------------------------------

/// nom's error type for our parsers is [`WireError`] itself, so a validation failure can name
/// its cause; nom's own structural errors (none occur with the combinators used) map to
/// [`WireError::Truncated`].
impl<I> nom::error::ParseError<I> for WireError {
    fn from_error_kind(_input: I, _kind: nom::error::ErrorKind) -> Self {
        Self::Truncated
    }

    fn append(_input: I, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type IResult<'a, T> = nom::IResult<&'a [u8], T, WireError>;

/// Fails the parse with `e` (not recoverable by alternatives).
pub(crate) fn fail<T>(e: WireError) -> Result<T, nom::Err<WireError>> {
    Err(nom::Err::Failure(e))
}

/// Runs a streaming parser over a whole buffer and converts to the public result shape.
pub(crate) fn run<'a, T>(
    input: &'a [u8],
    parser: impl FnOnce(&'a [u8]) -> IResult<'a, T>,
) -> ParseResult<T> {
    match parser(input) {
        Ok((rest, value)) => Ok(Status::Complete((value, input.len() - rest.len()))),
        Err(nom::Err::Incomplete(_)) => Ok(Status::Partial),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e),
    }
}

/// Checks the first octet against `expected`, reporting [`WireError::BadVersion`] otherwise.
pub(crate) fn version(expected: u8) -> impl Fn(&[u8]) -> IResult<'_, u8> {
    move |i| {
        let (i, v) = be_u8(i)?;
        if v == expected {
            Ok((i, v))
        } else {
            fail(WireError::BadVersion(v))
        }
    }
}

/// A one-octet length followed by that many octets.
pub(crate) fn len_prefixed(i: &[u8]) -> IResult<'_, &[u8]> {
    let (i, len) = be_u8(i)?;
    take(len).parse(i)
}

pub(crate) fn ipv4(i: &[u8]) -> IResult<'_, Ipv4Addr> {
    let (i, octets) = take(4u8).parse(i)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(octets);
    Ok((i, Ipv4Addr::from(a)))
}

pub(crate) fn ipv6(i: &[u8]) -> IResult<'_, Ipv6Addr> {
    let (i, octets) = take(16u8).parse(i)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(octets);
    Ok((i, Ipv6Addr::from(a)))
}

/// Address-type octets of SOCKS5 (RFC 1928 §5).
pub(crate) mod atyp {
    pub(crate) const IPV4: u8 = 1;
    pub(crate) const DOMAIN: u8 = 3;
    pub(crate) const IPV6: u8 = 4;
}

/// ATYP, address and port, as in SOCKS5 requests, replies and UDP headers.
pub(crate) fn socks5_addr(i: &[u8]) -> IResult<'_, Addr<'_>> {
    let (i, t) = be_u8(i)?;
    match t {
        atyp::IPV4 => {
            let (i, ip) = ipv4(i)?;
            let (i, port) = be_u16(i)?;
            Ok((i, Addr::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port)))))
        }
        atyp::IPV6 => {
            let (i, ip) = ipv6(i)?;
            let (i, port) = be_u16(i)?;
            Ok((
                i,
                Addr::Ip(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
            ))
        }
        atyp::DOMAIN => {
            let (i, name) = len_prefixed(i)?;
            // Validate before waiting for the port, so a bad name fails as early as possible.
            let name = match Domain::new(name) {
                Ok(name) => name,
                Err(e) => return fail(e),
            };
            let (i, port) = be_u16(i)?;
            Ok((i, Addr::Domain(name, port)))
        }
        other => fail(WireError::UnknownAddrType(other)),
    }
}

/// Where ATYP, the address and the port sit in a message (byte ranges from the message's
/// start), for an address encoded at `start` as in SOCKS5 requests, replies and UDP headers.
/// A domain's `addr` range includes its length octet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrSpans {
    /// ATYP.
    pub atyp: Range<usize>,
    /// DST.ADDR / BND.ADDR.
    pub addr: Range<usize>,
    /// DST.PORT / BND.PORT.
    pub port: Range<usize>,
}

impl AddrSpans {
    pub(crate) fn at(start: usize, addr: &Addr<'_>) -> Self {
        let addr_at = start + 1;
        let port_at = start + socks5_addr_len(addr) - 2;
        Self {
            atyp: start..addr_at,
            addr: addr_at..port_at,
            port: port_at..port_at + 2,
        }
    }
}

/// Encoded length of [`socks5_addr`]'s form.
pub(crate) fn socks5_addr_len(addr: &Addr<'_>) -> usize {
    match addr {
        Addr::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
        Addr::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
        Addr::Domain(name, _) => 1 + 1 + name.as_bytes().len() + 2,
    }
}

pub(crate) fn put_socks5_addr(w: &mut Writer<'_>, addr: &Addr<'_>) {
    match addr {
        Addr::Ip(SocketAddr::V4(sa)) => {
            w.u8(atyp::IPV4);
            w.bytes(&sa.ip().octets());
            w.u16(sa.port());
        }
        Addr::Ip(SocketAddr::V6(sa)) => {
            w.u8(atyp::IPV6);
            w.bytes(&sa.ip().octets());
            w.u16(sa.port());
        }
        Addr::Domain(name, port) => {
            let name = name.as_bytes();
            w.u8(atyp::DOMAIN);
            // A `Domain` is 1..=255 octets, so its length fits one octet.
            w.u8(name.len() as u8);
            w.bytes(name);
            w.u16(*port);
        }
    }
}

/// A bounds-checked output cursor. `emit` functions check the total length first, so the
/// writes here never fall off the end; if they would, they are dropped rather than panic.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf` if it holds `required` bytes.
    pub(crate) fn new(buf: &'a mut [u8], required: usize) -> Result<Self, BufferTooSmall> {
        if buf.len() < required {
            Err(BufferTooSmall { required })
        } else {
            Ok(Self { buf, pos: 0 })
        }
    }

    pub(crate) fn bytes(&mut self, src: &[u8]) {
        let end = self.pos + src.len();
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(src);
        }
        self.pos = end;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    /// Bytes written.
    pub(crate) fn finish(self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_report_spellings() {
        assert_eq!(Command::UdpAssociate.to_string(), "udp_associate");
        assert_eq!(Command::from(7).to_string(), "unknown:0x07");
        assert_eq!(Command::from(7).name(), None);
        assert_eq!(ReplyCode::from(9).describe(), "unassigned");
        assert_eq!(Method::from(3).describe(), "CHAP");
        assert_eq!(Method::from(0x90).describe(), "private");
        assert_eq!(Method::from(0x10).describe(), "IANA assigned");
        assert_eq!(Socks4Code::from(90).to_string(), "granted");
        assert_eq!(
            AddrType::of(&Addr::Ip("[::1]:1".parse().unwrap())),
            AddrType::Ipv6
        );
    }
}
